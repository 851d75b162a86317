import NIOCore

/// Reads a message body whose framing the head announced; shared by the request and the response parser.
struct BodyReader {
    private enum State {
        case contentLength(remaining: UInt64)
        case chunked(ChunkedDecoder)
        case untilClose
        case complete
    }

    private var state: State
    /// A chunked body's trailer section (its field lines and closing CRLF), once complete; `nil` if it had none.
    private(set) var trailers: ByteBuffer?

    init(_ framing: MessageFraming) {
        switch framing {
        case .none: self.state = .complete
        case .contentLength(let length): self.state = length == 0 ? .complete : .contentLength(remaining: length)
        case .chunked: self.state = .chunked(ChunkedDecoder())
        case .untilClose: self.state = .untilClose
        }
    }

    /// Hands the trailer section over once (the response parser relays it before the end).
    mutating func takeTrailers() -> ByteBuffer? {
        self.trailers.take()
    }

    var isComplete: Bool {
        if case .complete = self.state { return true }
        return false
    }

    /// The body ends when the peer closes the connection.
    var endsAtClose: Bool {
        if case .untilClose = self.state { return true }
        return false
    }

    /// The next piece of the body, or `nil` when `buffer` is used up or the body is complete (then
    /// ``isComplete`` is true).
    mutating func next(from buffer: inout ByteBuffer) throws(HTTP1ParseError) -> ByteBuffer? {
        switch self.state {
        case .contentLength(let remaining):
            guard buffer.readableBytes > 0 else { return nil }
            let count = Int(min(remaining, UInt64(buffer.readableBytes)))
            self.state = remaining == UInt64(count) ? .complete : .contentLength(remaining: remaining - UInt64(count))
            return buffer.readSlice(length: count)!
        case .chunked(var decoder):
            let data = try decoder.next(from: &buffer)
            if decoder.isComplete {
                self.trailers = decoder.trailers
                self.state = .complete
            } else {
                self.state = .chunked(decoder)
            }
            return data
        case .untilClose:
            guard buffer.readableBytes > 0 else { return nil }
            return buffer.readSlice(length: buffer.readableBytes)!
        case .complete:
            return nil
        }
    }
}
