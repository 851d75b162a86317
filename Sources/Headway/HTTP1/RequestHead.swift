import NIOCore

/// A validated client request head, kept as the bytes it arrived in.
///
/// Only what the proxy decides on is extracted (method, version, framing, keep-alive, Host, the forwarding
/// fields it appends to); the other fields are copied byte for byte into the upstream head
/// (``writeUpstreamHead(into:clientIP:)``), so obs-text and case survive unchanged and nothing is decoded
/// into strings on the hot path.
struct RequestHead {
    enum Method: Equatable {
        case get, head, post, put, patch, delete, options, trace, connect
        /// Any other token: forwarded as is (RFC 9110 §9.1 lets a proxy relay methods it does not know).
        case other
    }

    let bytes: ByteBuffer
    let method: Method
    let versionMinor: UInt8
    /// Never `.untilClose`: a request body that ends at the close cannot be told from a cut one.
    let framing: MessageFraming
    /// The client lets the connection be reused after this exchange.
    let isKeepAlive: Bool
    /// The client asked to switch protocols (`Connection: upgrade` with `Upgrade`).
    let wantsUpgrade: Bool
    /// The request can become a tunnel if the pod answers 101: it asks for an upgrade to something other than
    /// `h2c` (Headway speaks HTTP/1.1 upstream) and has no body.
    var canTunnel: Bool {
        self.wantsUpgrade && self.upgradeRange != nil && self.framing == .none && !self.upgradeIsH2COnly
    }
    /// The only protocol asked for is `h2c`, which Headway strips (it speaks HTTP/1.1 upstream).
    var upgradeIsH2C: Bool { self.upgradeIsH2COnly }
    /// The `Upgrade` value, when there is one.
    private let upgradeRange: Range<Int>?
    private let upgradeIsH2COnly: Bool

    private let methodRange: Range<Int>
    private let targetRange: Range<Int>
    /// What the pod gets as the target: the target as sent, or the path of an absolute-form target (empty:
    /// `/`).
    private let upstreamTargetRange: Range<Int>
    /// Where the header fields start in `bytes`.
    let fieldsStart: Int
    private let hostRange: Range<Int>?
    /// Values of `X-Forwarded-For` and `Via`, which Headway appends to; usually empty (no allocation).
    private let forwardedFor: [Range<Int>]
    private let via: [Range<Int>]
    private let connection: HTTPSyntax.ConnectionOptions

    var methodName: String { self.string(self.methodRange) }
    var target: String { self.string(self.targetRange) }
    /// The `Host` value, when there is one.
    var host: String? { self.hostRange.map(self.string) }

    /// Calls `body` with each field's name and value, in order (for a protocol that carries fields as a list).
    func forEachField(_ body: (_ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) -> Void) {
        HTTPSyntax.forEachField(of: self.bytes, from: self.fieldsStart, body)
    }

    /// Idempotent methods (RFC 9110 §9.2.2) may be retried after bytes were sent.
    var isIdempotent: Bool {
        switch self.method {
        case .get, .head, .options, .put, .delete, .trace: true
        case .post, .patch, .connect, .other: false
        }
    }

