import NIOCore
import Synchronization

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

#if canImport(Glibc)
import Glibc
#endif

/// One pod behind an upstream: its address and the counters that every event loop updates.
///
/// The same `Endpoint` object lives as long as its address stays in the discovered set, so counters survive
/// endpoint-set updates. All mutable state is atomic: loops update it without a lock, the admin page reads it.
package final class Endpoint: Sendable {
    /// Whether new requests may go to the endpoint.
    package enum State: UInt8, Sendable {
        /// In the current set: takes new requests.
        case active = 0
        /// Removed from the set: takes no new request, finishes those in flight, then closes its connections.
        case draining = 1
    }

    /// What active health checks say of the endpoint.
    package enum Health: UInt8, Sendable {
        /// No check has finished yet (or checks are off and the endpoint never was judged).
        case unknown = 0
        case healthy = 1
        case unhealthy = 2
    }

    package let address: SocketAddress
    /// `HOST:PORT`, used in logs, metrics labels and the admin page.
    package let label: String

    private let inFlight = Atomic<Int>(0)
    private let requests = Atomic<Int>(0)
    private let failures = Atomic<Int>(0)
    /// Connections open or being opened, summed over all loops; bounded by `max_connections_per_endpoint`.
    private let connections = Atomic<Int>(0)
    private let idleConnections = Atomic<Int>(0)
    private let stateValue = Atomic<UInt8>(State.active.rawValue)
    private let weightValue = Atomic<Int>(1)
    private let healthValue: Atomic<UInt8>
    private let ejectedValue = Atomic<Bool>(false)
    /// Passive checks: results of real requests in a row, reset by a success.
    private let consecutive5xx = Atomic<Int>(0)
    private let consecutiveGatewayFailures = Atomic<Int>(0)
    /// When the endpoint last became routable (uptime ns), for slow start; 0 means long ago.
    private let routableSinceValue = Atomic<UInt64>(0)
    /// Whether the endpoint was routable at the last availability change, to notice when it becomes so.
    private let wasRoutableValue = Atomic<Bool>(false)
    /// Health-check history for the admin page; written by the control plane only.
    let record = Mutex(HealthRecord())

    let metrics: EndpointMetrics

    /// - Parameter health: `.unknown` when active checks will judge it, `.healthy` when only passive checks run.
    init(address: SocketAddress, label: String, health: Health, metrics: EndpointMetrics) {
        self.address = address
        self.label = label
        self.metrics = metrics
        self.healthValue = Atomic(health.rawValue)
    }

    struct HealthRecord: Sendable {
        var checks = HealthCheckCounter()
        var lastCheckPassed: Bool?
        var lastCheckDetail: String?
        var lastCheckAt: Date?
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

    var inFlightRequests: Int { self.inFlight.load(ordering: .relaxed) }

    // MARK: Slow start

    /// When the endpoint last became routable; `nil` if that was at start-up and slow start spares it.
    /// Requests and failures so far, for the live page's rates.
    var countersForLivePage: (requests: Int, failures: Int) {
        (self.requests.load(ordering: .relaxed), self.failures.load(ordering: .relaxed))
    }

    var routableSince: NIODeadline? {
        let value = self.routableSinceValue.load(ordering: .relaxed)
        return value == 0 ? nil : .uptimeNanoseconds(value)
    }

    /// Records the endpoint's routability; returns `true` when it just became routable.
    func noteRoutable(_ isRoutable: Bool, now: NIODeadline, startsSlow: Bool) -> Bool {
        let was = self.wasRoutableValue.exchange(isRoutable, ordering: .relaxed)
        guard isRoutable, !was else { return false }
        self.routableSinceValue.store(startsSlow ? max(now.uptimeNanoseconds, 1) : 0, ordering: .relaxed)
        return true
    }

    // MARK: Passive checks, updated from any loop

    /// Records a response's status; returns the outlier reason when this response completes a run of 5xx
    /// that reaches `threshold` (0: off). The success path only reads, so it never contends between loops.
    func recordResponseStatus(_ status: UInt, consecutive5xxThreshold threshold: Int) -> OutlierDetector.Report? {
        if self.consecutiveGatewayFailures.load(ordering: .relaxed) != 0 {
            self.consecutiveGatewayFailures.store(0, ordering: .relaxed)
        }
        guard status >= 500 else {
            if self.consecutive5xx.load(ordering: .relaxed) != 0 {
                self.consecutive5xx.store(0, ordering: .relaxed)
            }
            return nil
        }
        let count = self.consecutive5xx.add(1, ordering: .relaxed).newValue
        guard threshold > 0 && count == threshold else { return nil }
        return .init(run: .consecutive5xx, reason: "\(count) consecutive 5xx responses")
    }

    /// Records a failure Headway saw itself (connect failure, reset, timeout, bad response); returns the outlier
    /// reason when it completes a run of `gatewayThreshold` of them or of `fiveXXThreshold` 5xx-like failures.
    func recordGatewayFailure(gatewayThreshold: Int, fiveXXThreshold: Int, what: String) -> OutlierDetector.Report? {
        let gateway = self.consecutiveGatewayFailures.add(1, ordering: .relaxed).newValue
        let fiveXX = self.consecutive5xx.add(1, ordering: .relaxed).newValue
        if gatewayThreshold > 0 && gateway == gatewayThreshold {
            return .init(
                run: .consecutiveGatewayFailures,
                reason: "\(gateway) consecutive gateway failures (last: \(what))"
            )
        }
        if fiveXXThreshold > 0 && fiveXX == fiveXXThreshold {
            return .init(run: .consecutive5xx, reason: "\(fiveXX) consecutive 5xx responses (last: \(what))")
        }
        return nil
    }

    /// A new ejection starts counting afresh.
    func resetPassiveCounters() {
        self.consecutive5xx.store(0, ordering: .relaxed)
        self.consecutiveGatewayFailures.store(0, ordering: .relaxed)
    }

    package var health: Health {
        get { Health(rawValue: self.healthValue.load(ordering: .relaxed)) ?? .unknown }
        set { self.healthValue.store(newValue.rawValue, ordering: .relaxed) }
    }

    /// Taken out of rotation by outlier detection until its ejection time ends.
    package var isEjected: Bool {
        get { self.ejectedValue.load(ordering: .relaxed) }
        set { self.ejectedValue.store(newValue, ordering: .relaxed) }
    }

    /// Whether requests may go here outside panic mode: it passes its checks and is not ejected.
    ///
    /// - Parameter gateUnknown: an endpoint no check has judged yet waits for its first passing check.
    func isRoutable(gateUnknown: Bool) -> Bool {
        !self.isEjected && self.passesChecks(gateUnknown: gateUnknown)
    }

    /// Whether the active checks let requests come here, ejections aside (what panic mode counts).
    func passesChecks(gateUnknown: Bool) -> Bool {
        guard self.state == .active else { return false }
        switch self.health {
        case .healthy: return true
        case .unknown: return !gateUnknown
        case .unhealthy: return false
        }
    }

    /// No request in flight and no connection left: a draining endpoint can be forgotten.
    var isQuiet: Bool {
        self.inFlight.load(ordering: .relaxed) == 0 && self.connections.load(ordering: .relaxed) == 0
    }

    /// Relative weight (from an SRV record; 1 otherwise), kept for weighted policies.
    package var weight: Int {
        get { self.weightValue.load(ordering: .relaxed) }
        set { self.weightValue.store(newValue, ordering: .relaxed) }
    }

    package var state: State {
        get { State(rawValue: self.stateValue.load(ordering: .relaxed)) ?? .active }
        set { self.stateValue.store(newValue.rawValue, ordering: .relaxed) }
    }

    /// What the admin page shows for this endpoint, with what outlier detection remembers of it.
    func status(ejection: OutlierDetector.Record?, now: NIODeadline) -> Status {
        let record = self.record.withLock { $0 }
        // The active checks' verdict first: an unhealthy endpoint stays out after its ejection ends.
        let health: String
        switch self.health {
        case .unhealthy: health = "unhealthy"
        case _ where self.isEjected: health = "ejected"
        case .unknown: health = "unknown"
        case .healthy: health = "healthy"
        }
        return Status(
            address: self.label,
            state: self.state == .active ? "active" : "draining",
            health: health,
            lastCheck: record.lastCheckPassed.map { $0 ? "pass" : "fail" },
            lastCheckDetail: record.lastCheckDetail,
            lastCheckAt: record.lastCheckAt,
            consecutiveCheckFailures: record.checks.consecutiveFailures,
            consecutive5xx: self.consecutive5xx.load(ordering: .relaxed),
            consecutiveGatewayFailures: self.consecutiveGatewayFailures.load(ordering: .relaxed),
            ejections: ejection?.ejections ?? 0,
            ejectedUntil: ejection?.ejectedUntil.map {
                Date(timeIntervalSinceNow: Double(($0 - now).nanoseconds) / 1e9)
            },
            lastEjectionReason: ejection?.lastEjectionReason,
            weight: self.weight,
            inFlight: self.inFlight.load(ordering: .relaxed),
            requests: self.requests.load(ordering: .relaxed),
            failures: self.failures.load(ordering: .relaxed),
            connections: self.connections.load(ordering: .relaxed),
            idleConnections: self.idleConnections.load(ordering: .relaxed)
        )
    }

    package struct Status: Sendable, Equatable {
        package var address: String
        package var state: String
        /// unknown, healthy, unhealthy or ejected.
        package var health: String
        /// pass or fail; `nil` before the first check or when checks are off.
        package var lastCheck: String?
        package var lastCheckDetail: String?
        package var lastCheckAt: Date?
        package var consecutiveCheckFailures: Int
        package var consecutive5xx: Int
        package var consecutiveGatewayFailures: Int
        package var ejections: Int
        package var ejectedUntil: Date?
        package var lastEjectionReason: String?
        package var weight: Int
        package var inFlight: Int
        package var requests: Int
        package var failures: Int
        package var connections: Int
        package var idleConnections: Int
    }
}
