// The floors of a server built on SwiftNIO, for `scripts/bench`: each mode does less than any proxy on NIO
// can, so what it costs is the least such a proxy pays, set beside HAProxy doing the same.
//
//   nio-floor h2 PORT              answers every HTTP/2 request itself (h2c with prior knowledge): swift-nio-http2's
//                                  framing, HPACK and stream state plus NIO's socket work, with no pod behind it.
//   nio-floor relay PORT POD...    an HTTP/1 proxy with no HTTP in it: each client connection is paired with a
//                                  connection to the next pod (round-robin) and bytes are copied both ways untouched,
//                                  flushed at the end of the loop's tick as Headway flushes. Two reads and two writes a request, like any proxy, and
//                                  nothing else: no parsing, no balancing per request, no pool.
//   nio-floor answer PORT          answers every HTTP/1 request head itself with a fixed response and keeps no state
//                                  but where a head ends: what NIO holds for an idle keep-alive connection.
//
// Every mode listens on 127.0.0.1:PORT with one event loop; POD is HOST:PORT.

import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix

/// Answers each request's HEADERS with HEADERS and one DATA frame that ends the stream; flushes once a read.
final class HTTP2Answerer: ChannelInboundHandler {
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

/// Flushes deferred to the end of the loop's tick, as Headway's `TickFlusher` does them: every connection
/// written while the tick's events ran is flushed once after them.
final class EndOfTickFlush: @unchecked Sendable {  // @unchecked: only so that its task can capture it; loop-bound.
    private let eventLoop: any EventLoop
    private var waiting: [ChannelHandlerContext] = []
    private var flushing: [ChannelHandlerContext] = []
    private var isScheduled = false

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func flush(_ context: ChannelHandlerContext) {
        self.waiting.append(context)
        guard !self.isScheduled else { return }
        self.isScheduled = true
        self.eventLoop.execute {
            self.isScheduled = false
            swap(&self.waiting, &self.flushing)
            for context in self.flushing {
                context.flush()
            }
            self.flushing.removeAll(keepingCapacity: true)
        }
    }
}

/// One side of a relayed pair: what it reads is written to the other side's connection, which is flushed at
/// the end of the tick.
final class Relay: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let flusher: EndOfTickFlush
    private var context: ChannelHandlerContext?
    private var peer: Relay?
    private var wrote = false

    init(flusher: EndOfTickFlush) {
        self.flusher = flusher
    }

    /// Joins two sides; each lets go of the other when its connection closes.
    static func pair(_ client: Relay, _ pod: Relay) {
        client.peer = pod
        pod.peer = client
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let peer = self.peer?.context else { return }
        peer.write(data, promise: nil)
        self.wrote = true
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if self.wrote {
            self.wrote = false
            if let peer = self.peer?.context {
                self.flusher.flush(peer)
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.peer?.context?.close(promise: nil)
        self.peer = nil
        self.context = nil
    }
}

/// Writes a fixed response for every request head it sees end ("\r\n\r\n"); requests carry no body here.
final class HTTP1Answerer: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private static let headEnd: [UInt8] = Array("\r\n\r\n".utf8)
    private let response: ByteBuffer
    /// How much of "\r\n\r\n" the bytes read so far end with: all the state a connection keeps between reads.
    private var matched = 0
    private var answered = false

    init(response: ByteBuffer) {
        self.response = response
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = self.unwrapInboundIn(data)
        for byte in bytes.readableBytesView {
            if byte == Self.headEnd[self.matched] {
                self.matched += 1
            } else {
                self.matched = byte == Self.headEnd[0] ? 1 : 0
            }
            if self.matched == Self.headEnd.count {
                self.matched = 0
                context.write(self.wrapOutboundOut(self.response), promise: nil)
                self.answered = true
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if self.answered {
            self.answered = false
            context.flush()
        }
    }
}

func usage() -> Never {
    fatalError("usage: nio-floor h2 PORT | nio-floor relay PORT HOST:PORT... | nio-floor answer PORT")
}

func socketAddress(_ hostAndPort: String) throws -> SocketAddress {
    guard let colon = hostAndPort.lastIndex(of: ":"), let port = Int(hostAndPort[hostAndPort.index(after: colon)...])
    else { usage() }
    return try SocketAddress(ipAddress: String(hostAndPort[..<colon]), port: port)
}

let arguments = CommandLine.arguments.dropFirst()
guard let mode = arguments.first, arguments.count >= 2, let port = Int(arguments[arguments.startIndex + 1]) else {
    usage()
}
let pods = try arguments.dropFirst(2).map(socketAddress)
let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
let loop = group.next()
// Loop-confined: the round-robin position of `relay`.
let nextPod = try loop.submit { NIOLoopBoundBox(0, eventLoop: loop) }.wait()
let flusher = EndOfTickFlush(eventLoop: loop)
// As Headway configures its client connections: the header lists are not checked a second time.
let http2Configuration = {
    var configuration = NIOHTTP2Handler.ConnectionConfiguration()
    configuration.headerBlockValidation = .disabled
    return configuration
}()
// As Headway starts its client connections' receive buffers.
let receiveBuffers = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65536)

let bootstrap = ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 1024)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
    .childChannelOption(.recvAllocator, value: receiveBuffers)
    // A relayed client is read only once its pod connection is up.
    .childChannelOption(.autoRead, value: mode != "relay")
let server: any Channel
switch mode {
case "h2":
    server = try bootstrap.childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            let body = channel.allocator.buffer(string: "pod-1\n")
            try channel.pipeline.syncOperations.addHandler(
                NIOHTTP2Handler(mode: .server, connectionConfiguration: http2Configuration)
            )
            try channel.pipeline.syncOperations.addHandler(HTTP2Answerer(body: body))
        }
    }.bind(host: "127.0.0.1", port: port).wait()
case "relay":
    guard !pods.isEmpty else { usage() }
    server = try bootstrap.childChannelInitializer { client in
        client.eventLoop.makeCompletedFuture {
            let clientSide = NIOLoopBound(Relay(flusher: flusher), eventLoop: client.eventLoop)
            try client.pipeline.syncOperations.addHandler(clientSide.value)
            let pod = pods[nextPod.value % pods.count]
            nextPod.value += 1
            ClientBootstrap(group: client.eventLoop)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { podChannel in
                    podChannel.eventLoop.makeCompletedFuture {
                        let podSide = Relay(flusher: flusher)
                        try podChannel.pipeline.syncOperations.addHandler(podSide)
                        Relay.pair(clientSide.value, podSide)
                    }
                }
                .connect(to: pod)
                .whenComplete { result in
                    switch result {
                    case .success:
                        client.setOption(.autoRead, value: true).whenFailure { _ in client.close(promise: nil) }
                    case .failure: client.close(promise: nil)
                    }
                }
        }
    }.bind(host: "127.0.0.1", port: port).wait()
case "answer":
    server = try bootstrap.childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            let response = channel.allocator.buffer(
                string: "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 6\r\n\r\npod-1\n"
            )
            try channel.pipeline.syncOperations.addHandler(HTTP1Answerer(response: response))
        }
    }.bind(host: "127.0.0.1", port: port).wait()
default:
    usage()
}
try server.closeFuture.wait()
