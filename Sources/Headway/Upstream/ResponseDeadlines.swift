import NIOCore

/// The exchanges of one event loop that wait on an upstream, each with its deadline: `request_timeout` until
/// the response head, then `idle_timeout` between two pieces of the response.
///
/// One sweep per loop replaces a timer per request: scheduling and cancelling a NIO timer for every request
/// costs an allocation and a priority-queue removal that scans the queue, on the hot path. The price is
/// precision: a timeout fires up to one sweep period late (a twentieth of the shorter timeout, at most
/// 250 ms). Registration and removal are O(1) (swap-remove with the index kept by the exchange). A response
/// that makes progress does not touch this table: the sweep asks the exchange when it last saw a byte.
struct ResponseDeadlines {
    private var entries: [(handler: any ResponseDeadlineWaiter, deadline: NIODeadline)] = []

    static func sweepPeriod(for timeout: TimeAmount) -> TimeAmount {
        .nanoseconds(min(max(timeout.nanoseconds / 20, 5_000_000), 250_000_000))
    }

    /// Registers `handler` until ``remove(slot:)``; returns the slot the handler keeps for later calls.
    mutating func add(_ handler: any ResponseDeadlineWaiter, deadline: NIODeadline) -> Int {
        self.entries.append((handler, deadline))
        return self.entries.count - 1
    }

    mutating func setDeadline(_ deadline: NIODeadline, slot: Int) {
        self.entries[slot].deadline = deadline
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

    /// Finds the deadlines that passed: an exchange that made progress since gets a later deadline, the
    /// others are removed and returned, to be told that they timed out once this table is no longer being
    /// changed (a handler that times out may register again: a retry).
    mutating func sweep(now: NIODeadline) -> [any ResponseDeadlineWaiter] {
        var expired: [any ResponseDeadlineWaiter] = []
        var index = 0
        while index < self.entries.count {
            let entry = self.entries[index]
            if entry.deadline > now {
                index += 1
            } else if let later = entry.handler.extendedDeadline(now: now) {
                self.entries[index].deadline = later
                index += 1
            } else {
                self.remove(slot: index)
                expired.append(entry.handler)
            }
        }
        return expired
    }
}
