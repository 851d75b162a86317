import Foundation
import NIOCore
import Yams

/// Walks the YAML node tree key by key so that unknown keys and malformed values are reported, never
/// silently replaced by a default.
struct ConfigurationReader {
    var problems: [ConfigurationProblem] = []

    mutating func problem(_ keyPath: String, _ message: String) {
        self.problems.append(ConfigurationProblem(keyPath: keyPath, message: message))
    }

    // MARK: Scalars

    /// Reads an address; `bindable` ones (listen, admin) may use port 0.
    mutating func address(_ node: Node, at keyPath: String, bindable: Bool = false) -> HostAndPort? {
        guard let text = node.scalar?.string else {
            self.problem(keyPath, "must be HOST:PORT")
            return nil
        }
        return self.address(text: text, at: keyPath, bindable: bindable)
    }

    mutating func address(text: String, at keyPath: String, bindable: Bool = false) -> HostAndPort? {
        switch HostAndPort.parse(text, allowsAnyPort: bindable) {
        case .success(let address):
            return address
        case .failure(let failure):
            self.problem(keyPath, "bad address: \(failure)")
            return nil
        }
    }

    mutating func duration(_ node: Node, at keyPath: String, allowsZero: Bool = false) -> TimeAmount? {
        guard let text = node.scalar?.string else {
            self.problem(keyPath, "must be a duration such as 250ms, 2s or 1m")
            return nil
        }
        return self.duration(text: text, at: keyPath, allowsZero: allowsZero)
    }

    mutating func duration(text: String, at keyPath: String, allowsZero: Bool = false) -> TimeAmount? {
        guard let amount = DurationText.parse(text), amount.nanoseconds > 0 || (allowsZero && amount == .zero) else {
            let expected = allowsZero ? "0s or a positive number" : "a positive number"
            self.problem(keyPath, "bad duration '\(text)': write \(expected) with a unit, such as 250ms, 2s or 1m")
            return nil
        }
        return amount
    }

    mutating func positiveInt(_ node: Node, at keyPath: String) -> Int? {
        guard let text = node.scalar?.string, let value = Int(text), value >= 1 else {
            self.problem(
                keyPath,
                "must be a whole number of at least 1, got '\(node.scalar?.string ?? "a non-scalar")'"
            )
            return nil
        }
        return value
    }

    mutating func nonNegativeInt(_ node: Node, at keyPath: String) -> Int? {
        guard let text = node.scalar?.string, let value = Int(text), value >= 0 else {
            self.problem(keyPath, "must be a whole number of 0 or more, got '\(node.scalar?.string ?? "a non-scalar")'")
            return nil
        }
        return value
    }

    /// `50%` or `50`, from 0 to 100.
    mutating func percent(_ node: Node, at keyPath: String) -> Int? {
        let text = node.scalar?.string ?? ""
        let digits = text.hasSuffix("%") ? String(text.dropLast()) : text
        guard let value = Int(digits), (0...100).contains(value) else {
            self.problem(keyPath, "must be a percentage from 0% to 100%, got '\(text)'")
            return nil
        }
        return value
    }

    mutating func bool(_ node: Node, at keyPath: String) -> Bool? {
        switch node.scalar?.string {
        case "true": return true
        case "false": return false
        default:
            self.problem(keyPath, "must be true or false")
            return nil
        }
    }

    /// A size in bytes: `65536`, `64KiB` or `1MiB` (`K`, `KB`, `M`, `MB` are read as powers of 1024 too).
    mutating func size(_ node: Node, at keyPath: String) -> Int? {
        let text = node.scalar?.string ?? ""
        let units: [(suffix: String, factor: Int)] = [
            ("KiB", 1 << 10), ("MiB", 1 << 20), ("KB", 1 << 10), ("MB", 1 << 20), ("K", 1 << 10), ("M", 1 << 20),
        ]
        let unit = units.first { text.hasSuffix($0.suffix) }
        let digits = text.dropLast(unit?.suffix.count ?? 0)
        let factor = unit?.factor ?? 1
        guard let value = Int(digits), value >= 0, value <= Int(Int32.max) / factor else {
            self.problem(keyPath, "must be a size such as 65536, 64KiB or 1MiB, got '\(text)'")
            return nil
        }
        return value * factor
    }

