import NIOCore
import NIOHPACK

/// Between an HTTP/2 stream's header lists and the HTTP/1.1 messages that Headway's exchange speaks.
///
/// A request's HEADERS become the HTTP/1.1 head that ``RequestParser`` then reads like any client's, so that
/// an HTTP/2 request meets every check, limit and rewrite an HTTP/1 request does. Nothing the client sent
/// can change the framing: a field that would (or a byte that would end a line) makes the stream malformed.
enum HTTP2Translation {
    /// How the request body follows the translated head.
    enum RequestBody: Equatable {
        /// END_STREAM came with the HEADERS.
        case none
        /// `content-length` was given; the DATA frames are the body as they are (swift-nio-http2 holds them to it).
        case contentLength
        /// No length: the DATA frames are sent as chunks.
        case chunked
    }

    /// Why a request's header list is malformed (RFC 9113 §8.1.1): the stream is reset with PROTOCOL_ERROR.
    struct MalformedRequest: Error, Equatable, CustomStringConvertible {
        var description: String
    }

    /// Writes the HTTP/1.1 head for `headers` (a request's header list) into `buffer`, after checking that the
    /// list is a well-formed request (RFC 9113 §8.2–8.3): swift-nio-http2's own check of client header lists
    /// is off, because this pass visits every field anyway and the second walk cost a twentieth of a request.
    ///
    /// `:authority` becomes `Host` (and wins over a `host` field, RFC 9113 §8.3.1), split `cookie` fields are
    /// joined with "; " (§8.2.3), and the body is framed by `content-length` or else chunked.
    static func writeRequestHead(
        _ headers: HPACKHeaders,
        endStream: Bool,
        into buffer: inout ByteBuffer
    ) throws(MalformedRequest) -> RequestBody {
        var method: String?
        var scheme: String?
        var path: String?
        var authority: String?
        var pseudoFieldCount = 0
        // Pseudo-fields come first, each at most once, with no byte a request line could not carry.
        for field in headers {
            guard field.name.utf8.first == UInt8(ascii: ":") else { break }
            pseudoFieldCount += 1
            guard field.value.utf8.allSatisfy(Self.isTargetByte) else {
                throw MalformedRequest(description: "invalid \(field.name)")
            }
            let seen: String?
            switch field.name {
            case ":method":
                seen = method
                method = field.value
            case ":scheme":
                seen = scheme
                scheme = field.value
            case ":path":
                seen = path
                path = field.value
            case ":authority":
                seen = authority
                authority = field.value
            default:
                // `:protocol` too: Headway does not offer extended CONNECT (RFC 8441).
                throw MalformedRequest(description: "unknown pseudo-header \(field.name)")
            }
            if seen != nil { throw MalformedRequest(description: "more than one \(field.name)") }
        }
        guard let method, Self.isToken(method) else {
            throw MalformedRequest(description: "missing or invalid :method")
        }
        // CONNECT has only :authority, which goes in the request line (the exchange refuses it); every other
        // request has :scheme and a non-empty :path.
        let target: String
        if method == "CONNECT" {
            guard let authority, !authority.isEmpty, scheme == nil, path == nil else {
                throw MalformedRequest(description: "CONNECT needs :authority and no :scheme or :path")
            }
            target = authority
        } else {
            guard scheme != nil else { throw MalformedRequest(description: "missing :scheme") }
            guard let path, !path.isEmpty else { throw MalformedRequest(description: "missing or empty :path") }
            target = path
        }
        buffer.writeString(method)
        buffer.writeStaticString(" ")
        buffer.writeString(target)
        buffer.writeStaticString(" HTTP/1.1\r\n")
        if let authority {
            buffer.writeStaticString("host: ")
            buffer.writeString(authority)
            buffer.writeStaticString("\r\n")
        }
        var hasContentLength = false
        var cookies: [String] = []
        for field in headers.dropFirst(pseudoFieldCount) {
            guard Self.isLowercaseToken(field.name) else {
                throw MalformedRequest(
                    description: field.name.utf8.first == UInt8(ascii: ":")
                        ? "pseudo-header \(field.name) after a regular field"
                        : "invalid header field name \(field.name)"
                )
            }
            guard field.value.utf8.allSatisfy(Self.isValueByte) else {
                throw MalformedRequest(description: "invalid value of header field \(field.name)")
            }
            switch field.name {
            case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
                throw MalformedRequest(description: "connection-specific header field \(field.name)")
            case "te" where field.value != "trailers":
                throw MalformedRequest(description: "te other than \"trailers\"")
            case "host" where authority != nil:
                continue
            case "cookie":
                cookies.append(field.value)
                continue
            case "content-length":
                hasContentLength = true
            default:
                break
            }
            buffer.writeString(field.name)
            buffer.writeStaticString(": ")
            buffer.writeString(field.value)
            buffer.writeStaticString("\r\n")
        }
        if !cookies.isEmpty {
            buffer.writeStaticString("cookie: ")
            buffer.writeString(cookies.joined(separator: "; "))
            buffer.writeStaticString("\r\n")
        }
        let body: RequestBody = hasContentLength ? .contentLength : endStream ? .none : .chunked
        if body == .chunked {
            buffer.writeStaticString("transfer-encoding: chunked\r\n")
        }
        buffer.writeStaticString("\r\n")
        return body
    }

