import Logging
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2
import Testing

@testable import Headway

struct ClientProtocolTests {
    @Test func thePrefaceIsHTTP2AndAnythingElseIsHTTP1() {
        let preface = String(decoding: ClientProtocol.http2Preface, as: UTF8.self)
        #expect(ClientProtocol.detect(ByteBuffer(string: preface + "\0\0")) == .http2)
        #expect(ClientProtocol.detect(ByteBuffer(string: "GET / HTTP/1.1\r\n")) == .http1)
        // POST and PUT share the preface's first byte; they differ at the second.
        #expect(ClientProtocol.detect(ByteBuffer(string: "P")) == nil)
        #expect(ClientProtocol.detect(ByteBuffer(string: "POST / HTTP/1.1\r\n")) == .http1)
        #expect(ClientProtocol.detect(ByteBuffer(string: "PRI * HTTP/2.0\r\n")) == nil, "a preface cut short waits")
        #expect(ClientProtocol.detect(ByteBuffer(string: "PRI * HTTP/1.1\r\n\r\n")) == .http1)
    }
}

/// A connection that never sends a byte has only the detector: it must still end.
struct ClientProtocolDetectorTests {
    private func makeChannel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(
            ClientProtocolDetector(idleTimeout: .seconds(60)) { _, _ in
                Issue.record("nothing was received to decide on")
            }
        )
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    @Test func aSilentConnectionClosesAfterTheIdleTimeout() throws {
        let channel = try self.makeChannel()
        channel.embeddedEventLoop.advanceTime(by: .seconds(59))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(!channel.isActive)
    }

    @Test func aHalfCloseOrADrainClosesIt() throws {
        let halfClosed = try self.makeChannel()
        halfClosed.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(!halfClosed.isActive)
        let drained = try self.makeChannel()
        drained.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        #expect(!drained.isActive)
    }
}

struct HTTP2TranslationTests {
    private func translate(
        _ headers: HPACKHeaders,
        endStream: Bool = true
    ) throws -> (String, HTTP2Translation.RequestBody) {
        var buffer = ByteBuffer()
        let body = try HTTP2Translation.writeRequestHead(headers, endStream: endStream, into: &buffer)
        return (String(buffer: buffer), body)
    }

    private static let get: HPACKHeaders = [
        ":method": "GET", ":scheme": "http", ":path": "/a?b=c", ":authority": "web",
    ]

    @Test func aRequestBecomesAnHTTP1HeadWithItsAuthorityAsHost() throws {
        var headers = Self.get
        headers.add(name: "host", value: "other")
        headers.add(name: "accept", value: "*/*")
        let (head, body) = try self.translate(headers)
        #expect(head == "GET /a?b=c HTTP/1.1\r\nhost: web\r\naccept: */*\r\n\r\n")
        #expect(body == .none)
    }

    @Test func splitCookiesAreJoined() throws {
        var headers = Self.get
        headers.add(name: "cookie", value: "a=1")
        headers.add(name: "cookie", value: "b=2")
        #expect(try self.translate(headers).0.contains("\r\ncookie: a=1; b=2\r\n"))
    }

    @Test func aBodyIsFramedByItsLengthOrChunked() throws {
        var sized: HPACKHeaders = [":method": "POST", ":scheme": "http", ":path": "/", ":authority": "web"]
        sized.add(name: "content-length", value: "5")
        let (sizedHead, sizedBody) = try self.translate(sized, endStream: false)
        #expect(sizedBody == .contentLength)
        #expect(sizedHead.contains("content-length: 5\r\n") && !sizedHead.contains("transfer-encoding"))

        let open: HPACKHeaders = [":method": "POST", ":scheme": "http", ":path": "/", ":authority": "web"]
        let (openHead, openBody) = try self.translate(open, endStream: false)
        #expect(openBody == .chunked)
        #expect(openHead.hasSuffix("transfer-encoding: chunked\r\n\r\n"))
    }

    @Test(arguments: [
        ("transfer-encoding", "chunked"), ("connection", "close"), ("upgrade", "websocket"),
        ("x-injected", "a\r\nx-evil: 1"), ("x-nul", "a\0b"), ("bad name", "v"),
    ])
    func aFieldThatCouldChangeTheFramingMakesTheStreamMalformed(name: String, value: String) {
        var headers = Self.get
        headers.add(name: name, value: value)
        #expect(throws: HTTP2Translation.MalformedRequest.self) { try self.translate(headers) }
    }

