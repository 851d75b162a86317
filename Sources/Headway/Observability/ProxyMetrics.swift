import NIOCore
import Prometheus

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Every metric family Headway exports: its name and its `# HELP` line, in one place.
package enum MetricFamily: String, CaseIterable, Sendable {
    case buildInfo = "headway_build_info"
    case configReloads = "headway_config_reloads_total"
    case clientConnectionsOpen = "headway_client_connections_open"
    case clientHTTP2ConnectionsOpen = "headway_client_http2_connections_open"
    case clientHTTP2Streams = "headway_client_http2_streams_total"
    case responses = "headway_responses_total"
    case upstreamResponses = "headway_upstream_responses_total"
    case upstreamRequestDuration = "headway_upstream_request_duration_seconds"
    case upstreamConnectFailures = "headway_upstream_connect_failures_total"
    case upstreamErrors = "headway_upstream_errors_total"
    case upstreamConnectionsOpened = "headway_upstream_connections_opened_total"
    case upstreamConnectionsOpen = "headway_upstream_connections_open"
    case upstreamConnectionsIdle = "headway_upstream_connections_idle"
    case upstreamEndpoints = "headway_upstream_endpoints"
    case upstreamHealthyEndpoints = "headway_upstream_healthy_endpoints"
    case upstreamPanicMode = "headway_upstream_panic_mode"
    case endpointRoutable = "headway_endpoint_routable"
    case healthChecks = "headway_health_checks_total"
    case outlierEjections = "headway_outlier_ejections_total"
    case localResponses = "headway_local_responses_total"
    case retries = "headway_retries_total"
    case retryBudgetExhausted = "headway_retry_budget_exhausted_total"
    case dnsResolutions = "headway_dns_resolutions_total"
    case dnsLastSuccess = "headway_dns_last_success_timestamp_seconds"

    /// The name is whole in `metricName` (with its unit already), so the descriptor's unit stays empty.
    var descriptor: MetricNameDescriptor {
        MetricNameDescriptor(metricName: self.rawValue, unitName: "", helpText: self.help)
    }

    package var help: String {
        switch self {
        case .buildInfo: "Always 1; the version label says which Headway is running."
        case .configReloads: "Configuration reloads (SIGHUP), by result: success or error."
        case .clientConnectionsOpen: "Client connections open on a listener."
        case .clientHTTP2ConnectionsOpen: "Client connections open on a listener that speak HTTP/2 (h2c)."
        case .clientHTTP2Streams: "Streams HTTP/2 clients opened on a listener (each is a request)."
        case .responses:
            "Responses sent to the clients of an upstream's listeners (the pods' and Headway's own), by status class."
        case .upstreamResponses: "Responses from an endpoint, by status class."
        case .upstreamRequestDuration: "Time from sending a request to an endpoint to the end of its response."
        case .upstreamConnectFailures: "Connections to an endpoint that could not be opened."
        case .upstreamErrors: "Exchanges with an endpoint that failed after connecting (reset, timeout, bad response)."
        case .upstreamConnectionsOpened: "Connections opened to an endpoint."
        case .upstreamConnectionsOpen: "Connections open to an upstream's endpoints, by protocol (http1 or h2c)."
        case .upstreamConnectionsIdle: "Idle HTTP/1 keep-alive connections to an upstream's endpoints."
        case .upstreamEndpoints: "Endpoints of an upstream, by state: active or draining."
        case .upstreamHealthyEndpoints: "Endpoints of an upstream that are healthy and not ejected."
        case .upstreamPanicMode: "1 while too few endpoints are healthy and requests go to all of them."
        case .endpointRoutable: "1 while an endpoint may take requests outside panic mode (healthy, not ejected)."
        case .healthChecks: "Active health checks of an endpoint, by result: pass or fail."
        case .outlierEjections: "Times an endpoint was ejected for consecutive failures."
        case .localResponses: "Responses Headway answered itself (no endpoint, timeout, limit)."
        case .retries: "Requests sent again to another endpoint."
        case .retryBudgetExhausted: "Retries not sent because the retry budget was spent."
        case .dnsResolutions: "DNS resolutions of an upstream's service, by result."
        case .dnsLastSuccess: "Unix time of an upstream's last successful DNS resolution."
        }
    }
}

