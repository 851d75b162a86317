import Foundation
import Headway
import HeadwayTestSupport
import NIOCore
import NIOPosix
import Testing

extension IntegrationTests {
    /// Slow, stubborn and greedy clients (HTTP-EDGE-CASES C1–C7): each is cut off by its limit while a normal
    /// client on the same proxy keeps full service.
    @Suite struct HostileClients {
        private func headway(pods: NginxPods, client: String) async throws -> InProcessHeadway {
            try await InProcessHeadway.start(
                yaml: """
                    client: {\(client)}
                    listeners: [{listen: "127.0.0.1:0", upstream: web}]
                    upstreams:
                      web:
                        endpoints: [\(pods.endpoints.joined(separator: ", "))]
                    """
            )
        }

        private func connect(_ headway: InProcessHeadway) throws -> RawConnection {
            try RawConnection(host: "127.0.0.1", port: headway.listen.port!)
        }

        /// A normal client's requests during the attack: all must succeed, and quickly.
        private func normalTraffic(
            _ headway: InProcessHeadway,
            count: Int
        ) async throws -> [(status: Int, seconds: Double)] {
            try await sequentialGets(headway.listenURL + "/", count: count)
        }

        @Test func slowlorisGets408AtTheHeaderDeadlineWhileOthersAreServed() async throws {
            let pods = try await NginxPods.start(count: 1)
            defer { pods.stop() }
            let headway = try await self.headway(pods: pods, client: "header_timeout: 1s")
            let slow = try self.connect(headway)
            // One header line every 200 ms: each read is recent, but the head never completes.
            let trickle = Task {
                try slow.send("GET / HTTP/1.1\r\nHost: web\r\n")
                for index in 0..<20 {
                    try await Task.sleep(for: .milliseconds(200))
                    try? slow.send("X-Slow-\(index): 1\r\n")
                }
            }
            let others = try await self.normalTraffic(headway, count: 20)
            let answer = await slow.readUntilClosed(timeout: 4)
            trickle.cancel()
            try await headway.stop()
            #expect(answer.text.hasPrefix("HTTP/1.1 408 Request Timeout"), "\(answer.text)")
            #expect(answer.text.contains("header_timeout"))
            let closedAfter = try #require(answer.closedAfter, "the slowloris connection stayed open")
            #expect(closedAfter < 2.5)
            #expect(others.allSatisfy { $0.status == 200 && $0.seconds < 0.2 }, "\(others)")
        }

        @Test func aStalledBodyGets408AtTheBodyTimeout() async throws {
            // A pod that waits for the whole body before it answers (nginx's `return` would answer at once).
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let pod = try await ScriptedPod.start(
                host: "127.0.0.2",
                port: NginxPods.port,
                behaviour: .blackhole,
                group: group
            )
            let headway = try await InProcessHeadway.start(
                yaml: """
                    client: {body_timeout: 1s}
                    listeners: [{listen: "127.0.0.1:0", upstream: web}]
                    upstreams: {web: {endpoints: [\(pod.address)]}}
                    """
            )
            let slow = try self.connect(headway)
            try slow.send("POST /upload HTTP/1.1\r\nHost: web\r\nContent-Length: 1000\r\n\r\n0123456789")
            let answer = await slow.readUntilClosed(timeout: 4)
            let endpoints = try await EndpointsDocument.fetch(from: headway)
            try await headway.stop()
            try await pod.stop()
            try await group.shutdownGracefully()
            #expect(answer.text.hasPrefix("HTTP/1.1 408 Request Timeout"), "\(answer.text)")
            #expect(answer.text.contains("body_timeout"))
            #expect(
                answer.closedAfter.map { $0 >= 0.9 && $0 < 2.5 } == true,
                "\(String(describing: answer.closedAfter))"
            )
            // The half-sent request was abandoned upstream too.
            #expect(endpoints.upstreams[0].endpoints.allSatisfy { $0.in_flight == 0 })
        }

