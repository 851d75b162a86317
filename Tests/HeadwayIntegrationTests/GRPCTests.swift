import Foundation
import Headway
import HeadwayTestSupport
import NIOCore
import Testing

/// gRPC pods (grpcio, from PyPI) on 127.0.0.2–4 at a port of their own, each answering with its name; see
/// `grpc_peer.py`.
final class GRPCPods {
    static let port = FreePort.onAll(podHosts, except: [NginxPods.port, EchoPods.port])
    static let peer = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("grpc_peer.py")
    private(set) var processes: [Process] = []
    let hosts: [String]

    private init(hosts: [String]) {
        self.hosts = hosts
    }

    static func start(count: Int = 3) async throws -> GRPCPods {
        let pods = GRPCPods(hosts: (0..<count).map { "127.0.0.\($0 + 2)" })
        for index in 0..<count { try await pods.start(index) }
        return pods
    }

    var endpoints: [String] { self.hosts.map { "\($0):\(Self.port)" } }

    /// Starts pod `index` (again, after a stop) and waits until it accepts connections.
    func start(_ index: Int) async throws {
        let host = self.hosts[index]
        guard !RawHTTP.canConnect(host: host, port: Self.port) else {
            throw CommandError(description: "\(host):\(Self.port) is already in use by another process; stop it first")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: IntegrationEnvironment.path(of: "python3") ?? "/usr/bin/python3")
        process.arguments = [Self.peer.path, "serve", "pod-\(index + 1)", host, String(Self.port)]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        if index < self.processes.count {
            self.processes[index] = process
        } else {
            self.processes.append(process)
        }
        for _ in 0..<200 {
            if RawHTTP.canConnect(host: host, port: Self.port) { return }
            guard process.isRunning else { break }
            try await Task.sleep(for: .milliseconds(25))
        }
        throw CommandError(description: "gRPC pod \(host):\(Self.port) did not start (is grpcio installed?)")
    }

    /// SIGTERM: the pod stops with `server.stop(grace)`, sending GOAWAY and finishing the calls it has.
    func stopGracefully(_ index: Int) {
        kill(self.processes[index].processIdentifier, SIGTERM)
    }

    func kill9(_ index: Int) {
        kill(self.processes[index].processIdentifier, SIGKILL)
    }

    func stop() {
        for process in self.processes where process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}

/// What `grpc_peer.py call` reported.
struct GRPCCalls: Decodable {
    var pods: [String: Int]
    /// Failed calls by status code, and what the client was told about each.
    var failures: [String: Int]
    var details: [String]
    var seconds: Double

    var succeeded: Int { self.pods.values.reduce(0, +) }
    var failed: Int { self.failures.values.reduce(0, +) }
    /// Calls per pod in pod order (pod-1, pod-2, …), for `count` pods.
    func perPod(_ count: Int) -> [Int] { (1...count).map { self.pods["pod-\($0)"] ?? 0 } }

    /// `count` calls of `kind` (unary, server, client, bidi) on one channel to `target`, one after another.
    static func run(
        _ target: String,
        kind: String = "unary",
        count: Int,
        deadlineMilliseconds: Int = 0,
        pauseMilliseconds: Int = 0,
        podSleepMilliseconds: Int = 0
    ) async throws -> GRPCCalls {
        let result = try await Command.run(
            [
                "python3", GRPCPods.peer.path, "call", target, kind, String(count), String(deadlineMilliseconds),
                String(pauseMilliseconds), String(podSleepMilliseconds),
            ],
            timeout: 120
        )
        guard let line = result.stdout.split(separator: "\n").last else {
            throw CommandError(description: "grpc client printed nothing: \(result.stderr)")
        }
        return try JSONDecoder().decode(GRPCCalls.self, from: Data(line.utf8))
    }
}

extension IntegrationTests {
    /// gRPC through Headway to grpcio pods over h2c: per-call balancing on one client channel, the four kinds
    /// of RPC, trailers (grpc-status) end to end, and the faults a pod can have under load.
    @Suite struct GRPC {
        private func headway(_ pods: GRPCPods, policy: String = "round-robin") async throws -> InProcessHeadway {
            try await InProcessHeadway.start {
                $0[list: "--endpoints"] = pods.endpoints
                $0["--upstream-protocol"] = "h2c"
                $0["--policy"] = policy
                if policy == "hash" { $0["--hash-key"] = "client-ip" }
            }
        }

        private func target(_ headway: InProcessHeadway) -> String { "127.0.0.1:\(headway.listen.port!)" }

