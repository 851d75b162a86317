/// The name of a balancing policy, as written in `policy:` or `--policy`.
///
/// Each loop builds a concrete picker from it (see ``EndpointPicker``); the picker dispatches statically, so
/// the hot path never goes through an existential.
public enum LoadBalancingPolicy: String, Sendable, Hashable, CaseIterable {
    case roundRobin = "round-robin"

    public static var knownNames: String { Self.allCases.map(\.rawValue).joined(separator: ", ") }
}
