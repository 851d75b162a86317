import NIOCore

/// A validated upstream response head, kept as the bytes it arrived in.
///
/// Only what the proxy decides on is extracted (status, version, framing, keep-alive, the names listed in
/// `Connection`); the fields themselves are copied byte for byte when the head is rewritten for the client
/// (``writeClientHead(into:clientVersionMinor:chunked:closeConnection:)``).
struct ResponseHead {
    let bytes: ByteBuffer
    let status: UInt
    let versionMinor: UInt8
    let framing: ResponseParser.Framing
    /// The upstream lets the connection be reused after this response.
    let isKeepAlive: Bool
    /// `Content-Length` as sent, kept for HEAD responses where it describes the resource, not a body.
    let contentLength: Int64?
    /// Field names listed in `Connection` (other than `close` and `keep-alive`), lowercased; usually empty.
    private let nominated: [[UInt8]]
    /// Offset of the first field line (just past the status line's CRLF).
    private let fieldsStart: Int
    /// Offsets of the status code's first digit and of the CRLF that ends the status line.
    private let statusTextRange: Range<Int>

    var isInformational: Bool { self.status < 200 }

    init(parsing bytes: ByteBuffer, isHeadRequest: Bool) throws(ResponseParserError) {
        self.bytes = bytes
        var status: UInt = 0
        var versionMinor: UInt8 = 1
        var statusTextRange = 0..<0
        var fieldsStart = 0
        var contentLength: Int64?
        var transferEncodingCount = 0
        var isChunked = false
        var connectionClose = false
        var connectionKeepAlive = false
        var nominated: [[UInt8]] = []

        let result: ResponseParserError? = bytes.withUnsafeReadableBytes { raw -> ResponseParserError? in
            let count = raw.count
            // Status line: HTTP/1.x SP 3DIGIT [SP reason] CRLF
            guard count >= 14, raw[0] == UInt8(ascii: "H"), raw[1] == UInt8(ascii: "T"), raw[2] == UInt8(ascii: "T"),
                raw[3] == UInt8(ascii: "P"), raw[4] == UInt8(ascii: "/"), raw[5] == UInt8(ascii: "1"),
                raw[6] == UInt8(ascii: "."), raw[7] == UInt8(ascii: "0") || raw[7] == UInt8(ascii: "1"),
                raw[8] == UInt8(ascii: " ")
            else { return .init("malformed status line") }
            versionMinor = raw[7] - UInt8(ascii: "0")
            for index in 9..<12 {
                let digit = raw[index]
                guard digit >= UInt8(ascii: "0") && digit <= UInt8(ascii: "9") else { return .init("malformed status code") }
                status = status * 10 + UInt(digit - UInt8(ascii: "0"))
            }
            guard (100...599).contains(status) else { return .init("status code \(status) is out of range") }
            var index = 12
            if raw[index] == UInt8(ascii: " ") {
                index += 1
                while index < count && raw[index] != UInt8(ascii: "\r") {
                    let byte = raw[index]
                    guard byte == UInt8(ascii: "\t") || (byte >= 0x20 && byte != 0x7F) else {
                        return .init("control character in the reason phrase")
                    }
                    index += 1
                }
            }
            guard index + 1 < count, raw[index] == UInt8(ascii: "\r"), raw[index + 1] == UInt8(ascii: "\n") else {
                return .init("malformed status line")
            }
            statusTextRange = 9..<index
            index += 2
            fieldsStart = index

            // Field lines until the empty line.
            while true {
                guard index + 1 < count else { return .init("response head ends without an empty line") }
                if raw[index] == UInt8(ascii: "\r") {
                    guard raw[index + 1] == UInt8(ascii: "\n"), index + 2 == count else {
                        return .init("malformed end of the response head")
                    }
                    break
                }
                let nameStart = index
                while index < count, Self.isTokenCharacter(raw[index]) { index += 1 }
                guard index > nameStart, index < count, raw[index] == UInt8(ascii: ":") else {
                    // Also catches obs-fold (a line starting with whitespace) and space before the colon.
                    return .init("malformed header field")
                }
                let name = UnsafeRawBufferPointer(rebasing: raw[nameStart..<index])
                index += 1
                while index < count, raw[index] == UInt8(ascii: " ") || raw[index] == UInt8(ascii: "\t") { index += 1 }
                let valueStart = index
                while index < count, raw[index] != UInt8(ascii: "\r") {
                    let byte = raw[index]
                    guard byte == UInt8(ascii: "\t") || (byte >= 0x20 && byte != 0x7F) || byte >= 0x80 else {
                        return .init("control character in header field '\(String(decoding: name, as: UTF8.self))'")
                    }
                    index += 1
                }
                guard index + 1 < count, raw[index + 1] == UInt8(ascii: "\n") else { return .init("bare CR in a header field") }
                var valueEnd = index
                while valueEnd > valueStart, raw[valueEnd - 1] == UInt8(ascii: " ") || raw[valueEnd - 1] == UInt8(ascii: "\t") {
                    valueEnd -= 1
                }
                let value = UnsafeRawBufferPointer(rebasing: raw[valueStart..<valueEnd])
                index += 2

                if Self.equalsIgnoringCase(name, "content-length") {
                    guard contentLength == nil else { return .init("more than one Content-Length") }
                    guard !value.isEmpty, value.count <= 18, value.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else {
                        return .init("invalid Content-Length")
                    }
                    contentLength = value.reduce(Int64(0)) { $0 * 10 + Int64($1 - UInt8(ascii: "0")) }
                } else if Self.equalsIgnoringCase(name, "transfer-encoding") {
                    transferEncodingCount += 1
                    // Only plain chunked can be relayed faithfully (HTTP-EDGE-CASES U9).
                    guard transferEncodingCount == 1, Self.equalsIgnoringCase(value, "chunked") else {
                        return .init("unsupported Transfer-Encoding '\(String(decoding: value, as: UTF8.self))'")
                    }
                    isChunked = true
                } else if Self.equalsIgnoringCase(name, "connection") {
                    for token in value.split(separator: UInt8(ascii: ",")) {
                        let trimmed = Self.trimmed(UnsafeRawBufferPointer(rebasing: token))
                        if trimmed.isEmpty { continue }
                        if Self.equalsIgnoringCase(trimmed, "close") {
                            connectionClose = true
                        } else if Self.equalsIgnoringCase(trimmed, "keep-alive") {
                            connectionKeepAlive = true
                        } else {
                            nominated.append(trimmed.map { $0 | (($0 >= 0x41 && $0 <= 0x5A) ? 0x20 : 0) })
                        }
                    }
                }
            }
            return nil
        }
        if let result { throw result }
        if contentLength != nil && isChunked {
            throw .init("both Content-Length and Transfer-Encoding")
        }
        self.status = status
        self.versionMinor = versionMinor
        self.statusTextRange = statusTextRange
        self.fieldsStart = fieldsStart
        self.contentLength = contentLength
        self.nominated = nominated
        if status == 101 {
            throw .init("101 Switching Protocols to a request that did not ask to upgrade")
        }
        if status < 200 || status == 204 || status == 304 || isHeadRequest {
            self.framing = .none
        } else if isChunked {
            self.framing = .chunked
        } else if let contentLength {
            self.framing = contentLength == 0 ? .none : .contentLength(contentLength)
        } else {
            self.framing = .untilClose
        }
        let keepAlive = versionMinor == 1 ? !connectionClose : (connectionKeepAlive && !connectionClose)
        self.isKeepAlive = keepAlive && self.framing != .untilClose
    }

