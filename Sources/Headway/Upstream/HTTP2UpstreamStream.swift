import Logging
import NIOCore
import NIOHTTP2

/// What rides on a request stream to an h2c pod and speaks HTTP/1.1 bytes: an exchange's
/// ``UpstreamConnection``, or a health check's ``HealthCheckConnection``.
protocol HTTP2StreamUser: AnyObject {
    /// Whether the user takes response bytes now; while not, the stream keeps the pod's frames, and the
    /// stream's window (not reopened meanwhile) bounds how many arrive.
    var takesStreamBytes: Bool { get }

    /// Bytes of the HTTP/1.1 response (see ``HTTP2UpstreamStreamCodec``).
    func streamReceived(_ bytes: ByteBuffer)

    /// The connection's read batch is over.
    func streamReadComplete()

    /// The stream can take more request bytes again.
    func streamBecameWritable()

    /// The stream is closed, whichever side closed it; `error` is the pod's reset, or why the connection went.
    func streamClosed(error: (any Error)?)
}

/// One request stream of an ``HTTP2UpstreamConnection``: no channel of its own, just the stream's state on
/// its connection. It translates with an ``HTTP2UpstreamStreamCodec``, holds the pod's frames while its
/// user takes no bytes, reopens the stream's receive window as the user consumes, and tracks the pod's
/// window for writability.
///
/// Loop-confined, like its connection. Its id is taken when the first frame goes out, so that ids rise in
/// the order streams start sending, as RFC 9113 §5.1.1 requires.
final class HTTP2UpstreamStream: HTTP2DemuxedStream {
    let connection: HTTP2UpstreamConnection
    /// Set by the user when it takes the stream; cleared when the stream closes (which breaks the cycle).
    var user: (any HTTP2StreamUser)?
    private(set) var id: HTTP2StreamID?
    private var codec = HTTP2UpstreamStreamCodec()
    /// Frames that arrived while the user took no bytes, oldest first.
    private var heldFrames: [HTTP2Frame.FramePayload] = []
    private var receiveWindow: HTTP2ReceiveWindow
    /// What the pod's window for this stream still allows: its initial size and WINDOW_UPDATEs, less the DATA
    /// written (sent or still held by swift-nio-http2), so that nothing piles up behind a closed window.
    private var sendAllowance = HTTP2ReceiveWindow.initialSize
    /// The stream was given up before the pod answered; it is reset on the pod's first frame (or after a
    /// second), when the pod surely has it.
    private var resetIsPending = false
    /// The pod ended the stream while frames were still held: it closes once they are delivered.
    private var closesWhenDelivered = false
    private(set) var isClosed = false

    init(connection: HTTP2UpstreamConnection) {
        self.connection = connection
        self.receiveWindow = HTTP2ReceiveWindow(size: HTTP2ReceiveWindow.initialSize)
    }

    var isWritable: Bool { self.sendAllowance > 0 && self.connection.isWritable }

    // MARK: From the user

    func write(_ bytes: ByteBuffer) {
        guard !self.isClosed else { return }
        var bytes = bytes
        var frames: [HTTP2Frame.FramePayload] = []
        do {
            try self.codec.requestBytes(&bytes) { frames.append($0) }
        } catch {
            // Headway framed these bytes itself; a parse failure is a bug, and the stream cannot go on.
            self.connection.logger.error(
                "could not carry a request onto an HTTP/2 stream",
                metadata: ["endpoint.address": "\(self.connection.endpoint.label)", "error": "\(error)"]
            )
            self.reset()
            return
        }
        // Sent once the codec is done: a write may re-enter the user, and through it the codec.
        for frame in frames where !self.isClosed {
            self.send(frame)
        }
    }

    func flush() {
        guard !self.isClosed else { return }
        if let frame = self.codec.flush() {
            self.send(frame)
        }
        self.connection.flushAtEndOfTick()
    }

    private func send(_ payload: HTTP2Frame.FramePayload) {
        guard self.id != nil || !self.connection.goAwayReceived else {
            // The pod said it takes no new stream: it never saw this one, so any request may go elsewhere.
            self.closed(error: UpstreamStreamReset(code: .refusedStream))
            return
        }
        let id = self.id ?? self.connection.streamStarted(self)
        self.id = id
        if case .data(let data) = payload {
            self.sendAllowance -= data.data.readableBytes
        }
        self.connection.write(HTTP2Frame(streamID: id, payload: payload))
    }

