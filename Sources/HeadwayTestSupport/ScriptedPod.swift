import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// A pod that behaves in one precise way, for fault and protocol tests: it accepts connections like any
/// server, then follows its script. It counts the connections on which a request arrived, so a test can tell
/// whether a request was sent to it once or retried.
package final class ScriptedPod: Sendable {
    package enum Behaviour: Sendable {
        /// Reads everything, never answers: a hung process or a dropped response.
        case blackhole
        /// Reads until this many request bytes arrived on a connection, then resets it (RST, not FIN).
        case resetAfterRequestBytes(Int)
        /// Answers a request head with `101 Switching Protocols` (`Upgrade: websocket`), then echoes every
        /// byte it receives: a WebSocket server without the framing.
        case switchProtocolsAndEcho
        /// Records every byte it receives (see ``receivedBytes``) and answers each request `200 ok` once its
        /// body has arrived, parsed by NIO's decoder (an independent reading of what Headway sent).
        case recordAndAnswer
        /// Answers the first request head on each connection with exactly these bytes (a broken or odd pod),
        /// then closes the connection if told to.
        case respond(String, thenClose: Bool)
    }

    package let host: String
    package let port: Int
    private let channel: any Channel
    private let requests: NIOLockedValueBox<Int>
    private let recorded: NIOLockedValueBox<[UInt8]>

    package var address: String { "\(self.host):\(self.port)" }

    /// Connections on which at least one request byte arrived.
    package var connectionsWithRequests: Int { self.requests.withLockedValue { $0 } }

    /// Every byte received so far, over all connections, in arrival order (`recordAndAnswer`).
    package var receivedBytes: String { self.recorded.withLockedValue { String(decoding: $0, as: UTF8.self) } }

    /// Forgets what was recorded, between the cases of a table.
    package func clearRecording() {
        self.recorded.withLockedValue { $0.removeAll() }
    }

    private init(
        host: String,
        port: Int,
        channel: any Channel,
        requests: NIOLockedValueBox<Int>,
        recorded: NIOLockedValueBox<[UInt8]>
    ) {
        self.host = host
        self.port = port
        self.channel = channel
        self.requests = requests
        self.recorded = recorded
    }

    package static func start(
        host: String,
        port: Int,
        behaviour: Behaviour,
        group: any EventLoopGroup
    ) async throws -> ScriptedPod {
        guard !RawHTTP.canConnect(host: host, port: port) else {
            throw CommandError(description: "\(host):\(port) is already in use by another process; stop it first")
        }
        let requests = NIOLockedValueBox(0)
        let recorded = NIOLockedValueBox<[UInt8]>([])
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if case .recordAndAnswer = behaviour {
                        try channel.pipeline.syncOperations.addHandler(RecordingHandler(recorded: recorded))
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                        try channel.pipeline.syncOperations.addHandler(OKResponder())
                    } else {
                        try channel.pipeline.syncOperations.addHandler(
                            FaultHandler(behaviour: behaviour, requests: requests)
                        )
                    }
                }
            }
            .bind(host: host, port: port)
            .get()
        return ScriptedPod(host: host, port: port, channel: channel, requests: requests, recorded: recorded)
    }

    package func stop() async throws {
        try await self.channel.close()
    }
}

private final class FaultHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let behaviour: ScriptedPod.Behaviour
    private let requests: NIOLockedValueBox<Int>
    private var received = 0
    /// Request head bytes until the blank line, for `switchProtocolsAndEcho`.
    private var head: [UInt8] = []
    private var switched = false

    init(behaviour: ScriptedPod.Behaviour, requests: NIOLockedValueBox<Int>) {
        self.behaviour = behaviour
        self.requests = requests
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = self.unwrapInboundIn(data)
        let bytes = buffer.readableBytes
        switch self.behaviour {
        case .switchProtocolsAndEcho:
            self.switchProtocolsAndEcho(buffer, context: context)
        case .respond(let answer, let thenClose):
            self.respond(answer, thenClose: thenClose, after: buffer, context: context)
        default:
            break
        }
        if self.received == 0 && bytes > 0 {
            self.requests.withLockedValue { $0 += 1 }
        }
        self.received += bytes
        if case .resetAfterRequestBytes(let limit) = self.behaviour, self.received >= limit {
            // SO_LINGER with a zero timeout makes close() send RST at once.
            guard let socket = context.channel as? any SocketOptionProvider else {
                context.close(promise: nil)
                return
            }
            socket.setSoLinger(linger(l_onoff: 1, l_linger: 0)).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func respond(_ answer: String, thenClose: Bool, after buffer: ByteBuffer, context: ChannelHandlerContext) {
        guard !self.switched else { return }
        self.head += buffer.readableBytesView
        guard self.head.firstRange(of: Array("\r\n\r\n".utf8)) != nil else { return }
        self.switched = true
        context.writeAndFlush(NIOAny(context.channel.allocator.buffer(string: answer))).assumeIsolated().whenComplete {
            _ in
            if thenClose { context.close(promise: nil) }
        }
    }

    private func switchProtocolsAndEcho(_ buffer: ByteBuffer, context: ChannelHandlerContext) {
        if self.switched {
            context.writeAndFlush(NIOAny(buffer), promise: nil)
            return
        }
        self.head += buffer.readableBytesView
        guard let end = self.head.firstRange(of: Array("\r\n\r\n".utf8)) else { return }
        let rest = self.head[end.upperBound...]
        self.switched = true
        var answer = context.channel.allocator.buffer(
            string: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        answer.writeBytes(rest)
        context.writeAndFlush(NIOAny(answer), promise: nil)
    }
}

/// Keeps a copy of every byte, then passes it on to the HTTP decoder.
private final class RecordingHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let recorded: NIOLockedValueBox<[UInt8]>

    init(recorded: NIOLockedValueBox<[UInt8]>) {
        self.recorded = recorded
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = self.unwrapInboundIn(data)
        self.recorded.withLockedValue { $0 += buffer.readableBytesView }
        context.fireChannelRead(data)
    }
}

/// Answers every request `200 ok` once it has been read whole.
private final class OKResponder: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .end = self.unwrapInboundIn(data) else { return }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Length", value: "2")
        context.write(
            self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))),
            promise: nil
        )
        context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "ok")))), promise: nil)
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
    }
}
