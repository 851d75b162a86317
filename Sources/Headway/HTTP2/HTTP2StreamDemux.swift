import NIOHTTP2

/// A stream of a connection that an ``HTTP2StreamDemux`` runs: an ``HTTP2ClientStream`` or an
/// ``HTTP2UpstreamStream``.
protocol HTTP2DemuxedStream: AnyObject {
    /// A frame of the stream, other than WINDOW_UPDATE.
    func received(_ payload: HTTP2Frame.FramePayload)

    /// The connection's read batch, in which the stream got frames, is over.
    func readComplete()

    /// The peer's window for the stream grew (WINDOW_UPDATE) or changed with its SETTINGS.
    func sendWindowChanged(by delta: Int)
}

/// The streams of one HTTP/2 connection that runs them without a channel each, and what both kinds of such
/// connection do alike with swift-nio-http2's frames and events: hand each frame to its stream, reopen the
/// connection's receive window as frames arrive (each stream's own window bounds what it holds), tell the
/// streams read in a batch when it ends, keep the streams' send windows, and hold back a stream closure
/// reported while that stream's frame is being handed over.
///
/// Loop-confined, like the connection handler that owns it.
final class HTTP2StreamDemux<Stream: HTTP2DemuxedStream> {
    private var streams: [HTTP2StreamID: Stream] = [:]
    /// Streams that got frames in the current read batch.
    private var streamsRead: [Stream] = []
    private var connectionWindow = HTTP2ReceiveWindow(size: HTTP2ReceiveWindow.initialSize)
    /// Set while a stream's frame is handed over; closures reported meanwhile wait in `closuresWhileReading`.
    private var isReadingFrame = false
    private var closuresWhileReading: [StreamClosedEvent] = []

    subscript(id: HTTP2StreamID) -> Stream? {
        get { self.streams[id] }
        set { self.streams[id] = newValue }
    }

    /// Every stream, in a copy: telling one may close others.
    var all: [Stream] { Array(self.streams.values) }

    @discardableResult
    func remove(_ id: HTTP2StreamID) -> Stream? {
        self.streams.removeValue(forKey: id)
    }

    func removeAll() -> [Stream] {
        defer { self.streams.removeAll() }
        return Array(self.streams.values)
    }

    /// Hands a stream's `frame` to `stream` (a WINDOW_UPDATE to its send window). `reopenConnectionWindow`
    /// gets the increment of a connection WINDOW_UPDATE when one is due; the closures reported meanwhile are
    /// returned, for after the frame.
    ///
    /// Anything written while the frame is handed over makes swift-nio-http2 report what the frame did to its
    /// stream (a StreamClosedEvent for END_STREAM); that report must wait until the stream has the frame.
    func deliver(
        _ frame: HTTP2Frame,
        to stream: Stream?,
        reopenConnectionWindow: (Int) -> Void
    ) -> [StreamClosedEvent] {
        self.isReadingFrame = true
        if case .windowUpdate(let increment) = frame.payload {
            stream?.sendWindowChanged(by: increment)
        } else if let stream {
            if self.streamsRead.last !== stream { self.streamsRead.append(stream) }
            stream.received(frame.payload)
        }
        if case .data(let data) = frame.payload,
            let increment = self.connectionWindow.consumed(HTTP2ReceiveWindow.flowControlledLength(of: data))
        {
            reopenConnectionWindow(increment)
        }
        self.isReadingFrame = false
        defer { self.closuresWhileReading.removeAll() }
        return self.closuresWhileReading
    }

    /// A stream closure swift-nio-http2 reported: `true` to handle it now, `false` if it waits for the frame
    /// being handed over (``deliver(_:to:reopenConnectionWindow:)`` returns it then).
    func closureReported(_ closed: StreamClosedEvent) -> Bool {
        guard self.isReadingFrame else { return true }
        self.closuresWhileReading.append(closed)
        return false
    }

    func readBatchEnded() {
        let streams = self.streamsRead
        self.streamsRead.removeAll(keepingCapacity: true)
        for stream in streams {
            stream.readComplete()
        }
    }

    /// Applies swift-nio-http2's events about the peer's initial stream window; `false` for any other event.
    func windowEventReceived(_ event: Any) -> Bool {
        switch event {
        case let created as NIOHTTP2StreamCreatedEvent:
            if let window = created.localInitialWindowSize {
                self.streams[created.streamID]?.sendWindowChanged(by: Int(window) - HTTP2ReceiveWindow.initialSize)
            }
            return true
        case let change as NIOHTTP2BulkStreamWindowChangeEvent:
            // The peer's SETTINGS changed every stream's initial window.
            for stream in self.all {
                stream.sendWindowChanged(by: change.delta)
            }
            return true
        default:
            return false
        }
    }
}