    /// Writes the head for the client: its HTTP version, the upstream's status, every end-to-end field, and
    /// the framing and connection fields Headway chose.
    ///
    /// - Parameters:
    ///   - chunked: the body goes to the client chunked (Headway frames it).
    ///   - closeConnection: the client connection closes after this response.
    func writeClientHead(into buffer: inout ByteBuffer, clientVersionMinor: UInt8, chunked: Bool, closeConnection: Bool) {
        buffer.writeStaticString(clientVersionMinor == 0 ? "HTTP/1.0 " : "HTTP/1.1 ")
        var statusText = self.bytes.getSlice(at: self.bytes.readerIndex + self.statusTextRange.lowerBound, length: self.statusTextRange.count)!
        buffer.writeBuffer(&statusText)
        buffer.writeStaticString("\r\n")
        let nominated = self.nominated
        self.bytes.withUnsafeReadableBytes { raw in
            var index = self.fieldsStart
            let end = raw.count - 2
            while index < end {
                let lineStart = index
                var colon = index
                while raw[colon] != UInt8(ascii: ":") { colon += 1 }
                var lineEnd = colon
                while raw[lineEnd] != UInt8(ascii: "\r") { lineEnd += 1 }
                index = lineEnd + 2
                let name = UnsafeRawBufferPointer(rebasing: raw[lineStart..<colon])
                if Self.isHopByHopOrFraming(name) { continue }
                if !nominated.isEmpty, nominated.contains(where: { Self.equalsIgnoringCase(name, $0) }) { continue }
                buffer.writeBytes(UnsafeRawBufferPointer(rebasing: raw[lineStart..<index]))
            }
        }
        switch self.framing {
        case .contentLength(let length):
            buffer.writeStaticString("Content-Length: ")
            buffer.writeString(String(length))
            buffer.writeStaticString("\r\n")
        case .none:
            // A HEAD response keeps its length: it describes the resource, not a body that follows.
            if let length = self.contentLength, self.status >= 200, self.status != 204, self.status != 304 {
                buffer.writeStaticString("Content-Length: ")
                buffer.writeString(String(length))
                buffer.writeStaticString("\r\n")
            }
        case .chunked, .untilClose:
            if chunked { buffer.writeStaticString("Transfer-Encoding: chunked\r\n") }
        }
        if closeConnection {
            buffer.writeStaticString("Connection: close\r\n")
        } else if clientVersionMinor == 0 {
            buffer.writeStaticString("Connection: keep-alive\r\n")
        }
        buffer.writeStaticString("\r\n")
    }