        /// A gRPC call fails inside an HTTP 200: the access log says how it ended, from the pod's trailers or
        /// its trailers-only answer.
        @Test func theAccessLogCarriesEachCallsGRPCStatus() async throws {
            let pods = try await GRPCPods.start(count: 1)
            defer { pods.stop() }
            let file = temporaryFile("grpc-access.log")
            defer { try? FileManager.default.removeItem(at: file) }
            let headway = try await InProcessHeadway.start {
                $0[list: "--endpoints"] = pods.endpoints
                $0["--upstream-protocol"] = "h2c"
                $0["--access-log"] = file.path
            }
            let answered = try await GRPCCalls.run(self.target(headway), count: 3)
            let missing = try await GRPCCalls.run(self.target(headway), kind: "missing", count: 2)
            #expect(answered.succeeded == 3 && missing.failures == ["UNIMPLEMENTED": 2], "\(missing.failures)")
            _ = try await waitFor(timeout: .seconds(3)) { fileLines(file).count >= 5 }
            try await headway.stop()
            let entries = try jsonLines(file)
            let byTarget = Dictionary(grouping: entries) { $0["target"] as? String ?? "" }
            #expect(byTarget["/headway.Echo/Unary"]?.map { $0["grpc_status"] as? Int } == [0, 0, 0], "\(entries)")
            #expect(byTarget["/headway.Echo/Missing"]?.map { $0["grpc_status"] as? Int } == [12, 12], "\(entries)")
            #expect(entries.allSatisfy { $0["status"] as? Int == 200 }, "\(entries)")
        }

        @Test func oneChannelStraightToAPodPinsEveryCallToIt() async throws {
            let pods = try await GRPCPods.start()
            defer { pods.stop() }
            let calls = try await GRPCCalls.run(pods.endpoints[0], count: 300)
            // The problem Headway solves: a gRPC channel is one connection, and every call rides it.
            #expect(calls.perPod(3) == [300, 0, 0])
        }

        /// The README's skew table: 300 unary calls on one channel, through Headway, by policy.
        @Test(arguments: ["round-robin", "random", "least-connections", "p2c", "ewma", "hash"])
        func callsOfOneChannelAreSpreadByThePolicy(policy: String) async throws {
            let pods = try await GRPCPods.start()
            defer { pods.stop() }
            let headway = try await self.headway(pods, policy: policy)
            let calls = try await GRPCCalls.run(self.target(headway), count: 300)
            try await headway.stop()
            print("gRPC skew, 300 unary calls on one channel, \(policy): \(calls.perPod(3))")
            #expect(calls.failed == 0, "\(calls.failures) \(calls.details)")
            switch policy {
            case "round-robin":
                #expect(calls.perPod(3) == [100, 100, 100])
            case "hash":
                // One client, one key: every call on the same pod, by design.
                #expect(calls.perPod(3).sorted() == [0, 0, 300])
            case "ewma":
                // Latency decides: a pod that answered slowly once (a busy machine) gets less for a while, but
                // every pod keeps getting calls and none gets them all.
                #expect(calls.perPod(3).allSatisfy { $0 > 0 && $0 < 300 }, "\(calls.perPod(3))")
            default:
                // Calls go one at a time, so nothing is in flight and every pick is a fair draw: every pod takes a
                // real share (a binomial 300 × ⅓ is below 50 with odds under 1e-9).
                #expect(calls.perPod(3).allSatisfy { $0 >= 50 }, "\(calls.perPod(3))")
            }
        }

        @Test(arguments: ["server", "client", "bidi"])
        func streamingCallsAreBalancedCallByCall(kind: String) async throws {
            let pods = try await GRPCPods.start()
            defer { pods.stop() }
            let headway = try await self.headway(pods)
            // The client checks each call's messages (3 answers, a count of 4, two echoes) and its OK status.
            let calls = try await GRPCCalls.run(self.target(headway), kind: kind, count: 30)
            try await headway.stop()
            #expect(calls.failed == 0, "\(calls.failures) \(calls.details)")
            #expect(calls.perPod(3) == [10, 10, 10])
        }

        /// 400 unary calls one after another on one channel through Headway, with `fault` done to the pods 0.8 s in.
        private func calls(whilePods fault: (GRPCPods) -> Void) async throws -> GRPCCalls {
            let pods = try await GRPCPods.start()
            defer { pods.stop() }
            let headway = try await self.headway(pods)
            async let load = GRPCCalls.run(self.target(headway), count: 400, pauseMilliseconds: 5)
            try await Task.sleep(for: .milliseconds(800))
            fault(pods)
            let calls = try await load
            try await headway.stop()
            return calls
        }

        @Test func aPodStoppingGracefullyCostsNoCall() async throws {
            let calls = try await self.calls { $0.stopGracefully(1) }
            print("gRPC graceful stop: \(calls.pods), failures \(calls.failures)")
            // The pod's GOAWAY drains its connection: calls in flight finish, new ones go to the others.
            // grpcio may answer CANCELLED to a call that reaches it while it stops (it does so without a proxy
            // too); Headway must lose nothing else.
            #expect(calls.failures.filter { $0.key != "CANCELLED" }.isEmpty, "\(calls.failures) \(calls.details)")
            #expect(calls.succeeded + calls.failed == 400)
            #expect(calls.pods["pod-2"] ?? 0 > 0 && calls.pods["pod-2"]! < 200, "\(calls.pods)")
        }

