import Foundation
import Headway
import HeadwayTestSupport
import NIOCore
import Testing

extension IntegrationTests {
    /// Headway between real clients (curl, wrk, raw sockets) and real pods (nginx, or Headway's demo pod where
    /// nginx cannot do what a test needs). Serialized: the pods share fixed loopback addresses.
    @Suite struct Proxy {

        @Test func roundRobinSpreadsExactlyOverThreePods() async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = pods.endpoints }
            // One curl, 30 URLs: one keep-alive client connection, so one loop serves all in order.
            let urls = (1...30).flatMap { ["--output", "/dev/null", "\(headway.listenURL)/r\($0)"] }
            let result = try await curl(["--dump-header", "-"] + urls)
            try await headway.stop()
            #expect(result.status == 0, "\(result.stderr)")
            #expect(podCounts(inHeaders: result.stdout) == ["pod-1": 10, "pod-2": 10, "pod-3": 10])
        }

        @Test(arguments: [0, 1 << 20, 100 << 20])
        func downloadsArriveByteIdentical(size: Int) async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            // Every pod serves the same bytes, whichever the request reaches.
            let original = try pods.pods[0].writeFile(named: "blob", size: size)
            for pod in pods.pods.dropFirst() { try pod.copyFile(original, named: "blob") }
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = pods.endpoints }
            let output = temporaryFile("download")
            defer { try? FileManager.default.removeItem(at: output) }
            let result = try await curl(["--fail", "--output", output.path, "\(headway.listenURL)/files/blob"])
            try await headway.stop()
            #expect(result.status == 0, "\(result.stderr)")
            let expected = try Data(contentsOf: original)
            let received = try Data(contentsOf: output)
            #expect(received.count == size)
            // Compared to a Bool first: on a mismatch, #expect would diff 100 MiB element by element.
            let identical = received == expected
            #expect(identical, "the body changed on the way")
        }

        @Test(arguments: [(0, false), (1 << 20, false), (100 << 20, false), (1 << 20, true), (100 << 20, true)])
        func uploadsArriveByteIdentical(size: Int, chunked: Bool) async throws {
            let pods = try await EchoPods.start()
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = pods.endpoints }
            let input = temporaryFile("upload")
            let output = temporaryFile("echoed")
            defer {
                try? FileManager.default.removeItem(at: input)
                try? FileManager.default.removeItem(at: output)
            }
            try TestData.writeRandomFile(to: input, size: size)
            var arguments = ["--fail", "--data-binary", "@\(input.path)", "--output", output.path]
            if chunked { arguments += ["--header", "Transfer-Encoding: chunked"] }
            let result = try await curl(arguments + ["\(headway.listenURL)/echo"])
            try await headway.stop()
            try await pods.stop()
            #expect(result.status == 0, "\(result.stderr)")
            let received = try Data(contentsOf: output)
            #expect(received.count == size)
            let identical = received == (try Data(contentsOf: input))
            #expect(identical, "the body changed on the way")
        }

        @Test func keepAliveReusesUpstreamConnections() async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = pods.endpoints }
            let result = try await Command.run(["wrk", "-t1", "-c4", "-d2s", "\(headway.listenURL)/"], timeout: 20)
            try await headway.stop()
            #expect(result.status == 0, "\(result.stderr)")
            var requests = 0
            var connections = 0
            for pod in pods.pods {
                let log = try pod.accessLog()
                requests += log.count
                connections += Set(log.map(\.connection)).count
            }
            #expect(requests > 500, "wrk pushed only \(requests) requests")
            // 4 client connections on one loop need at most 4 upstream connections per pod.
            #expect(connections <= 12, "\(connections) upstream connections for \(requests) requests")
        }

        @Test func closedPortIsRoutedAround() async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            let closed = "127.0.0.5:\(NginxPods.port)"
            // Outlier ejection off: every request's first attempt may land on the closed port and must be retried.
            let headway = try await InProcessHeadway.start(
                yaml: """
                    listeners: [{listen: "127.0.0.1:0", upstream: web}]
                    upstreams:
                      web:
                        endpoints: [\((pods.endpoints + [closed]).joined(separator: ", "))]
                        outlier_detection: {consecutive_5xx: 0, consecutive_gateway_failures: 0}
                    """
            )
            let urls = (1...40).flatMap { ["--output", "/dev/null", "\(headway.listenURL)/r\($0)"] }
            let result = try await curl(["--write-out", "%{http_code}\n"] + urls)
            let document = try await EndpointsDocument.fetch(from: headway)
            try await headway.stop()
            #expect(result.stdout.split(separator: "\n") == Array(repeating: "200", count: 40), "\(result.stdout)")
            let closedEndpoint = try #require(document.upstreams.first?.endpoints.first { $0.address == closed })
            #expect(closedEndpoint.failures >= 10)
            #expect(closedEndpoint.in_flight == 0)
        }

        @Test func noEndpointsAnswers503AndReadyFails() async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = pods.endpoints }
            let ready = try await curl([
                "--output", "/dev/null", "--write-out", "%{http_code}", "\(headway.adminURL)/ready",
            ])
            #expect(ready.stdout == "200")
            headway.application.clusters[0].setEndpoints([])
            try await Task.sleep(for: .milliseconds(100))
            let result = try await curl(["--include", "\(headway.listenURL)/"])
            let notReady = try await curl(["--write-out", "%{http_code}", "\(headway.adminURL)/ready"])
            try await headway.stop()
            #expect(result.stdout.hasPrefix("HTTP/1.1 503"), "\(result.stdout)")
            #expect(result.stdout.contains("Retry-After: 1"))
            #expect(result.stdout.contains("no endpoint of upstream 'default' is available"))
            #expect(notReady.stdout.hasSuffix("503"), "\(notReady.stdout)")
        }

        @Test func expect100ContinueIsRelayed() async throws {
            let pods = try await EchoPods.start()
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = pods.endpoints }
            let input = temporaryFile("2k")
            let output = temporaryFile("2k-echoed")
            defer {
                try? FileManager.default.removeItem(at: input)
                try? FileManager.default.removeItem(at: output)
            }
            try TestData.writeRandomFile(to: input, size: 2048)
            // --expect100-timeout 5: if the 100 did not come through, curl would stall 5 s and we would see no 100.
            let result = try await curl([
                "--verbose", "--expect100-timeout", "5", "--upload-file", input.path, "--output", output.path,
                "\(headway.listenURL)/echo",
            ])
            try await headway.stop()
            try await pods.stop()
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stderr.contains("< HTTP/1.1 100 Continue"), "\(result.stderr)")
            #expect((try Data(contentsOf: output)) == (try Data(contentsOf: input)))
        }

        @Test func headAndBodylessStatusesAreFramedCorrectly() async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            // One modification time on every pod: the conditional GET below may reach another pod than the HEAD
            // (written a second apart, its file answered 200 instead of 304 now and then).
            let modified = Date(timeIntervalSince1970: 1_796_000_000)
            for pod in pods.pods {
                let file = try pod.writeFile(named: "meg", size: 1 << 20)
                try FileManager.default.setAttributes([.modificationDate: modified], ofItemAtPath: file.path)
            }
            let echo = try await EchoPods.start(count: 1)
            let yaml = """
                listeners:
                  - listen: 127.0.0.1:0
                    upstream: files
                  - listen: 127.0.0.1:0
                    upstream: echo
                upstreams:
                  files:
                    endpoints: [\(pods.endpoints.joined(separator: ", "))]
                  echo:
                    endpoints: [\(echo.endpoints[0])]
                """
            let headway = try await InProcessHeadway.start(yaml: yaml)
            let echoURL =
                "http://127.0.0.1:\(try #require(await headway.application.waitUntilBound()?.listeners[1].port))"
            // HEAD keeps the pod's Content-Length and sends no body; the next request on the connection still works.
            let head = try await curl([
                "--head", "\(headway.listenURL)/files/meg", "--next", "--include", "\(headway.listenURL)/",
            ])
            let noContent = try await curl([
                "--include", "\(echoURL)/status/204", "--next", "--include", "\(echoURL)/healthz",
            ])
            let lastModified =
                head.stdout.split(whereSeparator: \.isNewline)
                .first { $0.lowercased().hasPrefix("last-modified:") }
                .map { $0.dropFirst("last-modified:".count).trimmingCharacters(in: .whitespaces) } ?? ""
            let notModified = try await curl([
                "--include", "--header", "If-Modified-Since: \(lastModified)", "\(headway.listenURL)/files/meg",
            ])
            try await headway.stop()
            try await echo.stop()
            #expect(head.stdout.contains("Content-Length: 1048576"), "\(head.stdout)")
            #expect(head.stdout.components(separatedBy: "HTTP/1.1 200").count == 3, "\(head.stdout)")
            #expect(
                head.stdout.hasSuffix("pod-2\n") || head.stdout.hasSuffix("pod-1\n") || head.stdout.hasSuffix("pod-3\n")
            )
            #expect(noContent.stdout.hasPrefix("HTTP/1.1 204"), "\(noContent.stdout)")
            #expect(noContent.stdout.hasSuffix("ok\n"), "\(noContent.stdout)")
            #expect(notModified.stdout.hasPrefix("HTTP/1.1 304"), "\(notModified.stdout)")
        }

        @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
            let pods = try await EchoPods.start()
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = pods.endpoints }
            let request =
                (1...5).map { "GET /p\($0) HTTP/1.1\r\nHost: test\r\n\r\n" }.joined()
                + "GET /p6 HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
            let response = try await RawHTTP.exchange(host: "127.0.0.1", port: headway.listen.port!, request: request)
            try await headway.stop()
            try await pods.stop()
            let order = (1...6).compactMap { response.range(of: "answered GET /p\($0)\n")?.lowerBound }
            #expect(order.count == 6, "\(response)")
            #expect(order == order.sorted())
            #expect(response.components(separatedBy: "HTTP/1.1 200 OK").count == 7)
        }

        @Test func oddTransferEncodingIsReframedNotSmuggled() async throws {
            let pods = try await EchoPods.start(count: 1)
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = pods.endpoints }
            // `Chunked` on a GET: NIO's encoder would write this body raw if the field were forwarded verbatim,
            // and the pod would read "hello..." as the start of a second request.
            let request =
                "GET /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: Chunked\r\n\r\n"
                + "5\r\nhello\r\n0\r\n\r\n"
                + "GET /headers HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
            let response = try await RawHTTP.exchange(host: "127.0.0.1", port: headway.listen.port!, request: request)
            try await headway.stop()
            try await pods.stop()
            #expect(response.components(separatedBy: "HTTP/1.1 200 OK").count == 3, "\(response)")
            #expect(response.contains("5\r\nhello\r\n0\r\n\r\n"), "\(response)")
            #expect(response.contains("x-forwarded-proto: http"))
            #expect(!response.contains("400"))
        }

        @Test func hopByHopFieldsAreStrippedAndForwardingFieldsSet() async throws {
            let pods = try await EchoPods.start(count: 1)
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = pods.endpoints }
            let result = try await curl([
                "--header", "Connection: keep-alive, X-Secret", "--header", "X-Secret: hunter2",
                "--header", "Keep-Alive: timeout=5", "--header", "Proxy-Connection: keep-alive", "--header",
                "TE: trailers",
                "--header", "X-Forwarded-For: 203.0.113.7", "--header", "X-Forwarded-Proto: https",
                "--header", "Host: shop.example", "\(headway.listenURL)/headers",
            ])
            try await headway.stop()
            try await pods.stop()
            let seen = result.stdout
            #expect(!seen.contains("x-secret"), "\(seen)")
            #expect(!seen.contains("keep-alive"), "\(seen)")
            #expect(!seen.contains("proxy-connection"), "\(seen)")
            #expect(!seen.contains("\nte:"), "\(seen)")
            #expect(!seen.contains("connection:"), "\(seen)")
            #expect(seen.contains("host: shop.example\n"))
            #expect(seen.contains("x-forwarded-for: 203.0.113.7, 127.0.0.1\n"), "\(seen)")
            #expect(seen.contains("x-forwarded-proto: http\n"), "\(seen)")
            #expect(seen.contains("x-forwarded-host: shop.example\n"), "\(seen)")
            #expect(seen.contains("via: 1.1 headway\n"), "\(seen)")
        }

        @Test func slowPodAnswers504AtRequestTimeout() async throws {
            let pods = try await EchoPods.start(count: 1)
            let headway = try await InProcessHeadway.start {
                $0[list: "--endpoints"] = pods.endpoints
                $0["--request-timeout"] = "300ms"
            }
            let result = try await curl(["--include", "\(headway.listenURL)/delay/3000"])
            let after = try await curl(["--include", "\(headway.listenURL)/quick"])
            try await headway.stop()
            try await pods.stop()
            #expect(result.stdout.hasPrefix("HTTP/1.1 504"), "\(result.stdout)")
            #expect(result.stdout.contains("did not respond within request_timeout (300ms)"))
            #expect(
                after.stdout.hasPrefix("HTTP/1.1 200"),
                "the late answer must not reach the next request: \(after.stdout)"
            )
            #expect(after.stdout.contains("answered GET /quick"))
        }

        @Test func podDyingMidResponseTruncatesTheClient() async throws {
            let pods = try await EchoPods.start(count: 1)
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = pods.endpoints }
            let result = try await curl(["\(headway.listenURL)/truncate"])
            let document = try await EndpointsDocument.fetch(from: headway)
            try await headway.stop()
            try await pods.stop()
            // curl's exit 18: "partial file" — the client sees the truncation instead of a clean short body.
            #expect(result.status == 18, "curl exited \(result.status): \(result.stderr)")
            #expect(document.upstreams[0].endpoints[0].in_flight == 0)
        }

        @Test func clientAbortMidUploadReleasesEverything() async throws {
            let pods = try await EchoPods.start(count: 1)
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = pods.endpoints }
            let request = "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 1000000\r\n\r\nonly-a-little"
            _ = try await RawHTTP.exchange(
                host: "127.0.0.1",
                port: headway.listen.port!,
                request: request,
                timeout: 0.5
            )
            try await Task.sleep(for: .milliseconds(200))
            let document = try await EndpointsDocument.fetch(from: headway)
            let after = try await curl(["\(headway.listenURL)/after"])
            try await headway.stop()
            try await pods.stop()
            let endpoint = document.upstreams[0].endpoints[0]
            #expect(endpoint.in_flight == 0)
            #expect(endpoint.connections == 0, "a half-sent upstream request must not be pooled")
            #expect(after.stdout.contains("answered GET /after"))
        }

        @Test func halfClosedClientStillGetsItsResponse() async throws {
            let pods = try await EchoPods.start(count: 1)
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = pods.endpoints }
            let response = try await RawHTTP.exchange(
                host: "127.0.0.1",
                port: headway.listen.port!,
                request: "GET /half HTTP/1.1\r\nHost: test\r\n\r\n",
                halfClose: true
            )
            try await headway.stop()
            try await pods.stop()
            #expect(response.hasPrefix("HTTP/1.1 200 OK"), "\(response)")
            #expect(response.contains("answered GET /half"))
        }
    }
}

