import CoreMetrics
import NIOCore
import Prometheus

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Builds metric objects once (when an endpoint joins) with bounded labels: upstream, endpoint, status class.
///
/// Headway passes its own factory around instead of relying on the global `MetricsSystem`, so that several
/// proxies can run in one test process and the admin page always shows this process's registry.
package struct ProxyMetrics: Sendable {
    package let registry: PrometheusCollectorRegistry
    let factory: PrometheusMetricsFactory

    package init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
            .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
            .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
        ]
        self.factory = factory
    }

    func endpointMetrics(upstream: String, endpoint: String) -> EndpointMetrics {
        EndpointMetrics(upstream: upstream, endpoint: endpoint, factory: self.factory)
    }

    func upstreamMetrics(upstream: String) -> UpstreamMetrics {
        UpstreamMetrics(upstream: upstream, factory: self.factory)
    }

    /// Client connections open on a listener, the one figure that shows connection leaks and floods.
    func clientConnections(listener: String) -> Meter {
        Meter(label: "headway_client_connections_open", dimensions: [("listener", listener)], factory: self.factory)
    }

    func discoveryMetrics(upstream: String) -> DiscoveryMetrics {
        DiscoveryMetrics(upstream: upstream, factory: self.factory)
    }
}

/// Per-endpoint metrics, created when the endpoint joins and destroyed when it leaves.
struct EndpointMetrics: Sendable {
    /// Responses by status class: index 0 is 1xx … index 4 is 5xx.
    private let responsesByClass: [CoreMetrics.Counter]
    private let connectFailures: CoreMetrics.Counter
    private let upstreamErrors: CoreMetrics.Counter
    private let connectionsOpened: CoreMetrics.Counter
    private let requestDuration: CoreMetrics.Timer
    private let checksPassed: CoreMetrics.Counter
    private let checksFailed: CoreMetrics.Counter
    private let ejections: CoreMetrics.Counter
    /// 1 while the endpoint may take requests outside panic mode (healthy and not ejected), else 0.
    private let routable: Meter

    init(upstream: String, endpoint: String, factory: PrometheusMetricsFactory) {
        let dimensions = [("upstream", upstream), ("endpoint", endpoint)]
        self.responsesByClass = (1...5).map { statusClass in
            CoreMetrics.Counter(
                label: "headway_upstream_responses_total",
                dimensions: dimensions + [("status_class", "\(statusClass)xx")],
                factory: factory
            )
        }
        self.connectFailures = CoreMetrics.Counter(
            label: "headway_upstream_connect_failures_total",
            dimensions: dimensions,
            factory: factory
        )
        self.upstreamErrors = CoreMetrics.Counter(
            label: "headway_upstream_errors_total",
            dimensions: dimensions,
            factory: factory
        )
        self.connectionsOpened = CoreMetrics.Counter(
            label: "headway_upstream_connections_opened_total",
            dimensions: dimensions,
            factory: factory
        )
        self.requestDuration = CoreMetrics.Timer(
            label: "headway_upstream_request_duration_seconds",
            dimensions: dimensions,
            factory: factory
        )
        self.checksPassed = CoreMetrics.Counter(
            label: "headway_health_checks_total",
            dimensions: dimensions + [("result", "pass")],
            factory: factory
        )
        self.checksFailed = CoreMetrics.Counter(
            label: "headway_health_checks_total",
            dimensions: dimensions + [("result", "fail")],
            factory: factory
        )
        self.ejections = CoreMetrics.Counter(
            label: "headway_outlier_ejections_total",
            dimensions: dimensions,
            factory: factory
        )
        self.routable = Meter(label: "headway_endpoint_routable", dimensions: dimensions, factory: factory)
    }

    func recordResponse(status: UInt, duration: TimeAmount) {
        let index = Int(min(max(status / 100, 1), 5)) - 1
        self.responsesByClass[index].increment()
        self.requestDuration.recordNanoseconds(duration.nanoseconds)
    }

    func connectFailed() { self.connectFailures.increment() }
    func upstreamErrorOccurred() { self.upstreamErrors.increment() }
    func connectionOpened() { self.connectionsOpened.increment() }
    func checkFinished(passed: Bool) { (passed ? self.checksPassed : self.checksFailed).increment() }
    func ejected() { self.ejections.increment() }
    func routableChanged(_ isRoutable: Bool) { self.routable.set(isRoutable ? 1 : 0) }

