import Foundation
import Headway
import HeadwayTestSupport
import NIOCore
import NIOPosix
import Testing

extension IntegrationTests {
    /// Pods that die, hang or degrade under real traffic: what the client sees, and how fast Headway reacts.
    @Suite struct Health {
        /// Fast checks, so that a test sees several rounds in a second or two.
        private func headwayWithChecks(
            endpoints: [String],
            interval: String = "200ms",
            healthyThreshold: Int = 2,
            unhealthyThreshold: Int = 2
        ) async throws -> InProcessHeadway {
            try await InProcessHeadway.start {
                $0[list: "--endpoints"] = endpoints
                $0["--health-path"] = "/healthz"
                $0["--health-interval"] = interval
                $0["--health-timeout"] = "100ms"
                $0["--healthy-threshold"] = "\(healthyThreshold)"
                $0["--unhealthy-threshold"] = "\(unhealthyThreshold)"
            }
        }

        private func health(of address: String, _ headway: InProcessHeadway) async throws -> String? {
            try await EndpointsDocument.endpoint(address, of: headway)?.health
        }

        @Test func aKilledPodCostsTheClientNoRequest() async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            let headway = try await self.headwayWithChecks(endpoints: pods.endpoints, interval: "300ms")
            let load = Task {
                try await Command.run(["wrk", "-t1", "-c8", "-d4s", "\(headway.listenURL)/"], timeout: 30)
            }
            try await Task.sleep(for: .seconds(1))
            let victim = pods.pods[1]
            victim.kill()
            // Failing checks (connect refused) every interval: unhealthy after 2, within 3 intervals plus jitter.
            let detected = try await waitFor(timeout: .seconds(3)) {
                try await self.health(of: victim.address, headway) == "unhealthy"
            }
            let result = try await load.value
            try await headway.stop()
            let summary = WrkSummary(result.stdout)
            #expect(summary.requests > 1000, "\(result.stdout)")
            #expect(summary.non2xx == 0, "requests failed after the kill: \(result.stdout)")
            #expect(summary.socketErrors == 0, "\(result.stdout)")
            let detection = try #require(detected, "the killed pod was never marked unhealthy")
            #expect(detection < .milliseconds(990 + 100), "marked unhealthy only after \(detection)")
            print(
                "killed pod: \(summary.requests) requests, \(summary.non2xx) failed; marked unhealthy \(detection) after the kill"
            )
        }

        /// A pod that dies under load is both failed by its checks and ejected by the passive ones (its connects
        /// are refused); once it restarts, passing checks bring it back at once, not when the ejection ends.
        @Test func aKilledPodThatRestartsIsBackWithinItsHealthyChecks() async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            let headway = try await InProcessHeadway.start(
                yaml: """
                    listeners: [{listen: "127.0.0.1:0", upstream: web}]
                    upstreams:
                      web:
                        endpoints: [\(pods.endpoints.joined(separator: ", "))]
                        health_check: {path: /healthz, interval: 500ms, timeout: 300ms, healthy_threshold: 2, unhealthy_threshold: 2}
                        outlier_detection: {consecutive_gateway_failures: 1, base_ejection_time: 30s}
                    """
            )
            let victim = pods.pods[1]
            victim.kill()
            // Light load until the passive check has ejected it and the active checks have failed it.
            let out = try await waitFor(timeout: .seconds(5)) {
                _ = try await curl(["--output", "/dev/null", headway.listenURL + "/"])
                let endpoint = try await EndpointsDocument.endpoint(victim.address, of: headway)
                return endpoint?.ejections == 1 && endpoint?.last_check == "fail"
            }
            #expect(out != nil, "the killed pod was not both ejected and failed by its checks")