extension IntegrationTests {
    /// The endpoint set changes while requests are in flight, as it will with DNS discovery.
    @Suite struct EndpointSetChanges {
        @Test func removedPodFinishesInFlightRequestsAndGetsNoNewOnes() async throws {
            let pods = try await EchoPods.start()
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = pods.endpoints }
            let cluster = headway.application.clusters[0]
            // Six slow requests on six connections: two land on each pod.
            let slow = Task {
                try await withThrowingTaskGroup(of: CommandResult.self) { group in
                    for _ in 0..<6 {
                        group.addTask { try await curl(["--include", "\(headway.listenURL)/delay/800"]) }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
            }
            try await Task.sleep(for: .milliseconds(300))
            let removed = try SocketAddress(ipAddress: "127.0.0.2", port: EchoPods.port)
            cluster.setEndpoints(pods.pods.map(\.address).filter { $0 != removed })
            try await Task.sleep(for: .milliseconds(50))
            let during = try await EndpointsDocument.fetch(from: headway)
            let urls = (1...20).flatMap { ["--output", "/dev/null", "\(headway.listenURL)/after\($0)"] }
            let after = try await curl(["--dump-header", "-"] + urls)
            let slowResults = try await slow.value
            try await Task.sleep(for: .milliseconds(100))
            let drained = try await EndpointsDocument.fetch(from: headway)
            try await headway.stop()
            try await pods.stop()

            #expect(slowResults.count == 6)
            for result in slowResults {
                #expect(
                    result.stdout.hasPrefix("HTTP/1.1 200"),
                    "an in-flight request failed: \(result.stdout) \(result.stderr)"
                )
            }
            let draining = during.upstreams[0].endpoints.first { $0.address == "127.0.0.2:\(EchoPods.port)" }
            #expect(draining?.state == "draining", "\(during)")
            #expect(podCounts(inHeaders: after.stdout) == ["pod-2": 10, "pod-3": 10])
            #expect(
                !drained.upstreams[0].endpoints.contains { $0.address == "127.0.0.2:\(EchoPods.port)" },
                "\(drained)"
            )
        }