    // MARK: Bytes

    /// tchar (RFC 9110 §5.6.2).
    static func isTokenCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
            UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
            UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    /// Compares `bytes` with a lowercase ASCII `literal`, ignoring the case of `bytes`.
    static func equalsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ literal: StaticString) -> Bool {
        guard bytes.count == literal.utf8CodeUnitCount else { return false }
        let expected = literal.utf8Start
        for index in 0..<bytes.count {
            let byte = bytes[index]
            let lower = byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte
            if lower != expected[index] { return false }
        }
        return true
    }

    static func equalsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ lowercased: [UInt8]) -> Bool {
        guard bytes.count == lowercased.count else { return false }
        for index in 0..<bytes.count {
            let byte = bytes[index]
            if (byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte) != lowercased[index] { return false }
        }
        return true
    }

    private static func trimmed(_ bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        var start = 0
        var end = bytes.count
        while start < end, bytes[start] == UInt8(ascii: " ") || bytes[start] == UInt8(ascii: "\t") { start += 1 }
        while end > start, bytes[end - 1] == UInt8(ascii: " ") || bytes[end - 1] == UInt8(ascii: "\t") { end -= 1 }
        return UnsafeRawBufferPointer(rebasing: bytes[start..<end])
    }

    /// Fields that describe one connection or the framing, which Headway sets itself (RFC 9110 §7.6.1).
    private static func isHopByHopOrFraming(_ name: UnsafeRawBufferPointer) -> Bool {
        switch name.count {
        case 2: return Self.equalsIgnoringCase(name, "te")
        case 7: return Self.equalsIgnoringCase(name, "trailer") || Self.equalsIgnoringCase(name, "upgrade")
        case 10: return Self.equalsIgnoringCase(name, "connection") || Self.equalsIgnoringCase(name, "keep-alive")
        case 14: return Self.equalsIgnoringCase(name, "content-length") || Self.equalsIgnoringCase(name, "http2-settings")
        case 16: return Self.equalsIgnoringCase(name, "proxy-connection")
        case 17: return Self.equalsIgnoringCase(name, "transfer-encoding")
        default: return false
        }
    }
}