        @Test func anIdleKeepAliveConnectionIsClosedAtTheIdleTimeout() async throws {
            let pods = try await NginxPods.start(count: 1)
            defer { pods.stop() }
            let headway = try await self.headway(pods: pods, client: "idle_timeout: 500ms")
            let idle = try self.connect(headway)
            try idle.send("GET / HTTP/1.1\r\nHost: web\r\n\r\n")
            let answer = await idle.readUntilClosed(timeout: 3)
            try await headway.stop()
            #expect(answer.text.hasPrefix("HTTP/1.1 200 OK"))
            #expect(
                answer.closedAfter.map { $0 >= 0.45 && $0 < 1.5 } == true,
                "\(String(describing: answer.closedAfter))"
            )
        }

        @Test func pastMaxConnectionsANewClientGets503AtOnce() async throws {
            let pods = try await NginxPods.start(count: 1)
            defer { pods.stop() }
            let headway = try await self.headway(pods: pods, client: "max_connections: 3")
            let hoarders = try (0..<3).map { _ in try self.connect(headway) }
            try await Task.sleep(for: .milliseconds(100))
            let refused = try await curl(["--include", headway.listenURL + "/"])
            // Closing the hoarders frees their places.
            for hoarder in hoarders { try hoarder.send("GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n") }
            for hoarder in hoarders { _ = await hoarder.readUntilClosed(timeout: 2) }
            try await Task.sleep(for: .milliseconds(100))
            let admitted = try await sequentialGets(headway.listenURL + "/", count: 1)
            try await headway.stop()
            #expect(refused.stdout.hasPrefix("HTTP/1.1 503 Service Unavailable"), "\(refused.stdout)")
            #expect(refused.stdout.contains("Retry-After: 1"))
            #expect(refused.stdout.contains("max_connections (3)"))
            #expect(admitted.first?.status == 200)
        }

        @Test func aBodyOverMaxRequestBodyGets413BeforeItReachesAPod() async throws {
            let pods = try await NginxPods.start(count: 1)
            defer { pods.stop() }
            let headway = try await self.headway(pods: pods, client: "max_request_body: 1KiB")
            let declared = try await curl(
                [
                    "--output", "/dev/null", "--write-out", "%{http_code}", "--data-binary",
                    String(repeating: "a", count: 2000), headway.listenURL + "/",
                ]
            )
            let small = try await curl(
                [
                    "--output", "/dev/null", "--write-out", "%{http_code}", "--data-binary",
                    String(repeating: "c", count: 1000), headway.listenURL + "/",
                ]
            )
            let posts = try pods.pods[0].accessLog().filter { $0.method == "POST" }.count
            // A chunked body's size is known only as it arrives: its head has gone upstream when the limit
            // is crossed, and that upstream request is aborted.
            let chunked = try await curl(
                [
                    "--output", "/dev/null", "--write-out", "%{http_code}", "--header", "Transfer-Encoding: chunked",
                    "--data-binary", String(repeating: "b", count: 5000), headway.listenURL + "/",
                ]
            )
            try await headway.stop()
            #expect(declared.stdout == "413")
            #expect(small.stdout == "200")
            #expect(posts == 1, "only the small POST may reach the pod; \(posts) did")
            #expect(chunked.stdout == "413")
        }

        @Test func aClientThatStopsReadingIsDisconnectedAtTheWriteTimeout() async throws {
            let pods = try await NginxPods.start(count: 1)
            defer { pods.stop() }
            try pods.pods[0].writeFile(named: "big", size: 48 << 20)
            let headway = try await self.headway(pods: pods, client: "write_timeout: 1s")
            let reader = try self.connect(headway)
            try reader.send("GET /files/big HTTP/1.1\r\nHost: web\r\n\r\n")
            // The reader takes nothing: the buffers fill, Headway stops reading the pod, then gives up.
            try await Task.sleep(for: .milliseconds(500))
            let stuck = try await EndpointsDocument.endpoint(pods.endpoints[0], of: headway)?.in_flight
            let others = try await self.normalTraffic(headway, count: 5)
            let released = try await waitFor(timeout: .seconds(3)) {
                try await EndpointsDocument.endpoint(pods.endpoints[0], of: headway)?.in_flight == 0
            }
            let rest = await reader.readUntilClosed(timeout: 10)
            try await headway.stop()
            #expect(stuck == 1, "the slow reader's request was not in flight")
            #expect(others.allSatisfy { $0.status == 200 && $0.seconds < 0.2 }, "\(others)")
            #expect(released != nil, "the slow reader's exchange was never abandoned")
            #expect(rest.closedAfter != nil)
            #expect(rest.text.utf8.count < 48 << 20, "the whole file arrived: the reader was not cut off")
        }

        /// The sum of a metric's samples in Headway's `/metrics`.
        private func metric(_ name: String, of headway: InProcessHeadway) async throws -> Double {
            let text = try await curl(["\(headway.adminURL)/metrics"]).stdout
            return text.split(separator: "\n")
                .filter { $0.hasPrefix(name + "{") || $0.hasPrefix(name + " ") }
                .compactMap { Double($0.split(separator: " ").last ?? "") }
                .reduce(0, +)
        }

        @Test func nothingLeaksOnceHostileClientsLeave() async throws {
            let pods = try await NginxPods.start(count: 1)
            defer { pods.stop() }
            let headway = try await self.headway(pods: pods, client: "header_timeout: 10s")
            _ = try await sequentialGets(headway.listenURL + "/", count: 3)
            // Half a head, half a body, a complete request left unread, an idle connection: then all vanish.
            let abuses = [
                "GET / HTTP/1.1\r\nHost: web\r\nX-Half",
                "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 100\r\n\r\nhalf",
                "GET / HTTP/1.1\r\nHost: web\r\n\r\n",
                "",
            ]
            var connections: [RawConnection] = []
            for index in 0..<40 {
                let connection = try self.connect(headway)
                let abuse = abuses[index % abuses.count]
                if !abuse.isEmpty { try connection.send(abuse) }
                connections.append(connection)
            }
            try await Task.sleep(for: .milliseconds(300))
            let during = try await self.metric("headway_client_connections_open", of: headway)
            for connection in connections { connection.close() }
            let settled = try await waitFor(timeout: .seconds(3)) {
                let clients = try await self.metric("headway_client_connections_open", of: headway)
                // Upstream connections may stay pooled (idle) for reuse; none may stay busy.
                let open = try await self.metric("headway_upstream_connections_open", of: headway)
                let idle = try await self.metric("headway_upstream_connections_idle", of: headway)
                return clients == 0 && open == idle
            }
            let inFlight = try await EndpointsDocument.endpoint(pods.endpoints[0], of: headway)?.in_flight
            try await headway.stop()
            #expect(during == 40, "client connections while the abusers were connected: \(during)")
            #expect(settled != nil, "connection gauges did not return to their baseline")
            #expect(inFlight == 0)
        }
    }
}