        @Test func aPodKilledCostsOnlyTheCallInFlightOnIt() async throws {
            let calls = try await self.calls { $0.kill9(1) }
            print("gRPC SIGKILL: \(calls.pods), failures \(calls.failures)")
            // Calls go one at a time, so at most one was on the pod when it died; none fails after.
            #expect(calls.failed <= 1, "\(calls.failures) \(calls.details)")
            #expect(calls.failures.keys.allSatisfy { $0 == "UNAVAILABLE" }, "\(calls.failures)")
            #expect(calls.succeeded >= 399)
        }

        @Test func noPodAnswersUnavailableAtOnce() async throws {
            let pods = try await GRPCPods.start()
            let endpoints = pods.endpoints
            pods.stop()
            let headway = try await InProcessHeadway.start {
                $0[list: "--endpoints"] = endpoints
                $0["--upstream-protocol"] = "h2c"
            }
            let calls = try await GRPCCalls.run(self.target(headway), count: 5)
            try await headway.stop()
            #expect(calls.failures["UNAVAILABLE"] == 5, "\(calls.failures)")
            #expect(calls.seconds < 2.5, "5 calls took \(calls.seconds) s")
            #expect(calls.details.allSatisfy { $0.contains("127.0.0.") }, "\(calls.details)")
        }

        @Test func aDeadlineShorterThanThePodEndsTheCallAtTheDeadline() async throws {
            let pods = try await GRPCPods.start(count: 1)
            defer { pods.stop() }
            let headway = try await self.headway(pods)
            let calls = try await GRPCCalls.run(
                self.target(headway),
                count: 1,
                deadlineMilliseconds: 300,
                podSleepMilliseconds: 3000
            )
            // Headway answers the call as soon as it is late, and the pod's next call still works.
            let next = try await GRPCCalls.run(self.target(headway), count: 1)
            try await headway.stop()
            #expect(calls.failures["DEADLINE_EXCEEDED"] == 1, "\(calls.failures)")
            #expect(calls.seconds < 1.5, "the call took \(calls.seconds) s")
            #expect(next.pods == ["pod-1": 1])
        }

        @Test func aGRPCHealthCheckPassesForAServingPodOnly() async throws {
            let pods = try await GRPCPods.start(count: 1)
            defer { pods.stop() }
            let dead = "127.0.0.3:\(GRPCPods.port)"
            func start(service: String) async throws -> InProcessHeadway {
                try await InProcessHeadway.start(
                    yaml: """
                        listeners: [{listen: "127.0.0.1:0", upstream: echo}]
                        upstreams:
                          echo:
                            protocol: h2c
                            endpoints: [\(pods.endpoints[0]), \(dead)]
                            health_check: {type: grpc, service: \(service), interval: 200ms, timeout: 150ms}
                        """
                )
            }
            let headway = try await start(service: "headway.Echo")
            let checked = try await waitFor(timeout: .seconds(5)) {
                let document = try await EndpointsDocument.fetch(from: headway)
                let endpoints = document.upstreams[0].endpoints
                return endpoints.map(\.health) == ["healthy", "unhealthy"]
            }
            let serving = try await EndpointsDocument.endpoint(pods.endpoints[0], of: headway)
            let calls = try await GRPCCalls.run(self.target(headway), count: 20)
            let document = try await EndpointsDocument.fetch(from: headway)
            let metrics = try await curl(["\(headway.adminURL)/metrics"]).stdout
            try await headway.stop()
            #expect(checked != nil, "the serving pod never passed or the dead one never failed")
            #expect(serving?.last_check_detail == "gRPC SERVING")
            // Only the healthy pod takes calls; the probe's h2c connection is not the pool's.
            #expect(calls.pods == ["pod-1": 20], "\(calls.pods) \(calls.failures)")
            #expect(document.upstreams[0].protocol == "h2c")
            let pod = document.upstreams[0].endpoints[0]
            #expect(pod.http2_connections == pod.connections && pod.connections >= 1)
            #expect(pod.streams_in_flight == 0)
            #expect(metrics.contains("headway_upstream_connections_open{upstream=\"echo\",protocol=\"h2c\"}"))
            #expect(metrics.contains("headway_client_http2_streams_total{listener="), "\(metrics)")

            // A service the pod does not know: grpc-status 5, NOT_FOUND.
            let unknown = try await start(service: "no.Such")
            let failed = try await waitFor(timeout: .seconds(5)) {
                try await EndpointsDocument.endpoint(pods.endpoints[0], of: unknown)?.health == "unhealthy"
            }
            let detail = try await EndpointsDocument.endpoint(pods.endpoints[0], of: unknown)?.last_check_detail
            try await unknown.stop()
            #expect(failed != nil)
            #expect(detail == "grpc-status 5 (NOT_FOUND)", "\(detail ?? "-")")
        }
    }
}
