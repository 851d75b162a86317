import NIOCore

/// Collects the bytes of a message head, which may arrive in several reads, up to its empty line.
///
/// The usual case, a whole head in one read, costs no copy: the head is a slice of the read buffer.
struct HeadAccumulator {
    /// Bytes of a head that has not ended yet.
    private(set) var pending = ByteBuffer()

    /// Returns the complete head (through its empty line), or `nil` when more bytes are needed; `buffer` is
    /// left at the first byte after the head.
    mutating func nextHead(from buffer: inout ByteBuffer) -> ByteBuffer? {
        if self.pending.readableBytes == 0 {
            guard buffer.readableBytes > 0 else { return nil }
            guard let end = HTTPSyntax.endOfHead(in: buffer, from: 0) else {
                self.pending = buffer
                buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
                return nil
            }
            return buffer.readSlice(length: end)!
        }
        // Only bytes not searched before are searched again (the last three may start the CRLFCRLF).
        let searchFrom = max(0, self.pending.readableBytes - 3)
        let previouslyPending = self.pending.readableBytes
        self.pending.writeImmutableBuffer(buffer)
        guard let end = HTTPSyntax.endOfHead(in: self.pending, from: searchFrom) else {
            buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
            return nil
        }
        buffer.moveReaderIndex(forwardBy: end - previouslyPending)
        let head = self.pending.readSlice(length: end)!
        self.pending = ByteBuffer()
        return head
    }

    mutating func reset() {
        self.pending = ByteBuffer()
    }
}
