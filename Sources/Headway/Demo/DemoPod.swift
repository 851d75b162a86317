import NIOCore
import NIOHTTP1
import NIOPosix

/// A small HTTP server that plays one pod: `headway demo` runs three of them, and the tests use it where
/// nginx cannot do what they need.
///
/// Every response carries `X-Pod: NAME`. Paths:
/// - `/echo`: streams the request body back (chunked);
/// - `/headers`: lists the request's header fields, one `name: value` per line;
/// - `/status/CODE`: answers with that status;
/// - `/delay/MILLISECONDS`: answers after that long;
/// - `/healthz`: `ok`;
/// - `/truncate`: announces 100 bytes, sends 10 and closes (a pod dying mid-response);
/// - anything else: `NAME answered METHOD URI`.
package final class DemoPod: Sendable {
    package let name: String
    package let address: SocketAddress
    /// Added to every answer.
    package let latency: TimeAmount
    private let channel: any Channel

    private init(name: String, address: SocketAddress, latency: TimeAmount, channel: any Channel) {
        self.name = name
        self.address = address
        self.latency = latency
        self.channel = channel
    }

    /// Starts a pod listening on `address`; each answer waits `latency` first.
    package static func start(
        name: String,
        address: SocketAddress,
        latency: TimeAmount = .zero,
        group: any EventLoopGroup
    ) async throws -> DemoPod {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(DemoPodHandler(name: name, latency: latency))
                }
            }
            .bind(to: address)
            .get()
        return DemoPod(name: name, address: channel.localAddress ?? address, latency: latency, channel: channel)
    }

    package func stop() async throws {
        try await self.channel.close()
    }
}

private final class DemoPodHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let name: String
    private let latency: TimeAmount
    private var request: HTTPRequestHead?
    private var isEchoing = false

    init(name: String, latency: TimeAmount) {
        self.name = name
        self.latency = latency
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.request = head
            if head.headers["expect"].contains(where: { $0.lowercased() == "100-continue" }) {
                let interim = HTTPResponseHead(version: head.version, status: .continue)
                context.writeAndFlush(self.wrapOutboundOut(.head(interim)), promise: nil)
            }
            if head.uri.hasPrefix("/echo") {
                self.isEchoing = true
                var headers = HTTPHeaders()
                headers.add(name: "X-Pod", value: self.name)
                context.write(
                    self.wrapOutboundOut(.head(.init(version: head.version, status: .ok, headers: headers))),
                    promise: nil
                )
            }
        case .body(let buffer):
            if self.isEchoing {
                context.write(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            }
        case .end:
            guard let head = self.request else { return }
            self.request = nil
            if self.isEchoing {
                self.isEchoing = false
                context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
                return
            }
            var delay = self.latency
            let path = head.uri.prefix { $0 != "?" }
            if path.hasPrefix("/delay/"), let milliseconds = Int64(path.dropFirst("/delay/".count)) {
                delay = delay + .milliseconds(milliseconds)
            }
            if delay > .zero {
                context.eventLoop.assumeIsolated().scheduleTask(in: delay) {
                    self.respond(to: head, context: context)
                }
            } else {
                self.respond(to: head, context: context)
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        if head.uri == "/truncate" {
            var headers = HTTPHeaders()
            headers.add(name: "X-Pod", value: self.name)
            headers.add(name: "Content-Length", value: "100")
            context.write(
                self.wrapOutboundOut(.head(.init(version: head.version, status: .ok, headers: headers))),
                promise: nil
            )
            let partial = context.channel.allocator.buffer(string: "0123456789")
            context.writeAndFlush(self.wrapOutboundOut(.body(.byteBuffer(partial)))).assumeIsolated().whenComplete {
                _ in
                context.close(promise: nil)
            }
            return
        }
        var status = HTTPResponseStatus.ok
        let body: String
        if head.uri.hasPrefix("/status/"), let code = Int(head.uri.dropFirst("/status/".count)) {
            status = HTTPResponseStatus(statusCode: code)
            body = "\(self.name) answered \(code)\n"
        } else if head.uri == "/headers" {
            body = head.headers.map { "\($0.name.lowercased()): \($0.value)\n" }.joined()
        } else if head.uri == "/healthz" {
            body = "ok\n"
        } else {
            body = "\(self.name) answered \(head.method.rawValue) \(head.uri)\n"
        }
        var headers = HTTPHeaders()
        headers.add(name: "X-Pod", value: self.name)
        headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        if !head.isKeepAlive { headers.add(name: "Connection", value: "close") }
        context.write(
            self.wrapOutboundOut(.head(.init(version: head.version, status: status, headers: headers))),
            promise: nil
        )
        if head.method != .HEAD {
            context.write(
                self.wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))),
                promise: nil
            )
        }
        let keepAlive = head.isKeepAlive
        context.writeAndFlush(self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            if !keepAlive { context.close(promise: nil) }
        }
    }
}
