import Foundation
import Headway
import HeadwayTestSupport
import NIOCore
import NIOPosix
import Testing

extension IntegrationTests {
    /// `Upgrade` (WebSocket): tunnelled only once the pod answers 101 (HTTP-EDGE-CASES R27).
    @Suite struct Upgrades {
        private static let upgradeRequest =
            "GET /chat HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

        @Test func aWebSocketUpgradeBecomesATunnelAfterThePodSays101() async throws {
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let pod = try await ScriptedPod.start(
                host: "127.0.0.2",
                port: NginxPods.port,
                behaviour: .switchProtocolsAndEcho,
                group: group
            )
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = [pod.address] }
            let client = try RawConnection(host: "127.0.0.1", port: headway.listen.port!)
            try client.send(Self.upgradeRequest)
            let switched = await client.readUntilClosed(timeout: 0.5)
            try client.send("hello through the tunnel")
            let echoed = await client.readUntilClosed(timeout: 0.5)
            try client.send("and again")
            let again = await client.readUntilClosed(timeout: 0.5)
            // The client leaving ends the tunnel at once: the drain then has nothing to wait for.
            client.close()
            let drain = ContinuousClock.now
            try await headway.stop()
            let drainTime = ContinuousClock.now - drain
            try await pod.stop()
            try await group.shutdownGracefully()

            #expect(switched.closedAfter == nil)
            #expect(switched.text.hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"), "\(switched.text)")
            #expect(switched.text.contains("Upgrade: websocket\r\n"))
            #expect(switched.text.contains("Connection: Upgrade\r\n"))
            #expect(
                !switched.text.lowercased().contains("content-length")
                    && !switched.text.lowercased().contains("transfer-encoding")
            )
            #expect(echoed.text == "hello through the tunnel")
            #expect(again.text == "and again")
            #expect(drainTime < .seconds(2), "the closed tunnel kept the drain waiting \(drainTime)")
        }

        @Test func aDeclinedUpgradeIsAnsweredThenTheConnectionCloses() async throws {
            let pods = try await NginxPods.start(count: 1)
            defer { pods.stop() }
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = pods.endpoints }
            let client = try RawConnection(host: "127.0.0.1", port: headway.listen.port!)
            try client.send(Self.upgradeRequest)
            let answer = await client.readUntilClosed(timeout: 2)
            try await headway.stop()
            // nginx answers 200 to anything: no switch, so the client's next bytes cannot be trusted.
            #expect(answer.text.hasPrefix("HTTP/1.1 200 OK"), "\(answer.text)")
            #expect(answer.text.contains("Connection: close"))
            #expect(answer.closedAfter != nil)
        }

        @Test func anH2CUpgradeIsStrippedAndTheConnectionStaysHTTP1() async throws {
            let pods = try await NginxPods.start(count: 1)
            defer { pods.stop() }
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = pods.endpoints }
            let answer = try await RawHTTP.exchange(
                host: "127.0.0.1",
                port: headway.listen.port!,
                request: "GET /a HTTP/1.1\r\nHost: web\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                    + "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nGET /b HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n",
                timeout: 5
            )
            try await headway.stop()
            #expect(answer.components(separatedBy: "HTTP/1.1 200 OK").count == 3, "both requests answered: \(answer)")
            #expect(!answer.contains("101"))
        }
    }
}
