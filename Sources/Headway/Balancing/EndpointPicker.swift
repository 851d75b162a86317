/// Chooses the pool for the next request on one event loop.
///
/// A concrete enum over the built-in policies: the per-request call is a static switch, never a call through
/// an existential. Adding a policy is a new picker type plus one case here and in ``LoadBalancingPolicy``.
struct EndpointPicker {
    private var strategy: Strategy

    private enum Strategy {
        case roundRobin(RoundRobinPicker)
    }

    init(policy: LoadBalancingPolicy) {
        switch policy {
        case .roundRobin:
            self.strategy = .roundRobin(RoundRobinPicker())
        }
    }

    /// Called when the loop installs a new endpoint set, so a picker can reset per-set state.
    mutating func endpointSetChanged(count: Int) {
        switch self.strategy {
        case .roundRobin(var picker):
            picker.endpointSetChanged(count: count)
            self.strategy = .roundRobin(picker)
        }
    }

    /// The index of the chosen candidate, or `nil` when there is none.
    ///
    /// - Parameter excluding: an index to avoid (the endpoint that just failed), honoured when another exists.
    mutating func pick(count: Int, excluding: Int?) -> Int? {
        switch self.strategy {
        case .roundRobin(var picker):
            let index = picker.pick(count: count, excluding: excluding)
            self.strategy = .roundRobin(picker)
            return index
        }
    }
}

/// Plain round-robin: each loop walks the set in order from a random start, so a fleet of sidecars restarted
/// together does not send its first requests to the same pod.
struct RoundRobinPicker {
    private var next: Int

    init() {
        self.next = Int.random(in: 0..<1024)
    }

    mutating func endpointSetChanged(count: Int) {
        self.next = count > 0 ? Int.random(in: 0..<count) : 0
    }

    mutating func pick(count: Int, excluding: Int?) -> Int? {
        guard count > 0 else { return nil }
        let index = self.next % count
        guard let excluding else {
            self.next = index + 1
            return index
        }
        // A retry takes the next endpoint without moving the rotation: otherwise every retry would shift
        // it by one, and a failing endpoint would get the first attempt of every request.
        return index == excluding && count > 1 ? (index + 1) % count : index
    }
}
