import Logging
import NIOCore
import NIOEmbedded
import Testing

@testable import Headway

/// What each loop counts of an endpoint's responses, added up and written as `/metrics` text, without a loop.
struct EndpointTrafficTests {
    @Test func responsesFallIntoTheirClassAndBucket() {
        var traffic = EndpointTraffic()
        traffic.record(status: 200, duration: .microseconds(400))
        traffic.record(status: 204, duration: .microseconds(500))
        traffic.record(status: 503, duration: .milliseconds(3))
        traffic.record(status: 101, duration: .seconds(20))
        #expect(traffic.responses.byClass == [1, 2, 0, 0, 1])
        #expect(traffic.count == 4)
        #expect(traffic.bucketCounts[0] == 2, "a bound is inclusive, as Prometheus' le says")
        #expect(traffic.bucketCounts[3] == 1, "3 ms is in the 5 ms bucket")
        #expect(traffic.bucketCounts.last == 1, "beyond the last bound")
        #expect(traffic.durationSum == .microseconds(900) + .milliseconds(3) + .seconds(20))
    }

    @Test func statusesOutsideTheClassesCountAtTheEdges() {
        var traffic = EndpointTraffic()
        traffic.record(status: 42, duration: .zero)
        traffic.record(status: 999, duration: .zero)
        #expect(traffic.responses.byClass == [1, 0, 0, 0, 1])
    }

    @Test func loopsAddUp() {
        var first = EndpointTraffic()
        first.record(status: 200, duration: .milliseconds(1))
        var second = EndpointTraffic()
        second.record(status: 200, duration: .milliseconds(1))
        second.record(status: 404, duration: .milliseconds(30))
        let sum = first + second
        #expect(sum.responses.byClass == [0, 2, 0, 1, 0])
        #expect(sum.bucketCounts[1] == 2 && sum.bucketCounts[6] == 1)
        #expect(sum.durationSum == .milliseconds(32))
    }

    @Test func theTextIsPrometheusExpositionWithCumulativeBuckets() {
        var traffic = EndpointTraffic()
        traffic.record(status: 200, duration: .microseconds(300))
        traffic.record(status: 502, duration: .milliseconds(1500))
        var answered = StatusClassCounts()
        answered.record(status: 200)
        answered.record(status: 504)
        answered.record(status: 504)
        let text = TrafficExposition.render(
            [.init(upstream: "api", endpoint: "127.0.0.2:8080", traffic: traffic)],
            clients: [.init(upstream: "api", responses: answered)]
        )
        let lines = text.split(separator: "\n").map(String.init)
        let labels = "upstream=\"api\",endpoint=\"127.0.0.2:8080\""
        #expect(lines.first == "# HELP headway_responses_total \(MetricFamily.responses.help)")
        #expect(lines.contains("headway_responses_total{upstream=\"api\",status_class=\"2xx\"} 1"))
        #expect(lines.contains("headway_responses_total{upstream=\"api\",status_class=\"5xx\"} 2"))
        #expect(lines.contains("# HELP headway_upstream_responses_total \(MetricFamily.upstreamResponses.help)"))
        #expect(lines.contains("# TYPE headway_upstream_responses_total counter"))
        #expect(lines.contains("headway_upstream_responses_total{\(labels),status_class=\"2xx\"} 1"))
        #expect(lines.contains("headway_upstream_responses_total{\(labels),status_class=\"3xx\"} 0"))
        #expect(lines.contains("headway_upstream_responses_total{\(labels),status_class=\"5xx\"} 1"))
        #expect(lines.contains("# TYPE headway_upstream_request_duration_seconds histogram"))
        #expect(lines.contains("headway_upstream_request_duration_seconds_bucket{\(labels),le=\"0.0005\"} 1"))
        #expect(lines.contains("headway_upstream_request_duration_seconds_bucket{\(labels),le=\"1.0\"} 1"))
        #expect(lines.contains("headway_upstream_request_duration_seconds_bucket{\(labels),le=\"2.5\"} 2"))
        #expect(lines.contains("headway_upstream_request_duration_seconds_bucket{\(labels),le=\"+Inf\"} 2"))
        #expect(lines.contains("headway_upstream_request_duration_seconds_sum{\(labels)} 1.5003"))
        #expect(lines.contains("headway_upstream_request_duration_seconds_count{\(labels)} 2"))
        let buckets = lines.filter { $0.hasPrefix("headway_upstream_request_duration_seconds_bucket") }
        #expect(buckets.count == EndpointTraffic.bucketBounds.count + 1)
    }

    @Test func labelValuesAreEscaped() {
        #expect(TrafficExposition.escaped("plain") == "plain")
        #expect(TrafficExposition.escaped("a\"b\\c\nd") == "a\\\"b\\\\c\\nd")
    }
}

/// The loops' sums of one endpoint across a drain: a loop that drops its pool keeps what it counted while the
/// cluster still knows the endpoint, so the `/metrics` series never goes down.
struct EndpointTrafficAcrossDrainsTests {
    @Test func aDroppedPoolsCountsStayUntilTheEndpointIsForgotten() throws {
        let loops = [EmbeddedEventLoop(), EmbeddedEventLoop()]
        let cluster = UpstreamCluster(
            configuration: .init(name: "web", minIdleConnectionsPerEndpoint: 0),
            eventLoops: loops,
            metrics: ProxyMetrics(),
            logger: Logger(label: "test")
        )
        let address = try SocketAddress(ipAddress: "127.0.0.2", port: 8080)
        func settle() {
            for loop in loops { loop.run() }
        }
        func counted() -> UInt64 {
            settle()
            return cluster.loops.flatMap { $0.responseFigures() }.reduce(0) { $0 + $1.traffic.count }
        }
        cluster.setEndpoints([address])
        #expect(counted() == 0)
        for loop in cluster.loops {
            loop.pools[0].responseFinished(status: 200, after: .milliseconds(1))
        }
        #expect(counted() == 2)
        let endpoint = try #require(cluster.endpoints.first)

        // Removed while a request of it is still in flight on some loop: both loops drop their empty pools,
        // the endpoint stays known (draining), and so do its counts.
        endpoint.requestStarted()
        cluster.setEndpoints([])
        #expect(counted() == 2)
        #expect(cluster.loops.allSatisfy { $0.pools.isEmpty })

        // Back before it was forgotten: the new pools go on from the old counts.
        cluster.setEndpoints([address])
        settle()
        #expect(cluster.endpoints.first === endpoint)
        cluster.loops[0].pools[0].responseFinished(status: 503, after: .milliseconds(1))
        #expect(counted() == 3)

        // Removed for good: once it is quiet and forgotten, its series go with it.
        endpoint.requestEnded()
        cluster.setEndpoints([])
        for loop in cluster.loops { loop.dropEmptyDrainingPools() }
        #expect(cluster.endpoints.isEmpty)
        #expect(counted() == 0)
    }
}
