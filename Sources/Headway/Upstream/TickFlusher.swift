import NIOCore

/// Flushes deferred to the end of the event loop's tick, for every connection of the loop at once.
///
/// The loop handles every ready socket of one `epoll_wait` before it runs its tasks. Flushing each request
/// to its pod (and each response to its client) as it is made wakes the peer process once per request;
/// deferring the flushes to the task that runs after the tick's events lets the peer find several requests
/// when it wakes, as HAProxy's end-of-loop sends do. The write system calls stay one per socket; the task is
/// one per tick, not per request.
final class TickFlusher {
    private let eventLoop: any EventLoop
    private var waiting: [ChannelHandlerContext] = []
    private var isScheduled = false

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// Flushes `context` after this tick's I/O events (at once if called from outside a tick's events).
    func flushAtEndOfTick(_ context: ChannelHandlerContext) {
        self.waiting.append(context)
        guard !self.isScheduled else { return }
        self.isScheduled = true
        self.eventLoop.assumeIsolated().execute {
            self.isScheduled = false
            // A flush may write, close and schedule more flushes: take the list first.
            let contexts = self.waiting
            self.waiting.removeAll(keepingCapacity: true)
            for context in contexts {
                context.flush()
            }
        }
    }
}