    /// - Parameter limits: a longer request line gets 414, more fields 431.
    init(parsing bytes: ByteBuffer, limits: RequestLimits = .init()) throws(HTTP1ParseError) {
        self.bytes = bytes
        var method = Method.other
        var methodRange = 0..<0
        var targetRange = 0..<0
        var versionMinor: UInt8 = 1
        var fieldsStart = 0
        var fieldCount = 0
        var hostRange: Range<Int>?
        var hostCount = 0
        var contentLength: UInt64?
        var transferEncodingCount = 0
        var isChunked = false
        var hasUpgradeField = false
        var upgradeRange: Range<Int>?
        var upgradeIsH2COnly = false
        var forwardedFor: [Range<Int>] = []
        var via: [Range<Int>] = []
        var connection = HTTPSyntax.ConnectionOptions()
        /// Absolute form: where its authority is, and where its path (if any) starts.
        var authorityRange: Range<Int>?
        var pathStart: Int?

        let failure: HTTP1ParseError? = bytes.withUnsafeReadableBytes { raw -> HTTP1ParseError? in
            let count = raw.count
            // request-line = method SP request-target SP HTTP-version CRLF
            var index = 0
            while index < count, HTTPSyntax.isTokenCharacter(raw[index]) { index += 1 }
            guard index > 0, index < count, raw[index] == UInt8(ascii: " ") else {
                return .badRequest("malformed request line")
            }
            methodRange = 0..<index
            method = Self.method(UnsafeRawBufferPointer(rebasing: raw[methodRange]))
            index += 1
            let targetStart = index
            while index < count, raw[index] > 0x20, raw[index] != 0x7F { index += 1 }
            targetRange = targetStart..<index
            guard index - targetStart <= limits.requestLineBytes else { return .uriTooLong }
            guard !targetRange.isEmpty, index < count, raw[index] == UInt8(ascii: " ") else {
                return .badRequest("malformed request line")
            }
            let target = UnsafeRawBufferPointer(rebasing: raw[targetRange])
            if target.contains(UInt8(ascii: "#")) { return .badRequest("a request target must not carry a fragment") }
            switch target[0] {
            case UInt8(ascii: "/"):
                break
            case UInt8(ascii: "*"):
                guard target.count == 1, method == .options else {
                    return .badRequest("'*' is a target for OPTIONS only")
                }
            default:
                // Absolute form (a client that thinks it talks to a forward proxy): its authority must match
                // Host, and the pod gets the origin form (the path), as RFC 9112 §3.2.2 has a proxy do.
                guard target.count > 7,
                    HTTPSyntax.equalsIgnoringCase(UnsafeRawBufferPointer(rebasing: target[0..<7]), "http://")
                else {
                    if method == .connect { break }
                    return .badRequest("malformed request target")
                }
                let authorityStart = targetRange.lowerBound + 7
                var authorityEnd = authorityStart
                while authorityEnd < targetRange.upperBound, raw[authorityEnd] != UInt8(ascii: "/"),
                    raw[authorityEnd] != UInt8(ascii: "?")
                {
                    authorityEnd += 1
                }
                guard authorityEnd > authorityStart else {
                    return .badRequest("absolute-form target without an authority")
                }
                authorityRange = authorityStart..<authorityEnd
                pathStart = authorityEnd < targetRange.upperBound ? authorityEnd : nil
            }
            index += 1
            guard count - index >= 10 else { return .badRequest("malformed request line") }
            let version = UnsafeRawBufferPointer(rebasing: raw[index..<(index + 8)])
            guard version.starts(with: "HTTP/".utf8), version[6] == UInt8(ascii: "."),
                version[5] >= UInt8(ascii: "0"), version[5] <= UInt8(ascii: "9"),
                version[7] >= UInt8(ascii: "0"), version[7] <= UInt8(ascii: "9")
            else { return .badRequest("malformed HTTP version") }
            guard version[5] == UInt8(ascii: "1"), version[7] <= UInt8(ascii: "1") else { return .versionNotSupported }
            versionMinor = version[7] - UInt8(ascii: "0")
            index += 8
            guard raw[index] == UInt8(ascii: "\r"), raw[index + 1] == UInt8(ascii: "\n") else {
                return .badRequest("malformed request line")
            }
            fieldsStart = index + 2

            var fieldProblem: HTTP1ParseError?
            let problem = HTTPSyntax.scanFields(raw, from: fieldsStart) { field in
                fieldCount += 1
                guard fieldCount <= limits.fieldCount else {
                    fieldProblem = .fieldsTooLarge
                    return "too many header fields"
                }
                let name = UnsafeRawBufferPointer(rebasing: raw[field.name])
                let value = UnsafeRawBufferPointer(rebasing: raw[field.value])
                switch name.count {
                case 3 where HTTPSyntax.equalsIgnoringCase(name, "via"):
                    via.append(field.value)
                case 4 where HTTPSyntax.equalsIgnoringCase(name, "host"):
                    hostCount += 1
                    hostRange = hostRange ?? field.value
                    guard value.allSatisfy(Self.isHostByte) else { return "invalid Host" }
                case 7 where HTTPSyntax.equalsIgnoringCase(name, "upgrade"):
                    // One Upgrade field only: two would be ambiguous to relay.
                    upgradeRange = hasUpgradeField ? nil : field.value
                    upgradeIsH2COnly = HTTPSyntax.equalsIgnoringCase(value, "h2c")
                    hasUpgradeField = true
                case 10 where HTTPSyntax.equalsIgnoringCase(name, "connection"):
                    connection.read(value)
                case 14 where HTTPSyntax.equalsIgnoringCase(name, "content-length"):
                    guard contentLength == nil else { return "more than one Content-Length" }
                    guard let length = HTTPSyntax.contentLength(value) else { return "invalid Content-Length" }
                    contentLength = UInt64(length)
                case 15 where HTTPSyntax.equalsIgnoringCase(name, "x-forwarded-for"):
                    forwardedFor.append(field.value)
                case 17 where HTTPSyntax.equalsIgnoringCase(name, "transfer-encoding"):
                    transferEncodingCount += 1
                    guard transferEncodingCount == 1 else { return "more than one Transfer-Encoding field" }
                    switch HTTPSyntax.requestTransferCoding(value) {
                    case .chunked:
                        isChunked = true
                    case .unsupported:
                        // Only plain chunked is understood; any other coding is not implemented (RFC 9112 §6.1).
                        fieldProblem = .notImplemented("Transfer-Encoding '\(String(decoding: value, as: UTF8.self))'")
                        return "unsupported Transfer-Encoding"
                    case .lengthUnknowable:
                        return "Transfer-Encoding '\(String(decoding: value, as: UTF8.self))' does not end in chunked"
                    }
                default:
                    break
                }
                return nil
            }
            if let problem { return fieldProblem ?? .badRequest(problem) }
            return nil
        }
        if let failure { throw failure }
        if contentLength != nil && isChunked {
            throw .badRequest("both Content-Length and Transfer-Encoding")
        }
        if versionMinor == 1 && hostCount != 1 {
            throw .badRequest(hostCount == 0 ? "missing Host" : "more than one Host")
        }
        if hostCount > 1 {
            throw .badRequest("more than one Host")
        }
        if let authorityRange, let hostRange {
            let matches = bytes.withUnsafeReadableBytes { raw in
                HTTPSyntax.equalsIgnoringCase(
                    UnsafeRawBufferPointer(rebasing: raw[authorityRange]),
                    Array(UnsafeRawBufferPointer(rebasing: raw[hostRange])).map(HTTPSyntax.lowercased)
                )
            }
            guard matches else { throw .badRequest("the absolute-form target's authority does not match Host") }
        }
        self.upstreamTargetRange =
            authorityRange == nil ? targetRange : (pathStart ?? targetRange.upperBound)..<targetRange.upperBound
        self.method = method
        self.methodRange = methodRange
        self.targetRange = targetRange
        self.versionMinor = versionMinor
        self.fieldsStart = fieldsStart
        self.hostRange = hostRange
        self.forwardedFor = forwardedFor
        self.via = via
        self.connection = connection
        self.wantsUpgrade = hasUpgradeField && connection.upgrade
        self.upgradeRange = upgradeRange
        self.upgradeIsH2COnly = upgradeIsH2COnly
        if isChunked {
            self.framing = .chunked
        } else if let contentLength, contentLength > 0 {
            self.framing = .contentLength(contentLength)
        } else {
            self.framing = .none
        }
        // An HTTP/1.0 message with Transfer-Encoding has faulty framing: answer it, then close (RFC 9112 §6.1).
        let keepAlive =
            versionMinor == 1 ? !connection.close : (connection.keepAlive && !connection.close && !isChunked)
        self.isKeepAlive = keepAlive
    }

