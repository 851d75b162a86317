import NIOCore

/// Byte-level HTTP/1.1 grammar shared by Headway's request and response parsers (RFC 9110 §5, RFC 9112 §5).
///
/// Everything here works on raw bytes so that heads can be validated and relayed without building strings.
enum HTTPSyntax {
    /// tchar (RFC 9110 §5.6.2).
    static func isTokenCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
            UInt8(ascii: "'"),
            UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"),
            UInt8(ascii: "_"),
            UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    /// field-vchar, SP, HTAB or obs-text: what may appear inside a field value (no CR, LF, NUL or other CTL).
    static func isFieldValueByte(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: "\t") || (byte >= 0x20 && byte != 0x7F)
    }

    /// Compares `bytes` with a lowercase ASCII `literal`, ignoring the case of `bytes`.
    static func equalsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ literal: StaticString) -> Bool {
        guard bytes.count == literal.utf8CodeUnitCount else { return false }
        let expected = literal.utf8Start
        for index in 0..<bytes.count where Self.lowercased(bytes[index]) != expected[index] {
            return false
        }
        return true
    }

    static func equalsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ lowercased: [UInt8]) -> Bool {
        guard bytes.count == lowercased.count else { return false }
        for index in 0..<bytes.count where Self.lowercased(bytes[index]) != lowercased[index] {
            return false
        }
        return true
    }

    static func lowercased(_ byte: UInt8) -> UInt8 {
        byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
    }

    /// `bytes` without leading and trailing spaces and tabs (OWS).
    static func trimmed(_ bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        var start = 0
        var end = bytes.count
        while start < end, bytes[start] == UInt8(ascii: " ") || bytes[start] == UInt8(ascii: "\t") { start += 1 }
        while end > start, bytes[end - 1] == UInt8(ascii: " ") || bytes[end - 1] == UInt8(ascii: "\t") { end -= 1 }
        return UnsafeRawBufferPointer(rebasing: bytes[start..<end])
    }

    /// A decimal `Content-Length` value: digits only, at most 18 of them (so it fits an `Int64`).
    static func contentLength(_ value: UnsafeRawBufferPointer) -> Int64? {
        guard !value.isEmpty, value.count <= 18 else { return nil }
        var length: Int64 = 0
        for byte in value {
            guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { return nil }
            length = length * 10 + Int64(byte - UInt8(ascii: "0"))
        }
        return length
    }

    /// What a request's `Transfer-Encoding` list means for its framing (RFC 9112 §6.1, §6.3).
    enum RequestTransferCoding: Equatable {
        /// Plain `chunked` (empty list elements and OWS allowed, any case).
        case chunked
        /// `chunked` is last, but another coding precedes it: 501, Headway decodes no other coding.
        case unsupported
        /// `chunked` is not the final coding (or appears twice): the body's length cannot be known; 400 and close.
        case lengthUnknowable
    }

    static func requestTransferCoding(_ value: UnsafeRawBufferPointer) -> RequestTransferCoding {
        var codings = 0
        var chunkedCount = 0
        var lastIsChunked = false
        for element in value.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false) {
            let coding = Self.trimmed(UnsafeRawBufferPointer(rebasing: element))
            if coding.isEmpty { continue }
            codings += 1
            lastIsChunked = Self.equalsIgnoringCase(coding, "chunked")
            if lastIsChunked { chunkedCount += 1 }
        }
        guard lastIsChunked, chunkedCount == 1 else { return .lengthUnknowable }
        return codings == 1 ? .chunked : .unsupported
    }

    /// Fields that describe one connection, or the framing that Headway sets itself (RFC 9110 §7.6.1).
    static func isHopByHopOrFraming(_ name: UnsafeRawBufferPointer) -> Bool {
        switch name.count {
        case 2: return Self.equalsIgnoringCase(name, "te")
        case 7: return Self.equalsIgnoringCase(name, "trailer") || Self.equalsIgnoringCase(name, "upgrade")
        case 10: return Self.equalsIgnoringCase(name, "connection") || Self.equalsIgnoringCase(name, "keep-alive")
        case 14:
            return Self.equalsIgnoringCase(name, "content-length") || Self.equalsIgnoringCase(name, "http2-settings")
        case 16: return Self.equalsIgnoringCase(name, "proxy-connection")
        case 17: return Self.equalsIgnoringCase(name, "transfer-encoding")
        default: return false
        }
    }

    /// What a `Connection` field says: `close`, `keep-alive`, `upgrade`, and the other field names it lists.
    struct ConnectionOptions {
        var close = false
        var keepAlive = false
        var upgrade = false
        /// Lowercased names of fields that must not be forwarded; usually empty (no allocation).
        var nominated: [[UInt8]] = []

        mutating func read(_ value: UnsafeRawBufferPointer) {
            for token in value.split(separator: UInt8(ascii: ",")) {
                let name = HTTPSyntax.trimmed(UnsafeRawBufferPointer(rebasing: token))
                if name.isEmpty { continue }
                if HTTPSyntax.equalsIgnoringCase(name, "close") {
                    self.close = true
                } else if HTTPSyntax.equalsIgnoringCase(name, "keep-alive") {
                    self.keepAlive = true
                } else if HTTPSyntax.equalsIgnoringCase(name, "upgrade") {
                    self.upgrade = true
                } else if HTTPSyntax.equalsIgnoringCase(name, "host") {
                    continue  // A client must not be able to make Headway drop Host.
                } else {
                    self.nominated.append(name.map(HTTPSyntax.lowercased))
                }
            }
        }

        func nominates(_ name: UnsafeRawBufferPointer) -> Bool {
            !self.nominated.isEmpty && self.nominated.contains { HTTPSyntax.equalsIgnoringCase(name, $0) }
        }
    }

    /// One field line of a head: offsets into the head's bytes.
    struct FieldLine {
        var name: Range<Int>
        var value: Range<Int>
        /// The whole line including its CRLF, to copy it unchanged.
        var line: Range<Int>
    }

    /// Validates the field lines of a head that starts at `start` and ends with the empty line at the end
    /// of `raw`, and calls `visit` for each. Returns why the head is malformed, or `nil`.
    ///
    /// Refused: a name that is not a token or is empty, whitespace before the colon, obs-fold (a line that
    /// starts with whitespace), CR not followed by LF, bare LF, NUL and other controls in a value.
    static func scanFields(
        _ raw: UnsafeRawBufferPointer,
        from start: Int,
        _ visit: (FieldLine) -> String?
    ) -> String? {
        let count = raw.count
        var index = start
        while true {
            guard index + 1 < count else { return "head ends without an empty line" }
            if raw[index] == UInt8(ascii: "\r") {
                guard raw[index + 1] == UInt8(ascii: "\n"), index + 2 == count else {
                    return "malformed end of the head"
                }
                return nil
            }
            let lineStart = index
            while index < count, Self.isTokenCharacter(raw[index]) { index += 1 }
            guard index > lineStart, index < count, raw[index] == UInt8(ascii: ":") else {
                return "malformed header field"
            }
            let nameEnd = index
            index += 1
            while index < count, raw[index] == UInt8(ascii: " ") || raw[index] == UInt8(ascii: "\t") { index += 1 }
            let valueStart = index
            while index < count, raw[index] != UInt8(ascii: "\r") {
                guard Self.isFieldValueByte(raw[index]) else {
                    let name = String(
                        decoding: UnsafeRawBufferPointer(rebasing: raw[lineStart..<nameEnd]),
                        as: UTF8.self
                    )
                    return "control character in header field '\(name)'"
                }
                index += 1
            }
            guard index + 1 < count, raw[index + 1] == UInt8(ascii: "\n") else { return "bare CR in a header field" }
            var valueEnd = index
            while valueEnd > valueStart,
                raw[valueEnd - 1] == UInt8(ascii: " ") || raw[valueEnd - 1] == UInt8(ascii: "\t")
            {
                valueEnd -= 1
            }
            index += 2
            if let problem = visit(
                FieldLine(name: lineStart..<nameEnd, value: valueStart..<valueEnd, line: lineStart..<index)
            ) {
                return problem
            }
        }
    }

    /// The size line that precedes a chunk of `length` bytes in a chunked body (RFC 9112 §7.1).
    static func chunkHeader(for length: Int, allocator: ByteBufferAllocator) -> ByteBuffer {
        var header = allocator.buffer(capacity: 18)
        header.writeString(String(length, radix: 16))
        header.writeStaticString("\r\n")
        return header
    }

    /// The offset just past the first CRLFCRLF in `buffer` at or after `start`, or `nil`.
    static func endOfHead(in buffer: ByteBuffer, from start: Int) -> Int? {
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
}

