import NIOCore

/// Defers a connection's flushes to the end of the event loop's current tick, so that the writes of every
/// stream answered in that tick leave in one `writev` instead of a system call each.
///
/// On an HTTP/2 connection each stream flushes on its own, and responses arrive from different pod
/// connections (each its own read event), so swift-nio-http2 cannot coalesce them as it does for frames read
/// from the connection itself. A close flushes first: what was written before it still goes out.
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
