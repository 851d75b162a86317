import NIOCore
import Testing

@testable import Headway

#if canImport(Glibc)
import Glibc
#endif

@Suite struct HeadBufferRecyclerTests {
    private func address(_ buffer: ByteBuffer) -> UInt {
        buffer.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
    }

    @Test func aBufferWhoseWriteIsDoneIsReusedInPlace() {
        var recycler = HeadBufferRecycler()
        var head = recycler.take(minimumCapacity: 256, allocator: ByteBufferAllocator())
        head.writeString("GET / HTTP/1.1\r\n\r\n")
        let first = self.address(head)
        recycler.giveBack(head)
        head = ByteBuffer()  // the channel let go of it
        var next = recycler.take(minimumCapacity: 256, allocator: ByteBufferAllocator())
        #expect(next.readableBytes == 0, "a recycled buffer starts empty")
        next.writeString("HEAD / HTTP/1.1\r\n\r\n")
        #expect(self.address(next) == first, "the same memory serves the next head")
    }

    @Test func aBufferStillReferencedIsNeverWrittenOver() {
        var recycler = HeadBufferRecycler()
        var head = recycler.take(minimumCapacity: 64, allocator: ByteBufferAllocator())
        head.writeString("first head")
        let inFlight = head  // a write not finished yet still holds it
        recycler.giveBack(head)
        var next = recycler.take(minimumCapacity: 64, allocator: ByteBufferAllocator())
        next.writeString("second head")
        #expect(String(buffer: inFlight) == "first head")
        #expect(self.address(next) != self.address(inFlight))
    }

    @Test func aBufferWrittenThisTickComesBackAfterTheFlush() {
        var recycler = HeadBufferRecycler()
        var head = recycler.take(minimumCapacity: 64, allocator: ByteBufferAllocator())
        head.writeString("HTTP/1.1 200 OK\r\n\r\n")
        let first = self.address(head)
        recycler.giveBackOnceFlushed(head)
        var sameTick = recycler.take(minimumCapacity: 64, allocator: ByteBufferAllocator())
        sameTick.writeString("x")
        #expect(self.address(sameTick) != first, "a buffer not flushed yet was handed out again")
        head = ByteBuffer()  // the flush wrote it and let go
        recycler.writesFlushed()
        var nextTick = recycler.take(minimumCapacity: 64, allocator: ByteBufferAllocator())
        nextTick.writeString("y")
        #expect(self.address(nextTick) == first, "the flushed buffer serves the next head")
    }

    @Test func largeBuffersAreNotKept() {
        var recycler = HeadBufferRecycler()
        recycler.giveBack(ByteBufferAllocator().buffer(capacity: 64 * 1024))
        let next = recycler.take(minimumCapacity: 16, allocator: ByteBufferAllocator())
        #expect(next.capacity < 64 * 1024, "a 64 KiB buffer was kept for a small head")
    }
}

@Suite struct PickRandomTests {
    @Test func drawsSpreadEvenlyAndDifferPerGenerator() {
        var random = PickRandom()
        var counts = Array(repeating: 0, count: 10)
        for _ in 0..<10_000 { counts[Int.random(in: 0..<10, using: &random)] += 1 }
        // Each bucket expects 1,000 (σ ≈ 30); 850...1150 is five σ either side.
        #expect(counts.allSatisfy { (850...1150).contains($0) }, "\(counts)")
        var first = PickRandom()
        var second = PickRandom()
        #expect(
            (0..<4).map { _ in first.next() } != (0..<4).map { _ in second.next() },
            "two balancers share a sequence"
        )
    }
}

@Suite struct OpenFileLimitTests {
    @Test func theSoftLimitEndsAtTheHardLimit() throws {
        let limit = try #require(OpenFileLimit.raiseToHardLimit())
        #expect(limit.after >= limit.before)
        var current = rlimit()
        #expect(getrlimit(Int32(RLIMIT_NOFILE.rawValue), &current) == 0)
        #expect(current.rlim_cur == current.rlim_max, "the soft limit stayed below the hard one")
    }
}