            let revived = try await NginxPod.start(name: victim.name, host: victim.host, port: victim.port)
            defer { revived.stop() }
            let restart = ContinuousClock.now
            var firstAnswer: Duration?
            for _ in 0..<100 where firstAnswer == nil {
                let result = try await curl(["--dump-header", "-", "--output", "/dev/null", headway.listenURL + "/"])
                if podCounts(inHeaders: result.stdout)[victim.name] != nil {
                    firstAnswer = ContinuousClock.now - restart
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            let ready = try await curl([
                "--write-out", "%{http_code}", "--output", "/dev/null", headway.adminURL + "/ready",
            ])
            try await headway.stop()
            let back = try #require(firstAnswer, "the restarted pod got no request in 100 tries")
            // interval × healthy_threshold + interval, plus the checks' 10% jitter and the load's own pace.
            #expect(back < .milliseconds(1_500 + 150 + 300), "the restarted pod took its first request after \(back)")
            #expect(ready.stdout == "200")
            print("restarted pod: first request \(back) after the restart")
        }

        @Test func readyIsUnavailableWhileNoPodCanTakeTraffic() async throws {
            let pods = try await NginxPods.start(count: 2)
            defer { pods.stop() }
            let headway = try await self.headwayWithChecks(endpoints: pods.endpoints)
            let readyStatus = {
                try await curl(["--write-out", "%{http_code}", "--output", "/dev/null", headway.adminURL + "/ready"])
                    .stdout
            }
            #expect(try await waitFor(timeout: .seconds(2)) { try await readyStatus() == "200" } != nil)
            for pod in pods.pods { pod.kill() }
            let unready = try await waitFor(timeout: .seconds(3)) { try await readyStatus() == "503" }
            let reason = try await curl([headway.adminURL + "/ready"]).stdout
            let liveness = try await curl([
                "--write-out", "%{http_code}", "--output", "/dev/null", headway.adminURL + "/healthz",
            ])
            let request = try await curl([
                "--write-out", "%{http_code}", "--output", "/dev/null", headway.listenURL + "/",
            ])
            try await headway.stop()
            #expect(unready != nil, "/ready stayed 200 with every pod down")
            #expect(liveness.stdout == "200", "liveness is the process serving, whatever the pods do")
            #expect(reason.contains("upstream 'default' has no healthy endpoint (0 of 2)"), "\(reason)")
            #expect(request.stdout == "503")
        }

        @Test func readinessCanBeDecoupledFromThePods() async throws {
            let headway = try await InProcessHeadway.start(
                yaml: """
                    ready_requires_endpoints: false
                    listeners: [{listen: "127.0.0.1:0", upstream: web}]
                    upstreams:
                      web:
                        endpoints: [127.0.0.9:1]
                        health_check: {path: /healthz, interval: 200ms, timeout: 100ms}
                    """
            )
            let down = try await EndpointsDocument.fetch(from: headway).upstreams[0].healthy_endpoints
            let ready = try await curl([
                "--write-out", "%{http_code}", "--output", "/dev/null", headway.adminURL + "/ready",
            ])
            try await headway.stop()
            #expect(down == 0)
            #expect(ready.stdout == "200")
        }

        @Test func aFailingHealthCheckTakesThePodOutAndItsRecoveryBringsItBack() async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            let headway = try await self.headwayWithChecks(endpoints: pods.endpoints)
            let sick = pods.pods[2]
            try #require(
                try await waitFor(timeout: .seconds(2)) { headway.application.clusters[0].healthSummary.healthy == 3 }
                    != nil
            )

            try sick.setHealthCheckFailing(true)
            let ejected = try await waitFor(timeout: .seconds(2)) {
                try await self.health(of: sick.address, headway) == "unhealthy"
            }
            #expect(ejected != nil, "the pod whose /healthz fails stayed in rotation")
            let endpoint = try #require(try await EndpointsDocument.endpoint(sick.address, of: headway))
            #expect(endpoint.last_check == "fail")
            #expect(endpoint.last_check_detail == "HTTP 503")
            let during = try await curl(
                ["--dump-header", "-", "--output", "/dev/null"] + Array(repeating: headway.listenURL + "/", count: 30)
            )
            let countsDuring = podCounts(inHeaders: during.stdout)
            #expect(countsDuring[sick.name] == nil, "the unhealthy pod still got requests: \(countsDuring)")
            #expect(countsDuring.values.reduce(0, +) == 30)

