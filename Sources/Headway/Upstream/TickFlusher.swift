import NIOCore

/// Flushes deferred to the end of the event loop's tick, for every connection of the loop at once.
///
/// The loop handles every ready socket of one `epoll_wait` before it runs its tasks. Flushing each request
/// to its pod (and each response to its client) as it is made wakes the peer process once per request;
/// deferring the flushes to the task that runs after the tick's events lets the peer find several requests
/// when it wakes, as HAProxy's end-of-loop sends do. The write system calls stay one per socket; the task is
/// one per tick, and its closure is made once, so deferring allocates nothing.
///
/// `@unchecked Sendable`: only so that the task's closure may capture it weakly; it is used on its loop only.
final class TickFlusher: @unchecked Sendable {
    private let eventLoop: any EventLoop
    private var waiting: [ChannelHandlerContext] = []
    /// The list being flushed; swapped with `waiting` so that neither is reallocated.
    private var flushing: [ChannelHandlerContext] = []
    private var isScheduled = false
    private lazy var flushWaiting: @Sendable () -> Void = { [weak self] in self?.flushAll() }
    /// Told after every flush of the tick (the loop's head buffers are free again then).
    private let afterFlushing: () -> Void

    init(eventLoop: any EventLoop, afterFlushing: @escaping () -> Void) {
        self.eventLoop = eventLoop
        self.afterFlushing = afterFlushing
    }

    /// Flushes `context` after this tick's I/O events.
    func flushAtEndOfTick(_ context: ChannelHandlerContext) {
        self.eventLoop.assertInEventLoop()
        self.waiting.append(context)
        guard !self.isScheduled else { return }
        self.isScheduled = true
        self.eventLoop.execute(self.flushWaiting)
    }

    private func flushAll() {
        self.isScheduled = false
        // A flush may write, close and ask for more flushes: those go into `waiting`, for the next task.
        swap(&self.waiting, &self.flushing)
        for context in self.flushing {
            context.flush()
        }
        self.flushing.removeAll(keepingCapacity: true)
        self.afterFlushing()
    }
}
