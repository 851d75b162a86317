import Logging
import NIOCore
import NIOHTTP2

/// What serves one HTTP/2 client stream as one HTTP/1.1 exchange (``DownstreamHandler``), as this layer
/// sees it: the stream hands it the request as HTTP/1.1 bytes and takes its response bytes back.
protocol HTTP2ClientStreamHandler: AnyObject {
    /// Whether it takes request bytes now; `false` also means that it will call
    /// ``HTTP2ClientStream/resumeDelivery()`` when it does again. Meanwhile the stream keeps the client's frames,
    /// and the stream's window (not reopened) bounds how many arrive.
    func takesRequestBytes() -> Bool

    /// The stream opened; the handler is its only user from now on.
    func streamOpened(_ stream: HTTP2ClientStream)

    /// Bytes of the HTTP/1.1 request (see ``HTTP2StreamBridge``).
    func streamRequestBytes(_ bytes: ByteBuffer)

    /// The connection's read batch is over.
    func streamReadComplete()

    /// The client gave the request its own deadline (`grpc-timeout`).
    func streamClientDeadline(_ timeout: TimeAmount)

    /// The stream can take more response bytes, or no longer can.
    func streamWritabilityChanged(isWritable: Bool)

    /// Headway is shutting down: finish the exchange in flight, take no other.
    func streamShouldQuiesce()

    /// The stream is closed (ended both ways, reset by the client, or with its connection).
    func streamClosed()
}

