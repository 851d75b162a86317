/// One thing wrong with a configuration, named by the key path where it was found.
///
/// `validate` and `run` report the same problems through the same code path
/// (``HeadwayConfiguration/load(yaml:overrides:)``), one line per problem.
package struct ConfigurationProblem: Sendable, Hashable, CustomStringConvertible {
    /// Dotted path of the offending key, e.g. `upstreams.web.connect_timeout`.
    package var keyPath: String
    package var message: String

    package init(keyPath: String, message: String) {
        self.keyPath = keyPath
        self.message = message
    }

    package var description: String { "\(self.keyPath): \(self.message)" }
}

/// Thrown when a configuration has one or more problems; every problem found is listed, not only the first.
package struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    package var problems: [ConfigurationProblem]

    package init(problems: [ConfigurationProblem]) {
        self.problems = problems
    }

    package var description: String {
        self.problems.map(\.description).joined(separator: "\n")
    }
}
