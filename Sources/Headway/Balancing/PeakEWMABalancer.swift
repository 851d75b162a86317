import NIOCore

/// Peak-EWMA (linkerd's balancer): power of two choices by the endpoint's latency estimate times its
/// requests in flight plus one, per unit of weight. A slow endpoint's estimate jumps at once to a slow
/// response (the peak) and decays back over `ewma_decay` (``PeakEWMA``).
///
/// The estimates are this policy's own state, kept per event loop like the balancer (each loop learns from
/// the responses it relays, as each of linkerd's balancers does), and carried across endpoint-set changes by
/// endpoint identity; requests in flight are the counts every loop shares.
final class PeakEWMABalancer: LoadAwareBalancer, LoadBalancer {
    private let decay: TimeAmount
    /// One estimate per endpoint of the set, by index.
    private var estimates: [PeakEWMA] = []
    private var indexByEndpoint: [ObjectIdentifier: Int] = [:]

    init(decay: TimeAmount) {
        self.decay = decay
    }

    override func endpointsChanged(_ endpoints: [Endpoint], weights: [Int]) {
        let previous = self.indexByEndpoint
        let previousEstimates = self.estimates
        super.endpointsChanged(endpoints, weights: weights)
        self.indexByEndpoint = Dictionary(
            uniqueKeysWithValues: endpoints.enumerated().map { (ObjectIdentifier($1), $0) }
        )
        self.estimates = endpoints.map { endpoint in
            previous[ObjectIdentifier(endpoint)].map { previousEstimates[$0] } ?? PeakEWMA()
        }
    }

    var measuresLatency: Bool { true }

    func responseHeadArrived(from endpoint: Endpoint, latency: TimeAmount, now: NIODeadline) {
        // An endpoint that left the routable set meanwhile is no longer estimated.
        guard let index = self.indexByEndpoint[ObjectIdentifier(endpoint)] else { return }
        self.estimates[index].record(latency, now: now, decay: self.decay)
    }

    /// The estimate of the endpoint at `index`, for tests and the pick.
    func latencyEstimate(ofEndpointAt index: Int, at now: NIODeadline) -> Double {
        self.estimates[index].estimate(at: now, decay: self.decay)
    }

    func pick(_ request: PickRequest) -> Int? {
        twoChoices(count: self.endpoints.count, excluding: request.excluding, using: &self.random) { first, second in
            let latencyA = self.latencyEstimate(ofEndpointAt: first, at: request.now)
            let latencyB = self.latencyEstimate(ofEndpointAt: second, at: request.now)
            // An endpoint not measured yet is compared by requests in flight alone, so it is tried without
            // drawing a burst.
            let measured = latencyA > 0 && latencyB > 0
            let loadA = Double(self.endpoints[first].inFlightRequests + 1) / Double(self.weights[first])
            let loadB = Double(self.endpoints[second].inFlightRequests + 1) / Double(self.weights[second])
            return ((measured ? latencyA : 1) * loadA, (measured ? latencyB : 1) * loadB)
        }
    }
}