/// Builds metric objects once (when an endpoint joins) with bounded labels: upstream, endpoint, status class.
///
/// Headway passes its own registry around instead of relying on a global metrics system, so that several
/// proxies can run in one test process and the admin page always shows this process's registry. Metrics are
/// made on the registry itself (not through swift-metrics) so that every family carries its `# HELP` line.
package struct ProxyMetrics: Sendable {
    package let registry: PrometheusCollectorRegistry
    /// What happened to the pods lately, for the live page (beside the counters, which say how often).
    package let events = EventLog()

    package init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        self.gauge(.buildInfo, [("version", HeadwayVersion.string)]).set(to: 1)
    }

    func counter(_ family: MetricFamily, _ labels: [(String, String)]) -> Counter {
        self.registry.makeCounter(descriptor: family.descriptor, labels: labels)
    }

    func gauge(_ family: MetricFamily, _ labels: [(String, String)]) -> Gauge {
        self.registry.makeGauge(descriptor: family.descriptor, labels: labels)
    }

    func endpointMetrics(upstream: String, endpoint: String) -> EndpointMetrics {
        EndpointMetrics(upstream: upstream, endpoint: endpoint, metrics: self)
    }

    func upstreamMetrics(upstream: String, protocol upstreamProtocol: UpstreamProtocol = .http1) -> UpstreamMetrics {
        UpstreamMetrics(upstream: upstream, protocol: upstreamProtocol, metrics: self)
    }

    /// A listener's HTTP/2 figures: its h2c connections open, and the streams (requests) they opened.
    func clientHTTP2(listener: String) -> ClientHTTP2Metrics {
        ClientHTTP2Metrics(
            connections: self.gauge(.clientHTTP2ConnectionsOpen, [("listener", listener)]),
            streams: self.counter(.clientHTTP2Streams, [("listener", listener)])
        )
    }

    /// Client connections open on a listener, the one figure that shows connection leaks and floods.
    func clientConnections(listener: String) -> Gauge {
        self.gauge(.clientConnectionsOpen, [("listener", listener)])
    }

    func discoveryMetrics(upstream: String) -> DiscoveryMetrics {
        DiscoveryMetrics(upstream: upstream, metrics: self)
    }

    /// The text `/metrics` serves: the registry, the families each loop keeps itself (`traffic`), then the
    /// process's own figures.
    func exposition(traffic: [TrafficExposition.Row], clients: [TrafficExposition.ClientRow]) -> [UInt8] {
        var buffer = self.registry.emitToBuffer()
        buffer.append(contentsOf: TrafficExposition.render(traffic, clients: clients).utf8)
        buffer.append(contentsOf: ProcessMetrics.read().exposition.utf8)
        return buffer
    }
}

/// Per-endpoint metrics, created when the endpoint joins and removed from the registry when it leaves.
/// Responses and their durations are not here: each loop counts those itself (``EndpointTraffic``).
struct EndpointMetrics: Sendable {
    private let registry: PrometheusCollectorRegistry
    private let connectFailures: Counter
    private let upstreamErrors: Counter
    private let connectionsOpened: Counter
    private let checksPassed: Counter
    private let checksFailed: Counter
    private let ejections: Counter
    /// 1 while the endpoint may take requests outside panic mode (healthy and not ejected), else 0.
    private let routable: Gauge

    init(upstream: String, endpoint: String, metrics: ProxyMetrics) {
        let labels = [("upstream", upstream), ("endpoint", endpoint)]
        self.registry = metrics.registry
        self.connectFailures = metrics.counter(.upstreamConnectFailures, labels)
        self.upstreamErrors = metrics.counter(.upstreamErrors, labels)
        self.connectionsOpened = metrics.counter(.upstreamConnectionsOpened, labels)
        self.checksPassed = metrics.counter(.healthChecks, labels + [("result", "pass")])
        self.checksFailed = metrics.counter(.healthChecks, labels + [("result", "fail")])
        self.ejections = metrics.counter(.outlierEjections, labels)
        self.routable = metrics.gauge(.endpointRoutable, labels)
    }

