import Logging
import NIOCore
import NIOHTTP2
import NIOPosix

/// One h2c connection to a pod, behind swift-nio-http2's handler (its frames and state machine, no stream
/// channels): it runs the request streams on it as ``HTTP2UpstreamStream`` values of its own, one dictionary
/// entry each, and tells its pool what the pod says about the connection as a whole (its stream limit in
/// SETTINGS, GOAWAY) and when it closes.
///
/// A stream per request costs no channel, pipeline or promise: the frames of every stream pass through this
/// one handler, whose ``HTTP2StreamDemux`` hands them over and reopens the connection's receive window as they
/// arrive (each stream's own window bounds what a slow reader holds); each stream's window is reopened as its
/// user consumes.
///
/// Loop-confined, like ``UpstreamConnection``: it shares its loop with its pool and every stream.
final class HTTP2UpstreamConnection: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    let endpoint: Endpoint
    let logger: Logger
    let eventLoop: any EventLoop
    /// Set once the connection is established and handed to its pool; `nil` for a health probe's connection.
    var pool: UpstreamPool?
    private var context: ChannelHandlerContext?
    private(set) var isOpen = true
    private let streams = HTTP2StreamDemux<HTTP2UpstreamStream>()
    private var nextStreamID = HTTP2StreamID(1)
    /// What `connect` was asked to call back, until the connection is active.
    private var whenActive: ((Result<HTTP2UpstreamConnection, any Error>) -> Void)?
    /// The pod's GOAWAY: the last stream it processes; streams above it were refused.
    private var goAwayLastStreamID: HTTP2StreamID?

    init(endpoint: Endpoint, eventLoop: any EventLoop, logger: Logger) {
        self.endpoint = endpoint
        self.eventLoop = eventLoop
        self.logger = logger
    }

    var goAwayReceived: Bool { self.goAwayLastStreamID != nil }
    var isWritable: Bool { self.context?.channel.isWritable ?? false }
    var allocator: ByteBufferAllocator { self.context?.channel.allocator ?? ByteBufferAllocator() }

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
    /// `completion` runs once the connection is active, so that swift-nio-http2's preface is out before the
    /// first stream's frames.
    static func connect(
        to endpoint: Endpoint,
        on eventLoop: any EventLoop,
        timeout: TimeAmount,
        logger: Logger,
        completion: @escaping (Result<HTTP2UpstreamConnection, any Error>) -> Void
    ) {
        let whenActive = NIOLoopBound(completion, eventLoop: eventLoop)
        ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let connection = HTTP2UpstreamConnection(
                        endpoint: endpoint,
                        eventLoop: channel.eventLoop,
                        logger: logger
                    )
                    connection.whenActive = whenActive.value
                    try channel.pipeline.syncOperations.addHandlers(
                        NIOHTTP2Handler(mode: .client, connectionConfiguration: Self.settings),
                        connection
                    )
                }
            }
            .connect(to: endpoint.address)
            .assumeIsolated()
            .whenFailure { error in
                completion(.failure(error))
            }
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        if let completion = self.whenActive.take() {
            completion(.success(self))
        }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// A new request stream on this connection; it takes its id when its first frame goes out.
    func makeStream() -> HTTP2UpstreamStream? {
        guard self.isOpen, self.context != nil, !self.goAwayReceived else { return nil }
        return HTTP2UpstreamStream(connection: self)
    }

    // MARK: From the streams

    func streamStarted(_ stream: HTTP2UpstreamStream) -> HTTP2StreamID {
        let id = self.nextStreamID
        self.nextStreamID = HTTP2StreamID(Int32(id) + 2)
        self.streams[id] = stream
        return id
    }

    func streamEnded(_ stream: HTTP2UpstreamStream) {
        if let id = stream.id {
            self.streams.remove(id)
        }
    }

    func write(_ frame: HTTP2Frame) {
        self.context?.write(self.wrapOutboundOut(frame), promise: nil)
    }

    func flush() {
        self.context?.flush()
    }

    /// For frames that need not leave before the tick's other writes (window updates).
    func flushAtEndOfTick() {
        guard let context = self.context else { return }
        if let flusher = self.pool?.cluster.flusher {
            flusher.flushAtEndOfTick(context)
        } else {
            context.flush()
        }
    }

    func close() {
        guard self.isOpen else { return }
        self.context?.close(promise: nil)
    }

    // MARK: From the pod

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = self.unwrapInboundIn(data)
        if frame.streamID != .rootStream {
            let closures = self.streams.deliver(frame, to: self.streams[frame.streamID]) { increment in
                self.write(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: increment)))
                self.flushAtEndOfTick()
            }
            for closed in closures {
                self.streamClosed(closed)
            }
            return
        }
        switch frame.payload {
        case .settings(.settings(let settings)):
            if let limit = settings.last(where: { $0.parameter == .maxConcurrentStreams }) {
                self.pool?.streamLimitChanged(limit.value, on: self)
            }
        case .goAway(let lastStreamID, let errorCode, _):
            // Streams above lastStreamID were never processed: they close as refused, and their exchanges retry
            // elsewhere.
            self.logger.info(
                "endpoint sent GOAWAY; draining the connection",
                metadata: [
                    "endpoint.address": "\(self.endpoint.label)", "error_code": "\(errorCode)",
                    "last_stream_id": "\(lastStreamID)",
                ]
            )
            self.goAwayLastStreamID = lastStreamID
            self.pool?.goAwayReceived(on: self)
        default:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.streams.readBatchEnded()
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if self.streams.windowEventReceived(event) { return }
        if let closed = event as? StreamClosedEvent {
            if self.streams.closureReported(closed) {
                self.streamClosed(closed)
            }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    private func streamClosed(_ closed: StreamClosedEvent) {
        guard let stream = self.streams[closed.streamID] else { return }
        var reason = closed.reason
        if let last = self.goAwayLastStreamID, closed.streamID > last {
            // swift-nio-http2 closes the streams a GOAWAY cut off with CANCEL; the pod never processed them.
            reason = .refusedStream
        }
        stream.podClosed(reason: reason)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            for stream in self.streams.all {
                stream.connectionBecameWritable()
            }
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let streamError = error as? NIOHTTP2Errors.StreamError {
            // One stream's trouble: that stream is reset, the connection goes on.
            self.streams[streamError.streamID]?.fail(streamError)
            return
        }
        guard HTTP2ErrorScope.endsConnection(error) else { return }
        self.logger.warning(
            "HTTP/2 connection to endpoint failed; closing it",
            metadata: ["endpoint.address": "\(self.endpoint.label)", "error": "\(error)"]
        )
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.isOpen = false
        self.whenActive.take()?(.failure(ProxyError.upstreamClosedEarly))
        for stream in self.streams.removeAll() {
            stream.closed(error: ProxyError.upstreamClosedEarly)
        }
        self.pool?.http2ConnectionClosed(self)
        self.pool = nil
        context.fireChannelInactive()
    }
}

@available(*, unavailable)
extension HTTP2UpstreamConnection: Sendable {}
