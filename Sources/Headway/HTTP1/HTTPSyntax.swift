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
            // Walked in place rather than with `split`, which would allocate an array for every response.
            var start = 0
            while start <= value.count {
                let end = value[start...].firstIndex(of: UInt8(ascii: ",")) ?? value.count
                let name = HTTPSyntax.trimmed(UnsafeRawBufferPointer(rebasing: value[start..<end]))
                start = end + 1
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

    /// Calls `body` with the name and value of each field of a head that was validated when it was parsed.
    static func forEachField(
        of head: ByteBuffer,
        from start: Int,
        _ body: (_ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) -> Void
    ) {
        head.withUnsafeReadableBytes { raw in
            _ = Self.scanFields(raw, from: start) { field in
                body(
                    UnsafeRawBufferPointer(rebasing: raw[field.name]),
                    UnsafeRawBufferPointer(rebasing: raw[field.value])
                )
                return nil
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

    /// Hands `emit` the pieces of one chunk carrying `data`: its size line, the data, the CRLF after it.
    static func frameChunk(_ data: ByteBuffer, allocator: ByteBufferAllocator, _ emit: (ByteBuffer) -> Void) {
        emit(Self.chunkHeader(for: data.readableBytes, allocator: allocator))
        emit(data)
        emit(Self.crlf)
    }

    static let crlf = ByteBuffer(string: "\r\n")
    /// The last chunk with an empty trailer section: the end of a chunked body.
    static let lastChunk = ByteBuffer(string: "0\r\n\r\n")

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