/// An HTTP/2 client connection behind swift-nio-http2's handler, with no channel per stream: it runs each
/// client stream as an ``HTTP2ClientStream`` of its own, one dictionary entry each, with a
/// ``HTTP2ClientStreamHandler`` made for it, and tells the connection manager behind it which streams are
/// open (for its idle timeout and graceful GOAWAY). swift-nio-http2's own stream events stop here: a stream
/// reset on its first, malformed HEADERS is reported closed without ever having been reported open.
///
/// Its ``HTTP2StreamDemux`` hands each frame to its stream and reopens the connection's receive window as
/// frames arrive (each stream's own window bounds what a handler that holds its reads keeps); each stream's
/// window is reopened as its handler consumes.
///
/// Loop-confined: every stream, its handler and their pods' connections share the connection's loop.
final class HTTP2ClientConnection: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private let makeHandler: () -> any HTTP2ClientStreamHandler
    private let streamDelegate: (any NIOHTTP2StreamDelegate)?
    private let flusher: TickFlusher
    let logger: Logger
    private(set) var context: ChannelHandlerContext?
    private let streams = HTTP2StreamDemux<HTTP2ClientStream>()

    init(
        flusher: TickFlusher,
        streamDelegate: (any NIOHTTP2StreamDelegate)? = nil,
        logger: Logger,
        makeHandler: @escaping () -> any HTTP2ClientStreamHandler
    ) {
        self.flusher = flusher
        self.streamDelegate = streamDelegate
        self.logger = logger
        self.makeHandler = makeHandler
    }

    var isWritable: Bool { self.context?.channel.isWritable ?? false }
    var allocator: ByteBufferAllocator { self.context?.channel.allocator ?? ByteBufferAllocator() }
    var remoteAddress: SocketAddress? { self.context?.channel.remoteAddress }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    // MARK: From the streams

    func write(_ frame: HTTP2Frame) {
        self.context?.write(self.wrapOutboundOut(frame), promise: nil)
    }

    /// Flushes after this tick's events, with every other connection of the loop (see ``TickFlusher``).
    func flushAtEndOfTick() {
        guard let context = self.context else { return }
        self.flusher.flushAtEndOfTick(context)
    }

    func streamEnded(_ stream: HTTP2ClientStream) {
        guard self.streams.remove(stream.id) != nil, let context = self.context else { return }
        self.streamDelegate?.streamClosed(stream.id, channel: context.channel)
    }

    // MARK: From the client

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = self.unwrapInboundIn(data)
        guard frame.streamID != .rootStream else {
            context.fireChannelRead(data)
            return
        }
        var stream = self.streams[frame.streamID]
        if stream == nil, case .headers = frame.payload {
            stream = self.opened(frame.streamID, context: context)
        }
        let closures = self.streams.deliver(frame, to: stream) { increment in
            self.write(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: increment)))
            self.flushAtEndOfTick()
        }
        for closed in closures {
            self.streamClosed(closed)
        }
    }

    /// A client's HEADERS opened a stream (swift-nio-http2 checked its id and the concurrent stream limit);
    /// `nil` if its handler closed it at once.
    private func opened(_ id: HTTP2StreamID, context: ChannelHandlerContext) -> HTTP2ClientStream? {
        let stream = HTTP2ClientStream(id: id, connection: self, handler: self.makeHandler())
        self.streams[id] = stream
        self.streamDelegate?.streamCreated(id, channel: context.channel)
        stream.handler?.streamOpened(stream)
        return stream.isClosed ? nil : stream
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.streams.readBatchEnded()
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if self.streams.windowEventReceived(event) { return }
        switch event {
        case let closed as StreamClosedEvent:
            if self.streams.closureReported(closed) {
                self.streamClosed(closed)
            }
        case is ChannelShouldQuiesceEvent:
            for stream in self.streams.all {
                stream.handler?.streamShouldQuiesce()
            }
            context.fireUserInboundEventTriggered(event)
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    private func streamClosed(_ closed: StreamClosedEvent) {
        // Both sides ended the stream, or the client reset it: either way its handler is done.
        self.streams[closed.streamID]?.closed()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        let isWritable = context.channel.isWritable
        for stream in self.streams.all {
            stream.connectionWritabilityChanged(isWritable: isWritable)
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let streamError = error as? NIOHTTP2Errors.StreamError {
            // One stream's trouble: that stream is reset, the connection goes on.
            self.streams[streamError.streamID]?.reset(.internalError)
            return
        }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        for stream in self.streams.removeAll() {
            stream.closed()
        }
        context.fireChannelInactive()
    }
}

/// One client stream of an ``HTTP2ClientConnection``: no channel of its own, just the stream's state on its
/// connection. It translates with an ``HTTP2StreamBridge``, holds the client's frames while its handler takes
/// no bytes, reopens the stream's receive window as the handler consumes, and tracks the client's window for
/// writability, so that a slow reader holds back its pod rather than filling Headway's memory.
final class HTTP2ClientStream: HTTP2DemuxedStream {
    let id: HTTP2StreamID
    let connection: HTTP2ClientConnection
    /// Cleared when the stream closes (which breaks the cycle with the handler).
    private(set) var handler: (any HTTP2ClientStreamHandler)?
    private var bridge = HTTP2StreamBridge()
    /// Frames that arrived while the handler took no bytes, oldest first.
    private var heldFrames: [HTTP2Frame.FramePayload] = []
    private var receiveWindow = HTTP2ReceiveWindow(size: HTTP2ReceiveWindow.initialSize)
    /// What the client's window for this stream still allows: its initial size and WINDOW_UPDATEs, less the
    /// DATA written (sent or still held by swift-nio-http2), so that nothing piles up behind a closed window.
    private var sendAllowance = HTTP2ReceiveWindow.initialSize
    private var requestEnded = false
    private(set) var isClosed = false

    init(id: HTTP2StreamID, connection: HTTP2ClientConnection, handler: any HTTP2ClientStreamHandler) {
        self.id = id
        self.connection = connection
        self.handler = handler
    }

    var isWritable: Bool { self.sendAllowance > 0 && self.connection.isWritable }

    /// The request is a gRPC call: Headway's own answer to it is a gRPC one.
    var answersInGRPC: Bool { self.bridge.isGRPC }

    // MARK: From the handler

    /// A 1xx from the pod.
    func writeInformational(_ head: ResponseHead) {
        guard !self.isClosed else { return }
        self.write(self.bridge.informationalResponse(head))
    }

    func writeResponseHead(_ head: ResponseHead) {
        guard !self.isClosed else { return }
        self.bridge.responseHead(head)
    }

    func writeResponseBody(_ bytes: ByteBuffer) {
        guard !self.isClosed else { return }
        self.write(self.bridge.responseBody(bytes))
    }

    /// The response ended, with the pod's trailer section if it sent one.
    func writeResponseEnd(trailers: ByteBuffer?) {
        guard !self.isClosed else { return }
        self.write(self.bridge.responseEnded(trailers: trailers))
    }

    /// Headway's own answer for `error` (a gRPC client gets it as a gRPC one); a stream whose response had
    /// begun can only be reset.
    func answerLocally(_ error: ProxyError) {
        guard !self.isClosed else { return }
        guard let frames = self.bridge.localAnswer(error, allocator: self.connection.allocator) else {
            self.reset(.internalError)
            return
        }
        self.write(frames)
    }

    /// Writes what the bridge returned, once it is done: a write may re-enter the handler, and through it the
    /// bridge.
    private func write(_ frames: HTTP2StreamBridge.ResponseFrames) {
        let wasWritable = self.isWritable
        frames.forEach(self.send)
        if wasWritable, !self.isWritable, !self.isClosed {
            self.handler?.streamWritabilityChanged(isWritable: false)
        }
    }

    /// The body piece held for END_STREAM goes out now, and the connection is flushed with the tick.
    func flush() {
        if !self.isClosed {
            self.write(self.bridge.takeHeldData())
        }
        self.connection.flushAtEndOfTick()
    }

    private func send(_ payload: HTTP2Frame.FramePayload) {
        if case .data(let data) = payload {
            self.sendAllowance -= data.data.readableBytes
        }
        self.connection.write(HTTP2Frame(streamID: self.id, payload: payload))
    }

    /// The handler is ready for bytes again: hand over what was held, as one read batch.
    func resumeDelivery() {
        guard !self.heldFrames.isEmpty else { return }
        while !self.isClosed, !self.heldFrames.isEmpty, self.handler?.takesRequestBytes() ?? false {
            self.deliver(self.heldFrames.removeFirst())
        }
        self.handler?.streamReadComplete()
    }

    /// The handler is done with the stream. Once the response has ended, a client still sending is told to
    /// stop (RST_STREAM NO_ERROR, RFC 9113 §8.1); an answer cut short is a reset.
    func finish() {
        guard !self.isClosed else { return }
        if self.bridge.responseEnded {
            if !self.requestEnded { self.reset(.noError) }
        } else {
            self.reset(.cancel)
        }
    }

    func reset(_ code: HTTP2ErrorCode) {
        guard !self.isClosed else { return }
        self.connection.write(HTTP2Frame(streamID: self.id, payload: .rstStream(code)))
        self.connection.flushAtEndOfTick()
        self.closed()
    }

    // MARK: From the connection

    func received(_ payload: HTTP2Frame.FramePayload) {
        switch payload {
        case .headers(let headers) where headers.endStream:
            self.requestEnded = true
        case .data(let data) where data.endStream:
            self.requestEnded = true
        default:
            break
        }
        if self.heldFrames.isEmpty, self.handler?.takesRequestBytes() ?? false {
            self.deliver(payload)
        } else {
            self.heldFrames.append(payload)
        }
    }

    private func deliver(_ payload: HTTP2Frame.FramePayload) {
        guard let handler = self.handler else { return }
        var pieces: [HTTP2StreamBridge.RequestPiece] = []
        self.bridge.requestFrame(payload, allocator: self.connection.allocator) { pieces.append($0) }
        // Handed over once the bridge is done: the handler may answer at once, and through the stream reach
        // the bridge again.
        for piece in pieces where !self.isClosed {
            switch piece {
            case .bytes(let bytes):
                handler.streamRequestBytes(bytes)
            case .clientDeadline(let timeout):
                handler.streamClientDeadline(timeout)
            case .malformed(let reason):
                self.connection.logger.info(
                    "malformed HTTP/2 request; resetting the stream",
                    metadata: ["reason": "\(reason)"]
                )
                self.reset(.protocolError)
            }
        }
        if case .data(let data) = payload, !data.endStream, !self.isClosed,
            let increment = self.receiveWindow.consumed(HTTP2ReceiveWindow.flowControlledLength(of: data))
        {
            self.connection.write(HTTP2Frame(streamID: self.id, payload: .windowUpdate(windowSizeIncrement: increment)))
            self.connection.flushAtEndOfTick()
        }
    }

    func readComplete() {
        self.handler?.streamReadComplete()
    }

    /// The client's window for this stream grew (WINDOW_UPDATE) or changed with its SETTINGS.
    func sendWindowChanged(by delta: Int) {
        let wasWritable = self.isWritable
        self.sendAllowance += delta
        if wasWritable != self.isWritable {
            self.handler?.streamWritabilityChanged(isWritable: self.isWritable)
        }
    }

    func connectionWritabilityChanged(isWritable: Bool) {
        if self.sendAllowance > 0 {
            self.handler?.streamWritabilityChanged(isWritable: isWritable)
        }
    }

    /// The stream is closed; its handler is told once. Its last frames may have closed it as they were
    /// written, before the handler's flush: they are flushed with the tick.
    func closed() {
        guard !self.isClosed else { return }
        self.isClosed = true
        self.heldFrames.removeAll()
        self.connection.streamEnded(self)
        self.connection.flushAtEndOfTick()
        let handler = self.handler
        self.handler = nil
        handler?.streamClosed()
    }
}

@available(*, unavailable)
extension HTTP2ClientConnection: Sendable {}

@available(*, unavailable)
extension HTTP2ClientStream: Sendable {}
