/// One thing wrong with a configuration, named by the key path where it was found.
///
/// `validate` and `run` report the same problems through the same code path
/// (``HeadwayConfiguration/load(yaml:overrides:)``), one line per problem.
public struct ConfigurationProblem: Sendable, Hashable, CustomStringConvertible {
    /// Dotted path of the offending key, e.g. `upstreams.web.connect_timeout`.
    public var keyPath: String
    public var message: String

    public init(keyPath: String, message: String) {
        self.keyPath = keyPath
        self.message = message
    }

    public var description: String { "\(self.keyPath): \(self.message)" }
}

/// Thrown when a configuration has one or more problems; every problem found is listed, not only the first.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    public var problems: [ConfigurationProblem]

    public init(problems: [ConfigurationProblem]) {
        self.problems = problems
    }

    public var description: String {
        self.problems.map(\.description).joined(separator: "\n")
    }
}
