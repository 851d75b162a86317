import NIOCore
import NIOHTTP1

/// Builds the request heads Headway sends upstream, afresh: end-to-end fields only, and framing that
/// Headway chose. (Response heads are rewritten by ``ResponseHead``.)
///
/// Never copying an inbound `Content-Length` or `Transfer-Encoding` is what keeps a request from being
/// smuggled past a pod: NIO's decoder accepts `Transfer-Encoding: Chunked` or `gzip, chunked`, and an
/// encoder given those values verbatim would write the body unchunked (HTTP-EDGE-CASES §0, §4.3).
enum ForwardedMessage {
    /// How the body of a forwarded request is framed on the upstream connection.
    enum RequestFraming: Equatable {
        case none
        case contentLength(UInt64)
        case chunked
    }

    /// Writes the head to send upstream for `head`, received from `clientIP`, into `buffer`.
    ///
    /// - Returns: the framing the written head announces, or `nil` if the head is unacceptable (then
    ///   nothing is written).
    static func writeUpstreamRequest(
        for head: HTTPRequestHead,
        clientIP: String?,
        into buffer: inout ByteBuffer
    ) -> RequestFraming? {
        // First pass: framing and forwarding fields, which decide what the second pass writes.
        var isChunked = false
        var contentLength: UInt64?
        var forwardedFor: String?
        var via: String?
        var host: String?
        var hasConnection = false
        for (name, value) in head.headers {
            switch name.utf8.count {
            case 3 where name.isASCIICaseInsensitiveEqual(to: "via"):
                via = via.map { "\($0), \(value)" } ?? value
            case 4 where name.isASCIICaseInsensitiveEqual(to: "host"):
                host = host ?? value
            case 10 where name.isASCIICaseInsensitiveEqual(to: "connection"):
                hasConnection = true
            case 14 where name.isASCIICaseInsensitiveEqual(to: "content-length"):
                guard let length = UInt64(value.trimmingOWS) else { return nil }
                contentLength = length
            case 15 where name.isASCIICaseInsensitiveEqual(to: "x-forwarded-for"):
                forwardedFor = forwardedFor.map { "\($0), \(value)" } ?? value
            case 17 where name.isASCIICaseInsensitiveEqual(to: "transfer-encoding"):
                // NIO's decoder lets a request through only when chunked is the final coding.
                isChunked = true
            default:
                break
            }
        }
        let nominated = hasConnection ? Self.connectionNominatedFields(head.headers) : []

        buffer.writeString(head.method.rawValue)
        buffer.writeStaticString(" ")
        buffer.writeString(head.uri)
        buffer.writeStaticString(" HTTP/1.1\r\n")
        for (name, value) in head.headers {
            if Self.isHopByHop(name) || Self.isSetByHeadway(name)
                || (!nominated.isEmpty && Self.isNominated(name, by: nominated))
            {
                continue
            }
            buffer.writeString(name)
            buffer.writeStaticString(": ")
            buffer.writeString(value)
            buffer.writeStaticString("\r\n")
        }
        if let clientIP {
            buffer.writeStaticString("X-Forwarded-For: ")
            if let forwardedFor {
                buffer.writeString(forwardedFor)
                buffer.writeStaticString(", ")
            }
            buffer.writeString(clientIP)
            buffer.writeStaticString("\r\n")
        } else if let forwardedFor {
            buffer.writeStaticString("X-Forwarded-For: ")
            buffer.writeString(forwardedFor)
            buffer.writeStaticString("\r\n")
        }
        buffer.writeStaticString("X-Forwarded-Proto: http\r\n")
        if let host {
            buffer.writeStaticString("X-Forwarded-Host: ")
            buffer.writeString(host)
            buffer.writeStaticString("\r\n")
        }
        buffer.writeStaticString("Via: ")
        if let via {
            buffer.writeString(via)
            buffer.writeStaticString(", ")
        }
        buffer.writeStaticString(head.version.minor == 0 ? "1.0 headway\r\n" : "1.1 headway\r\n")

        let framing: RequestFraming
        if isChunked {
            framing = .chunked
            buffer.writeStaticString("Transfer-Encoding: chunked\r\n")
        } else if let contentLength {
            framing = .contentLength(contentLength)
            buffer.writeStaticString("Content-Length: ")
            buffer.writeString(String(contentLength))
            buffer.writeStaticString("\r\n")
        } else {
            framing = .none
            if head.method == .POST || head.method == .PUT || head.method == .PATCH {
                // Say there is no body: some servers answer 411 to a POST without a length.
                buffer.writeStaticString("Content-Length: 0\r\n")
            }
        }
        buffer.writeStaticString("\r\n")
        return framing
    }