        @Test func addedPodGetsTraffic() async throws {
            let pods = try await EchoPods.start()
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = [pods.endpoints[0]] }
            headway.application.clusters[0].setEndpoints(pods.pods.map(\.address))
            try await Task.sleep(for: .milliseconds(50))
            let urls = (1...30).flatMap { ["--output", "/dev/null", "\(headway.listenURL)/r\($0)"] }
            let result = try await curl(["--dump-header", "-"] + urls)
            try await headway.stop()
            try await pods.stop()
            #expect(podCounts(inHeaders: result.stdout) == ["pod-1": 10, "pod-2": 10, "pod-3": 10])
        }
    }

    /// What an operator reads: metrics and the failure answers.
    @Suite struct Observability {
        @Test func everyEndpointUnreachableAnswers502NamingIt() async throws {
            let headway = try await InProcessHeadway.start {
                $0[list: "--endpoints"] = ["127.0.0.5:\(NginxPods.port)", "127.0.0.6:\(NginxPods.port)"]
            }
            let result = try await curl(["--include", "\(headway.listenURL)/"])
            let metrics = try await curl(["\(headway.adminURL)/metrics"])
            try await headway.stop()
            #expect(result.stdout.hasPrefix("HTTP/1.1 502"), "\(result.stdout)")
            #expect(result.stdout.contains("could not connect to endpoint 127.0.0."), "\(result.stdout)")
            // Headway's own answer counts among what the clients were answered.
            #expect(metrics.stdout.contains("headway_responses_total{upstream=\"default\",status_class=\"5xx\"} 1"))
        }

        @Test func metricsCountResponsesPerEndpoint() async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = pods.endpoints }
            let urls = (1...9).flatMap { ["--output", "/dev/null", "\(headway.listenURL)/m\($0)"] }
            _ = try await curl(urls)
            let metrics = try await curl(["\(headway.adminURL)/metrics"])
            try await headway.stop()
            for pod in pods.endpoints {
                #expect(
                    metrics.stdout.contains(
                        "headway_upstream_responses_total{upstream=\"default\",endpoint=\"\(pod)\",status_class=\"2xx\"} 3"
                    ),
                    "\(metrics.stdout)"
                )
            }
            #expect(metrics.stdout.contains("headway_upstream_request_duration_seconds_count"))
            #expect(
                metrics.stdout.contains("headway_upstream_connections_open{upstream=\"default\",protocol=\"http1\"} 3")
            )
        }

        /// Each loop counts its own responses; a scrape adds up both loops', so nothing is lost or counted twice.
        @Test func metricsAddUpEveryLoopsResponses() async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            let headway = try await InProcessHeadway.start {
                $0[list: "--endpoints"] = pods.endpoints
                $0["--threads"] = "2"
            }
            // Two connections, one after the other: the listener hands them to the two loops in turn.
            for connection in 1...2 {
                let urls = (1...6).flatMap { ["--output", "/dev/null", "\(headway.listenURL)/c\(connection)-\($0)"] }
                _ = try await curl(urls)
            }
            let metrics = try await curl(["\(headway.adminURL)/metrics"])
            try await headway.stop()
            for pod in pods.endpoints {
                let labels = "upstream=\"default\",endpoint=\"\(pod)\""
                #expect(
                    metrics.stdout.contains("headway_upstream_responses_total{\(labels),status_class=\"2xx\"} 4"),
                    "\(metrics.stdout)"
                )
                #expect(metrics.stdout.contains("headway_upstream_request_duration_seconds_count{\(labels)} 4"))
            }
            #expect(metrics.stdout.contains("headway_responses_total{upstream=\"default\",status_class=\"2xx\"} 12"))
            #expect(
                metrics.stdout.contains("headway_upstream_connections_open{upstream=\"default\",protocol=\"http1\"} 6"),
                "each loop keeps its own connection to each pod: \(metrics.stdout)"
            )
        }

        /// What Prometheus users run in CI against an exporter: every family has HELP and TYPE, names and
        /// samples are well formed. Scraped after traffic, a refused connection and a health check, so that
        /// every kind of family (counter, gauge, histogram, the process figures) is in the text.
        @Test func metricsPassPromtool() async throws {
            let pods = try await NginxPods.start(count: 2)
            defer { pods.stop() }
            let headway = try await InProcessHeadway.start {
                $0[list: "--endpoints"] = pods.endpoints + ["127.0.0.9:\(NginxPods.port)"]
                $0["--health-path"] = "/healthz"
                $0["--health-interval"] = "200ms"
                $0["--health-timeout"] = "100ms"
            }
            _ = try await curl((1...6).flatMap { ["--output", "/dev/null", "\(headway.listenURL)/p\($0)"] })
            try await Task.sleep(for: .milliseconds(300))
            let metrics = try await curl(["\(headway.adminURL)/metrics"]).stdout
            try await headway.stop()
            let input = temporaryFile("metrics.txt")
            defer { try? FileManager.default.removeItem(at: input) }
            try metrics.write(to: input, atomically: true, encoding: .utf8)
            let check = try await Command.run(["sh", "-c", "promtool check metrics < '\(input.path)'"])
            #expect(check.status == 0, "promtool: \(check.stdout)\(check.stderr)")
            #expect(check.stdout.isEmpty && check.stderr.isEmpty, "promtool: \(check.stdout)\(check.stderr)")
            #expect(metrics.contains("headway_build_info{version=\"\(HeadwayVersion.string)\"} 1"))
            for family in MetricFamily.allCases
            where !family.rawValue.hasPrefix("headway_dns") {
                #expect(metrics.contains("# HELP \(family.rawValue) "), "no HELP line for \(family.rawValue)")
            }
            let resident = metrics.split(separator: "\n").first { $0.hasPrefix("process_resident_memory_bytes ") }
            #expect(resident.flatMap { Double($0.split(separator: " ")[1]) }.map { $0 > 1_000_000 } == true)
            for name in [
                "process_cpu_seconds_total", "process_open_fds", "process_max_fds", "process_start_time_seconds",
            ] {
                #expect(metrics.contains("\n\(name) "), "no \(name)")
            }
        }
    }
}
