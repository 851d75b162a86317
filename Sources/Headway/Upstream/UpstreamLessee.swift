import NIOCore

/// Whoever leases upstream connections (the client side of an exchange), as the upstream layer sees it.
///
/// The upstream layer defines this protocol and calls up only through it, so that it never names the types
/// above it: an HTTP/1 client connection today, an HTTP/2 stream next. Every call happens on the event loop
/// that the lessee, the pool and the connection share.
protocol UpstreamLessee: AnyObject {
    /// Whether the client can take more response bytes; the connection holds its reads while it cannot.
    var canTakeResponseBytes: Bool { get }

    /// A connection opened for `attempt` is ready; `false` if that attempt was abandoned meanwhile (the pool
    /// then keeps the connection for someone else).
    func connectionReady(_ connection: UpstreamConnection, attempt: Int) -> Bool

    /// Opening a connection for `attempt` failed.
    func connectFailed(pool: UpstreamPool, attempt: Int, error: any Error)

    /// A piece of the response arrived on the leased connection.
    func upstreamReceived(_ event: ResponseParser.Event, from connection: UpstreamConnection)

    /// The connection's read batch is over: what was relayed may be flushed to the client.
    func upstreamReadComplete()

    /// The connection can take more request bytes.
    func upstreamBecameWritable()

    /// The leased connection closed before the response ended; `error` says why, when known.
    func upstreamClosed(_ connection: UpstreamConnection, error: (any Error)?)
}

/// A party waiting in a loop's ``ResponseDeadlines``.
protocol ResponseDeadlineWaiter: AnyObject {
    /// Asked when the registered deadline passed: a later deadline if the wait made progress since, else `nil`.
    func extendedDeadline(now: NIODeadline) -> NIODeadline?

    /// The deadline passed; the waiter has been removed from the table.
    func deadlinePassed()

    /// The waiter's entry moved to `slot` (another entry was removed).
    func deadlineSlotMoved(to slot: Int)
}

/// A client connection swept by its loop for its timeouts.
protocol ClientTimeoutWaiter: AnyObject {
    func checkClientTimeouts(now: NIODeadline)

    /// The connection's entry moved to `slot` (another entry was removed).
    func clientSlotMoved(to slot: Int)
}