    @Test func aPathWithASpaceOrNoMethodIsMalformed() {
        let spaced: HPACKHeaders = [
            ":method": "GET", ":scheme": "http", ":path": "/a b HTTP/1.1\r\nx: y", ":authority": "w",
        ]
        #expect(throws: HTTP2Translation.MalformedRequest.self) { try self.translate(spaced) }
        let noMethod: HPACKHeaders = [":scheme": "http", ":path": "/", ":authority": "w"]
        #expect(throws: HTTP2Translation.MalformedRequest.self) { try self.translate(noMethod) }
    }

    /// What swift-nio-http2 checked before Headway took the check over (RFC 9113 §8.2–8.3): each list, and
    /// what is wrong with it.
    private static let malformedLists: [([(String, String)], String)] = [
        ([(":method", "GET"), (":path", "/"), (":authority", "w")], "no :scheme"),
        ([(":method", "GET"), (":scheme", "http"), (":authority", "w")], "no :path"),
        ([(":method", "GET"), (":scheme", "http"), (":path", ""), (":authority", "w")], "an empty :path"),
        ([(":method", "GET"), (":method", "POST"), (":scheme", "http"), (":path", "/")], "two :method"),
        ([(":method", "GET"), (":scheme", "http"), (":path", "/"), (":path", "/admin")], "two :path"),
        ([(":method", "GET"), (":scheme", "http"), ("accept", "*/*"), (":path", "/")], "a pseudo-field last"),
        ([(":method", "GET"), (":scheme", "http"), (":path", "/"), ("Accept", "*/*")], "an upper-case name"),
        ([(":method", "GET"), (":scheme", "http"), (":path", "/"), ("te", "gzip")], "te other than trailers"),
        ([(":method", "GET"), (":scheme", "http"), (":path", "/"), (":status", "200")], "a response pseudo-field"),
        ([(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"), (":path", "/")], ":protocol"),
        ([(":method", "CONNECT"), (":scheme", "http"), (":path", "/"), (":authority", "w:1")], "CONNECT with :path"),
        ([(":method", "GET"), (":scheme", "ht\ttp"), (":path", "/")], "a control in :scheme"),
        ([(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "a b")], "a space in :authority"),

    ]

    @Test(arguments: HTTP2TranslationTests.malformedLists)
    func aHeaderListThatIsNoWellFormedRequestIsMalformed(fields: [(String, String)], what: String) {
        var headers = HPACKHeaders()
        for (name, value) in fields { headers.add(name: name, value: value) }
        #expect(throws: HTTP2Translation.MalformedRequest.self, "\(what)") { try self.translate(headers) }
    }

    @Test func aGRPCRequestWithTETrailersAndACONNECTWithOnlyItsAuthorityAreWellFormed() throws {
        var grpc = Self.get
        grpc.add(name: "te", value: "trailers")
        #expect(try self.translate(grpc).0.contains("\r\nte: trailers\r\n"))
        let connect: HPACKHeaders = [":method": "CONNECT", ":authority": "pod:443"]
        #expect(try self.translate(connect).0.hasPrefix("CONNECT pod:443 HTTP/1.1\r\nhost: pod:443\r\n"))
    }

    @Test func aResponseHeadLosesItsConnectionFieldsAndLowercasesNames() throws {
        var parser = ResponseParser()
        parser.expectResponse()
        var bytes = ByteBuffer(
            string: "HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                + "Keep-Alive: timeout=5\r\nX-Pod: a\r\nContent-Length: 0\r\n\r\n"
        )
        guard case .head(let head) = try parser.next(from: &bytes, isHeadRequest: false, upgradeRequested: false)
        else {
            Issue.record("no head")
            return
        }
        let headers = HTTP2Translation.responseHeaders(head)
        #expect(
            Array(headers.map { "\($0.name): \($0.value)" })
                == [":status: 201", "content-type: text/plain", "x-pod: a", "content-length: 0"]
        )
    }

    @Test func grpcTimeoutsAreReadWithTheirUnit() {
        #expect(HTTP2Translation.grpcTimeout("250m") == .milliseconds(250))
        #expect(HTTP2Translation.grpcTimeout("3S") == .seconds(3))
        #expect(HTTP2Translation.grpcTimeout("1H") == .hours(1))
        #expect(HTTP2Translation.grpcTimeout("100") == nil, "no unit")
        #expect(HTTP2Translation.grpcTimeout("123456789S") == nil, "more than 8 digits")
        #expect(HTTP2Translation.grpcTimeout("5x") == nil)
    }

    @Test func grpcStatusIsReadFromATrailersOnlyHeadOrTheTrailers() throws {
        let head = try ResponseHead(
            parsing: ByteBuffer(
                string: "HTTP/1.1 200 OK\r\nContent-Type: application/grpc\r\nGrpc-Status: 14\r\n"
                    + "Grpc-Message: shutting down\r\nContent-Length: 0\r\n\r\n"
            ),
            isHeadRequest: false
        )
        #expect(HTTP2Translation.grpcStatus(of: head) == 14)
        #expect(HTTP2Translation.grpcStatus(ofTrailers: ByteBuffer(string: "grpc-status: 0\r\n\r\n")) == 0)
        #expect(HTTP2Translation.grpcStatus(ofTrailers: ByteBuffer(string: "grpc-message: x\r\n\r\n")) == nil)
        #expect(HTTP2Translation.grpcStatus(ofTrailers: ByteBuffer(string: "grpc-status: 1x\r\n\r\n")) == nil)
        #expect(HTTP2Translation.grpcStatus(ofTrailers: ByteBuffer(string: "grpc-status: 12345\r\n\r\n")) == nil)
    }

    @Test func grpcMessagesArePercentEncoded() {
        #expect(HTTP2StreamBridge.percentEncoded("no pod: 100% gone ✓") == "no pod: 100%25 gone %E2%9C%93")
    }
}

/// Client streams on an HTTP/2 connection's handler, on an `EmbeddedChannel` with no HTTP/2 framing in front:
/// each stream's ``DownstreamHandler`` behind the bridge, as on a real connection.
struct HTTP2StreamBridgeTests {
    private func makeStream() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        let cluster = LoopCluster.withoutEndpoints(on: channel.embeddedEventLoop)
        try channel.pipeline.syncOperations.addHandler(
            HTTP2ClientConnection(flusher: cluster.flusher, logger: Logger(label: "test")) {
                DownstreamHandler(cluster: cluster, client: .init(), accessLog: nil, logger: Logger(label: "test"))
            }
        )
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    private func frames(_ channel: EmbeddedChannel) throws -> [HTTP2Frame.FramePayload] {
        // Responses are flushed at the end of the loop's tick (TickFlusher): let the tick end.
        channel.embeddedEventLoop.run()
        var frames: [HTTP2Frame.FramePayload] = []
        while let frame = try channel.readOutbound(as: HTTP2Frame.self) { frames.append(frame.payload) }
        return frames
    }

    private func request(_ headers: HPACKHeaders, endStream: Bool = true) -> HTTP2Frame {
        HTTP2Frame(streamID: 1, payload: .headers(.init(headers: headers, endStream: endStream)))
    }

    @Test func headwaysOwnAnswerToAGRPCCallIsTrailersOnly() throws {
        let channel = try self.makeStream()
        var headers: HPACKHeaders = [":method": "POST", ":scheme": "http", ":path": "/pkg.Svc/Call", ":authority": "w"]
        headers.add(name: "content-type", value: "application/grpc+proto")
        try channel.writeInbound(self.request(headers))
        let frames = try self.frames(channel)
        guard frames.count == 1, case .headers(let answer) = frames[0] else {
            Issue.record("expected one HEADERS frame, got \(frames)")
            return
        }
        #expect(answer.endStream)
        #expect(answer.headers.first(name: ":status") == "200")
        #expect(answer.headers.first(name: "grpc-status") == "14")
        #expect(answer.headers.first(name: "grpc-message") == "no endpoint of upstream 'web' is available")
    }

    @Test func headwaysOwnAnswerToAnotherRequestKeepsItsStatusAndBody() throws {
        let channel = try self.makeStream()
        let headers: HPACKHeaders = [":method": "GET", ":scheme": "http", ":path": "/", ":authority": "w"]
        try channel.writeInbound(self.request(headers))
        let frames = try self.frames(channel)
        guard frames.count == 2, case .headers(let head) = frames[0], case .data(let body) = frames[1] else {
            Issue.record("expected HEADERS then DATA, got \(frames)")
            return
        }
        #expect(head.headers.first(name: ":status") == "503")
        #expect(head.headers.first(name: "retry-after") == "1")
        #expect(!head.endStream && body.endStream)
        guard case .byteBuffer(let bytes) = body.data else { return }
        #expect(String(buffer: bytes) == "no endpoint of upstream 'web' is available\n")
    }
}

/// The bridge's response side, as a value: the parts of the pod's response as the exchange relays them, in,
/// and the frames for the client, out.
struct HTTP2StreamBridgeResponseTests {
    private func head(_ text: String) throws -> ResponseHead {
        try ResponseHead(parsing: ByteBuffer(string: text), isHeadRequest: false)
    }

    private func frames(_ frames: HTTP2StreamBridge.ResponseFrames) -> [HTTP2Frame.FramePayload] {
        [frames.first, frames.second].compactMap { $0 }
    }

    @Test func aHeadAndOneBodyPieceEndTheStreamOnTheDataFrameWithNoEmptyFrameAfter() throws {
        var bridge = HTTP2StreamBridge()
        bridge.responseHead(try self.head("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n"))
        let first = self.frames(bridge.responseBody(ByteBuffer(string: "abc")))
        let last = self.frames(bridge.responseEnded(trailers: nil))
        guard first.count == 1, case .headers(let headers) = first[0], last.count == 1, case .data(let data) = last[0]
        else {
            Issue.record("expected HEADERS, then DATA, got \(first) and \(last)")
            return
        }
        #expect(!headers.endStream && data.endStream)
        #expect(headers.headers.first(name: ":status") == "200" && headers.headers.first(name: "connection") == nil)
        #expect(data.data.readableBytes == 3)
        #expect(bridge.responseEnded)
    }

    @Test func aResponseWithNoBodyIsOneHeadersFrameThatEndsTheStream() throws {
        var bridge = HTTP2StreamBridge()
        bridge.responseHead(try self.head("HTTP/1.1 204 No Content\r\n\r\n"))
        let frames = self.frames(bridge.responseEnded(trailers: nil))
        guard frames.count == 1, case .headers(let headers) = frames[0] else {
            Issue.record("expected one HEADERS, got \(frames)")
            return
        }
        #expect(headers.endStream && headers.headers.first(name: ":status") == "204")
    }

    @Test func trailersEndTheStreamAfterTheHeldBodyPiece() throws {
        var bridge = HTTP2StreamBridge()
        bridge.responseHead(try self.head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"))
        _ = bridge.responseBody(ByteBuffer(string: "message"))
        let frames = self.frames(bridge.responseEnded(trailers: ByteBuffer(string: "Grpc-Status: 0\r\n\r\n")))
        guard frames.count == 2, case .data(let data) = frames[0], case .headers(let trailers) = frames[1] else {
            Issue.record("expected DATA, then trailers, got \(frames)")
            return
        }
        #expect(!data.endStream && trailers.endStream)
        #expect(trailers.headers.first(name: "grpc-status") == "0")
    }

    @Test func aFlushTakesTheHeldBodyPieceAndTheEndThenComesAsAnEmptyDataFrame() throws {
        var bridge = HTTP2StreamBridge()
        bridge.responseHead(try self.head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"))
        #expect(self.frames(bridge.responseBody(ByteBuffer(string: "part"))).count == 1, "the HEADERS")
        guard case .data(let held)? = bridge.takeHeldData().first else {
            Issue.record("no held DATA")
            return
        }
        #expect(held.data.readableBytes == 4 && !held.endStream)
        let end = self.frames(bridge.responseEnded(trailers: nil))
        guard end.count == 1, case .data(let last) = end[0] else {
            Issue.record("expected one DATA, got \(end)")
            return
        }
        #expect(last.endStream && last.data.readableBytes == 0)
    }

    @Test func aLocalAnswerAfterThePodsHeadIsRefused() throws {
        var bridge = HTTP2StreamBridge()
        bridge.responseHead(try self.head("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"))
        let error = ProxyError.upstreamTimeout(endpoint: "127.0.0.2:8080", timeout: "1s")
        #expect(bridge.localAnswer(error, allocator: ByteBufferAllocator()) == nil)
    }

    @Test func aLocalAnswerAfterPartOfTheBodyWasFlushedIsRefusedToo() throws {
        var bridge = HTTP2StreamBridge()
        bridge.responseHead(try self.head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"))
        _ = bridge.responseBody(ByteBuffer(string: "part"))
        _ = bridge.takeHeldData()
        let error = ProxyError.upstreamTimeout(endpoint: "127.0.0.2:8080", timeout: "1s")
        #expect(bridge.localAnswer(error, allocator: ByteBufferAllocator()) == nil)
    }
}

/// The upstream stream codec, a value: the exchange's HTTP/1.1 request out as frames, the pod's frames back as
/// the HTTP/1.1 response its connection parses.
struct HTTP2UpstreamStreamCodecTests {
    /// The frames for `pieces` of request bytes, each piece written and the last one flushed.
    private func frames(_ pieces: [String]) throws -> [HTTP2Frame.FramePayload] {
        var codec = HTTP2UpstreamStreamCodec()
        var frames: [HTTP2Frame.FramePayload] = []
        for piece in pieces {
            var bytes = ByteBuffer(string: piece)
            try codec.requestBytes(&bytes) { frames.append($0) }
        }
        if let last = codec.flush() { frames.append(last) }
        return frames
    }

    private func response(_ payloads: [HTTP2Frame.FramePayload]) -> String {
        var codec = HTTP2UpstreamStreamCodec()
        var text = ""
        for payload in payloads {
            codec.responseFrame(payload, allocator: ByteBufferAllocator()) { text += String(buffer: $0) }
        }
        return text
    }

    @Test func aBodilessRequestIsOneHeadersFrameThatEndsTheStream() throws {
        let frames = try self.frames([
            "GET /a?b=1 HTTP/1.1\r\nHost: web:80\r\nX-Trace: 7\r\nVia: 1.1 headway\r\n\r\n"
        ])
        guard frames.count == 1, case .headers(let headers) = frames[0] else {
            Issue.record("expected one HEADERS frame, got \(frames)")
            return
        }
        #expect(headers.endStream)
        #expect(
            Array(headers.headers.map { "\($0.name): \($0.value)" }) == [
                ":method: GET", ":scheme: http", ":path: /a?b=1", ":authority: web:80", "x-trace: 7",
                "via: 1.1 headway", "te: trailers",
            ]
        )
    }

    @Test(arguments: [false, true])
    func aBodyBecomesDataFramesAndTheLastEndsTheStream(chunked: Bool) throws {
        let framing = chunked ? "Transfer-Encoding: chunked" : "Content-Length: 5"
        let frames = try self.frames([
            "POST /p HTTP/1.1\r\nHost: w\r\n\(framing)\r\n\r\n",
            chunked ? "3\r\nhel\r\n" : "hel",
            chunked ? "2\r\nlo\r\n0\r\n\r\n" : "lo",
        ])
        guard frames.count == 3, case .headers(let head) = frames[0], case .data(let first) = frames[1],
            case .data(let last) = frames[2]
        else {
            Issue.record("expected HEADERS, DATA, DATA; got \(frames)")
            return
        }
        #expect(!head.endStream && !first.endStream && last.endStream)
        #expect(head.headers[canonicalForm: "content-length"].isEmpty, "DATA frames frame the body")
        #expect(head.headers[canonicalForm: "transfer-encoding"].isEmpty)
        guard case .byteBuffer(let a) = first.data, case .byteBuffer(let b) = last.data else { return }
        #expect(String(buffer: a) + String(buffer: b) == "hello")
    }

    @Test func aResponseWithoutLengthIsChunkedAndItsTrailersFollowTheLastChunk() throws {
        let head: HPACKHeaders = [":status": "200", "content-type": "application/grpc"]
        let trailers: HPACKHeaders = ["grpc-status": "0", "grpc-message": "ok"]
        let text = self.response([
            .headers(.init(headers: head)),
            .data(.init(data: .byteBuffer(ByteBuffer(string: "abc")))),
            .headers(.init(headers: trailers, endStream: true)),
        ])
        #expect(
            text == "HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ntransfer-encoding: chunked\r\n\r\n"
                + "3\r\nabc\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n"
        )
        // And the connection behind reads that as any pod's response, trailers included.
        var parser = ResponseParser()
        parser.expectResponse()
        var bytes = ByteBuffer(string: text)
        var events: [String] = []
        while let event = try parser.next(from: &bytes, isHeadRequest: false) {
            switch event {
            case .trailers(let section): events.append("trailers " + String(buffer: section))
            case .end: events.append("end")
            default: continue
            }
        }
        #expect(events == ["trailers grpc-status: 0\r\ngrpc-message: ok\r\n\r\n", "end"])
    }

    @Test func aTrailersOnlyResponseHasNoBody() throws {
        let head: HPACKHeaders = [":status": "200", "grpc-status": "5", "grpc-message": "not found"]
        #expect(
            self.response([.headers(.init(headers: head, endStream: true))])
                == "HTTP/1.1 200 OK\r\ngrpc-status: 5\r\ngrpc-message: not found\r\ncontent-length: 0\r\n\r\n"
        )
    }

    @Test func theRequestEndsAndTheResponseStartsAsTheFramesSay() throws {
        var codec = HTTP2UpstreamStreamCodec()
        var bytes = ByteBuffer(string: "GET / HTTP/1.1\r\nHost: w\r\n\r\n")
        try codec.requestBytes(&bytes) { _ in }
        #expect(codec.requestEnded && !codec.responseStarted)
        codec.responseFrame(.headers(.init(headers: [":status": "200"])), allocator: ByteBufferAllocator()) { _ in }
        #expect(codec.responseStarted)
    }

    @Test func aReceiveWindowIsReopenedInOneUpdateOnceHalfOfItIsConsumed() {
        var window = HTTP2ReceiveWindow(size: 65_535)
        #expect(window.consumed(16_000) == nil)
        #expect(window.consumed(16_000) == nil)
        #expect(window.consumed(1_000) == 33_000, "past half: all that was consumed goes back at once")
        #expect(window.consumed(100) == nil, "and the count starts again")
    }

    @Test func aRefusedStreamIsToldApartFromOtherResets() {
        #expect(UpstreamStreamReset(code: .refusedStream).wasRefused)
        #expect(!UpstreamStreamReset(code: .cancel).wasRefused)
        #expect(!UpstreamStreamReset(code: .internalError).wasRefused)
    }
}

/// Request streams on an h2c connection's handler, on an `EmbeddedChannel` with no HTTP/2 framing in front:
/// the frames a stream writes, and what it does with the frames and closures swift-nio-http2 reports.
struct HTTP2UpstreamStreamTests {
    /// A stream's user that records what reaches it.
    final class Recorder: HTTP2StreamUser {
        var takesStreamBytes = true
        var received = ""
        var readsCompleted = 0
        var closedWith: [String] = []

        func streamReceived(_ bytes: ByteBuffer) { self.received += String(buffer: bytes) }
        func streamReadComplete() { self.readsCompleted += 1 }
        func streamBecameWritable() {}
        func streamClosed(error: (any Error)?) { self.closedWith.append(error.map { "\($0)" } ?? "clean") }
    }

    private func makeConnection() throws -> (EmbeddedChannel, HTTP2UpstreamConnection) {
        let channel = EmbeddedChannel()
        let endpoint = Endpoint(
            address: try SocketAddress(ipAddress: "127.0.0.2", port: 8081),
            label: "127.0.0.2:8081",
            health: .healthy,
            metrics: ProxyMetrics().endpointMetrics(upstream: "web", endpoint: "127.0.0.2:8081")
        )
        let connection = HTTP2UpstreamConnection(
            endpoint: endpoint,
            eventLoop: channel.embeddedEventLoop,
            logger: Logger(label: "test")
        )
        try channel.pipeline.syncOperations.addHandler(connection)
        try channel.connect(to: endpoint.address).wait()
        return (channel, connection)
    }

    private func startedStream(
        on connection: HTTP2UpstreamConnection,
        _ channel: EmbeddedChannel
    ) throws -> (HTTP2UpstreamStream, Recorder) {
        let stream = try #require(connection.makeStream())
        let user = Recorder()
        stream.user = user
        stream.write(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: w\r\n\r\n"))
        stream.flush()
        return (stream, user)
    }

    private func outbound(_ channel: EmbeddedChannel) throws -> [HTTP2Frame] {
        var frames: [HTTP2Frame] = []
        while let frame = try channel.readOutbound(as: HTTP2Frame.self) { frames.append(frame) }
        return frames
    }

    private func isReset(_ frame: HTTP2Frame) -> Bool {
        if case .rstStream = frame.payload { return true }
        return false
    }

    @Test func streamIdsRiseInTheOrderStreamsStartSending() throws {
        let (channel, connection) = try self.makeConnection()
        let first = try #require(connection.makeStream())
        let second = try #require(connection.makeStream())
        second.user = Recorder()
        first.user = Recorder()
        second.write(ByteBuffer(string: "GET /2 HTTP/1.1\r\nHost: w\r\n\r\n"))
        second.flush()
        first.write(ByteBuffer(string: "GET /1 HTTP/1.1\r\nHost: w\r\n\r\n"))
        first.flush()
        #expect(try self.outbound(channel).map(\.streamID) == [HTTP2StreamID(1), HTTP2StreamID(3)])
        #expect(second.id == HTTP2StreamID(1) && first.id == HTTP2StreamID(3))
    }

    @Test func aStreamGivenUpBeforeThePodAnsweredIsResetOnThePodsFirstFrame() throws {
        let (channel, connection) = try self.makeConnection()
        let (stream, user) = try self.startedStream(on: connection, channel)
        _ = try self.outbound(channel)
        // The request went out whole and nothing came back yet: swift-nio-http2 may still hold its HEADERS.
        stream.close()
        #expect(try self.outbound(channel).isEmpty, "no reset before the pod has the stream")
        #expect(!stream.isClosed)
        try channel.writeInbound(
            HTTP2Frame(streamID: stream.id!, payload: .headers(.init(headers: [":status": "200"])))
        )
        let frames = try self.outbound(channel)
        #expect(frames.count == 1 && self.isReset(frames[0]), "the pod's first frame shows it has the stream")
        #expect(stream.isClosed && user.received.isEmpty, "nothing of the abandoned answer goes on")
    }

    @Test func aStreamWithoutAnAnswerIsResetWithinASecond() throws {
        let (channel, connection) = try self.makeConnection()
        let (stream, user) = try self.startedStream(on: connection, channel)
        _ = try self.outbound(channel)
        stream.close()
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(999))
        #expect(!stream.isClosed)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(try self.outbound(channel).contains(where: self.isReset))
        #expect(stream.isClosed && user.closedWith == ["clean"])
    }

    @Test func framesWaitWhileTheUserTakesNoBytesAndTheStreamClosesOnlyAfterThem() throws {
        let (channel, connection) = try self.makeConnection()
        let (stream, user) = try self.startedStream(on: connection, channel)
        let id = stream.id!
        user.takesStreamBytes = false
        try channel.writeInbound(
            HTTP2Frame(streamID: id, payload: .headers(.init(headers: [":status": "200", "content-length": "2"])))
        )
        try channel.writeInbound(
            HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(.init(string: "ok")), endStream: true)))
        )
        channel.pipeline.fireUserInboundEventTriggered(StreamClosedEvent(streamID: id, reason: nil))
        #expect(user.received.isEmpty && user.closedWith.isEmpty, "held, and the close waits for them")
        user.takesStreamBytes = true
        let readsBefore = user.readsCompleted
        stream.resumeDelivery()
        #expect(user.received.hasPrefix("HTTP/1.1 200 OK\r\n") && user.received.hasSuffix("\r\n\r\nok"))
        #expect(user.readsCompleted == readsBefore + 1, "what was held is one read batch")
        #expect(user.closedWith == ["clean"])
    }

    @Test func aStreamClosureReportedWhileItsFrameIsHandedOverWaitsForTheFrame() throws {
        let (channel, connection) = try self.makeConnection()
        let (stream, user) = try self.startedStream(on: connection, channel)
        let id = stream.id!
        try channel.writeInbound(
            HTTP2Frame(streamID: id, payload: .headers(.init(headers: [":status": "200", "content-length": "40000"])))
        )
        // 40,000 bytes cross half the connection's window: its WINDOW_UPDATE is written while the frame is handed
        // over, and swift-nio-http2 reports the stream's END_STREAM then. Here the report comes from the user.
        final class ClosesOnData: HTTP2StreamUser {
            let inner: Recorder
            let fire: () -> Void
            init(_ inner: Recorder, fire: @escaping () -> Void) { (self.inner, self.fire) = (inner, fire) }
            var takesStreamBytes: Bool { true }
            func streamReceived(_ bytes: ByteBuffer) {
                self.inner.streamReceived(bytes)
                self.fire()
            }
            func streamReadComplete() {}
            func streamBecameWritable() {}
            func streamClosed(error: (any Error)?) { self.inner.streamClosed(error: error) }
        }
        stream.user = ClosesOnData(user) {
            channel.pipeline.fireUserInboundEventTriggered(StreamClosedEvent(streamID: id, reason: nil))
            #expect(user.closedWith.isEmpty, "not closed while its frame is handed over")
        }
        let body = ByteBuffer(repeating: UInt8(ascii: "x"), count: 40_000)
        try channel.writeInbound(
            HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(body), endStream: true)))
        )
        #expect(user.received.hasSuffix(String(repeating: "x", count: 40_000)))
        #expect(user.closedWith == ["clean"])
        let updates = try self.outbound(channel).filter { $0.streamID == .rootStream }
        #expect(updates.count == 1, "the connection's window reopened as the bytes arrived")
    }

    @Test func streamsCutOffByGoAwayCloseAsRefused() throws {
        let (channel, connection) = try self.makeConnection()
        let (processed, processedUser) = try self.startedStream(on: connection, channel)
        let (cutOff, cutOffUser) = try self.startedStream(on: connection, channel)
        try channel.writeInbound(
            HTTP2Frame(
                streamID: .rootStream,
                payload: .goAway(lastStreamID: processed.id!, errorCode: .noError, opaqueData: nil)
            )
        )
        channel.pipeline.fireUserInboundEventTriggered(StreamClosedEvent(streamID: cutOff.id!, reason: .cancel))
        #expect(cutOffUser.closedWith == ["\(UpstreamStreamReset(code: .refusedStream))"])
        #expect(processedUser.closedWith.isEmpty)
        #expect(connection.makeStream() == nil, "no new stream after GOAWAY")
    }

    @Test func theStreamsOfAClosedConnectionCloseWithIt() throws {
        let (channel, connection) = try self.makeConnection()
        let (_, user) = try self.startedStream(on: connection, channel)
        try channel.close().wait()
        #expect(user.closedWith.count == 1 && user.closedWith[0] != "clean")
    }
}