    /// Writes the head to send upstream: HTTP/1.1, the end-to-end fields as received, the forwarding fields
    /// (`X-Forwarded-For` appended to, `X-Forwarded-Proto` and `X-Forwarded-Host` set, `Via` appended to),
    /// and exactly one framing field chosen by Headway.
    ///
    /// Never copying an inbound `Content-Length` or `Transfer-Encoding` keeps a request from being smuggled
    /// past a pod (HTTP-EDGE-CASES §0, §4.3).
    ///
    /// - Parameter upgrade: relay the client's `Upgrade` (with `Connection: Upgrade`) so that the pod may
    ///   switch protocols; otherwise both are dropped like every hop-by-hop field.
    func writeUpstreamHead(into buffer: inout ByteBuffer, clientIP: String?, upgrade: Bool = false) {
        self.bytes.withUnsafeReadableBytes { raw in
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: raw[self.methodRange]))
            buffer.writeStaticString(" ")
            if self.upstreamTargetRange.isEmpty || raw[self.upstreamTargetRange.lowerBound] == UInt8(ascii: "?") {
                buffer.writeStaticString("/")
            }
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: raw[self.upstreamTargetRange]))
            buffer.writeStaticString(" HTTP/1.1\r\n")
            // Validated at parse time, so the scan finds no problem here.
            _ = HTTPSyntax.scanFields(raw, from: self.fieldsStart) { field in
                let name = UnsafeRawBufferPointer(rebasing: raw[field.name])
                if !HTTPSyntax.isHopByHopOrFraming(name) && !Self.isSetByHeadway(name)
                    && !self.connection.nominates(name)
                {
                    buffer.writeBytes(UnsafeRawBufferPointer(rebasing: raw[field.line]))
                }
                return nil
            }
            if clientIP != nil || !self.forwardedFor.isEmpty {
                buffer.writeStaticString("X-Forwarded-For: ")
                self.writeList(self.forwardedFor, from: raw, into: &buffer)
                if let clientIP {
                    if !self.forwardedFor.isEmpty { buffer.writeStaticString(", ") }
                    buffer.writeString(clientIP)
                }
                buffer.writeStaticString("\r\n")
            }
            buffer.writeStaticString("X-Forwarded-Proto: http\r\n")
            if let hostRange = self.hostRange {
                buffer.writeStaticString("X-Forwarded-Host: ")
                buffer.writeBytes(UnsafeRawBufferPointer(rebasing: raw[hostRange]))
                buffer.writeStaticString("\r\n")
            }
            buffer.writeStaticString("Via: ")
            if !self.via.isEmpty {
                self.writeList(self.via, from: raw, into: &buffer)
                buffer.writeStaticString(", ")
            }
            buffer.writeStaticString(self.versionMinor == 0 ? "1.0 headway\r\n" : "1.1 headway\r\n")
            if upgrade, let upgradeRange = self.upgradeRange {
                buffer.writeStaticString("Connection: Upgrade\r\nUpgrade: ")
                buffer.writeBytes(UnsafeRawBufferPointer(rebasing: raw[upgradeRange]))
                buffer.writeStaticString("\r\n")
            }
        }
        switch self.framing {
        case .chunked:
            buffer.writeStaticString("Transfer-Encoding: chunked\r\n")
        case .contentLength(let length):
            buffer.writeStaticString("Content-Length: ")
            buffer.writeString(String(length))
            buffer.writeStaticString("\r\n")
        case .none:
            if self.method == .post || self.method == .put || self.method == .patch {
                // Say there is no body: some servers answer 411 to a POST without a length.
                buffer.writeStaticString("Content-Length: 0\r\n")
            }
        case .untilClose:
            preconditionFailure("a request head never frames its body by the close")
        }
        buffer.writeStaticString("\r\n")
    }

    private func writeList(_ ranges: [Range<Int>], from raw: UnsafeRawBufferPointer, into buffer: inout ByteBuffer) {
        for (index, range) in ranges.enumerated() {
            if index > 0 { buffer.writeStaticString(", ") }
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: raw[range]))
        }
    }

    private func string(_ range: Range<Int>) -> String {
        self.bytes.getString(at: self.bytes.readerIndex + range.lowerBound, length: range.count) ?? ""
    }

    /// Fields Headway writes itself (the ones it appends to are re-written with the appended value).
    private static func isSetByHeadway(_ name: UnsafeRawBufferPointer) -> Bool {
        switch name.count {
        case 3: return HTTPSyntax.equalsIgnoringCase(name, "via")
        case 15: return HTTPSyntax.equalsIgnoringCase(name, "x-forwarded-for")
        case 16: return HTTPSyntax.equalsIgnoringCase(name, "x-forwarded-host")
        case 17: return HTTPSyntax.equalsIgnoringCase(name, "x-forwarded-proto")
        default: return false
        }
    }

    /// Bytes of a Host value: reg-name, IP literal and port characters (RFC 3986 §3.2.2), no userinfo (`@`),
    /// no list separator, no whitespace.
    private static func isHostByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: ":"),
            UInt8(ascii: "["),
            UInt8(ascii: "]"), UInt8(ascii: "%"), UInt8(ascii: "!"), UInt8(ascii: "$"), UInt8(ascii: "&"),
            UInt8(ascii: "'"),
            UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: ";"),
            UInt8(ascii: "="):
            return true
        default:
            return false
        }
    }

    private static func method(_ name: UnsafeRawBufferPointer) -> Method {
        // Methods are case-sensitive (RFC 9110 §9.1): `get` is not GET.
        switch name.count {
        case 3:
            if name.elementsEqual("GET".utf8) { return .get }
            if name.elementsEqual("PUT".utf8) { return .put }
        case 4:
            if name.elementsEqual("HEAD".utf8) { return .head }
            if name.elementsEqual("POST".utf8) { return .post }
        case 5:
            if name.elementsEqual("PATCH".utf8) { return .patch }
            if name.elementsEqual("TRACE".utf8) { return .trace }
        case 6:
            if name.elementsEqual("DELETE".utf8) { return .delete }
        case 7:
            if name.elementsEqual("OPTIONS".utf8) { return .options }
            if name.elementsEqual("CONNECT".utf8) { return .connect }
        default:
            break
        }
        return .other
    }
}

extension RequestHead {
    /// The first `Referer` and `User-Agent` values, for the access log: one walk over the fields.
    var refererAndUserAgent: (referer: String?, userAgent: String?) {
        self.bytes.withUnsafeReadableBytes { raw in
            var referer: String?
            var userAgent: String?
            _ = HTTPSyntax.scanFields(raw, from: self.fieldsStart) { field in
                let name = UnsafeRawBufferPointer(rebasing: raw[field.name])
                if referer == nil, HTTPSyntax.equalsIgnoringCase(name, "referer") {
                    referer = String(decoding: UnsafeRawBufferPointer(rebasing: raw[field.value]), as: UTF8.self)
                } else if userAgent == nil, HTTPSyntax.equalsIgnoringCase(name, "user-agent") {
                    userAgent = String(decoding: UnsafeRawBufferPointer(rebasing: raw[field.value]), as: UTF8.self)
                }
                return nil
            }
            return (referer, userAgent)
        }
    }
}
