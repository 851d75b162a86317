/// `access_log:`: one line per request, off unless given.
package struct AccessLogSettings: Sendable, Equatable {
    /// `stdout`, `stderr`, or a file's path (opened for appending, created if missing).
    package var path = "stdout"
    package var format: AccessLogFormat = .json

    package init() {}

    var summary: String { "{path=\(self.path) format=\(self.format.rawValue)}" }
}

/// `json`: one object per line with every field; `combined`: Apache's combined format, then Headway's fields as
/// `key=value` pairs (as nginx's `log_format` extensions are written).
package enum AccessLogFormat: String, Sendable, CaseIterable {
    case json
    case combined
}