    func destroy() {
        self.checksPassed.destroy()
        self.checksFailed.destroy()
        self.ejections.destroy()
        self.routable.destroy()
        for counter in self.responsesByClass { counter.destroy() }
        self.connectFailures.destroy()
        self.upstreamErrors.destroy()
        self.connectionsOpened.destroy()
        self.requestDuration.destroy()
    }
}

/// Per-upstream metrics: answers Headway gave itself (no endpoint, timeouts) and the connection gauges.
struct UpstreamMetrics: Sendable {
    private let localResponses: CoreMetrics.Counter
    private let openConnections: Meter
    private let idleConnections: Meter
    private let activeEndpoints: Meter
    private let drainingEndpoints: Meter
    private let healthyEndpoints: Meter
    private let panicMode: Meter
    private let retries: CoreMetrics.Counter
    private let retriesRefusedByBudget: CoreMetrics.Counter

    init(upstream: String, factory: PrometheusMetricsFactory) {
        let dimensions = [("upstream", upstream)]
        self.localResponses = CoreMetrics.Counter(
            label: "headway_local_responses_total",
            dimensions: dimensions,
            factory: factory
        )
        self.openConnections = Meter(
            label: "headway_upstream_connections_open",
            dimensions: dimensions,
            factory: factory
        )
        self.idleConnections = Meter(
            label: "headway_upstream_connections_idle",
            dimensions: dimensions,
            factory: factory
        )
        self.activeEndpoints = Meter(
            label: "headway_upstream_endpoints",
            dimensions: dimensions + [("state", "active")],
            factory: factory
        )
        self.drainingEndpoints = Meter(
            label: "headway_upstream_endpoints",
            dimensions: dimensions + [("state", "draining")],
            factory: factory
        )
        self.healthyEndpoints = Meter(
            label: "headway_upstream_healthy_endpoints",
            dimensions: dimensions,
            factory: factory
        )
        self.panicMode = Meter(label: "headway_upstream_panic_mode", dimensions: dimensions, factory: factory)
        self.retries = CoreMetrics.Counter(label: "headway_retries_total", dimensions: dimensions, factory: factory)
        self.retriesRefusedByBudget = CoreMetrics.Counter(
            label: "headway_retry_budget_exhausted_total",
            dimensions: dimensions,
            factory: factory
        )
    }

    func localResponseSent() { self.localResponses.increment() }
    func connectionOpened() { self.openConnections.increment() }
    func connectionClosed() { self.openConnections.decrement() }
    func idleConnectionsChanged(by delta: Int) { self.idleConnections.increment(by: Double(delta)) }
    func endpointCountsChanged(active: Int, draining: Int) {
        self.activeEndpoints.set(active)
        self.drainingEndpoints.set(draining)
    }
    func healthChanged(healthy: Int, panic: Bool) {
        self.healthyEndpoints.set(healthy)
        self.panicMode.set(panic ? 1 : 0)
    }
    func retried() { self.retries.increment() }
    func retryRefusedByBudget() { self.retriesRefusedByBudget.increment() }
}

/// Per-upstream DNS discovery metrics.
struct DiscoveryMetrics: Sendable {
    enum Result: String, CaseIterable {
        case success
        case nameNotFound = "nxdomain"
        case noRecords = "no_records"
        case failure
    }

    private let resolutions: [CoreMetrics.Counter]
    private let lastSuccessTimestamp: Meter

    init(upstream: String, factory: PrometheusMetricsFactory) {
        self.resolutions = Result.allCases.map { result in
            CoreMetrics.Counter(
                label: "headway_dns_resolutions_total",
                dimensions: [("upstream", upstream), ("result", result.rawValue)],
                factory: factory
            )
        }
        self.lastSuccessTimestamp = Meter(
            label: "headway_dns_last_success_timestamp_seconds",
            dimensions: [("upstream", upstream)],
            factory: factory
        )
    }

    func resolved(_ result: Result) {
        self.resolutions[Result.allCases.firstIndex(of: result)!].increment()
    }

    func lastSuccess(at date: Date) {
        self.lastSuccessTimestamp.set(date.timeIntervalSince1970)
    }
}