    /// Fields Headway writes itself, so inbound copies are dropped (X-Forwarded-For and Via are appended to).
    private static func isSetByHeadway(_ name: String) -> Bool {
        switch name.utf8.count {
        case 3: return name.isASCIICaseInsensitiveEqual(to: "via")
        case 14: return name.isASCIICaseInsensitiveEqual(to: "content-length")
        case 15: return name.isASCIICaseInsensitiveEqual(to: "x-forwarded-for")
        case 16: return name.isASCIICaseInsensitiveEqual(to: "x-forwarded-host")
        case 17: return name.isASCIICaseInsensitiveEqual(to: "x-forwarded-proto")
        default: return false
        }
    }

    /// The size line that precedes a chunk of `length` bytes in a chunked body (RFC 9112 §7.1).
    static func chunkHeader(for length: Int, allocator: ByteBufferAllocator) -> ByteBuffer {
        var header = allocator.buffer(capacity: 18)
        header.writeString(String(length, radix: 16))
        header.writeStaticString("\r\n")
        return header
    }

    /// Fields that only describe one connection (RFC 9110 §7.6.1); framing fields are re-set by Headway.
    static func isHopByHop(_ name: String) -> Bool {
        switch name.utf8.count {
        case 2: return name.isASCIICaseInsensitiveEqual(to: "te")
        case 7: return name.isASCIICaseInsensitiveEqual(to: "trailer") || name.isASCIICaseInsensitiveEqual(to: "upgrade")
        case 10: return name.isASCIICaseInsensitiveEqual(to: "connection") || name.isASCIICaseInsensitiveEqual(to: "keep-alive")
        case 14: return name.isASCIICaseInsensitiveEqual(to: "http2-settings")
        case 16: return name.isASCIICaseInsensitiveEqual(to: "proxy-connection")
        case 17: return name.isASCIICaseInsensitiveEqual(to: "transfer-encoding")
        default: return false
        }
    }

    /// Names listed in `Connection:`, which a proxy must also remove; framing fields and `Host` are never
    /// removed this way, so a client cannot make Headway drop what it must send.
    private static func connectionNominatedFields(_ headers: HTTPHeaders) -> [Substring] {
        var names: [Substring] = []
        for value in headers[canonicalForm: "connection"] {
            let token = value.trimmingOWSSubstring
            if token.isEmpty || token.isASCIICaseInsensitiveEqual(to: "close") || token.isASCIICaseInsensitiveEqual(to: "keep-alive") {
                continue
            }
            if token.isASCIICaseInsensitiveEqual(to: "host") || token.isASCIICaseInsensitiveEqual(to: "content-length") {
                continue
            }
            names.append(token)
        }
        return names
    }

    private static func isNominated(_ name: String, by nominated: [Substring]) -> Bool {
        nominated.contains { name.isASCIICaseInsensitiveEqual(to: $0) }
    }
}

extension StringProtocol {
    /// Compares with `other` ignoring ASCII case, without allocating a lowercased copy.
    func isASCIICaseInsensitiveEqual(to other: some StringProtocol) -> Bool {
        let lhs = self.utf8
        let rhs = other.utf8
        guard lhs.count == rhs.count else { return false }
        for (a, b) in zip(lhs, rhs) where a != b {
            guard a | 0x20 == b | 0x20, (a | 0x20) >= UInt8(ascii: "a"), (a | 0x20) <= UInt8(ascii: "z") else {
                return false
            }
        }
        return true
    }

    /// The value without leading and trailing spaces and tabs (RFC 9110 OWS).
    var trimmingOWS: String { String(self.trimmingOWSSubstring) }

    var trimmingOWSSubstring: Substring {
        let isOWS: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        let text = Substring(self)
        guard let first = text.firstIndex(where: { !isOWS($0) }), let last = text.lastIndex(where: { !isOWS($0) }) else {
            return ""
        }
        return text[first...last]
    }
}
