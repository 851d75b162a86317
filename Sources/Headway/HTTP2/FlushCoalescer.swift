import NIOCore

/// Defers an HTTP/2 client connection's flushes to a task after the event loop's current tick, so that every
/// flush of the tick leaves in one `writev`, and none from inside a read.
///
/// swift-nio-http2 flushes its own frames (acknowledgements, window updates) as a read completes; a flush
/// that fails there, on a client that is gone, would close the channel in the middle of the read that found
/// it gone, which SwiftNIO does not expect. A close flushes first: what was written before it still goes out.
final class FlushCoalescer: ChannelOutboundHandler {
    typealias OutboundIn = Any

    private var flushScheduled = false

    func flush(context: ChannelHandlerContext) {
        guard !self.flushScheduled else { return }
        self.flushScheduled = true
        // Tasks run after the tick's I/O events: every stream's flush of this tick is folded into this one.
        context.eventLoop.assumeIsolated().execute {
            guard self.flushScheduled else { return }
            self.flushScheduled = false
            context.flush()
        }
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if self.flushScheduled {
            self.flushScheduled = false
            context.flush()
        }
        context.close(mode: mode, promise: promise)
    }
}

@available(*, unavailable)
extension FlushCoalescer: Sendable {}
