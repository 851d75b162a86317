import NIOCore

/// The name of a balancing policy, as written in `policy:` or `--policy`, and the registry that makes its
/// balancer: adding a policy is one new ``LoadBalancer`` type plus one case here.
package enum LoadBalancingPolicy: String, Sendable, Hashable, CaseIterable {
    case roundRobin = "round-robin"
    case random
    case leastConnections = "least-connections"
    case powerOfTwoChoices = "p2c"
    case peakEWMA = "ewma"
    case hash

    package static var knownNames: String { Self.allCases.map(\.rawValue).joined(separator: ", ") }

    /// A fresh balancer for one event loop.
    func makeBalancer(ewmaDecay: TimeAmount = .seconds(10)) -> any LoadBalancer {
        switch self {
        case .roundRobin: RoundRobinBalancer()
        case .random: RandomBalancer()
        case .leastConnections: LeastConnectionsBalancer()
        case .powerOfTwoChoices: PowerOfTwoChoicesBalancer()
        case .peakEWMA: PeakEWMABalancer(decay: ewmaDecay)
        case .hash: HashBalancer()
        }
    }
}

/// What the `hash` policy hashes (`hash_key:`, `--hash-key`).
package enum HashKey: Sendable, Hashable, CustomStringConvertible {
    /// The first value of a request header, e.g. `header:X-User`.
    case header(String)
    /// A cookie's value, e.g. `cookie:session`.
    case cookie(String)
    /// The client's IP address.
    case clientIP

    /// Parses `header:NAME`, `cookie:NAME` or `client-ip`.
    package init?(_ text: String) {
        if text == "client-ip" {
            self = .clientIP
        } else if text.hasPrefix("header:"), let name = Self.token(text.dropFirst("header:".count)) {
            self = .header(name.lowercased())
        } else if text.hasPrefix("cookie:"), let name = Self.token(text.dropFirst("cookie:".count)) {
            self = .cookie(name)
        } else {
            return nil
        }
    }

    private static func token(_ text: Substring) -> String? {
        guard !text.isEmpty, text.utf8.allSatisfy({ HTTPSyntax.isTokenCharacter($0) }) else { return nil }
        return String(text)
    }

    package var description: String {
        switch self {
        case .header(let name): "header:\(name)"
        case .cookie(let name): "cookie:\(name)"
        case .clientIP: "client-ip"
        }
    }
}
