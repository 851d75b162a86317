import NIOCore
import Synchronization

/// One pod behind an upstream: its address and the counters that every event loop updates.
///
/// The same `Endpoint` object lives as long as its address stays in the discovered set, so counters survive
/// endpoint-set updates. All mutable state is atomic: loops update it without a lock, the admin page reads it.
public final class Endpoint: Sendable {
    /// Whether new requests may go to the endpoint.
    public enum State: UInt8, Sendable {
        /// In the current set: takes new requests.
        case active = 0
        /// Removed from the set: takes no new request, finishes those in flight, then closes its connections.
        case draining = 1
    }

    public let address: SocketAddress
    /// `HOST:PORT`, used in logs, metrics labels and the admin page.
    public let label: String

    private let inFlight = Atomic<Int>(0)
    private let requests = Atomic<Int>(0)
    private let failures = Atomic<Int>(0)
    /// Connections open or being opened, summed over all loops; bounded by `max_connections_per_endpoint`.
    private let connections = Atomic<Int>(0)
    private let idleConnections = Atomic<Int>(0)
    private let stateValue = Atomic<UInt8>(State.active.rawValue)
    private let weightValue = Atomic<Int>(1)

    let metrics: EndpointMetrics

    init(address: SocketAddress, label: String, metrics: EndpointMetrics) {
        self.address = address
        self.label = label
        self.metrics = metrics
    }

    // MARK: Counters, updated from any loop

    /// A request was routed here; every call is matched by one ``requestEnded()``.
    func requestStarted() {
        self.inFlight.add(1, ordering: .relaxed)
        self.requests.add(1, ordering: .relaxed)
    }

    func requestEnded() {
        self.inFlight.subtract(1, ordering: .relaxed)
    }

    /// A connect failed on this endpoint.
    func recordFailure() {
        self.failures.add(1, ordering: .relaxed)
    }

    /// An established connection failed mid-exchange: reset, closed early, timed out or answered garbage.
    func recordUpstreamError() {
        self.failures.add(1, ordering: .relaxed)
        self.metrics.upstreamErrorOccurred()
    }

    /// Reserves room for one more connection; `false` when `limit` connections are open or opening.
    func reserveConnection(limit: Int) -> Bool {
        let (previous, _) = self.connections.add(1, ordering: .relaxed)
        guard previous < limit else {
            self.connections.subtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    /// A reserved connection failed to open or closed.
    func releaseConnection() {
        self.connections.subtract(1, ordering: .relaxed)
    }

    func idleConnectionsChanged(by delta: Int) {
        self.idleConnections.add(delta, ordering: .relaxed)
    }

    /// No request in flight and no connection left: a draining endpoint can be forgotten.
    var isQuiet: Bool {
        self.inFlight.load(ordering: .relaxed) == 0 && self.connections.load(ordering: .relaxed) == 0
    }

    /// Relative weight (from an SRV record; 1 otherwise), kept for weighted policies.
    public var weight: Int {
        get { self.weightValue.load(ordering: .relaxed) }
        set { self.weightValue.store(newValue, ordering: .relaxed) }
    }

    public var state: State {
        get { State(rawValue: self.stateValue.load(ordering: .relaxed)) ?? .active }
        set { self.stateValue.store(newValue.rawValue, ordering: .relaxed) }
    }

    /// What the admin page shows for this endpoint.
    public var status: Status {
        Status(
            address: self.label,
            state: self.state == .active ? "active" : "draining",
            weight: self.weight,
            inFlight: self.inFlight.load(ordering: .relaxed),
            requests: self.requests.load(ordering: .relaxed),
            failures: self.failures.load(ordering: .relaxed),
            connections: self.connections.load(ordering: .relaxed),
            idleConnections: self.idleConnections.load(ordering: .relaxed)
        )
    }

    public struct Status: Sendable, Equatable {
        public var address: String
        public var state: String
        public var weight: Int
        public var inFlight: Int
        public var requests: Int
        public var failures: Int
        public var connections: Int
        public var idleConnections: Int
    }
}
