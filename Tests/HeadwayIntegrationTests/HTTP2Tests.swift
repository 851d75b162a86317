import Foundation
import Headway
import HeadwayTestSupport
import NIOCore
import Testing

extension IntegrationTests {
    /// HTTP/2 clients (h2c with prior knowledge, on the HTTP/1 port) to HTTP/1 pods: every stream is a
    /// request of its own, balanced on its own, whatever connection it came on.
    @Suite struct HTTP2 {
        /// `nghttp -v` output: the header fields received on each stream, by stream id.
        private func receivedFields(_ output: String) -> [Int: [String: String]] {
            var fields: [Int: [String: String]] = [:]
            for line in output.split(separator: "\n") {
                // e.g. "[  0.007] recv (stream_id=13) :status: 200"
                guard let open = line.range(of: "recv (stream_id="), let close = line.range(of: ") ") else { continue }
                guard let stream = Int(line[open.upperBound..<close.lowerBound]) else { continue }
                let field = line[close.upperBound...]
                let nameEnd = field.dropFirst().firstIndex(of: ":") ?? field.endIndex
                let name = String(field[..<nameEnd])
                let value = field[nameEnd...].dropFirst().trimmingCharacters(in: .whitespaces)
                fields[stream, default: [:]][name] = value
            }
            return fields
        }

