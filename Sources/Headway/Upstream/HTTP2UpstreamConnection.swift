import Logging
import NIOCore
import NIOHTTP2
import NIOPosix

/// One h2c connection to a pod, behind swift-nio-http2's handler: it opens the request streams and tells its
/// pool what the pod says about the connection as a whole (its stream limit in SETTINGS, GOAWAY) and when it
/// closes.
///
/// Loop-confined, like ``UpstreamConnection``: it shares its loop with its pool and every stream.
final class HTTP2UpstreamConnection: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame

    let endpoint: Endpoint
    private let logger: Logger
    private let multiplexer: NIOHTTP2Handler.StreamMultiplexer
    /// Set once the connection is established and handed to its pool; `nil` for a health probe's connection.
    var pool: UpstreamPool?
    private var context: ChannelHandlerContext?
    private(set) var isOpen = true

    init(endpoint: Endpoint, multiplexer: NIOHTTP2Handler.StreamMultiplexer, logger: Logger) {
        self.endpoint = endpoint
        self.multiplexer = multiplexer
        self.logger = logger
    }

    /// What Headway announces to h2c pods: no server push, and the response head limit of HTTP/1.
    private static var settings: NIOHTTP2Handler.ConnectionConfiguration {
        var settings = NIOHTTP2Handler.ConnectionConfiguration()
        settings.initialSettings = [
            HTTP2Setting(parameter: .enablePush, value: 0),
            HTTP2Setting(parameter: .maxHeaderListSize, value: ResponseParser.maximumHeadLength),
        ]
        return settings
    }

    /// Opens an h2c connection (prior knowledge: the preface goes out at once) to `endpoint` on `eventLoop`.
    static func connect(
        to endpoint: Endpoint,
        on eventLoop: any EventLoop,
        timeout: TimeAmount,
        logger: Logger,
        completion: @escaping (Result<HTTP2UpstreamConnection, any Error>) -> Void
    ) {
        ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let multiplexer = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                        mode: .client,
                        connectionConfiguration: Self.settings,
                        streamConfiguration: .init()
                    ) { pushed in
                        // Push is off; a stream the pod opens anyway is refused.
                        pushed.close()
                    }
                    try channel.pipeline.syncOperations.addHandler(
                        HTTP2UpstreamConnection(endpoint: endpoint, multiplexer: multiplexer, logger: logger)
                    )
                }
            }
            .connect(to: endpoint.address)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    guard let connection = try? channel.pipeline.syncOperations.handler(type: Self.self),
                        connection.isOpen
                    else {
                        channel.close(promise: nil)
                        completion(.failure(ProxyError.upstreamClosedEarly))
                        return
                    }
                    completion(.success(connection))
                case .failure(let error):
                    completion(.failure(error))
                }
            }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Opens a stream whose pipeline is the ``HTTP2UpstreamStreamCodec`` and an ``UpstreamConnection`` that
    /// the exchange leases as it would an HTTP/1 connection; `completion` gets that connection, or `nil`.
    func openStream(completion: @escaping (UpstreamConnection?) -> Void) {
        let endpoint = self.endpoint
        let logger = self.logger
        self.openStream(
            { parent in UpstreamConnection(endpoint: endpoint, logger: logger, multiplexedOn: parent) },
            completion: completion
        )
    }

    /// Opens a stream whose pipeline is the ``HTTP2UpstreamStreamCodec`` and the handler `makeHandler` makes
    /// (which speaks HTTP/1.1 bytes); `completion` gets that handler, or `nil` if the stream could not open.
    func openStream<Handler: ChannelHandler>(
        _ makeHandler: @escaping (HTTP2UpstreamConnection) -> Handler,
        completion: @escaping (Handler?) -> Void
    ) {
        guard let eventLoop = self.context?.eventLoop else {
            completion(nil)
            return
        }
        let endpoint = self.endpoint
        let logger = self.logger
        let parent = NIOLoopBound(self, eventLoop: eventLoop)
        let make = NIOLoopBound(makeHandler, eventLoop: eventLoop)
        self.multiplexer.createStreamChannel { stream in
            stream.eventLoop.makeCompletedFuture {
                try stream.pipeline.syncOperations.addHandlers(
                    HTTP2UpstreamStreamCodec(logger: logger),
                    make.value(parent.value)
                )
            }
        }
        .assumeIsolated()
        .whenComplete { result in
            switch result {
            case .success(let stream):
                completion(try? stream.pipeline.syncOperations.handler(type: Handler.self))
            case .failure(let error):
                logger.debug(
                    "could not open an HTTP/2 stream",
                    metadata: ["endpoint.address": "\(endpoint.label)", "error": "\(error)"]
                )
                completion(nil)
            }
        }
    }

    func close() {
        guard self.isOpen else { return }
        self.context?.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = self.unwrapInboundIn(data)
        switch frame.payload {
        case .settings(.settings(let settings)):
            if let limit = settings.last(where: { $0.parameter == .maxConcurrentStreams }) {
                self.pool?.streamLimitChanged(limit.value, on: self)
            }
        case .goAway(let lastStreamID, let errorCode, _):
            // Streams above lastStreamID were never processed: swift-nio-http2 closes them with REFUSED_STREAM,
            // and their exchanges retry elsewhere.
            self.logger.info(
                "endpoint sent GOAWAY; draining the connection",
                metadata: [
                    "endpoint.address": "\(self.endpoint.label)", "error_code": "\(errorCode)",
                    "last_stream_id": "\(lastStreamID)",
                ]
            )
            self.pool?.goAwayReceived(on: self)
        default:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A stream's error reached its stream already (it was reset); only a connection error ends this one.
        guard HTTP2ErrorScope.endsConnection(error) else { return }
        self.logger.warning(
            "HTTP/2 connection to endpoint failed; closing it",
            metadata: ["endpoint.address": "\(self.endpoint.label)", "error": "\(error)"]
        )
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.isOpen = false
        self.pool?.http2ConnectionClosed(self)
        self.pool = nil
        context.fireChannelInactive()
    }
}

@available(*, unavailable)
extension HTTP2UpstreamConnection: Sendable {}
