// The floor of an HTTP/2 server built on swift-nio-http2, for `scripts/bench`: it answers every request
// itself, at once, with no pod behind it, so what it costs per request is swift-nio-http2's framing, HPACK and
// stream state plus NIO's socket work, the least any proxy on that stack pays before it does anything.
//
// Usage: h2-floor PORT   (listens on 127.0.0.1:PORT, one event loop, h2c with prior knowledge)

import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix

/// Answers each request's HEADERS with HEADERS and one DATA frame that ends the stream; flushes once a read.
final class Answerer: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private let body: ByteBuffer
    private let headers: HPACKHeaders
    private var answered = false

    init(body: ByteBuffer) {
        self.body = body
        self.headers = [":status": "200", "content-type": "text/plain", "content-length": "\(body.readableBytes)"]
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = self.unwrapInboundIn(data)
        guard case .headers(let request) = frame.payload, request.endStream else { return }
        let head = HTTP2Frame(streamID: frame.streamID, payload: .headers(.init(headers: self.headers)))
        let body = HTTP2Frame(
            streamID: frame.streamID,
            payload: .data(.init(data: .byteBuffer(self.body), endStream: true))
        )
        context.write(self.wrapOutboundOut(head), promise: nil)
        context.write(self.wrapOutboundOut(body), promise: nil)
        self.answered = true
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if self.answered {
            self.answered = false
            context.flush()
        }
    }
}

guard CommandLine.arguments.count == 2, let port = Int(CommandLine.arguments[1]) else {
    fatalError("usage: h2-floor PORT")
}
// As Headway configures its client connections: the header lists are not checked a second time.
var configuration = NIOHTTP2Handler.ConnectionConfiguration()
configuration.headerBlockValidation = .disabled
let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
let server = try ServerBootstrap(group: group)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            let body = channel.allocator.buffer(string: "pod-1\n")
            try channel.pipeline.syncOperations.addHandler(
                NIOHTTP2Handler(mode: .server, connectionConfiguration: configuration)
            )
            try channel.pipeline.syncOperations.addHandler(Answerer(body: body))
        }
    }
    .bind(host: "127.0.0.1", port: port)
    .wait()
try server.closeFuture.wait()