/// Decodes a chunked body (RFC 9112 §7.1) into its data, strictly; extensions and trailers are checked and
/// dropped. Shared by the request and the response parser.
struct ChunkedDecoder {
    /// Longest accepted chunk-size line (size and extensions) and trailer section.
    static let maximumLineLength = 4 * 1024

    private enum State {
        case size(value: UInt64, digits: Int, lineLength: Int, inExtension: Bool, sawCR: Bool)
        case data(remaining: UInt64)
        case dataEnd(sawCR: Bool)
        case trailers(lineLength: Int, sectionLength: Int, sawCR: Bool)
        case complete
    }

    private var state = State.size(value: 0, digits: 0, lineLength: 0, inExtension: false, sawCR: false)

    /// The last chunk and the trailer section have been read.
    var isComplete: Bool {
        if case .complete = self.state { return true }
        return false
    }

    /// Returns the next piece of data, or `nil` when `buffer` is used up or the body is complete.
    /// - Throws: the reason the framing is invalid.
    mutating func next(from buffer: inout ByteBuffer) throws(ChunkedFramingError) -> ByteBuffer? {
        while buffer.readableBytes > 0 {
            switch self.state {
            case .data(let remaining):
                let count = Int(min(remaining, UInt64(buffer.readableBytes)))
                let slice = buffer.readSlice(length: count)!
                self.state =
                    remaining == UInt64(count) ? .dataEnd(sawCR: false) : .data(remaining: remaining - UInt64(count))
                return slice

            case .dataEnd(let sawCR):
                let byte = buffer.readInteger(as: UInt8.self)!
                if !sawCR {
                    guard byte == UInt8(ascii: "\r") else { throw .init("chunk data longer than its size") }
                    self.state = .dataEnd(sawCR: true)
                } else {
                    guard byte == UInt8(ascii: "\n") else { throw .init("chunk data not followed by CRLF") }
                    self.state = .size(value: 0, digits: 0, lineLength: 0, inExtension: false, sawCR: false)
                }

            case .size(var value, var digits, var lineLength, var inExtension, let sawCR):
                let byte = buffer.readInteger(as: UInt8.self)!
                lineLength += 1
                guard lineLength <= Self.maximumLineLength else { throw .init("chunk-size line too long") }
                if sawCR {
                    guard byte == UInt8(ascii: "\n"), digits > 0 else { throw .init("malformed chunk-size line") }
                    self.state =
                        value == 0 ? .trailers(lineLength: 0, sectionLength: 0, sawCR: false) : .data(remaining: value)
                    continue
                }
                if byte == UInt8(ascii: "\r") {
                    self.state = .size(
                        value: value,
                        digits: digits,
                        lineLength: lineLength,
                        inExtension: inExtension,
                        sawCR: true
                    )
                    continue
                }
                if inExtension {
                    guard HTTPSyntax.isFieldValueByte(byte) else {
                        throw .init("control character in a chunk extension")
                    }
                } else if let digit = Self.hexValue(byte) {
                    guard digits < 15 else { throw .init("chunk size too large") }
                    value = value << 4 | UInt64(digit)
                    digits += 1
                } else if byte == UInt8(ascii: ";") && digits > 0 {
                    inExtension = true
                } else {
                    throw .init("invalid chunk size")
                }
                self.state = .size(
                    value: value,
                    digits: digits,
                    lineLength: lineLength,
                    inExtension: inExtension,
                    sawCR: false
                )

            case .trailers(var lineLength, var sectionLength, let sawCR):
                // Trailer fields are read and dropped (RFC 9112 §7.1.2 lets a recipient discard them).
                let byte = buffer.readInteger(as: UInt8.self)!
                sectionLength += 1
                guard sectionLength <= Self.maximumLineLength else { throw .init("trailer section too long") }
                if sawCR {
                    guard byte == UInt8(ascii: "\n") else { throw .init("bare CR in the trailer section") }
                    if lineLength == 0 {
                        self.state = .complete
                        return nil
                    }
                    self.state = .trailers(lineLength: 0, sectionLength: sectionLength, sawCR: false)
                } else if byte == UInt8(ascii: "\r") {
                    self.state = .trailers(lineLength: lineLength, sectionLength: sectionLength, sawCR: true)
                } else {
                    guard HTTPSyntax.isFieldValueByte(byte) else { throw .init("control character in a trailer field") }
                    lineLength += 1
                    self.state = .trailers(lineLength: lineLength, sectionLength: sectionLength, sawCR: false)
                }

            case .complete:
                return nil
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

struct ChunkedFramingError: Error, Hashable, CustomStringConvertible {
    let reason: String

    init(_ reason: String) {
        self.reason = reason
    }

    var description: String { self.reason }
}

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

/// Reads a message body whose framing the head announced; shared by the request and the response parser.
struct BodyReader {
    enum Framing {
        case contentLength(UInt64)
        case chunked
        /// Everything until the peer closes (responses only).
        case untilClose
    }

    private enum State {
        case contentLength(remaining: UInt64)
        case chunked(ChunkedDecoder)
        case untilClose
        case complete
    }

    private var state: State

    init(_ framing: Framing) {
        switch framing {
        case .contentLength(let length): self.state = length == 0 ? .complete : .contentLength(remaining: length)
        case .chunked: self.state = .chunked(ChunkedDecoder())
        case .untilClose: self.state = .untilClose
        }
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
    mutating func next(from buffer: inout ByteBuffer) throws(ChunkedFramingError) -> ByteBuffer? {
        switch self.state {
        case .contentLength(let remaining):
            guard buffer.readableBytes > 0 else { return nil }
            let count = Int(min(remaining, UInt64(buffer.readableBytes)))
            self.state = remaining == UInt64(count) ? .complete : .contentLength(remaining: remaining - UInt64(count))
            return buffer.readSlice(length: count)!
        case .chunked(var decoder):
            let data = try decoder.next(from: &buffer)
            self.state = decoder.isComplete ? .complete : .chunked(decoder)
            return data
        case .untilClose:
            guard buffer.readableBytes > 0 else { return nil }
            return buffer.readSlice(length: buffer.readableBytes)!
        case .complete:
            return nil
        }
    }
}
