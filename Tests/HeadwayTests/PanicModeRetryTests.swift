import Logging
import NIOCore
import NIOEmbedded
import Testing

@testable import Headway

/// Panic mode spreads first attempts over every endpoint; a retry goes to a healthy one.
struct PanicModeRetryTests {
    @Test func aRetryInPanicModeGoesToAHealthyEndpoint() throws {
        let loop = EmbeddedEventLoop()
        let cluster = UpstreamCluster(
            configuration: .init(name: "web", minIdleConnectionsPerEndpoint: 0),
            eventLoops: [loop],
            metrics: ProxyMetrics(),
            logger: Logger(label: "test")
        )
        cluster.setEndpoints(try (2...4).map { try SocketAddress(ipAddress: "127.0.0.\($0)", port: 8080) })
        loop.run()
        let loopCluster = cluster.loops[0]
        let pools = loopCluster.pools
        pools[0].endpoint.health = .unhealthy
        pools[1].endpoint.health = .unhealthy
        loopCluster.refreshRoutable()
        #expect(loopCluster.healthyCount == 1)

        var firstAttempts = Set<ObjectIdentifier>()
        for _ in 0..<30 {
            let first = try #require(loopCluster.pickPool(excluding: nil))
            firstAttempts.insert(ObjectIdentifier(first))
            for failed in [pools[0], pools[1]] {
                #expect(loopCluster.pickPool(excluding: failed) === pools[2])
            }
        }
        #expect(firstAttempts.count == 3, "panic mode spreads first attempts over every endpoint")
        // The healthy endpoint failed too: the retry goes wherever the policy says, but not back to it.
        #expect(loopCluster.pickPool(excluding: pools[2]) !== pools[2])
    }
}
