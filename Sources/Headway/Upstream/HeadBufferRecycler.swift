import NIOCore

/// The buffers of the heads Headway writes (the request head to the pod, the response head to the client),
/// reused on one event loop so that a keep-alive request allocates none.
///
/// A buffer comes back once its write is done: then only the recycler references it, and `clear` reuses its
/// memory. A buffer written in this tick comes back after the tick's flush (``writesFlushed()``), when the
/// socket has usually taken its bytes. One still referenced elsewhere (its write not finished yet) gets fresh
/// memory from `clear`, so a head is never written over while it is in flight. The recycler is per loop, not
/// per connection, so an idle connection holds no buffer.
struct HeadBufferRecycler {
    private var spare: [ByteBuffer] = []
    /// Buffers handed to a channel in this tick, kept until its flush has written them.
    private var written: [ByteBuffer] = []

    /// Enough for every exchange one loop runs at once on a busy sidecar; more are allocated, not kept.
    private static let keptBuffers = 64
    /// A buffer grown by an unusually large head is dropped rather than kept.
    private static let largestKeptCapacity = 16 * 1024

    init() {
        self.spare.reserveCapacity(Self.keptBuffers)
        self.written.reserveCapacity(Self.keptBuffers)
    }

    /// An empty buffer of at least `minimumCapacity` bytes.
    mutating func take(minimumCapacity: Int, allocator: ByteBufferAllocator) -> ByteBuffer {
        guard var buffer = self.spare.popLast() else { return allocator.buffer(capacity: minimumCapacity) }
        buffer.clear(minimumCapacity: minimumCapacity)
        return buffer
    }

    /// A buffer from ``take(minimumCapacity:allocator:)`` that was written in this tick and is not flushed yet.
    mutating func giveBackOnceFlushed(_ buffer: ByteBuffer) {
        guard self.written.count < Self.keptBuffers, buffer.capacity <= Self.largestKeptCapacity else { return }
        self.written.append(buffer)
    }

    /// The tick's writes were flushed: the buffers they used can serve the next heads.
    mutating func writesFlushed() {
        while let buffer = self.written.popLast() {
            self.giveBack(buffer)
        }
    }

    /// A buffer from ``take(minimumCapacity:allocator:)`` whose bytes have been written out, or copied.
    mutating func giveBack(_ buffer: ByteBuffer) {
        guard self.spare.count < Self.keptBuffers, buffer.capacity <= Self.largestKeptCapacity else { return }
        self.spare.append(buffer)
    }
}
