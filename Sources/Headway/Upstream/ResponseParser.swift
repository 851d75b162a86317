import NIOCore

/// Reads HTTP/1.x responses from the bytes of one upstream connection, strictly, and hands back what the
/// proxy needs to relay them: the head (kept as bytes, to be rewritten) and the body as plain data.
///
/// Headway parses responses itself rather than through NIO's decoder and encoder: relaying bytes avoids
/// building header strings that are only written out again, which is where a straightforward NIO proxy
/// spends most of its user time (PERFORMANCE-NOTES, variant C). The price is that correctness is ours, so
/// the parser is strict where RFC 9112 lets a recipient be (HTTP-EDGE-CASES U5–U10): a malformed status
/// line or field, obs-fold, bare CR or LF, control characters, an invalid or repeated `Content-Length`, a
/// `Transfer-Encoding` other than `chunked`, both framings at once, or bytes after a complete response all
/// make the response invalid, and the connection is never reused.
///
/// Chunked bodies are decoded here (extensions and trailers are dropped), so the relayed data is always
/// plain; the downstream side frames it again for its client.
struct ResponseParser {
    /// Longest accepted response head; longer ones are refused (U11).
    static let maximumHeadLength = 64 * 1024
    /// Longest accepted chunk-size line (size, extensions) or trailer section.
    static let maximumChunkLineLength = 4 * 1024

    enum Event {
        /// A 1xx response other than 101; the final response follows.
        case informational(ResponseHead)
        case head(ResponseHead)
        case body(ByteBuffer)
        case end
    }

    /// How the end of a body is found.
    enum Framing: Equatable {
        /// No body: HEAD, 1xx, 204, 304, or `Content-Length: 0`.
        case none
        case contentLength(Int64)
        case chunked
        /// Everything until the upstream closes the connection.
        case untilClose
    }

    private enum State {
        case head
        case contentLength(remaining: Int64)
        case chunkSize(value: UInt64, digits: Int, lineLength: Int, inExtension: Bool, sawCR: Bool)
        case chunkData(remaining: UInt64)
        case chunkDataEnd(sawCR: Bool)
        case trailers(lineLength: Int, sectionLength: Int, sawCR: Bool)
        case untilClose
        /// The body is complete; `.end` is reported next.
        case ending
        /// The response ended; any further byte is unsolicited.
        case done
    }

    private var state: State = .head
    private var pendingHead = ByteBuffer()

    /// Whether the parser sits between responses (nothing of a response has arrived yet).
    var isIdle: Bool {
        switch self.state {
        case .done: true
        case .head: self.pendingHead.readableBytes == 0
        case .contentLength, .chunkSize, .chunkData, .chunkDataEnd, .trailers, .untilClose, .ending: false
        }
    }

    /// Prepares for the response to the next request.
    mutating func expectResponse() {
        self.state = .head
        self.pendingHead.clear()
    }

    /// Consumes bytes from `buffer` and returns the next event, or `nil` when more bytes are needed.
    ///
    /// Call it again until it returns `nil`: one buffer can hold a head, a body and the end.
    /// - Parameter isHeadRequest: the response answers a HEAD request (no body, whatever it says).
    mutating func next(from buffer: inout ByteBuffer, isHeadRequest: Bool) throws(ResponseParserError) -> Event? {
        switch self.state {
        case .head:
            return try self.parseHead(from: &buffer, isHeadRequest: isHeadRequest)

        case .contentLength(let remaining):
            guard buffer.readableBytes > 0 else { return nil }
            let count = Int(min(remaining, Int64(buffer.readableBytes)))
            let slice = buffer.readSlice(length: count)!
            self.state = remaining == Int64(count) ? .ending : .contentLength(remaining: remaining - Int64(count))
            return .body(slice)

        case .untilClose:
            guard buffer.readableBytes > 0 else { return nil }
            return .body(buffer.readSlice(length: buffer.readableBytes)!)

        case .chunkSize, .chunkData, .chunkDataEnd, .trailers:
            if let event = try self.parseChunked(from: &buffer) { return event }
            if case .ending = self.state {
                self.state = .done
                return .end
            }
            return nil

        case .ending:
            self.state = .done
            return .end

        case .done:
            guard buffer.readableBytes == 0 else {
                throw .init("bytes after the end of the response")
            }
            return nil
        }
    }

