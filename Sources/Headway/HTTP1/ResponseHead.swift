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
    let framing: MessageFraming
    /// The upstream lets the connection be reused after this response.
    let isKeepAlive: Bool
    /// `Content-Length` as sent, kept for HEAD responses where it describes the resource, not a body.
    let contentLength: Int64?
    /// What `Connection` said, including the field names it lists (which are not relayed).
    private let connection: HTTPSyntax.ConnectionOptions
    /// Offset of the first field line (just past the status line's CRLF).
    private let fieldsStart: Int
    /// Offsets of the status code's first digit and of the CRLF that ends the status line.
    private let statusTextRange: Range<Int>

    /// A 1xx that a final response follows (a 101 is final: the protocol changes after it).
    var isInformational: Bool { self.status < 200 && self.status != 101 }

    /// - Parameter upgradeRequested: the request asked to switch protocols, so a 101 is a valid answer.
    init(parsing bytes: ByteBuffer, isHeadRequest: Bool, upgradeRequested: Bool = false) throws(HTTP1ParseError) {
        self.bytes = bytes
        var status: UInt = 0
        var versionMinor: UInt8 = 1
        var statusTextRange = 0..<0
        var fieldsStart = 0
        var contentLength: Int64?
        var transferEncodingCount = 0
        var isChunked = false
        var connection = HTTPSyntax.ConnectionOptions()

        let result: HTTP1ParseError? = bytes.withUnsafeReadableBytes { raw -> HTTP1ParseError? in
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
                guard digit >= UInt8(ascii: "0") && digit <= UInt8(ascii: "9") else {
                    return .init("malformed status code")
                }
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
            let problem = HTTPSyntax.scanFields(raw, from: fieldsStart) { field in
                let name = UnsafeRawBufferPointer(rebasing: raw[field.name])
                let value = UnsafeRawBufferPointer(rebasing: raw[field.value])
                if HTTPSyntax.equalsIgnoringCase(name, "content-length") {
                    guard contentLength == nil else { return "more than one Content-Length" }
                    guard let length = HTTPSyntax.contentLength(value) else { return "invalid Content-Length" }
                    contentLength = length
                } else if HTTPSyntax.equalsIgnoringCase(name, "transfer-encoding") {
                    transferEncodingCount += 1
                    // Only plain chunked can be relayed faithfully (HTTP-EDGE-CASES U9).
                    guard transferEncodingCount == 1, HTTPSyntax.equalsIgnoringCase(value, "chunked") else {
                        return "unsupported Transfer-Encoding '\(String(decoding: value, as: UTF8.self))'"
                    }
                    isChunked = true
                } else if HTTPSyntax.equalsIgnoringCase(name, "connection") {
                    connection.read(value)
                }
                return nil
            }
            if let problem { return .init(problem) }
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
        self.connection = connection
        if status == 101 {
            guard upgradeRequested else {
                throw .init("101 Switching Protocols to a request that did not ask to upgrade")
            }
            // From here on the connection carries the new protocol: raw bytes until either side closes.
            self.framing = .untilClose
            self.isKeepAlive = false
            return
        }
        if status < 200 || status == 204 || status == 304 || isHeadRequest {
            self.framing = .none
        } else if isChunked {
            self.framing = .chunked
        } else if let contentLength {
            self.framing = contentLength == 0 ? .none : .contentLength(UInt64(contentLength))
        } else {
            self.framing = .untilClose
        }
        let keepAlive = versionMinor == 1 ? !connection.close : (connection.keepAlive && !connection.close)
        self.isKeepAlive = keepAlive && self.framing != .untilClose
    }

    /// Calls `body` with each field's name and value, in order (for a protocol that carries fields as a list).
    func forEachField(_ body: (_ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) -> Void) {
        HTTPSyntax.forEachField(of: self.bytes, from: self.fieldsStart, body)
    }

    /// Writes the head for the client: Headway's own version, HTTP/1.1, whatever the client's (RFC 9110 §6.2;
    /// an HTTP/1.0 client still gets 1.0 framing), the upstream's status, every end-to-end field, and
    /// the framing and connection fields Headway chose.
    ///
    /// - Parameters:
    ///   - chunked: the body goes to the client chunked (Headway frames it).
    ///   - closeConnection: the client connection closes after this response.
    func writeClientHead(into buffer: inout ByteBuffer, clientVersionMinor: UInt8, chunked: Bool, closeConnection: Bool)
    {
        let switchesProtocols = self.status == 101
        buffer.writeStaticString("HTTP/1.1 ")
        var statusText = self.bytes.getSlice(
            at: self.bytes.readerIndex + self.statusTextRange.lowerBound,
            length: self.statusTextRange.count
        )!
        buffer.writeBuffer(&statusText)
        buffer.writeStaticString("\r\n")
        self.bytes.withUnsafeReadableBytes { raw in
            // Validated at parse time, so the scan finds no problem here.
            _ = HTTPSyntax.scanFields(raw, from: self.fieldsStart) { field in
                let name = UnsafeRawBufferPointer(rebasing: raw[field.name])
                let isUpgrade = switchesProtocols && HTTPSyntax.equalsIgnoringCase(name, "upgrade")
                if isUpgrade || (!HTTPSyntax.isHopByHopOrFraming(name) && !self.connection.nominates(name)) {
                    buffer.writeBytes(UnsafeRawBufferPointer(rebasing: raw[field.line]))
                }
                return nil
            }
        }
        if switchesProtocols {
            buffer.writeStaticString("Connection: Upgrade\r\n\r\n")
            return
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
}
