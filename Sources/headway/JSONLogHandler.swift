import Foundation
import Logging
import Synchronization

/// Writes each log record to stderr as one JSON object on one line, for log pipelines: `time` (ISO 8601, UTC,
/// milliseconds), `level`, `label`, `message`, and the metadata under its own keys (`endpoint.address`, ...).
///
/// A lock keeps the lines of concurrent event loops whole; a line is written with a single call.
struct JSONLogHandler: LogHandler {
    private static let output = Mutex(FileHandle.standardError)
    private static let timeFormat = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    let label: String
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var object: [String: Any] = [:]
        let merged = self.metadata.merging(self.metadataProvider?.get() ?? [:]) { $1 }
            .merging(event.metadata ?? [:]) { $1 }
        for (key, value) in merged {
            object[key] = Self.json(value)
        }
        object["time"] = Date().formatted(Self.timeFormat)
        object["level"] = event.level.rawValue
        object["label"] = self.label
        object["message"] = "\(event.message)"
        guard var line = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
        line.append(UInt8(ascii: "\n"))
        Self.output.withLock { $0.write(line) }
    }

    private static func json(_ value: Logger.Metadata.Value) -> Any {
        switch value {
        case .string(let text): text
        case .stringConvertible(let convertible): convertible.description
        case .array(let values): values.map(Self.json)
        case .dictionary(let values): values.mapValues(Self.json)
        }
    }
}
