import NIOHTTP1

/// Builds the heads Headway sends on, afresh: end-to-end fields only, and framing that Headway chose.
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

    /// The head to send upstream for `head`, received from `clientIP`.
    ///
    /// - Returns: the head, and the framing it announces; `nil` framing means the head is unacceptable.
    static func upstreamRequest(
        for head: HTTPRequestHead,
        clientIP: String?
    ) -> (head: HTTPRequestHead, framing: RequestFraming)? {
        let nominated = Self.connectionNominatedFields(head.headers)
        var headers = HTTPHeaders()
        headers.reserveCapacity(head.headers.count + 4)
        var forwardedFor: String?
        var via: String?
        var isChunked = false
        var contentLength: UInt64?
        for (name, value) in head.headers {
            if name.isASCIICaseInsensitiveEqual(to: "content-length") {
                guard let length = UInt64(value.trimmingOWS) else { return nil }
                contentLength = length
                continue
            }
            if name.isASCIICaseInsensitiveEqual(to: "transfer-encoding") {
                // NIO's decoder only lets a request through when chunked is the final coding.
                isChunked = true
                continue
            }
            if name.isASCIICaseInsensitiveEqual(to: "x-forwarded-for") {
                forwardedFor = forwardedFor.map { "\($0), \(value)" } ?? value
                continue
            }
            if name.isASCIICaseInsensitiveEqual(to: "via") {
                via = via.map { "\($0), \(value)" } ?? value
                continue
            }
            if Self.isHopByHop(name) || name.isASCIICaseInsensitiveEqual(to: "x-forwarded-proto")
                || name.isASCIICaseInsensitiveEqual(to: "x-forwarded-host")
                || (!nominated.isEmpty && Self.isNominated(name, by: nominated))
            {
                continue
            }
            headers.add(name: name, value: value)
        }
        if let clientIP {
            headers.add(name: "X-Forwarded-For", value: forwardedFor.map { "\($0), \(clientIP)" } ?? clientIP)
        } else if let forwardedFor {
            headers.add(name: "X-Forwarded-For", value: forwardedFor)
        }
        headers.add(name: "X-Forwarded-Proto", value: "http")
        if let host = head.headers.first(name: "host") {
            headers.add(name: "X-Forwarded-Host", value: host)
        }
        let hop = head.version.minor == 0 ? "1.0 headway" : "1.1 headway"
        headers.add(name: "Via", value: via.map { "\($0), \(hop)" } ?? hop)

        let framing: RequestFraming
        if isChunked {
            framing = .chunked
            headers.add(name: "Transfer-Encoding", value: "chunked")
        } else if let contentLength {
            framing = .contentLength(contentLength)
            headers.add(name: "Content-Length", value: String(contentLength))
        } else {
            framing = .none
            if head.method == .POST || head.method == .PUT || head.method == .PATCH {
                // Say there is no body: some servers answer 411 to a POST without a length.
                headers.add(name: "Content-Length", value: "0")
            }
        }
        let upstreamHead = HTTPRequestHead(version: .http1_1, method: head.method, uri: head.uri, headers: headers)
        return (upstreamHead, framing)
    }

    /// The head to send the client for an upstream response `head`.
    ///
    /// - Parameters:
    ///   - clientVersion: the client's HTTP version; the response uses it so that NIO frames the body in a
    ///     way the client understands (no chunked encoding for HTTP/1.0).
    ///   - isHeadRequest: whether the response answers a HEAD request (its `Content-Length` is kept as is).
    ///   - closeConnection: whether the client connection closes after this response.
    static func clientResponse(
        for head: HTTPResponseHead,
        clientVersion: HTTPVersion,
        isHeadRequest: Bool,
        closeConnection: Bool
    ) -> HTTPResponseHead {
        let nominated = Self.connectionNominatedFields(head.headers)
        var headers = HTTPHeaders()
        headers.reserveCapacity(head.headers.count + 1)
        for (name, value) in head.headers {
            if Self.isHopByHop(name) || (!nominated.isEmpty && Self.isNominated(name, by: nominated)) {
                continue
            }
            if name.isASCIICaseInsensitiveEqual(to: "content-length") {
                // Kept only where it describes the body we relay; NIO's encoder adds chunked otherwise.
                if Self.responseHasBody(status: head.status, isHeadRequest: false) || isHeadRequest {
                    headers.add(name: name, value: value.trimmingOWS)
                }
                continue
            }
            headers.add(name: name, value: value)
        }
        if closeConnection {
            headers.add(name: "Connection", value: "close")
        } else if clientVersion.minor == 0 {
            headers.add(name: "Connection", value: "keep-alive")
        }
        return HTTPResponseHead(version: clientVersion, status: head.status, headers: headers)
    }

    /// Whether a response with `status` to a request carries a body (RFC 9112 §6.3 rule 1).
    static func responseHasBody(status: HTTPResponseStatus, isHeadRequest: Bool) -> Bool {
        if isHeadRequest { return false }
        let code = status.code
        return !(code < 200 || code == 204 || code == 304)
    }

    /// Whether the body of a response runs until the upstream closes the connection (no length, not chunked).
    static func isCloseDelimited(_ head: HTTPResponseHead, isHeadRequest: Bool) -> Bool {
        guard Self.responseHasBody(status: head.status, isHeadRequest: isHeadRequest) else { return false }
        return !head.headers.contains(name: "content-length") && !head.headers.contains(name: "transfer-encoding")
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