    /// The HEADERS of a response head (or a 1xx): `:status`, then every field with its name in lower case,
    /// without the connection-specific ones HTTP/2 forbids (RFC 9113 §8.2.2).
    static func responseHeaders(_ head: ResponseHead) -> HPACKHeaders {
        var headers = HPACKHeaders()
        headers.reserveCapacity(12)
        headers.add(name: ":status", value: String(head.status))
        head.forEachField { name, value in Self.add(name, value, to: &headers) }
        return headers
    }

    /// The fields of an HTTP/1 trailer section (lines ending with the empty line, checked by the parser), with
    /// names in lower case and without the connection-specific ones.
    static func trailerFields(_ section: ByteBuffer) -> HPACKHeaders {
        var headers = HPACKHeaders()
        HTTPSyntax.forEachField(of: section, from: 0) { name, value in Self.add(name, value, to: &headers) }
        return headers
    }

    /// Adds an HTTP/1 field to an HTTP/2 header list: its name in lower case; connection-specific ones dropped.
    private static func add(
        _ name: UnsafeRawBufferPointer,
        _ value: UnsafeRawBufferPointer,
        to headers: inout HPACKHeaders
    ) {
        if Self.isConnectionSpecific(name) { return }
        headers.add(
            name: String(decoding: name.lazy.map(HTTPSyntax.lowercased), as: UTF8.self),
            value: String(decoding: value, as: UTF8.self)
        )
    }

    /// The `grpc-status` of a trailers-only gRPC answer, which carries it in the head.
    static func grpcStatus(of head: ResponseHead) -> Int? {
        Self.grpcStatus(amongFields: head.forEachField)
    }

    /// The `grpc-status` in a trailer section (HTTP/1 field lines).
    static func grpcStatus(ofTrailers section: ByteBuffer) -> Int? {
        Self.grpcStatus { HTTPSyntax.forEachField(of: section, from: 0, $0) }
    }

    private static func grpcStatus(
        amongFields forEachField: ((UnsafeRawBufferPointer, UnsafeRawBufferPointer) -> Void) -> Void
    ) -> Int? {
        var status: Int?
        forEachField { name, value in
            if status == nil, HTTPSyntax.equalsIgnoringCase(name, "grpc-status") {
                status = Self.grpcStatusValue(value)
            }
        }
        return status
    }

    /// A status code is a short decimal number; anything else is no status.
    private static func grpcStatusValue(_ value: UnsafeRawBufferPointer) -> Int? {
        guard (1...4).contains(value.count) else { return nil }
        var code = 0
        for byte in value {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            code = code * 10 + Int(byte - UInt8(ascii: "0"))
        }
        return code
    }

    /// A `grpc-timeout` value: at most 8 digits and a unit (H, M, S, m, u, n); `nil` if malformed.
    static func grpcTimeout(_ value: String) -> TimeAmount? {
        guard let unit = value.last, let amount = Int64(value.dropLast()), amount >= 0, value.count <= 9 else {
            return nil
        }
        switch unit {
        case "H": return .hours(amount)
        case "M": return .minutes(amount)
        case "S": return .seconds(amount)
        case "m": return .milliseconds(amount)
        case "u": return .microseconds(amount)
        case "n": return .nanoseconds(amount)
        default: return nil
        }
    }

    private static func isConnectionSpecific(_ name: UnsafeRawBufferPointer) -> Bool {
        switch name.count {
        case 7: HTTPSyntax.equalsIgnoringCase(name, "upgrade")
        case 10: HTTPSyntax.equalsIgnoringCase(name, "connection") || HTTPSyntax.equalsIgnoringCase(name, "keep-alive")
        case 16: HTTPSyntax.equalsIgnoringCase(name, "proxy-connection")
        case 17: HTTPSyntax.equalsIgnoringCase(name, "transfer-encoding")
        default: false
        }
    }

    private static func isToken(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy(HTTPSyntax.isTokenCharacter)
    }

    /// An HTTP/2 field name: a token with no upper-case letter (RFC 9113 §8.2.1).
    private static func isLowercaseToken(_ text: String) -> Bool {
        !text.isEmpty
            && text.utf8.allSatisfy {
                HTTPSyntax.isTokenCharacter($0) && !(UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0)
            }
    }

    /// A request target or authority byte: visible ASCII and beyond, never space or a control.
    private static func isTargetByte(_ byte: UInt8) -> Bool {
        byte > 0x20 && byte != 0x7F
    }

    /// A field value byte: anything but NUL, CR and LF (RFC 9113 §8.2.1); the HTTP/1 parser checks the rest.
    private static func isValueByte(_ byte: UInt8) -> Bool {
        byte != 0 && byte != UInt8(ascii: "\r") && byte != UInt8(ascii: "\n")
    }
}
