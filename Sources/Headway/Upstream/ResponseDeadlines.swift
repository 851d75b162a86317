import NIOCore

/// The exchanges of one event loop that wait for a response head, each with its `request_timeout` deadline.
///
/// One sweep per loop replaces a timer per request: scheduling and cancelling a NIO timer for every request
/// costs an allocation and a priority-queue removal that scans the queue, on the hot path. The price is
/// precision: a timeout fires up to one sweep period late (a twentieth of `request_timeout`, at most
/// 250 ms). Registration and removal are O(1) (swap-remove with the index kept by the exchange).
struct ResponseDeadlines {
    private var entries: [(handler: DownstreamHandler, deadline: NIODeadline)] = []

    static func sweepPeriod(for requestTimeout: TimeAmount) -> TimeAmount {
        .nanoseconds(min(max(requestTimeout.nanoseconds / 20, 5_000_000), 250_000_000))
    }

    /// Registers `handler` until ``remove(_:)``; returns the slot the handler keeps for that call.
    mutating func add(_ handler: DownstreamHandler, deadline: NIODeadline) -> Int {
        self.entries.append((handler, deadline))
        return self.entries.count - 1
    }

    /// Removes the entry in `slot`; the handler that was last takes its place and is told its new slot.
    mutating func remove(slot: Int) {
        let last = self.entries.count - 1
        if slot != last {
            self.entries[slot] = self.entries[last]
            self.entries[slot].handler.deadlineSlotMoved(to: slot)
        }
        self.entries.removeLast()
    }

    /// Removes and returns the handlers whose deadline has passed.
    mutating func takeExpired(now: NIODeadline) -> [DownstreamHandler] {
        var expired: [DownstreamHandler] = []
        var index = 0
        while index < self.entries.count {
            if self.entries[index].deadline <= now {
                expired.append(self.entries[index].handler)
                self.remove(slot: index)
            } else {
                index += 1
            }
        }
        return expired
    }
}