    /// The upstream closed its side. Returns `.end` if that completes the response (a body delimited by
    /// the close), `nil` if no response was in progress, and throws if a response was cut short.
    mutating func inputClosed() throws(ResponseParserError) -> Event? {
        switch self.state {
        case .untilClose, .ending:
            self.state = .done
            return .end
        case .done:
            return nil
        case .head where self.pendingHead.readableBytes == 0:
            return nil
        case .head, .contentLength, .chunkSize, .chunkData, .chunkDataEnd, .trailers:
            throw .init("the connection closed in the middle of the response")
        }
    }

    // MARK: Head

    private mutating func parseHead(from buffer: inout ByteBuffer, isHeadRequest: Bool) throws(ResponseParserError) -> Event? {
        let headBytes: ByteBuffer
        if self.pendingHead.readableBytes == 0 {
            // Usual case: the whole head is in this read; slice it without copying.
            guard buffer.readableBytes > 0 else { return nil }
            guard let headEnd = Self.endOfHead(in: buffer, from: 0) else {
                self.pendingHead = buffer
                buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
                try self.checkPendingHeadLength()
                return nil
            }
            headBytes = buffer.readSlice(length: headEnd)!
        } else {
            // Only bytes not searched before are searched again (the last three may start the CRLFCRLF).
            let searchFrom = max(0, self.pendingHead.readableBytes - 3)
            let previouslyPending = self.pendingHead.readableBytes
            self.pendingHead.writeImmutableBuffer(buffer)
            guard let headEnd = Self.endOfHead(in: self.pendingHead, from: searchFrom) else {
                buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
                try self.checkPendingHeadLength()
                return nil
            }
            buffer.moveReaderIndex(forwardBy: headEnd - previouslyPending)
            headBytes = self.pendingHead.readSlice(length: headEnd)!
            self.pendingHead = ByteBuffer()
        }
        let head = try ResponseHead(parsing: headBytes, isHeadRequest: isHeadRequest)
        if head.isInformational {
            self.state = .head
            return .informational(head)
        }
        switch head.framing {
        case .none:
            self.state = .ending
        case .contentLength(let length):
            self.state = .contentLength(remaining: length)
        case .chunked:
            self.state = .chunkSize(value: 0, digits: 0, lineLength: 0, inExtension: false, sawCR: false)
        case .untilClose:
            self.state = .untilClose
        }
        return .head(head)
    }

    private func checkPendingHeadLength() throws(ResponseParserError) {
        if self.pendingHead.readableBytes > Self.maximumHeadLength {
            throw .init("response head larger than \(Self.maximumHeadLength) bytes")
        }
    }

    /// The offset just past the first CRLFCRLF at or after `start`, or `nil`.
    private static func endOfHead(in buffer: ByteBuffer, from start: Int) -> Int? {
        buffer.withUnsafeReadableBytes { bytes in
            var index = start
            let count = bytes.count
            while index + 3 < count {
                if bytes[index + 3] != UInt8(ascii: "\n") {
                    index += 1
                    continue
                }
                if bytes[index] == UInt8(ascii: "\r") && bytes[index + 1] == UInt8(ascii: "\n")
                    && bytes[index + 2] == UInt8(ascii: "\r")
                {
                    return index + 4
                }
                index += 1
            }
            return nil
        }
    }

    // MARK: Chunked body