/// Client streams on an HTTP/2 connection's handler with a recording handler behind each: what reaches it,
/// and how the stream's windows hold back a client that reads slowly or a handler that reads nothing.
struct HTTP2ClientStreamTests {
    final class Recorder: HTTP2ClientStreamHandler {
        var takes = true
        var received = ""
        var writability: [Bool] = []
        var closed = 0
        var stream: HTTP2ClientStream?

        func takesRequestBytes() -> Bool { self.takes }
        func streamOpened(_ stream: HTTP2ClientStream) { self.stream = stream }
        func streamRequestBytes(_ bytes: ByteBuffer) { self.received += String(buffer: bytes) }
        func streamReadComplete() {}
        func streamClientDeadline(_ timeout: TimeAmount) {}
        func streamWritabilityChanged(isWritable: Bool) { self.writability.append(isWritable) }
        func streamShouldQuiesce() {}
        func streamClosed() { self.closed += 1 }
    }

    private func makeConnection() throws -> (EmbeddedChannel, Recorder) {
        let channel = EmbeddedChannel()
        let cluster = LoopCluster.withoutEndpoints(on: channel.embeddedEventLoop)
        let recorder = Recorder()
        try channel.pipeline.syncOperations.addHandler(
            HTTP2ClientConnection(flusher: cluster.flusher, logger: Logger(label: "test")) { recorder }
        )
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, recorder)
    }

    private static let get: HPACKHeaders = [":method": "GET", ":scheme": "http", ":path": "/", ":authority": "w"]

    @Test func framesWaitWhileTheHandlerTakesNoBytes() throws {
        let (channel, recorder) = try self.makeConnection()
        recorder.takes = false
        try channel.writeInbound(HTTP2Frame(streamID: 1, payload: .headers(.init(headers: Self.get, endStream: true))))
        #expect(recorder.received.isEmpty)
        recorder.takes = true
        recorder.stream?.resumeDelivery()
        #expect(recorder.received.hasPrefix("GET / HTTP/1.1\r\n"))
    }

    @Test func aStreamIsUnwritableOnceItsClientsWindowIsWrittenFullAndWritableWhenItReopens() throws {
        let (channel, recorder) = try self.makeConnection()
        try channel.writeInbound(HTTP2Frame(streamID: 1, payload: .headers(.init(headers: Self.get, endStream: true))))
        let stream = try #require(recorder.stream)
        stream.writeResponseHead(
            try ResponseHead(
                parsing: ByteBuffer(string: "HTTP/1.1 200 OK\r\ncontent-length: 70000\r\n\r\n"),
                isHeadRequest: false
            )
        )
        stream.writeResponseBody(ByteBuffer(repeating: UInt8(ascii: "x"), count: 60_000))
        stream.flush()
        #expect(stream.isWritable, "60,000 of the 65,535 bytes of the window")
        stream.writeResponseBody(ByteBuffer(repeating: UInt8(ascii: "x"), count: 10_000))
        stream.flush()
        #expect(!stream.isWritable && recorder.writability == [false], "written past the window, sent or not")
        try channel.writeInbound(HTTP2Frame(streamID: 1, payload: .windowUpdate(windowSizeIncrement: 4_000)))
        #expect(!stream.isWritable, "still 465 bytes short")
        try channel.writeInbound(HTTP2Frame(streamID: 1, payload: .windowUpdate(windowSizeIncrement: 1_000)))
        #expect(stream.isWritable && recorder.writability == [false, true])
    }

    @Test func aClientResetClosesTheStreamOnceAndLaterFramesForItAreIgnored() throws {
        let (channel, recorder) = try self.makeConnection()
        try channel.writeInbound(HTTP2Frame(streamID: 1, payload: .headers(.init(headers: Self.get, endStream: false))))
        channel.pipeline.fireUserInboundEventTriggered(StreamClosedEvent(streamID: 1, reason: .cancel))
        channel.pipeline.fireUserInboundEventTriggered(StreamClosedEvent(streamID: 1, reason: .cancel))
        try channel.writeInbound(
            HTTP2Frame(streamID: 1, payload: .data(.init(data: .byteBuffer(.init(string: "late")))))
        )
        #expect(recorder.closed == 1)
        #expect(!recorder.received.contains("late"))
    }
}
