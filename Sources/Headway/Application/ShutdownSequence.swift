import NIOCore

/// What a stop signal means for the process, as a value: events in, actions out.
///
/// In a pod the app container gets its SIGTERM at the same moment as the sidecar and often still sends requests
/// while it finishes its own work. So the first SIGTERM only turns `/ready` to 503 and keeps every listener
/// accepting for `shutdown_delay`; then the listeners drain. SIGINT (someone at a terminal) and a second SIGTERM
/// skip the rest of the delay.
struct ShutdownSequence: Sendable {
    enum Signal: Sendable {
        /// SIGTERM: the orchestrator's stop.
        case terminate
        /// SIGINT: an operator's Ctrl-C.
        case interrupt
    }

    enum Action: Equatable, Sendable {
        case none
        /// Report not ready, keep serving, and come back with ``delayElapsed()`` after this long.
        case reportNotReadyAndWait(TimeAmount)
        /// Report not ready and drain the listeners now.
        case drain
    }

    enum Phase: Equatable, Sendable {
        case serving
        case delaying
        case draining
    }

    private(set) var delay: TimeAmount
    private(set) var phase: Phase = .serving

    init(delay: TimeAmount) {
        self.delay = delay
    }

    mutating func received(_ signal: Signal) -> Action {
        switch (self.phase, signal) {
        case (.serving, .terminate) where self.delay > .zero:
            self.phase = .delaying
            return .reportNotReadyAndWait(self.delay)
        case (.serving, _), (.delaying, _):
            self.phase = .draining
            return .drain
        case (.draining, _):
            return .none
        }
    }

    /// A reload's `shutdown_delay`; a delay already running keeps the length it started with.
    mutating func delayChanged(to delay: TimeAmount) {
        if self.phase == .serving { self.delay = delay }
    }

    mutating func delayElapsed() -> Action {
        guard self.phase == .delaying else { return .none }
        self.phase = .draining
        return .drain
    }
}
