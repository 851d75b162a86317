import NIOCore

/// The four client timeouts (`client.header_timeout`, `body_timeout`, `idle_timeout`, `write_timeout`) as one
/// decision: what a client connection looks like at a sweep goes in, what to do with it comes out.
///
/// No clock and no channel: the loop's sweep passes its coarse time, so every rule is unit-tested.
struct ClientTimeouts: Sendable {
    let settings: ClientSettings

    /// What the sweep sees of one connection.
    struct Observation {
        /// Since when the client has not taken response bytes, if it is not taking them now.
        var notWritableSince: NIODeadline?
        /// Reading is held back by Headway (backpressure): the client waits on us, not the other way round.
        var isReadHeld: Bool
        /// Part of a request head has arrived, since `headStartedAt`.
        var isReadingHead: Bool
        var headStartedAt: NIODeadline
        /// A request has started and not ended.
        var isInsideRequest: Bool
        /// The last byte from the client, or the end of the last response.
        var lastActivity: NIODeadline
        /// No exchange runs and no pipelined request waits.
        var isIdle: Bool
    }

    enum Verdict: Equatable {
        case none
        /// The client takes no response bytes: cut it off (nothing can be answered).
        case disconnect(reason: String)
        /// Answer this error (408) and close.
        case refuse(ProxyError)
        /// A quiet keep-alive connection: closed without a word, as every server does.
        case closeIdle
        /// Backpressure held the client: its activity clock restarts now.
        case activityContinues
    }

    func check(_ connection: Observation, now: NIODeadline) -> Verdict {
        if let since = connection.notWritableSince, now - since > self.settings.writeTimeout {
            return .disconnect(
                reason:
                    "client took no response byte for write_timeout (\(DurationText.format(self.settings.writeTimeout)))"
            )
        }
        if connection.isReadHeld {
            return .activityContinues
        }
        if connection.isReadingHead {
            guard now - connection.headStartedAt > self.settings.headerTimeout else { return .none }
            let timeout = DurationText.format(self.settings.headerTimeout)
            return .refuse(.requestTimeout("no complete request head within header_timeout (\(timeout))"))
        }
        if connection.isInsideRequest {
            guard now - connection.lastActivity > self.settings.bodyTimeout else { return .none }
            let timeout = DurationText.format(self.settings.bodyTimeout)
            return .refuse(.requestTimeout("no request body byte for body_timeout (\(timeout))"))
        }
        if connection.isIdle, now - connection.lastActivity > self.settings.idleTimeout {
            return .closeIdle
        }
        return .none
    }
}