    mutating func readClient(_ node: Node, at path: String, into settings: inout ClientSettings) {
        self.readBlock(node, at: path, settings: ClientSettings.settings, into: &settings)
        if settings.requestLimits.requestLineBytes < 64 {
            self.problem("\(path).max_request_line", "must be at least 64 bytes")
        } else if settings.requestLimits.headBytes < settings.requestLimits.requestLineBytes {
            self.problem("\(path).max_request_head", "is smaller than max_request_line")
        }
    }

    /// Reads a block key by key: a key in `settings` through its ``Setting``, a structural key through
    /// `structure` (which returns `false` for a key it does not know); any other key is reported with the
    /// block's known keys. A `node` that is no mapping is reported with `mustBe`.
    mutating func readBlock<Block>(
        _ node: Node,
        at path: String,
        settings: [Setting<Block>],
        into block: inout Block,
        structural: [String] = [],
        mustBe: String = "must be a mapping of settings",
        _ structure: (inout ConfigurationReader, _ key: String, _ value: Node, _ keyPath: String, inout Block) -> Bool =
            { _, _, _, _, _ in false }
    ) {
        guard let mapping = node.mapping else {
            self.problem(
                path.isEmpty ? "(file)" : path,
                path.isEmpty ? "the top level must be a mapping of keys to values" : mustBe
            )
            return
        }
        for (keyNode, value) in mapping {
            let key = keyNode.string ?? "?"
            let keyPath = path.isEmpty ? key : "\(path).\(key)"
            if let setting = settings.first(where: { $0.key == key }) {
                setting.read(&self, value, keyPath, &block)
            } else if !structure(&self, key, value, keyPath, &block) {
                self.problem(keyPath, "unknown key (known: \(settings.keyList(adding: structural)))")
            }
        }
    }

    /// `HOST:PORT`, or `{address: HOST:PORT, weight: N}` for a weighted endpoint.
    mutating func endpoint(_ node: Node, at keyPath: String, weights: inout [HostAndPort: Int]) -> HostAndPort? {
        guard let mapping = node.mapping else { return self.address(node, at: keyPath) }
        var address: HostAndPort?
        var weight = 1
        for (keyNode, value) in mapping {
            let key = keyNode.string ?? "?"
            switch key {
            case "address":
                address = self.address(value, at: "\(keyPath).address")
            case "weight":
                guard let text = value.scalar?.string, let number = Int(text), (1...10_000).contains(number) else {
                    self.problem("\(keyPath).weight", "must be a whole number from 1 to 10000")
                    continue
                }
                weight = number
            default:
                self.problem("\(keyPath).\(key)", "unknown key (known: address, weight)")
            }
        }
        guard let address else {
            self.problem("\(keyPath).address", "missing: give HOST:PORT")
            return nil
        }
        if weight != 1 { weights[address] = weight }
        return address
    }

    mutating func hashKey(_ text: String, at keyPath: String) -> HashKey? {
        guard let key = HashKey(text) else {
            self.problem(keyPath, "bad hash key '\(text)': write header:NAME, cookie:NAME or client-ip")
            return nil
        }
        return key
    }

    mutating func policy(_ text: String?, at keyPath: String) -> LoadBalancingPolicy? {
        guard let text, let policy = LoadBalancingPolicy(rawValue: text) else {
            self.problem(keyPath, "unknown policy '\(text ?? "")' (known: \(LoadBalancingPolicy.knownNames))")
            return nil
        }
        return policy
    }

    mutating func logLevel(_ text: String?, at keyPath: String) -> String? {
        guard let text, HeadwayConfiguration.logLevels.contains(text) else {
            self.problem(
                keyPath,
                "unknown log level '\(text ?? "")' (known: \(HeadwayConfiguration.logLevels.joined(separator: ", ")))"
            )
            return nil
        }
        return text
    }
}
