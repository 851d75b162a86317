import Foundation
import Headway
import HeadwayTestSupport
import Testing

extension IntegrationTests {
    /// SIGHUP reads the file again and applies it while serving; a bad file changes nothing.
    @Suite struct Reload {
        /// The sum of a metric's samples whose line contains `labels`, from an admin endpoint's `/metrics`.
        private func metric(_ name: String, _ labels: String = "", admin: String) async throws -> Double {
            let text = try await curl(["\(admin)/metrics"]).stdout
            return text.split(separator: "\n").filter { $0.hasPrefix(name) && $0.contains(labels) }
                .compactMap { Double($0.split(separator: " ").last ?? "") }.reduce(0, +)
        }

        @Test func tenReloadsUnderLoadLoseNoRequest() async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            let listen = FreePort.onAll(["127.0.0.1"])
            let extra = FreePort.onAll(["127.0.0.1"], except: [listen])
            let adminPort = FreePort.onAll(["127.0.0.1"], except: [listen, extra])
            let admin = "http://127.0.0.1:\(adminPort)"
            let file = temporaryFile("reload.yaml")
            defer { try? FileManager.default.removeItem(at: file) }
            func write(policy: String, endpoints: [String], extraListener: Bool) throws {
                let listeners =
                    "  - {listen: 127.0.0.1:\(listen), upstream: web}\n"
                    + (extraListener ? "  - {listen: 127.0.0.1:\(extra), upstream: web}\n" : "")
                try """
                admin: 127.0.0.1:\(adminPort)
                threads: 2
                listeners:
                \(listeners)upstreams:
                  web:
                    policy: \(policy)
                    endpoints: [\(endpoints.joined(separator: ", "))]
                """.write(to: file, atomically: true, encoding: .utf8)
            }
            try write(policy: "round-robin", endpoints: pods.endpoints, extraListener: false)
            let headway = try HeadwayProcess(["--config", file.path])
            try await headway.waitUntilListening(on: listen)
            let load = Task {
                try await Command.run(["wrk", "-t1", "-c8", "-d7s", "http://127.0.0.1:\(listen)/"], timeout: 30)
            }
            let two = Array(pods.endpoints.prefix(2))
            let steps: [(policy: String, endpoints: [String], extraListener: Bool)] = [
                ("least-connections", pods.endpoints, false), ("p2c", two, false), ("random", two, true),
                ("ewma", pods.endpoints, true), ("round-robin", pods.endpoints, false), ("p2c", pods.endpoints, true),
                ("least-connections", two, true), ("random", pods.endpoints, false), ("ewma", two, false),
                ("round-robin", pods.endpoints, false),
            ]
            for (index, step) in steps.enumerated() {
                try await Task.sleep(for: .milliseconds(300))
                try write(policy: step.policy, endpoints: step.endpoints, extraListener: step.extraListener)
                headway.signal(SIGHUP)
                let applied = try await waitFor(timeout: .seconds(5)) {
                    try await EndpointsDocument.fetch(admin: admin).configuration.generation == index + 2
                }
                #expect(applied != nil, "reload \(index + 1) was not applied: \(headway.log)")
                let document = try await EndpointsDocument.fetch(admin: admin)
                #expect(document.upstreams[0].policy == step.policy)
                #expect(
                    Set(document.upstreams[0].endpoints.filter { $0.state == "active" }.map(\.address))
                        == Set(step.endpoints)
                )
                if step.extraListener {
                    let answer = try await curl([
                        "--write-out", "%{http_code}", "--output", "/dev/null", "http://127.0.0.1:\(extra)/",
                    ])
                    #expect(answer.stdout == "200", "the added listener does not serve (reload \(index + 1))")
                } else {
                    #expect(!RawHTTP.canConnect(host: "127.0.0.1", port: extra), "a removed listener still accepts")
                }
            }
            // A file with a mistake is refused whole: the running configuration stays.
            try """
            admin: 127.0.0.1:\(adminPort)
            listeners:
              - {listen: 127.0.0.1:\(listen), upstream: web}
            upstreams:
              web: {policy: fastest, endpoints: [\(pods.endpoints[0])]}
            """.write(to: file, atomically: true, encoding: .utf8)
            headway.signal(SIGHUP)
            let refused = try await waitFor(timeout: .seconds(5)) {
                try await self.metric("headway_config_reloads_total", "error", admin: admin) == 1
            }
            let wrk = try await load.value
            let document = try await EndpointsDocument.fetch(admin: admin)
            let succeeded = try await self.metric("headway_config_reloads_total", "success", admin: admin)
            headway.signal(SIGTERM)
            #expect(try await headway.waitForExit(timeout: .seconds(15)))
            #expect(refused != nil, "\(headway.log)")
            #expect(document.configuration.generation == steps.count + 1)
            #expect(document.upstreams[0].policy == "round-robin" && document.upstreams[0].endpoints.count == 3)
            #expect(succeeded == Double(steps.count))
            #expect(headway.log.contains("configuration problem: upstreams.web.policy: unknown policy 'fastest'"))
            let summary = WrkSummary(wrk.stdout)
            #expect(summary.requests > 1000, "\(wrk.stdout)")
            #expect(summary.non2xx == 0 && summary.socketErrors == 0, "\(wrk.stdout)\n\(headway.log)")
            #expect(headway.process.terminationStatus == 0)
        }

        /// Weights change with a reload under load, as the endpoints that stay keep their connections: no request
        /// fails, and the traffic follows the new weights from the reload on.
        @Test func aReloadOfWeightsUnderLoadLosesNoRequestAndTrafficFollowsThem() async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            let listen = FreePort.onAll(["127.0.0.1"])
            let adminPort = FreePort.onAll(["127.0.0.1"], except: [listen])
            let admin = "http://127.0.0.1:\(adminPort)"
            let file = temporaryFile("weights.yaml")
            defer { try? FileManager.default.removeItem(at: file) }
            func write(weights: [Int]) throws {
                let endpoints = zip(pods.endpoints, weights).map { "{address: \($0), weight: \($1)}" }
                try """
                admin: 127.0.0.1:\(adminPort)
                threads: 2
                listeners:
                  - {listen: 127.0.0.1:\(listen), upstream: web}
                upstreams:
                  web:
                    policy: round-robin
                    endpoints: [\(endpoints.joined(separator: ", "))]
                """.write(to: file, atomically: true, encoding: .utf8)
            }
            func requests() async throws -> [Int] {
                let endpoints = try await EndpointsDocument.fetch(admin: admin).upstreams[0].endpoints
                return pods.endpoints.map { address in endpoints.first { $0.address == address }?.requests ?? 0 }
            }
            try write(weights: [1, 1, 1])
            let headway = try HeadwayProcess(["--config", file.path])
            try await headway.waitUntilListening(on: listen)
            let load = Task {
                try await Command.run(["wrk", "-t1", "-c8", "-d4s", "http://127.0.0.1:\(listen)/"], timeout: 30)
            }
            let warm = try await waitFor(timeout: .seconds(3)) { try await requests().reduce(0, +) >= 2000 }
            #expect(warm != nil, "wrk sent too little: \(headway.log)")
            try write(weights: [4, 1, 1])
            headway.signal(SIGHUP)
            let applied = try await waitFor(timeout: .seconds(5)) {
                try await EndpointsDocument.fetch(admin: admin).configuration.generation == 2
            }
            #expect(applied != nil, "the reload was not applied: \(headway.log)")
            let atReload = try await requests()
            let wrk = try await load.value
            let after = try await requests()
            let document = try await EndpointsDocument.fetch(admin: admin)
            headway.signal(SIGTERM)
            #expect(try await headway.waitForExit(timeout: .seconds(15)))

            let shareBefore = Double(atReload[0]) / Double(atReload.reduce(0, +))
            #expect((0.25...0.42).contains(shareBefore), "equal weights: \(atReload)")
            let since = zip(after, atReload).map { $0 - $1 }
            #expect(since.reduce(0, +) > 1000, "too little load after the reload: \(since)")
            let shareAfter = Double(since[0]) / Double(since.reduce(0, +))
            #expect((0.6...0.73).contains(shareAfter), "weights 4:1:1 must give the first pod 2/3: \(since)")
            #expect(document.upstreams[0].endpoints.map(\.weight).sorted() == [1, 1, 4])
            let summary = WrkSummary(wrk.stdout)
            #expect(summary.non2xx == 0 && summary.socketErrors == 0, "\(wrk.stdout)\n\(headway.log)")
        }

        /// The binary on a one-upstream file whose policy ``write(policy:)`` changes.
        private struct PolicyFile {
            let listen = FreePort.onAll(["127.0.0.1"])
            let adminPort: Int
            let file = temporaryFile("policy.yaml")
            var admin: String { "http://127.0.0.1:\(self.adminPort)" }

            init() {
                self.adminPort = FreePort.onAll(["127.0.0.1"], except: [self.listen])
            }

            func write(policy: String) throws {
                try """
                admin: 127.0.0.1:\(self.adminPort)
                listeners:
                  - {listen: 127.0.0.1:\(self.listen), upstream: web}
                upstreams:
                  web: {policy: \(policy), endpoints: [127.0.0.2:1]}
                """.write(to: self.file, atomically: true, encoding: .utf8)
            }

            /// Writes `policy` and starts Headway on the file with `flags`.
            func start(policy: String, flags: [String]) async throws -> HeadwayProcess {
                try self.write(policy: policy)
                let headway = try HeadwayProcess(["--config", self.file.path] + flags)
                try await headway.waitUntilListening(on: self.listen)
                return headway
            }
        }

        @Test func flagsKeepOverridingTheFileAfterAReload() async throws {
            let config = PolicyFile()
            defer { try? FileManager.default.removeItem(at: config.file) }
            let headway = try await config.start(policy: "round-robin", flags: ["--policy", "p2c"])
            try config.write(policy: "random")
            headway.signal(SIGHUP)
            let admin = config.admin
            let applied = try await waitFor(timeout: .seconds(5)) {
                try await EndpointsDocument.fetch(admin: admin).configuration.generation == 2
            }
            let policy = try await EndpointsDocument.fetch(admin: admin).upstreams[0].policy
            headway.signal(SIGTERM)
            _ = try await headway.waitForExit(timeout: .seconds(10))
            #expect(applied != nil, "\(headway.log)")
            #expect(policy == "p2c", "--policy must still override the file's policy")
        }

        /// `--watch-config`: a changed file reloads with nobody sending SIGHUP (a ConfigMap in Kubernetes).
        @Test func aChangedFileReloadsWithWatchConfig() async throws {
            let config = PolicyFile()
            defer { try? FileManager.default.removeItem(at: config.file) }
            let headway = try await config.start(policy: "round-robin", flags: ["--watch-config"])
            try config.write(policy: "least-connections")
            let admin = config.admin
            let applied = try await waitFor(timeout: .seconds(6)) {
                try await EndpointsDocument.fetch(admin: admin).upstreams[0].policy == "least-connections"
            }
            let generation = try await EndpointsDocument.fetch(admin: admin).configuration.generation
            headway.signal(SIGTERM)
            _ = try await headway.waitForExit(timeout: .seconds(10))
            #expect(applied != nil, "\(headway.log)")
            #expect(generation == 2)
            #expect(headway.log.contains("configuration file changed; reloading"))
            let alone = try await Command.run([
                IntegrationEnvironment.headwayBinary, "--endpoints", "127.0.0.2:1", "--watch-config",
            ])
            #expect(
                alone.status == 2 && alone.stderr.contains("--watch-config: needs --config FILE"),
                "\(alone.stderr)"
            )
        }

        /// Endpoints that stay keep their keep-alive connections: a reload that changes the policy and
        /// removes one endpoint opens no new connection to the others.
        @Test func endpointsThatStayKeepTheirConnections() async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = pods.endpoints }
            _ = try await curl((1...9).flatMap { ["--output", "/dev/null", "\(headway.listenURL)/w\($0)"] })
            let opened = { (endpoint: String) in
                try await self.metric(
                    "headway_upstream_connections_opened_total",
                    "endpoint=\"\(endpoint)\"",
                    admin: headway.adminURL
                )
            }
            let before = try await opened(pods.endpoints[0]) + opened(pods.endpoints[1])
            var overrides = ConfigurationOverrides()
            overrides["--admin"] = "127.0.0.1:0"
            overrides["--listen"] = "127.0.0.1:0"
            overrides["--threads"] = "1"
            overrides["--policy"] = "least-connections"
            overrides[list: "--endpoints"] = Array(pods.endpoints.prefix(2))
            try await headway.application.reload(try HeadwayConfiguration.load(yaml: nil, overrides: overrides))
            let results = try await sequentialGets("\(headway.listenURL)/after", count: 10)
            let after = try await opened(pods.endpoints[0]) + opened(pods.endpoints[1])
            let document = try await EndpointsDocument.fetch(from: headway)
            try await headway.stop()
            #expect(results.count == 10 && results.allSatisfy { $0.status == 200 })
            #expect(before >= 2 && after == before, "connections opened: \(before) before, \(after) after")
            #expect(document.upstreams[0].policy == "least-connections")
            #expect(document.upstreams[0].endpoints.filter { $0.state == "active" }.count == 2)
        }
    }
}
