import NIOCore
import NIOHTTP1

/// Reads HTTP/1.x requests from the bytes of a client connection, strictly, one after another (pipelining).
///
/// Headway parses requests itself, as it parses responses: the head stays bytes until it is rewritten for
/// the upstream, and every malformed message gets the status RFC 9112 asks for (400, 414, 431, 501, 505)
/// instead of one generic error. Chunked bodies are decoded (extensions and trailers dropped) and framed
/// again on the way upstream.
struct RequestParser {
    /// Longer request lines get 414; longer heads and more fields, 431.
    let limits: RequestLimits

    init(limits: RequestLimits = .init()) {
        self.limits = limits
    }

    enum Event {
        case head(RequestHead)
        case body(ByteBuffer)
        case end
    }

    private enum State {
        case head
        case body(BodyReader)
    }

    private var state = State.head
    private var head = HeadAccumulator()

    /// Whether part of a request head has arrived and the head is not complete yet.
    var isReadingHead: Bool {
        switch self.state {
        case .head: self.head.pending.readableBytes > 0
        case .body: false
        }
    }

    /// Whether a request has started and not ended (then a close from the client cuts it short).
    var isInsideRequest: Bool {
        switch self.state {
        case .head: self.head.pending.readableBytes > 0
        case .body: true
        }
    }

    /// Consumes bytes from `buffer` and returns the next event, or `nil` when more bytes are needed.
    mutating func next(from buffer: inout ByteBuffer) throws(HTTP1ParseError) -> Event? {
        switch self.state {
        case .head:
            guard let head = try self.parseHead(from: &buffer) else { return nil }
            self.state = .body(BodyReader(head.framing))
            return .head(head)

        case .body(var reader):
            let data = try reader.next(from: &buffer)
            if let data {
                self.state = .body(reader)
                return .body(data)
            }
            if reader.isComplete {
                self.state = .head
                return .end
            }
            self.state = .body(reader)
            return nil
        }
    }

    private mutating func parseHead(from buffer: inout ByteBuffer) throws(HTTP1ParseError) -> RequestHead? {
        let pending = self.head.pending
        if pending.readableBytes == 0 {
            Self.skipEmptyLines(&buffer)
        } else if pending.readableBytes == 1, pending.readableBytesView.first == UInt8(ascii: "\r") {
            // A lone CR: the first half of an empty line before the request line.
            guard let next = buffer.readableBytesView.first else { return nil }
            guard next == UInt8(ascii: "\n") else { throw .badRequest("bare CR before the request line") }
            buffer.moveReaderIndex(forwardBy: 1)
            self.head.reset()
            return try self.parseHead(from: &buffer)
        }
        guard let headBytes = self.head.nextHead(from: &buffer) else {
            try self.checkPendingHead()
            return nil
        }
        // A head that arrived whole in one read is held to the same limits; the request line is checked first
        // so that an over-long URI gets 414, not 431.
        guard headBytes.readableBytes <= self.limits.headBytes else {
            let firstLine = headBytes.readableBytesView.prefix(self.limits.requestLineBytes + 2)
            throw firstLine.contains(UInt8(ascii: "\n")) ? .fieldsTooLarge : .uriTooLong
        }
        return try RequestHead(parsing: headBytes, limits: self.limits)
    }

    /// Empty lines before a request line are ignored (RFC 9112 §2.2).
    private static func skipEmptyLines(_ buffer: inout ByteBuffer) {
        while buffer.readableBytes >= 2, buffer.getInteger(at: buffer.readerIndex, as: UInt16.self) == 0x0D0A {
            buffer.moveReaderIndex(forwardBy: 2)
        }
    }

    /// An incomplete head that is already too long, or holds a bare LF (so that its CRLF CRLF end may never
    /// come), gets its answer now, not when (if ever) it ends.
    private func checkPendingHead() throws(HTTP1ParseError) {
        let view = self.head.pending.readableBytesView
        var previous: UInt8 = 0
        for byte in view {
            if byte == UInt8(ascii: "\n") && previous != UInt8(ascii: "\r") {
                throw .badRequest("bare LF in the request head")
            }
            previous = byte
        }
        let length = self.head.pending.readableBytes
        if length > self.limits.requestLineBytes,
            self.head.pending.readableBytesView.prefix(self.limits.requestLineBytes + 2).firstIndex(
                of: UInt8(ascii: "\n")
            ) == nil
        {
            throw .uriTooLong
        }
        if length > self.limits.headBytes {
            throw .fieldsTooLarge
        }
    }
}
