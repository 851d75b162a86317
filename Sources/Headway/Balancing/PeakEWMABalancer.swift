import NIOCore

/// Peak-EWMA (linkerd's balancer): power of two choices by the endpoint's latency estimate times its
/// requests in flight plus one, per unit of weight. A slow endpoint's estimate jumps at once to a slow
/// response (the peak) and decays back over `ewma_decay`; see ``Endpoint/recordLatency(_:now:decay:)``.
final class PeakEWMABalancer: LoadAwareBalancer, LoadBalancer {
    private let decay: TimeAmount

    init(decay: TimeAmount) {
        self.decay = decay
    }

    var measuresLatency: Bool { true }

    func responseHeadArrived(from endpoint: Endpoint, latency: TimeAmount, now: NIODeadline) {
        endpoint.recordLatency(latency, now: now, decay: self.decay)
    }

    func pick(_ request: PickRequest) -> Int? {
        twoChoices(count: self.endpoints.count, excluding: request.excluding) { first, second in
            let a = self.endpoints[first]
            let b = self.endpoints[second]
            let latencyA = a.latencyEstimate(at: request.now, decay: self.decay)
            let latencyB = b.latencyEstimate(at: request.now, decay: self.decay)
            // An endpoint not measured yet is compared by requests in flight alone, so it is tried without
            // drawing a burst.
            let measured = latencyA > 0 && latencyB > 0
            let costA = (measured ? latencyA : 1) * Double(a.inFlightRequests + 1) / Double(self.weights[first])
            let costB = (measured ? latencyB : 1) * Double(b.inFlightRequests + 1) / Double(self.weights[second])
            return (costA, costB)
        }
    }
}