    func connectFailed() { self.connectFailures.increment() }
    func upstreamErrorOccurred() { self.upstreamErrors.increment() }
    func connectionOpened() { self.connectionsOpened.increment() }
    func checkFinished(passed: Bool) { (passed ? self.checksPassed : self.checksFailed).increment() }
    func ejected() { self.ejections.increment() }
    func routableChanged(_ isRoutable: Bool) { self.routable.set(to: isRoutable ? 1 : 0) }

    func destroy() {
        let counters = [
            self.connectFailures, self.upstreamErrors, self.connectionsOpened, self.checksPassed, self.checksFailed,
            self.ejections,
        ]
        for counter in counters { self.registry.unregisterCounter(counter) }
        self.registry.unregisterGauge(self.routable)
    }
}

/// Per-upstream metrics: answers Headway gave itself (no endpoint, timeouts) and the connection gauges.
struct UpstreamMetrics: Sendable {
    private let localResponses: Counter
    private let openConnections: Gauge
    private let idleConnections: Gauge
    private let activeEndpoints: Gauge
    private let drainingEndpoints: Gauge
    private let healthyEndpoints: Gauge
    private let panicMode: Gauge
    private let retries: Counter
    private let retriesRefusedByBudget: Counter

    init(upstream: String, protocol upstreamProtocol: UpstreamProtocol, metrics: ProxyMetrics) {
        let labels = [("upstream", upstream)]
        self.localResponses = metrics.counter(.localResponses, labels)
        self.openConnections = metrics.gauge(
            .upstreamConnectionsOpen,
            labels + [("protocol", upstreamProtocol.rawValue)]
        )
        self.idleConnections = metrics.gauge(.upstreamConnectionsIdle, labels)
        self.activeEndpoints = metrics.gauge(.upstreamEndpoints, labels + [("state", "active")])
        self.drainingEndpoints = metrics.gauge(.upstreamEndpoints, labels + [("state", "draining")])
        self.healthyEndpoints = metrics.gauge(.upstreamHealthyEndpoints, labels)
        self.panicMode = metrics.gauge(.upstreamPanicMode, labels)
        self.retries = metrics.counter(.retries, labels)
        self.retriesRefusedByBudget = metrics.counter(.retryBudgetExhausted, labels)
    }

    func localResponseSent() { self.localResponses.increment() }
    func connectionOpened() { self.openConnections.increment() }
    func connectionClosed() { self.openConnections.decrement() }
    func idleConnectionsChanged(by delta: Int) { self.idleConnections.increment(by: Double(delta)) }
    func endpointCountsChanged(active: Int, draining: Int) {
        self.activeEndpoints.set(to: Double(active))
        self.drainingEndpoints.set(to: Double(draining))
    }
    func healthChanged(healthy: Int, panic: Bool) {
        self.healthyEndpoints.set(to: Double(healthy))
        self.panicMode.set(to: panic ? 1 : 0)
    }
    func retried() { self.retries.increment() }
    func retryRefusedByBudget() { self.retriesRefusedByBudget.increment() }
}

/// A listener's HTTP/2 client figures.
struct ClientHTTP2Metrics: Sendable {
    let connections: Gauge
    let streams: Counter
}

/// Per-upstream DNS discovery metrics.
struct DiscoveryMetrics: Sendable {
    enum Result: String, CaseIterable {
        case success
        case nameNotFound = "nxdomain"
        case noRecords = "no_records"
        case failure
    }

    private let resolutions: [Counter]
    private let lastSuccessTimestamp: Gauge

    init(upstream: String, metrics: ProxyMetrics) {
        self.resolutions = Result.allCases.map { result in
            metrics.counter(.dnsResolutions, [("upstream", upstream), ("result", result.rawValue)])
        }
        self.lastSuccessTimestamp = metrics.gauge(.dnsLastSuccess, [("upstream", upstream)])
    }

    func resolved(_ result: Result) {
        self.resolutions[Result.allCases.firstIndex(of: result)!].increment()
    }

    func lastSuccess(at date: Date) {
        self.lastSuccessTimestamp.set(to: date.timeIntervalSince1970)
    }
}