            try sick.setHealthCheckFailing(false)
            let restored = try await waitFor(timeout: .seconds(2)) {
                try await self.health(of: sick.address, headway) == "healthy"
            }
            let back = try #require(restored, "the recovered pod did not come back")
            // Two passing checks in a row are needed: at least one interval (minus jitter) after the first.
            #expect(back >= .milliseconds(150), "back after \(back), before healthy_threshold checks could pass")
            let after = try await curl(
                ["--dump-header", "-", "--output", "/dev/null"] + Array(repeating: headway.listenURL + "/", count: 30)
            )
            #expect(podCounts(inHeaders: after.stdout)[sick.name] == 10, "\(podCounts(inHeaders: after.stdout))")
            try await headway.stop()
        }

        /// Two nginx pods and a pod that accepts connections and never answers (on 127.0.0.5) behind Headway,
        /// whose `web` upstream `upstream` writes from the pods' addresses and the blackhole's; `body` runs
        /// against Headway (and is given the blackhole's address), and everything stops before its result
        /// is returned.
        private func withBlackhole<Result>(
            upstream: (_ pods: [String], _ blackhole: String) -> String,
            run body: (InProcessHeadway, _ blackhole: String) async throws -> Result
        ) async throws -> Result {
            let pods = try await NginxPods.start(count: 2)
            defer { pods.stop() }
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let blackhole = try await ScriptedPod.start(
                host: "127.0.0.5",
                port: NginxPods.port,
                behaviour: .blackhole,
                group: group
            )
            let headway = try await InProcessHeadway.start(
                yaml: """
                    listeners: [{listen: "127.0.0.1:0", upstream: web}]
                    upstreams:
                      web:
                    \(upstream(pods.endpoints, blackhole.address))
                    """
            )
            let result = try await body(headway, blackhole.address)
            try await headway.stop()
            try await blackhole.stop()
            try await group.shutdownGracefully()
            return result
        }

        @Test func aBlackholedPodTimesOutThenIsEjectedAndNobodyWaitsOnItAgain() async throws {
            let (answers, ejected) = try await self.withBlackhole(
                upstream: { pods, blackhole in
                    """
                        endpoints: [\(pods[0]), \(pods[1]), \(blackhole)]
                        request_timeout: 500ms
                        outlier_detection: {consecutive_gateway_failures: 2, base_ejection_time: 30s}
                    """
                },
                run: { headway, blackhole in
                    let answers = try await sequentialGets(headway.listenURL + "/", count: 15)
                    return (answers, try await EndpointsDocument.endpoint(blackhole, of: headway))
                }
            )

            #expect(answers.count == 15)
            let timeouts = answers.filter { $0.status == 504 }
            #expect(timeouts.count == 2, "\(answers)")
            for timeout in timeouts {
                #expect(timeout.seconds >= 0.45 && timeout.seconds < 1.0, "a 504 after \(timeout.seconds) s")
            }
            let lastTimeout = try #require(answers.lastIndex { $0.status == 504 })
            let afterEjection = answers[(lastTimeout + 1)...]
            #expect(afterEjection.count >= 8)
            #expect(afterEjection.allSatisfy { $0.status == 200 && $0.seconds < 0.2 }, "\(afterEjection)")
            #expect(ejected?.health == "ejected")
            #expect(ejected?.ejections == 1)
            #expect(
                ejected?.last_ejection_reason?.contains("2 consecutive gateway failures") == true,
                "\(String(describing: ejected))"
            )
        }

        /// With `per_try_timeout`, a GET caught on a pod that never answers goes to another pod and succeeds; a
        /// POST there may have been processed, so it waits `request_timeout` and gets its 504 (found by
        /// scripts/chaos, where GETs on a frozen pod failed).
        @Test func perTryTimeoutSendsAGetCaughtOnABlackholeElsewhere() async throws {
            let (gets, posts) = try await self.withBlackhole(
                upstream: { pods, blackhole in
                    """
                        endpoints: [\(blackhole), \(pods[0]), \(pods[1])]
                        request_timeout: 2s
                        per_try_timeout: 200ms
                        outlier_detection: {consecutive_gateway_failures: 0}
                    """
                },
                run: { headway, _ in
                    let gets = try await sequentialGets(headway.listenURL + "/", count: 9)
                    // Round-robin: three POSTs in a row meet each pod once.
                    let posts = try await curl(
                        ["--write-out", "%{http_code} %{time_total}\n", "--data", "x"]
                            + (1...3).flatMap { _ in ["--output", "/dev/null", headway.listenURL + "/"] }
                    )
                    return (gets, posts)
                }
            )

            #expect(gets.allSatisfy { $0.status == 200 }, "\(gets)")
            let retried = gets.filter { $0.seconds >= 0.18 }
            #expect(retried.count >= 3, "about every other GET meets the blackhole first: \(gets)")
            #expect(retried.allSatisfy { $0.seconds < 1.0 }, "\(retried)")
            let postStatuses = posts.stdout.split(separator: "\n").map { $0.split(separator: " ")[0] }
            #expect(postStatuses.sorted() == ["200", "200", "504"], "\(posts.stdout)")
            #expect(posts.stdout.contains("504 2."), "the POST waited request_timeout: \(posts.stdout)")
        }

        @Test func allPodsDownAnswers503FastAndTrafficResumesWhenTheyReturn() async throws {
            var pods = try await NginxPods.start()
            defer { pods.stop() }
            let headway = try await self.headwayWithChecks(endpoints: pods.endpoints, healthyThreshold: 1)
            #expect(try await sequentialGets(headway.listenURL + "/", count: 3).allSatisfy { $0.status == 200 })

            for pod in pods.pods { pod.kill() }
            // Until the checks notice, connects are refused and retried; every answer is still quick.
            let meanwhile = try await sequentialGets(headway.listenURL + "/", count: 5)
            #expect(meanwhile.allSatisfy { $0.status >= 500 && $0.seconds < 0.5 }, "\(meanwhile)")
            let allDown = try await waitFor(timeout: .seconds(2)) {
                try await EndpointsDocument.fetch(from: headway).upstreams[0].endpoints.allSatisfy {
                    $0.health == "unhealthy"
                }
            }
            #expect(allDown != nil)
            let down = try await sequentialGets(headway.listenURL + "/", count: 20)
            #expect(down.count == 20)
            #expect(down.allSatisfy { $0.status == 503 && $0.seconds < 0.2 }, "\(down)")
            let slowest = down.map(\.seconds).max() ?? 0
            #expect(try await EndpointsDocument.fetch(from: headway).upstreams[0].panic_mode)

            pods.stop()
            pods = try await NginxPods.start()
            let resumed = try await waitFor(timeout: .seconds(3)) {
                try await sequentialGets(headway.listenURL + "/", count: 1).first?.status == 200
            }
            #expect(resumed != nil, "traffic did not resume after the pods came back")
            let back = try await sequentialGets(headway.listenURL + "/", count: 20)
            try await headway.stop()
            #expect(back.allSatisfy { $0.status == 200 }, "\(back)")
            print(
                "all pods down: slowest 503 took \(slowest) s; traffic resumed \(resumed.map { "\($0)" } ?? "never") after restart"
            )
        }

        @Test func aPostWhosePodResetsMidBodyGets502AndIsNotRetried() async throws {
            let pods = try await NginxPods.start(count: 1)
            defer { pods.stop() }
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let resetting = try await ScriptedPod.start(
                host: "127.0.0.5",
                port: NginxPods.port,
                behaviour: .resetAfterRequestBytes(1 << 20),
                group: group
            )
            let body = temporaryFile("body")
            try TestData.writeRandomFile(to: body, size: 10 << 20)
            defer { try? FileManager.default.removeItem(at: body) }
            let headway = try await InProcessHeadway.start {
                $0[list: "--endpoints"] = [pods.endpoints[0], resetting.address]
            }
            // Round-robin sends one of two POSTs to each pod.
            var statuses: [Int] = []
            for _ in 0..<2 {
                let result = try await curl(
                    [
                        "--output", "/dev/null", "--write-out", "%{http_code}", "--data-binary", "@\(body.path)",
                        headway.listenURL + "/upload",
                    ]
                )
                statuses.append(Int(result.stdout) ?? 0)
            }
            try await headway.stop()
            let postsToNginx = try pods.pods[0].accessLog().filter { $0.method == "POST" }.count
            let postsToResetting = resetting.connectionsWithRequests
            try await resetting.stop()
            try await group.shutdownGracefully()

            #expect(statuses.sorted() == [200, 502], "\(statuses)")
            #expect(postsToResetting == 1, "the POST reached the resetting pod \(postsToResetting) times")
            #expect(postsToNginx == 1, "the failed POST was retried on the healthy pod")
        }

        @Test func warmConnectionsAreOpenBeforeTheFirstRequest() async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = pods.endpoints }
            let warm = try await waitFor(timeout: .seconds(1)) {
                try await EndpointsDocument.fetch(from: headway).upstreams[0].endpoints.allSatisfy {
                    $0.idle_connections == 1
                }
            }
            let requestsBefore = try pods.pods.map { try $0.accessLog().count }.reduce(0, +)
            try await headway.stop()
            #expect(warm != nil, "no warm connection to every pod")
            #expect(requestsBefore == 0)
        }

        @Test func aPodFailingItsChecksAtStartUpNeverTakesARequest() async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            let sick = pods.pods[2]
            try sick.setHealthCheckFailing(true)
            let headway = try await self.headwayWithChecks(endpoints: pods.endpoints)
            let answers = try await curl(
                ["--dump-header", "-", "--output", "/dev/null"] + Array(repeating: headway.listenURL + "/", count: 30)
            )
            try await headway.stop()
            let counts = podCounts(inHeaders: answers.stdout)
            #expect(counts[sick.name] == nil, "\(counts)")
            #expect(counts.values.reduce(0, +) == 30)
        }

        @Test func retryOn503SendsTheRequestToAnotherPod() async throws {
            let pods = try await NginxPods.start(count: 1)
            defer { pods.stop() }
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let failing = try await DemoPod.start(
                name: "failing",
                address: try SocketAddress(ipAddress: "127.0.0.5", port: NginxPods.port),
                group: group
            )
            let headway = try await InProcessHeadway.start(
                yaml: """
                    listeners: [{listen: "127.0.0.1:0", upstream: web}]
                    upstreams:
                      web:
                        endpoints: [\(pods.endpoints[0]), 127.0.0.5:\(NginxPods.port)]
                        retry_on: [503]
                        outlier_detection: {consecutive_5xx: 0}
                    """
            )
            // nginx answers any path with 200; the demo pod answers /status/503 with 503.
            let answers = try await sequentialGets(headway.listenURL + "/status/503", count: 20)
            let metrics = try await curl(["\(headway.adminURL)/metrics"]).stdout
            try await headway.stop()
            try await failing.stop()
            try await group.shutdownGracefully()
            #expect(answers.count == 20)
            #expect(answers.allSatisfy { $0.status == 200 }, "\(answers)")
            #expect(metrics.contains("headway_retries_total{upstream=\"web\"} 10"), "\(metrics)")
        }

        @Test func pastMaxConnectionsPerEndpointTheAnswerIs503WithRetryAfterAtOnce() async throws {
            let pods = try await EchoPods.start(count: 1)
            let headway = try await InProcessHeadway.start {
                $0[list: "--endpoints"] = pods.endpoints
                $0["--max-connections-per-endpoint"] = "1"
            }
            async let slow = curl([
                "--output", "/dev/null", "--write-out", "%{http_code}", headway.listenURL + "/delay/500",
            ])
            try await Task.sleep(for: .milliseconds(100))
            let refused = try await curl([
                "--dump-header", "-", "--output", "/dev/null", "--write-out", "%{time_total}", headway.listenURL + "/",
            ])
            let first = try await slow
            try await headway.stop()
            try await pods.stop()
            #expect(first.stdout == "200")
            #expect(refused.stdout.hasPrefix("HTTP/1.1 503"), "\(refused.stdout)")
            #expect(refused.stdout.contains("Retry-After: 1"))
            let seconds = Double(refused.stdout.split(whereSeparator: \.isNewline).last ?? "") ?? 99
            #expect(seconds < 0.2, "the refusal took \(seconds) s")
        }
    }
}