        @Test func streamsOfOneConnectionAreBalancedOneByOne() async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = pods.endpoints }
            // One connection, ten streams at a time: a connection balancer would put all 300 on one pod.
            let load = try await Command.run(
                ["h2load", "-c1", "-m10", "-n300", "\(headway.listenURL)/"],
                timeout: 60
            )
            try await headway.stop()
            #expect(load.stdout.contains("300 succeeded, 0 failed"), "\(load.stdout)")
            #expect(load.stdout.contains("300 2xx"))
            #expect(try pods.pods.map { try $0.accessLog().count } == [100, 100, 100])
        }

        @Test func http1AndHTTP2ClientsShareTheListener() async throws {
            let pods = try await NginxPods.start(count: 1)
            defer { pods.stop() }
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = pods.endpoints }
            let http2 = try await curl(
                ["--http2-prior-knowledge", "--dump-header", "-", "\(headway.listenURL)/over-h2?q=1"]
            )
            let http1 = try await curl(["--http1.1", "--dump-header", "-", "\(headway.listenURL)/over-h1"])
            try await headway.stop()
            #expect(http2.stdout.hasPrefix("HTTP/2 200"), "\(http2.stdout)")
            #expect(http2.stdout.contains("x-pod: pod-1"))
            #expect(http1.stdout.hasPrefix("HTTP/1.1 200 OK"), "\(http1.stdout)")
            // The pod saw ordinary HTTP/1.1 requests, with the path and query the client sent.
            #expect(try pods.pods[0].accessLog().map(\.uri) == ["/over-h2?q=1", "/over-h1"])
        }

        @Test(arguments: [false, true])
        func aRequestBodyGoesToTheHTTP1PodAndBack(lengthKnown: Bool) async throws {
            let pods = try await EchoPods.start(count: 1)
            let body = temporaryFile("body")
            defer { try? FileManager.default.removeItem(at: body) }
            try TestData.writeRandomFile(to: body, size: 1 << 20)
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = pods.endpoints }
            let echoed = temporaryFile("echoed")
            defer { try? FileManager.default.removeItem(at: echoed) }
            // `-T -` reads the body from stdin: its length is unknown, so it crosses as chunked HTTP/1.1.
            let upload =
                lengthKnown ? "--data-binary @\(body.path)" : "-T - < \(body.path)"
            let result = try await Command.run(
                [
                    "sh", "-c",
                    "curl --silent --show-error --http2-prior-knowledge -X POST \(upload) "
                        + "--output \(echoed.path) --write-out '%{http_code} %{http_version}' \(headway.listenURL)/echo",
                ],
                timeout: 60
            )
            try await headway.stop()
            try await pods.stop()
            #expect(result.stdout == "200 2", "\(result.stdout) \(result.stderr)")
            #expect(try Data(contentsOf: echoed) == Data(contentsOf: body))
        }

        @Test func aGRPCCallThatNoPodCanTakeGetsUnavailableInTrailers() async throws {
            // Nothing listens on the endpoint: the connect is refused on every attempt.
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = ["127.0.0.9:1"] }
            let message = temporaryFile("grpc-message")
            defer { try? FileManager.default.removeItem(at: message) }
            // A gRPC message: no compression flag, a length of 0.
            try Data([0, 0, 0, 0, 0]).write(to: message)
            let started = ContinuousClock.now
            let call = try await Command.run(
                [
                    "nghttp", "-v", "-H", "content-type: application/grpc", "-H", "te: trailers",
                    "-d", message.path, "\(headway.listenURL)/echo.Echo/Unary",
                ],
                timeout: 30
            )
            let took = ContinuousClock.now - started
            let plain = try await Command.run(["nghttp", "-v", "\(headway.listenURL)/not-grpc"], timeout: 30)
            try await headway.stop()
            let fields = self.receivedFields(call.stdout).values.first ?? [:]
            #expect(fields[":status"] == "200", "\(call.stdout)")
            #expect(fields["content-type"] == "application/grpc")
            #expect(fields["grpc-status"] == "14")
            #expect(fields["grpc-message"]?.contains("127.0.0.9:1") == true, "the message names the pod: \(fields)")
            #expect(took < .seconds(1), "UNAVAILABLE took \(took)")
            // A request that is not gRPC gets the HTTP answer, as an HTTP/1 client would: 502, or 503 once the
            // failed connects took the pod out of rotation.
            let plainFields = self.receivedFields(plain.stdout).values.first ?? [:]
            #expect(["502", "503"].contains(plainFields[":status"]), "\(plain.stdout)")
            #expect(plainFields["grpc-status"] == nil)
        }

        @Test func aGRPCDeadlineShorterThanThePodsDelayEndsTheCallAtTheDeadline() async throws {
            let pods = try await EchoPods.start(count: 1, latency: .seconds(3))
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = pods.endpoints }
            let started = ContinuousClock.now
            let call = try await Command.run(
                [
                    "nghttp", "-v", "-H", "content-type: application/grpc", "-H", "grpc-timeout: 300m",
                    "\(headway.listenURL)/slow.Slow/Call",
                ],
                timeout: 30
            )
            let took = ContinuousClock.now - started
            try await headway.stop()
            try await pods.stop()
            let fields = self.receivedFields(call.stdout).values.first ?? [:]
            #expect(fields["grpc-status"] == "4", "\(call.stdout)")
            #expect(took >= .milliseconds(300) && took < .milliseconds(1500), "DEADLINE_EXCEEDED after \(took)")
        }

        @Test func aGracefulStopSendsGoAwayAndTheStreamInFlightFinishes() async throws {
            let pods = try await EchoPods.start(count: 1, latency: .seconds(1))
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = pods.endpoints }
            let call = Task {
                try await Command.run(["nghttp", "-v", "\(headway.listenURL)/slow"], timeout: 30)
            }
            try await Task.sleep(for: .milliseconds(400))
            let stopping = ContinuousClock.now
            try await headway.stop()
            let drain = ContinuousClock.now - stopping
            let output = try await call.value.stdout
            try await pods.stop()
            let fields = self.receivedFields(output).values.first ?? [:]
            #expect(fields[":status"] == "200", "the stream in flight was answered: \(output)")
            #expect(output.contains("recv GOAWAY frame"), "\(output)")
            #expect(drain < .seconds(3), "the drain waited \(drain) for a connection with nothing left in flight")
        }

        /// A client that opens streams and cancels them at once, as fast as it can (CVE-2023-44487), with the
        /// `h2` package from PyPI: it prints how many it sent, and whether Headway then closed the connection
        /// (with a GOAWAY it read, or a reset that lost it).
        private static let rapidReset = """
            import socket, sys, h2.config, h2.connection, h2.events
            port, attempts = int(sys.argv[1]), int(sys.argv[2])
            sock = socket.create_connection(("127.0.0.1", port))
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            sock.sendall(conn.data_to_send())
            sent, closed = 0, False
            try:
                for _ in range(attempts):
                    stream = conn.get_next_available_stream_id()
                    headers = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "web")]
                    conn.send_headers(stream, headers, end_stream=True)
                    conn.reset_stream(stream)
                    sock.sendall(conn.data_to_send())
                    sent += 1
            except (OSError, h2.exceptions.ProtocolError):
                closed = True
            sock.settimeout(3)
            try:
                while not closed:
                    data = sock.recv(65536)
                    if not data:
                        closed = True
                    for event in conn.receive_data(data):
                        if isinstance(event, h2.events.ConnectionTerminated):
                            closed = True
            except socket.timeout:
                pass
            except (OSError, h2.exceptions.ProtocolError):
                closed = True
            print(sent, "closed" if closed else "open")
            """

        @Test func aClientThatResetsStreamsInATightLoopIsCutOffAndOthersAreServed() async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = pods.endpoints }
            let attack = Task {
                try await Command.run(
                    ["python3", "-c", Self.rapidReset, "\(headway.listen.port!)", "50000"],
                    timeout: 60
                )
            }
            let others = try await Command.run(
                ["h2load", "-c2", "-m4", "-n400", "\(headway.listenURL)/"],
                timeout: 60
            )
            let result = try await attack.value
            try await headway.stop()
            let words = result.stdout.split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            #expect(words.count == 2, "\(result.stdout) \(result.stderr)")
            // swift-nio-http2 allows 200 resets in 30 s, then ends the connection (ENHANCE_YOUR_CALM).
            #expect(words.last == "closed", "the connection was not cut off: \(result.stdout)")
            #expect(others.stdout.contains("400 succeeded, 0 failed"), "\(others.stdout)")
            // Every reset stream cancelled its request; what reached the pods stayed bounded by the budget.
            let reached = try pods.pods.map { try $0.accessLog().count }.reduce(0, +) - 400
            #expect(reached <= 1000, "\(reached) requests of reset streams reached the pods")
        }

        private static func headway(speakingH2CTo pods: NginxPods) async throws -> InProcessHeadway {
            try await InProcessHeadway.start {
                $0[list: "--endpoints"] = pods.endpoints
                $0["--upstream-protocol"] = "h2c"
            }
        }

        @Test func streamsToH2CPodsAreMultiplexedOnOneConnectionPerPod() async throws {
            let pods = try await NginxPods.start(http2: true)
            defer { pods.stop() }
            let headway = try await Self.headway(speakingH2CTo: pods)
            let load = try await Command.run(["h2load", "-c1", "-m10", "-n300", "\(headway.listenURL)/"], timeout: 60)
            // An HTTP/1.1 client reaches the same pods, which speak nothing but h2c.
            let http1 = try await curl(["--http1.1", "--dump-header", "-", "\(headway.listenURL)/from-h1"])
            try await headway.stop()
            #expect(load.stdout.contains("300 succeeded, 0 failed"), "\(load.stdout)")
            #expect(http1.stdout.hasPrefix("HTTP/1.1 200 OK"), "\(http1.stdout)")
            let logs = try pods.pods.map { try $0.accessLog() }
            #expect(logs.map(\.count).sorted() == [100, 100, 101], "300 streams and the HTTP/1.1 request")
            // Ten streams at a time fit on one connection: each pod saw exactly one (the warm one).
            #expect(logs.map { Set($0.map(\.connection)).count } == [1, 1, 1])
        }

        /// An h2c pod that resets every stream with REFUSED_STREAM (the `h2` package), for `seconds`; then prints
        /// how many it refused.
        private static let refusingPod = """
            import socket, sys, threading, time, h2.config, h2.connection, h2.errors, h2.events
            host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
            refused = 0
            def serve(sock):
                global refused
                conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
                conn.initiate_connection()
                sock.sendall(conn.data_to_send())
                try:
                    while data := sock.recv(65536):
                        for event in conn.receive_data(data):
                            if isinstance(event, h2.events.RequestReceived):
                                conn.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                                refused += 1
                        sock.sendall(conn.data_to_send())
                except Exception:
                    pass
            listener = socket.create_server((host, port))
            listener.settimeout(0.1)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                try:
                    threading.Thread(target=serve, args=(listener.accept()[0],), daemon=True).start()
                except socket.timeout:
                    pass
            print(refused)
            """

        @Test func aStreamThePodRefusesIsRetriedOnAnotherPodEvenForPOST() async throws {
            let good = try await NginxPod.start(name: "pod-2", host: "127.0.0.3", port: NginxPods.port, http2: true)
            defer { good.stop() }
            let refuser = Task {
                try await Command.run(
                    ["python3", "-c", Self.refusingPod, "127.0.0.2", "\(NginxPods.port)", "4"],
                    timeout: 30
                )
            }
            _ = try await waitFor(timeout: .seconds(3)) { RawHTTP.canConnect(host: "127.0.0.2", port: NginxPods.port) }
            let headway = try await InProcessHeadway.start {
                $0[list: "--endpoints"] = ["127.0.0.2:\(NginxPods.port)", good.address]
                $0["--upstream-protocol"] = "h2c"
            }
            let body = temporaryFile("post")
            defer { try? FileManager.default.removeItem(at: body) }
            try Data("a body the refusing pod never read".utf8).write(to: body)
            let load = try await Command.run(
                ["h2load", "-c1", "-m1", "-n20", "-d", body.path, "\(headway.listenURL)/"],
                timeout: 30
            )
            try await headway.stop()
            let refused = Int(try await refuser.value.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
            #expect(load.stdout.contains("20 succeeded, 0 failed"), "\(load.stdout)")
            #expect(load.stdout.contains("20 2xx"), "\(load.stdout)")
            #expect(refused >= 1, "the refusing pod saw no stream")
            #expect(try good.accessLog().filter { $0.method == "POST" }.count == 20)
        }

        /// An HTTP/2 client that reads one response slowly (16 KiB every 10 ms, its window reopened only as it
        /// reads) for `seconds`; prints the status and the bytes read.
        private static let slowReader = """
            import socket, sys, time, h2.config, h2.connection, h2.events
            port, path, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
            sock = socket.create_connection(("127.0.0.1", port))
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            headers = [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "pods")]
            conn.send_headers(1, headers, end_stream=True)
            sock.sendall(conn.data_to_send())
            status, received, start = None, 0, time.monotonic()
            while time.monotonic() - start < seconds:
                data = sock.recv(16384)
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        status = dict(event.headers)[b":status"].decode()
                    elif isinstance(event, h2.events.DataReceived):
                        received += len(event.data)
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                sock.sendall(conn.data_to_send())
                time.sleep(0.01)
            print(status, received)
            """

        private static func residentMegabytes(_ pid: Int32) -> Double? {
            let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
            let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }
            return line.flatMap { Double($0.split(separator: " ")[1]) }.map { $0 / 1024 }
        }

        /// A 1 GiB response from an HTTP/1 or an h2c pod to an HTTP/2 client that reads slowly: the stream's
        /// window stays closed, Headway stops reading from the pod (and so leaves the pod's stream window closed),
        /// and its memory stays flat instead of buffering the file.
        @Test(arguments: [false, true])
        func aSlowHTTP2ReaderOfAHugeResponseKeepsMemoryBounded(h2cPod: Bool) async throws {
            let pods = try await NginxPods.start(count: 1, http2: h2cPod)
            defer { pods.stop() }
            let file = try pods.pods[0].writeFile(named: "huge", size: 0)
            try await Command.run(["truncate", "-s", "1G", file.path])
            let listen = FreePort.onAll(["127.0.0.1"])
            let admin = FreePort.onAll(["127.0.0.1"], except: [listen])
            let headway = try HeadwayProcess([
                "--endpoints", pods.endpoints[0], "--listen", "127.0.0.1:\(listen)", "--admin", "127.0.0.1:\(admin)",
                "--threads", "1", "--upstream-protocol", h2cPod ? "h2c" : "http1",
            ])
            try await headway.waitUntilListening(on: listen)
            let pid = headway.process.processIdentifier
            let before = try #require(Self.residentMegabytes(pid))
            let reader = try await Command.run(
                ["python3", "-c", Self.slowReader, "\(listen)", "/files/huge", "4"],
                timeout: 30
            )
            let during = try #require(Self.residentMegabytes(pid))
            headway.signal(SIGTERM)
            #expect(try await headway.waitForExit(timeout: .seconds(15)))
            let words = reader.stdout.split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            print(
                "slow h2 reader of 1 GiB from an \(h2cPod ? "h2c" : "HTTP/1") pod: read \(words.last ?? "?") bytes in 4 s; RSS \(before) -> \(during) MiB"
            )
            #expect(words.first == "200", "\(reader.stdout) \(reader.stderr)")
            let read = Int(words.last ?? "") ?? 0
            #expect(read > 1 << 20 && read < 64 << 20, "the reader read \(read) bytes")
            #expect(during - before < 32, "RSS grew from \(before) to \(during) MiB")
        }

        /// HTTP/2 clients that stop in the middle of 512 streams, again and again, to h2c pods that take 128
        /// streams per connection (nginx's limit): every cut-off stream is reset upstream once the pod has it,
        /// the frames the pods still send for it are ignored (not a reason to close their connection), nothing
        /// stays in flight, and the connections go on taking streams.
        @Test func clientsCutOffMidBurstLeaveNoStreamBehind() async throws {
            let pods = try await NginxPods.start(http2: true)
            defer { pods.stop() }
            let headway = try await Self.headway(speakingH2CTo: pods)
            var rounds: [String] = []
            for _ in 0..<4 {
                let burst = try await Command.run(
                    ["h2load", "-c16", "-m32", "-D1", "\(headway.listenURL)/"],
                    timeout: 30
                )
                rounds.append(
                    burst.stdout.split(separator: "\n").first { $0.contains("succeeded") }.map(String.init) ?? ""
                )
            }
            let settled = try await waitFor(timeout: .seconds(5)) {
                try await EndpointsDocument.fetch(from: headway).upstreams[0].endpoints.allSatisfy { $0.in_flight == 0 }
            }
            // The pods' connections still take streams: none waits behind a stream that was reset too early.
            let after = try await sequentialGets(headway.listenURL + "/", count: 20, timeout: 20)
            let log = try pods.pods.map { try $0.accessLog().count }
            try await headway.stop()
            #expect(settled != nil, "streams stayed in flight after the clients left")
            #expect(after.count == 20 && after.allSatisfy { $0.status == 200 && $0.seconds < 1 }, "\(after)")
            // The bursts reached the pods (streams still waiting for room when their client left never do).
            #expect(log.reduce(0, +) >= 512, "\(log) \(rounds)")
        }
    }
}
