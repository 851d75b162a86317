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

    @Test func grpcMessagesArePercentEncoded() {
        #expect(HTTP2StreamBridge.percentEncoded("no pod: 100% gone ✓") == "no pod: 100%25 gone %E2%9C%93")
    }
}

/// The bridge on an `EmbeddedChannel` with a ``DownstreamHandler`` behind it, as on a real stream.
struct HTTP2StreamBridgeTests {
    private func makeStream() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        let cluster = LoopCluster.withoutEndpoints(on: channel.embeddedEventLoop)
        try channel.pipeline.syncOperations.addHandlers([
            HTTP2StreamBridge(logger: Logger(label: "test")),
            DownstreamHandler(cluster: cluster, client: .init(), accessLog: nil, logger: Logger(label: "test")),
        ])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    private func frames(_ channel: EmbeddedChannel) throws -> [HTTP2Frame.FramePayload] {
        var frames: [HTTP2Frame.FramePayload] = []
        while let frame = try channel.readOutbound(as: HTTP2Frame.FramePayload.self) { frames.append(frame) }
        return frames
    }

    @Test func headwaysOwnAnswerToAGRPCCallIsTrailersOnly() throws {
        let channel = try self.makeStream()
        var headers: HPACKHeaders = [":method": "POST", ":scheme": "http", ":path": "/pkg.Svc/Call", ":authority": "w"]
        headers.add(name: "content-type", value: "application/grpc+proto")
        try channel.writeInbound(HTTP2Frame.FramePayload.headers(.init(headers: headers, endStream: true)))
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
        try channel.writeInbound(HTTP2Frame.FramePayload.headers(.init(headers: headers, endStream: true)))
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