    private mutating func parseChunked(from buffer: inout ByteBuffer) throws(ResponseParserError) -> Event? {
        while buffer.readableBytes > 0 {
            switch self.state {
            case .chunkData(let remaining):
                let count = Int(min(remaining, UInt64(buffer.readableBytes)))
                let slice = buffer.readSlice(length: count)!
                self.state = remaining == UInt64(count) ? .chunkDataEnd(sawCR: false) : .chunkData(remaining: remaining - UInt64(count))
                return .body(slice)

            case .chunkDataEnd(let sawCR):
                let byte = buffer.readInteger(as: UInt8.self)!
                if !sawCR {
                    guard byte == UInt8(ascii: "\r") else { throw .init("chunk data longer than its size") }
                    self.state = .chunkDataEnd(sawCR: true)
                } else {
                    guard byte == UInt8(ascii: "\n") else { throw .init("chunk data not followed by CRLF") }
                    self.state = .chunkSize(value: 0, digits: 0, lineLength: 0, inExtension: false, sawCR: false)
                }

            case .chunkSize(var value, var digits, var lineLength, var inExtension, let sawCR):
                let byte = buffer.readInteger(as: UInt8.self)!
                lineLength += 1
                guard lineLength <= Self.maximumChunkLineLength else { throw .init("chunk-size line too long") }
                if sawCR {
                    guard byte == UInt8(ascii: "\n"), digits > 0 else { throw .init("malformed chunk-size line") }
                    if value == 0 {
                        self.state = .trailers(lineLength: 0, sectionLength: 0, sawCR: false)
                    } else {
                        self.state = .chunkData(remaining: value)
                    }
                    continue
                }
                if byte == UInt8(ascii: "\r") {
                    self.state = .chunkSize(value: value, digits: digits, lineLength: lineLength, inExtension: inExtension, sawCR: true)
                    continue
                }
                if inExtension {
                    // Extensions are dropped; only their bytes are checked.
                    guard byte == UInt8(ascii: "\t") || (byte >= 0x20 && byte != 0x7F) else {
                        throw .init("control character in a chunk extension")
                    }
                } else if let digit = Self.hexValue(byte) {
                    guard digits < 16 else { throw .init("chunk size too large") }
                    value = value << 4 | UInt64(digit)
                    digits += 1
                } else if byte == UInt8(ascii: ";") && digits > 0 {
                    inExtension = true
                } else {
                    throw .init("invalid chunk size")
                }
                self.state = .chunkSize(value: value, digits: digits, lineLength: lineLength, inExtension: inExtension, sawCR: false)

            case .trailers(var lineLength, var sectionLength, let sawCR):
                // Trailer fields are read and dropped (RFC 9112 §7.1.2 lets a recipient discard them).
                let byte = buffer.readInteger(as: UInt8.self)!
                sectionLength += 1
                guard sectionLength <= Self.maximumChunkLineLength else { throw .init("trailer section too long") }
                if sawCR {
                    guard byte == UInt8(ascii: "\n") else { throw .init("bare CR in the trailer section") }
                    if lineLength == 0 {
                        self.state = .ending
                        return nil
                    }
                    self.state = .trailers(lineLength: 0, sectionLength: sectionLength, sawCR: false)
                } else if byte == UInt8(ascii: "\r") {
                    self.state = .trailers(lineLength: lineLength, sectionLength: sectionLength, sawCR: true)
                } else {
                    guard byte == UInt8(ascii: "\t") || (byte >= 0x20 && byte != 0x7F) || byte >= 0x80 else {
                        throw .init("control character in a trailer field")
                    }
                    lineLength += 1
                    self.state = .trailers(lineLength: lineLength, sectionLength: sectionLength, sawCR: false)
                }

            case .head, .contentLength, .untilClose, .ending, .done:
                preconditionFailure("parseChunked called in state \(self.state)")
            }
        }
        return nil
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// Why an upstream response was refused; the client gets 502 (or a truncated response if it had started).
struct ResponseParserError: Error, Hashable, CustomStringConvertible {
    let reason: String

    init(_ reason: String) {
        self.reason = reason
    }

    var description: String { self.reason }
}
