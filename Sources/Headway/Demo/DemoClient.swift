import NIOCore
import NIOHTTP1
import NIOPosix

/// A minimal keep-alive HTTP/1.1 client: sends GET requests one after another on one connection and
/// returns each response's status, headers and body. Used by `headway demo` to show where requests went.
package final class DemoClient: Sendable {
    package struct Response: Sendable {
        package var status: HTTPResponseStatus
        package var headers: HTTPHeaders
        package var body: String
    }

    private let channel: any Channel

    private init(channel: any Channel) {
        self.channel = channel
    }

    package static func connect(to address: SocketAddress, group: any EventLoopGroup) async throws -> DemoClient {
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ResponseCollector())
                }
            }
            .connect(to: address)
            .get()
        return DemoClient(channel: channel)
    }

    package func get(_ uri: String, host: String = "demo") async throws -> Response {
        let promise = self.channel.eventLoop.makePromise(of: Response.self)
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: host)
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: uri, headers: headers)
        self.channel.writeAndFlush(ResponseCollector.Request(head: head, promise: promise), promise: nil)
        return try await promise.futureResult.get()
    }

    package func close() async throws {
        try await self.channel.close()
    }
}

private final class ResponseCollector: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = Request
    typealias OutboundOut = HTTPClientRequestPart

    struct Request {
        var head: HTTPRequestHead
        var promise: EventLoopPromise<DemoClient.Response>
    }

    private var waiting = CircularBuffer<EventLoopPromise<DemoClient.Response>>()
    private var response: DemoClient.Response?

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = self.unwrapOutboundIn(data)
        self.waiting.append(request.promise)
        context.write(self.wrapOutboundOut(.head(request.head)), promise: nil)
        context.write(self.wrapOutboundOut(.end(nil)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.response = .init(status: head.status, headers: head.headers, body: "")
        case .body(let buffer):
            self.response?.body += String(buffer: buffer)
        case .end:
            if let response = self.response, let promise = self.waiting.popFirst() {
                promise.succeed(response)
            }
            self.response = nil
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        while let promise = self.waiting.popFirst() {
            promise.fail(ChannelError.ioOnClosedChannel)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
