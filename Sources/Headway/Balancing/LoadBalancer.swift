import NIOCore

/// A balancing policy's state on one event loop: it chooses the endpoint for each request.
///
/// Every policy is one final class behind this protocol, made by ``LoadBalancingPolicy/makeBalancer(_:)``
/// (the registry). A balancer is loop-confined, so it needs no lock; what all loops must share (requests in
/// flight, latency estimates) lives in atomic counters on ``Endpoint``. Picking is O(1) or O(log n), except
/// least-connections (see ``LeastConnectionsBalancer``).
protocol LoadBalancer: AnyObject {
    /// The endpoints that take requests changed (the set, their health, or their slow-start weights).
    /// Indices passed to and returned by ``pick(_:)`` refer to `endpoints`.
    ///
    /// - Parameter weights: one positive weight per endpoint, already scaled by slow start.
    func endpointsChanged(_ endpoints: [Endpoint], weights: [Int])

    /// The index of the endpoint for the next request, or `nil` when there is none.
    func pick(_ request: PickRequest) -> Int?

    /// Whether the policy wants ``responseHeadArrived(from:latency:now:)`` (it costs a clock read per response).
    var measuresLatency: Bool { get }

    /// A response head from `endpoint` arrived `latency` after its request was sent.
    func responseHeadArrived(from endpoint: Endpoint, latency: TimeAmount, now: NIODeadline)
}

extension LoadBalancer {
    var measuresLatency: Bool { false }

    func responseHeadArrived(from endpoint: Endpoint, latency: TimeAmount, now: NIODeadline) {}
}

/// What a balancer may know of the request it places.
struct PickRequest {
    /// An index to avoid (the endpoint that just failed), honoured when another endpoint exists.
    var excluding: Int?
    /// The request's hash key for the `hash` policy (`nil`: the request has none, or another policy).
    var hashKey: UInt64?
    /// The loop's recent time (for decaying latency estimates).
    var now: NIODeadline
}

extension LoadBalancer {
    func pick(excluding: Int? = nil) -> Int? {
        self.pick(PickRequest(excluding: excluding, hashKey: nil, now: .now()))
    }
}

/// The weights of a set, kept by the balancers that use them.
struct Weights {
    private(set) var values: [Int] = []
    /// All weights equal: the weighted paths can be skipped.
    private(set) var areUniform = true

    init(_ values: [Int] = []) {
        self.values = values.map { max($0, 1) }
        self.areUniform = Set(self.values).count <= 1
    }

    subscript(index: Int) -> Int { self.values[index] }
}

/// What the balancers that weigh each endpoint's load keep of a set: the endpoints (whose shared counters
/// they read at every pick) and their weights.
class LoadAwareBalancer {
    final private(set) var endpoints: [Endpoint] = []
    final private(set) var weights = Weights()
    final var random = PickRandom()

    /// Subclasses that keep more per endpoint override this and call it first.
    func endpointsChanged(_ endpoints: [Endpoint], weights: [Int]) {
        self.endpoints = endpoints
        self.weights = Weights(weights)
    }
}

/// A random index in `0..<count` other than `excluding` (when `count > 1`), in O(1).
func randomIndex(count: Int, excluding: Int?, using random: inout PickRandom) -> Int {
    guard let excluding, count > 1 else { return Int.random(in: 0..<count, using: &random) }
    let index = Int.random(in: 0..<(count - 1), using: &random)
    return index >= excluding ? index + 1 : index
}
