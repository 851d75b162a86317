import NIOHTTP1

/// Why a message was refused by the HTTP/1 codec, on either side: a short reason for the answer's body and the
/// log, and the status a client gets when its request has the problem (400, 414, 431, 501, 505). A response
/// with a problem is answered 502 whatever the status says (``ProxyError/badUpstreamResponse(endpoint:reason:)``).
struct HTTP1ParseError: Error, Hashable, CustomStringConvertible {
    let status: HTTPResponseStatus
    let reason: String

    init(_ reason: String, status: HTTPResponseStatus = .badRequest) {
        self.status = status
        self.reason = reason
    }

    static func badRequest(_ reason: String) -> Self { .init(reason) }
    static let uriTooLong = Self("request line too long", status: .uriTooLong)
    static let fieldsTooLarge = Self("request header fields too large", status: .requestHeaderFieldsTooLarge)
    static let versionNotSupported = Self("only HTTP/1.0 and HTTP/1.1 are supported", status: .httpVersionNotSupported)
    static func notImplemented(_ what: String) -> Self { .init("\(what) is not implemented", status: .notImplemented) }

    var description: String { self.reason }

    static func == (lhs: Self, rhs: Self) -> Bool { lhs.status == rhs.status && lhs.reason == rhs.reason }
    func hash(into hasher: inout Hasher) {
        hasher.combine(self.status.code)
        hasher.combine(self.reason)
    }
}