    /// The user is ready for bytes again: hand over what was held, as one read batch.
    func resumeDelivery() {
        guard !self.heldFrames.isEmpty else { return }
        while !self.isClosed, !self.heldFrames.isEmpty, self.user?.takesStreamBytes ?? false {
            self.deliver(self.heldFrames.removeFirst())
        }
        self.user?.streamReadComplete()
        if self.closesWhenDelivered, self.heldFrames.isEmpty {
            self.closed(error: nil)
        }
    }

    /// Gives the stream up. Resetting a stream whose HEADERS swift-nio-http2 may still hold back (the
    /// connection at its stream limit, or not writable) drops the frames but never closes the stream, and
    /// every later stream of the connection then waits behind it. A stream whose request went out whole and
    /// that has no answer yet is therefore reset only once the pod shows it has the stream (its first
    /// frame), or after a second.
    func close() {
        guard !self.isClosed, !self.resetIsPending else { return }
        guard self.id != nil else {
            // Nothing went out: the pod never heard of this stream.
            self.closed(error: nil)
            return
        }
        guard self.codec.requestEnded, !self.codec.responseStarted else {
            self.reset()
            return
        }
        self.resetIsPending = true
        self.connection.eventLoop.assumeIsolated().scheduleTask(in: .seconds(1)) {
            self.reset()
        }
    }

    private func reset() {
        self.fail(nil)
    }

    /// Resets the stream (if the pod has it) and closes it with `error`.
    func fail(_ error: (any Error)?) {
        guard !self.isClosed else { return }
        if let id = self.id, !self.closesWhenDelivered {
            self.connection.write(HTTP2Frame(streamID: id, payload: .rstStream(.cancel)))
            self.connection.flush()
        }
        self.closed(error: error)
    }

    // MARK: From the connection

    func received(_ payload: HTTP2Frame.FramePayload) {
        if self.resetIsPending {
            self.reset()
            return
        }
        if self.heldFrames.isEmpty, self.user?.takesStreamBytes ?? false {
            self.deliver(payload)
        } else {
            self.heldFrames.append(payload)
        }
    }

    private func deliver(_ payload: HTTP2Frame.FramePayload) {
        guard let user = self.user else { return }
        var pieces: [ByteBuffer] = []
        self.codec.responseFrame(payload, allocator: self.connection.allocator) { pieces.append($0) }
        // Handed over once the codec is done: the user may end the exchange and close the stream meanwhile.
        for bytes in pieces where !self.isClosed {
            user.streamReceived(bytes)
        }
        if case .data(let data) = payload, !data.endStream, !self.isClosed, let id = self.id,
            let increment = self.receiveWindow.consumed(HTTP2ReceiveWindow.flowControlledLength(of: data))
        {
            self.connection.write(HTTP2Frame(streamID: id, payload: .windowUpdate(windowSizeIncrement: increment)))
            self.connection.flushAtEndOfTick()
        }
    }

    func readComplete() {
        self.user?.streamReadComplete()
    }

    /// The pod's window for this stream grew (WINDOW_UPDATE) or changed with its SETTINGS.
    func sendWindowChanged(by delta: Int) {
        let wasWritable = self.sendAllowance > 0
        self.sendAllowance += delta
        if !wasWritable, self.isWritable {
            self.user?.streamBecameWritable()
        }
    }

    func connectionBecameWritable() {
        if self.isWritable {
            self.user?.streamBecameWritable()
        }
    }

    /// swift-nio-http2 closed the stream: both sides ended it (`reason` nil), or it was reset.
    func podClosed(reason: HTTP2ErrorCode?) {
        if reason == nil, !self.heldFrames.isEmpty {
            self.closesWhenDelivered = true
        } else {
            self.closed(error: reason.map { UpstreamStreamReset(code: $0) })
        }
    }

    /// The stream is closed: normally (`error` nil), by a reset, or with its connection.
    func closed(error: (any Error)?) {
        guard !self.isClosed else { return }
        self.isClosed = true
        self.heldFrames.removeAll()
        self.connection.streamEnded(self)
        // Its last frames may have closed it as they were written, before the user's flush.
        self.connection.flushAtEndOfTick()
        let user = self.user
        self.user = nil
        user?.streamClosed(error: error)
    }
}

@available(*, unavailable)
extension HTTP2UpstreamStream: Sendable {}
