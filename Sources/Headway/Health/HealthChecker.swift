import Logging
import NIOCore
import Synchronization

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The active health checks of one upstream: a ``HealthProbe`` per endpoint, spread over the event loops
/// (never a thread per pod), and the thresholds that turn check results into health.
///
/// The cluster tells it which endpoints to watch as the set changes, and a reload may change its settings
/// or turn checks on or off. The application stops it when the process shuts down (after the listeners have
/// drained) or when its upstream is removed.
final class HealthChecker: Sendable {
    private let eventLoops: [any EventLoop]
    /// What the pods speak, so that HTTP checks of h2c pods go over h2c too.
    private let upstreamProtocol: UpstreamProtocol
    private let logger: Logger
    private let state: Mutex<State>

    private struct State {
        /// `nil`: active checks are off (passive checks only) and no probe runs.
        var settings: HealthCheckSettings?
        var probes: [ObjectIdentifier: HealthProbe] = [:]
        var nextLoop = 0
        var isStopped = false
    }

    init(
        settings: HealthCheckSettings?,
        upstreamProtocol: UpstreamProtocol,
        eventLoops: [any EventLoop],
        logger: Logger
    ) {
        self.state = Mutex(State(settings: settings))
        self.upstreamProtocol = upstreamProtocol
        self.eventLoops = eventLoops
        self.logger = logger
    }

    var settings: HealthCheckSettings? { self.state.withLock { $0.settings } }

    /// Starts checking `endpoints` (new in the set), each on the next loop in turn; health changes are
    /// reported to `cluster`.
    func watch(_ endpoints: [Endpoint], notifying cluster: UpstreamCluster) {
        let probes = self.state.withLock { state -> [HealthProbe] in
            guard !state.isStopped, let settings = state.settings else { return [] }
            return endpoints.compactMap { endpoint in
                guard state.probes[ObjectIdentifier(endpoint)] == nil else { return nil }
                let loop = self.eventLoops[state.nextLoop % self.eventLoops.count]
                state.nextLoop += 1
                let probe = HealthProbe(
                    endpoint: endpoint,
                    eventLoop: loop,
                    settings: settings,
                    upstreamProtocol: self.upstreamProtocol
                ) {
                    [weak self, weak cluster] endpoint, passed, detail in
                    guard let self, let cluster else { return }
                    let healthChanged = self.record(endpoint, passed: passed, detail: detail)
                    cluster.activeCheckFinished(endpoint, passed: passed, healthChanged: healthChanged)
                }
                state.probes[ObjectIdentifier(endpoint)] = probe
                return probe
            }
        }
        for probe in probes { probe.start() }
    }

    /// Stops checking endpoints that left the set.
    func unwatch(_ endpoints: [Endpoint]) {
        let probes = self.state.withLock { state in
            endpoints.compactMap { state.probes.removeValue(forKey: ObjectIdentifier($0)) }
        }
        for probe in probes {
            probe.eventLoop.execute { probe.stop() }
        }
    }

    /// A reload's new settings: every probe starts again with them (none when checks are now off).
    func update(_ settings: HealthCheckSettings?, endpoints: [Endpoint], notifying cluster: UpstreamCluster) {
        self.stopEveryProbe { $0.settings = settings }
        self.watch(endpoints, notifying: cluster)
    }

    /// Stops every probe for good.
    func stop() {
        self.stopEveryProbe { $0.isStopped = true }
    }

    /// Applies `change` and forgets every probe under one lock, then stops those probes on their loops.
    private func stopEveryProbe(after change: (inout State) -> Void) {
        let probes = self.state.withLock { state in
            change(&state)
            defer { state.probes.removeAll() }
            return Array(state.probes.values)
        }
        for probe in probes {
            probe.eventLoop.execute { probe.stop() }
        }
    }

    /// A probe finished a check of `endpoint`; returns whether its health changed.
    private func record(_ endpoint: Endpoint, passed: Bool, detail: String) -> Bool {
        endpoint.metrics.checkFinished(passed: passed)
        guard let settings = self.settings else { return false }  // Turned off by a reload meanwhile.
        let (transition, failures) = endpoint.record.withLock { record -> (Endpoint.Health?, Int) in
            record.lastCheckPassed = passed
            record.lastCheckDetail = detail
            record.lastCheckAt = Date()
            let transition = record.checks.record(
                passed: passed,
                healthyThreshold: settings.healthyThreshold,
                unhealthyThreshold: settings.unhealthyThreshold
            )
            return (transition, record.checks.consecutiveFailures)
        }
        let metadata: Logger.Metadata = ["endpoint.address": "\(endpoint.label)", "check": "\(detail)"]
        guard let transition else {
            if !passed {
                self.logger.debug("health check failed (\(failures) in a row)", metadata: metadata)
            }
            return false
        }
        endpoint.health = transition
        switch transition {
        case .healthy:
            self.logger.info("endpoint healthy; in rotation", metadata: metadata)
        case .unhealthy:
            self.logger.warning(
                "endpoint unhealthy after \(failures) failed checks; out of rotation",
                metadata: metadata
            )
        case .unknown:
            break
        }
        return true
    }
}
