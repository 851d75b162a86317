import Logging
import NIOCore
import NIOHTTP2

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
    /// Set once the connection is established and handed to its pool.
    var pool: UpstreamPool?
    private var context: ChannelHandlerContext?
    private(set) var isOpen = true

    init(endpoint: Endpoint, multiplexer: NIOHTTP2Handler.StreamMultiplexer, logger: Logger) {
        self.endpoint = endpoint
        self.multiplexer = multiplexer
        self.logger = logger
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
        guard let eventLoop = self.context?.eventLoop else {
            completion(nil)
            return
        }
        let endpoint = self.endpoint
        let logger = self.logger
        let parent = NIOLoopBound(self, eventLoop: eventLoop)
        self.multiplexer.createStreamChannel { stream in
            stream.eventLoop.makeCompletedFuture {
                let connection = UpstreamConnection(endpoint: endpoint, logger: logger, multiplexedOn: parent.value)
                try stream.pipeline.syncOperations.addHandlers(
                    HTTP2UpstreamStreamCodec(logger: logger),
                    connection
                )
            }
        }
        .assumeIsolated()
        .whenComplete { result in
            switch result {
            case .success(let stream):
                completion(try? stream.pipeline.syncOperations.handler(type: UpstreamConnection.self))
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
        self.logger.debug(
            "HTTP/2 connection error; closing it",
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
