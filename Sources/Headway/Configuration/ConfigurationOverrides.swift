/// Values given on the command line, by flag name (`--connect-timeout`): a flag that was not given leaves
/// the file's value alone.
///
/// Values stay text until ``HeadwayConfiguration/load(yaml:overrides:)`` reads them through the same
/// ``Setting`` as the file's key, so a bad flag gets the same message as a bad key, with the flag's name as
/// the key path.
package struct ConfigurationOverrides: Sendable, Equatable {
    /// Every value given for each flag, in order (most flags take one; `--dns-server` may repeat).
    package private(set) var values: [String: [String]] = [:]

    package init() {}

    /// The one value of `flag`; setting `nil` removes it.
    package subscript(flag: String) -> String? {
        get { self.values[flag]?.last }
        set { self.values[flag] = newValue.map { [$0] } }
    }

    /// Every value of a repeatable or list flag (`--endpoints a,b` is two values); setting `nil` removes it.
    package subscript(list flag: String) -> [String]? {
        get { self.values[flag] }
        set { self.values[flag] = newValue }
    }

    func isGiven(_ flag: String) -> Bool { self.values[flag] != nil }
}
