import NIOCore

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension AdminState {
    /// What the live page (`GET /`) fetches every second from `/live.json`: compact, a few hundred bytes per
    /// endpoint, so that a page of 1,000 pods stays well under a megabyte a refresh.
    struct LiveDocument: Codable {
        struct Upstream: Codable {
            var name: String
            var policy: String
            var discovery: EndpointsDocument.Discovery
            var health_checks: String
            var healthy_endpoints: Int
            var panic_mode: Bool
            var retry_budget: String
            var endpoints: [Endpoint]
        }
        struct Endpoint: Codable {
            var address: String
            /// In words: healthy, unhealthy, ejected, draining or unknown.
            var state: String
            var ejected_until: String?
            var weight: Int
            /// Slow start's ramp, while it lasts.
            var slow_start_percent: Int?
            var connections: Int
            var idle_connections: Int
            var in_flight: Int
            var requests_per_second: Double
            var error_rate: Double?
            var p50_ms: Double?
            var p99_ms: Double?
            /// Requests per second over the last minute, one a second.
            var sparkline: [Int]
        }
        var version: String
        var generation: Int
        var loaded_at: String
        var ready: Bool
        var ready_reason: String
        var upstreams: [Upstream]
        /// Newest first.
        var events: [EventLog.Event]
    }

    var liveDocument: LiveDocument {
        let format = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        let running = self.runningNow
        let figures = self.live.figures()
        let now = NIODeadline.now()
        let (ready, reason) = self.readiness
        func milliseconds(_ amount: TimeAmount?) -> Double? {
            amount.map { (Double($0.nanoseconds) / 1e4).rounded() / 100 }
        }
        return LiveDocument(
            version: HeadwayVersion.string,
            generation: running.generation,
            loaded_at: running.loadedAt.formatted(format),
            ready: ready,
            ready_reason: reason,
            upstreams: running.clusters.map { cluster in
                let configuration = cluster.configuration
                let health = cluster.healthSummary
                var rampStarts: [String: NIODeadline] = [:]
                for endpoint in cluster.endpoints {
                    rampStarts[endpoint.label] = endpoint.routableSince
                }
                return LiveDocument.Upstream(
                    name: cluster.name,
                    policy: configuration.policy.rawValue,
                    discovery: self.discoveryDocument(for: cluster, among: running.discoveries),
                    health_checks: configuration.healthCheck?.summary ?? "off",
                    healthy_endpoints: health.healthy,
                    panic_mode: health.isInPanic,
                    retry_budget:
                        "\(configuration.retries.budgetPercent)% of requests + \(configuration.retries.budgetMinPerSecond)/s",
                    endpoints: cluster.endpointStatuses.map { status in
                        let figure = figures[LiveStats.key(upstream: cluster.name, endpoint: status.address)]
                        var ramp: Int?
                        if let window = configuration.slowStart, let since = rampStarts[status.address] {
                            let share = Double((now - since).nanoseconds) / Double(window.nanoseconds)
                            if share < 1 { ramp = Int(max(share, 0) * 100) }
                        }
                        return LiveDocument.Endpoint(
                            address: status.address,
                            state: status.state == "draining" ? "draining" : status.health,
                            ejected_until: status.ejectedUntil.map { $0.formatted(format) },
                            weight: status.weight,
                            slow_start_percent: ramp,
                            connections: status.connections,
                            idle_connections: status.idleConnections,
                            in_flight: status.inFlight,
                            requests_per_second: ((figure?.requestsPerSecond ?? 0) * 10).rounded() / 10,
                            error_rate: figure?.errorRate,
                            p50_ms: milliseconds(figure?.p50),
                            p99_ms: milliseconds(figure?.p99),
                            sparkline: (figure?.sparkline ?? []).map { Int($0.rounded()) }
                        )
                    }
                )
            },
            events: Array(self.metrics.events.recent.suffix(50).reversed())
        )
    }
}
