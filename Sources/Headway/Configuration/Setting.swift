import NIOCore
import Yams

/// One key of the configuration, declared once: its name in its block of the file, the flag that overrides
/// it (if any), its help line, and how its value is read and checked.
///
/// The file's value and the flag's go through the same ``read`` (a flag's text is read as the YAML scalar
/// it would be in the file), so both are accepted and refused alike, with the same message. Defaults are
/// the block's own initial values. The tables are in `HeadwayConfiguration+Settings.swift`.
struct Setting<Block>: Sendable {
    let key: String
    let flag: String?
    let help: String
    /// The value is a list in the file; a repeated flag gives its items.
    let takesList: Bool
    /// Reads `value` found at `keyPath` into `block`, or reports a problem to the reader.
    let read: @Sendable (inout ConfigurationReader, _ value: Node, _ keyPath: String, inout Block) -> Void

    init(
        _ key: String,
        flag: String? = nil,
        help: String,
        takesList: Bool = false,
        read: @escaping @Sendable (inout ConfigurationReader, Node, String, inout Block) -> Void
    ) {
        self.key = key
        self.flag = flag
        self.help = help
        self.takesList = takesList
        self.read = read
    }
}

extension Setting {
    /// A setting whose value one of the reader's scalar functions reads; a refused value leaves the default.
    private static func scalar<Value>(
        _ key: String,
        flag: String?,
        _ path: any WritableKeyPath<Block, Value> & Sendable,
        help: String,
        _ parse: @escaping @Sendable (inout ConfigurationReader, Node, String) -> Value?
    ) -> Self {
        .init(key, flag: flag, help: help) { reader, value, keyPath, block in
            if let parsed = parse(&reader, value, keyPath) { block[keyPath: path] = parsed }
        }
    }

    /// A duration such as `250ms`, `2s` or `1m`.
    static func duration(
        _ key: String,
        flag: String? = nil,
        _ path: any WritableKeyPath<Block, TimeAmount> & Sendable,
        allowsZero: Bool = false,
        help: String
    ) -> Self {
        .scalar(key, flag: flag, path, help: help) { $0.duration($1, at: $2, allowsZero: allowsZero) }
    }

    /// A duration that is off until given.
    static func optionalDuration(
        _ key: String,
        flag: String? = nil,
        _ path: any WritableKeyPath<Block, TimeAmount?> & Sendable,
        help: String
    ) -> Self {
        .scalar(key, flag: flag, path, help: help) { reader, value, keyPath in
            reader.duration(value, at: keyPath).map { .some($0) }
        }
    }

    /// A whole number of at least 1.
    static func positiveInt(
        _ key: String,
        flag: String? = nil,
        _ path: any WritableKeyPath<Block, Int> & Sendable,
        help: String
    ) -> Self {
        .scalar(key, flag: flag, path, help: help) { $0.positiveInt($1, at: $2) }
    }

    /// A whole number of 0 or more.
    static func nonNegativeInt(
        _ key: String,
        flag: String? = nil,
        _ path: any WritableKeyPath<Block, Int> & Sendable,
        help: String
    ) -> Self {
        .scalar(key, flag: flag, path, help: help) { $0.nonNegativeInt($1, at: $2) }
    }

    /// `50%` or `50`, from 0 to 100.
    static func percent(
        _ key: String,
        flag: String? = nil,
        _ path: any WritableKeyPath<Block, Int> & Sendable,
        help: String
    ) -> Self {
        .scalar(key, flag: flag, path, help: help) { $0.percent($1, at: $2) }
    }

    /// `true` or `false`.
    static func bool(
        _ key: String,
        flag: String? = nil,
        _ path: any WritableKeyPath<Block, Bool> & Sendable,
        help: String
    ) -> Self {
        .scalar(key, flag: flag, path, help: help) { $0.bool($1, at: $2) }
    }

    /// A size in bytes: `65536`, `64KiB` or `1MiB`.
    static func size(
        _ key: String,
        flag: String? = nil,
        _ path: any WritableKeyPath<Block, Int> & Sendable,
        help: String
    ) -> Self {
        .scalar(key, flag: flag, path, help: help) { $0.size($1, at: $2) }
    }

    /// One of the raw values of `Choice`.
    static func choice<Choice: RawRepresentable & CaseIterable & Sendable>(
        _ key: String,
        flag: String? = nil,
        _ path: any WritableKeyPath<Block, Choice> & Sendable,
        help: String
    ) -> Self where Choice.RawValue == String {
        .init(key, flag: flag, help: help) { reader, value, keyPath, block in
            if let text = value.scalar?.string, let choice = Choice(rawValue: text) {
                block[keyPath: path] = choice
            } else {
                reader.problem(keyPath, "must be one of \(Choice.allCases.map(\.rawValue).joined(separator: ", "))")
            }
        }
    }
}

extension Array {
    /// The keys of a table of settings, for an "unknown key" message.
    func keyList<Block>(adding structural: [String] = []) -> String where Element == Setting<Block> {
        (self.map(\.key) + structural).joined(separator: ", ")
    }
}
