import NIOCore
import NIOHTTP1

#if canImport(Glibc)
import Glibc
#endif

/// Why Headway answered a request itself instead of relaying an upstream's response.
///
/// The mapping to an HTTP status lives here and only here (``status``); the reason text is the
/// short plain-text body the client gets and the log line the operator sees.
struct ProxyError: Error, Hashable, CustomStringConvertible {
    private enum Code: Equatable {
        case noEndpoint
        case noHealthyEndpoint
        case connectionLimit
        case pendingLimit
        case connectFailed
        case connectTimeout
        case upstreamClosedEarly
        case upstreamTimeout
        case badUpstreamResponse
        case methodNotAllowed
        case malformedRequest(HTTPResponseStatus)
        case requestTimeout
        case requestTooLarge
        case tooManyConnections
    }

    private let code: Code
    let detail: String

    private init(_ code: Code, _ detail: String) {
        self.code = code
        self.detail = detail
    }

    static func noEndpoint(upstream: String, reason: String? = nil) -> Self {
        .init(.noEndpoint, "no endpoint of upstream '\(upstream)' is available" + (reason.map { ": \($0)" } ?? ""))
    }
    static func noHealthyEndpoint(upstream: String, total: Int, lastError: String) -> Self {
        .init(
            .noHealthyEndpoint,
            "no healthy endpoint in upstream '\(upstream)' (\(total) known, none healthy); last attempt: \(lastError)"
        )
    }
    static func connectionLimit(endpoint: String, limit: Int) -> Self {
        .init(.connectionLimit, "endpoint \(endpoint) has reached max_connections_per_endpoint (\(limit))")
    }
    static func pendingLimit(upstream: String, limit: Int) -> Self {
        .init(
            .pendingLimit,
            "upstream '\(upstream)' has \(limit) requests waiting for a connection (max_pending_requests)"
        )
    }
    static func connectFailed(endpoint: String, error: any Error) -> Self {
        .init(.connectFailed, "could not connect to endpoint \(endpoint): \(Self.describe(error))")
    }
    static func connectTimeout(endpoint: String, timeout: String) -> Self {
        .init(.connectTimeout, "connect to endpoint \(endpoint) did not complete within connect_timeout (\(timeout))")
    }
    static let upstreamClosedEarly = Self(.upstreamClosedEarly, "the upstream closed the connection before responding")
    static func upstreamClosed(endpoint: String, error: (any Error)?) -> Self {
        .init(
            .upstreamClosedEarly,
            "endpoint \(endpoint) closed the connection before responding"
                + (error.map { ": \(Self.describe($0))" } ?? "")
        )
    }
    static func upstreamTimeout(endpoint: String, timeout: String) -> Self {
        .init(.upstreamTimeout, "endpoint \(endpoint) did not respond within request_timeout (\(timeout))")
    }
    static func badUpstreamResponse(endpoint: String, reason: String) -> Self {
        .init(.badUpstreamResponse, "endpoint \(endpoint) sent an invalid response: \(reason)")
    }
    static func methodNotAllowed(_ method: String) -> Self {
        .init(.methodNotAllowed, "method \(method) is not supported by this proxy")
    }
    static func requestTimeout(_ what: String) -> Self {
        .init(.requestTimeout, "request timeout: \(what)")
    }
    static func requestTooLarge(limit: Int) -> Self {
        .init(.requestTooLarge, "request body larger than max_request_body (\(limit) bytes)")
    }
    static func tooManyConnections(limit: Int) -> Self {
        .init(.tooManyConnections, "this listener has max_connections (\(limit)) client connections open")
    }
    static func malformedRequest(_ error: HTTP1ParseError) -> Self {
        .init(.malformedRequest(error.status), "malformed request: \(error.reason)")
    }

    var status: HTTPResponseStatus {
        switch self.code {
        case .noEndpoint, .noHealthyEndpoint, .connectionLimit, .pendingLimit, .tooManyConnections: .serviceUnavailable
        case .requestTimeout: .requestTimeout
        case .requestTooLarge: .payloadTooLarge
        case .connectFailed, .upstreamClosedEarly, .badUpstreamResponse: .badGateway
        case .upstreamTimeout, .connectTimeout: .gatewayTimeout
        case .methodNotAllowed: .methodNotAllowed
        case .malformedRequest(let status): status
        }
    }

    /// Whether a client may try again later; such answers carry `Retry-After`.
    /// The gRPC status code that answers this error for a gRPC client, which reads `grpc-status`, not the HTTP
    /// status: UNAVAILABLE (14) when no pod could take the call, DEADLINE_EXCEEDED (4) for timeouts,
    /// RESOURCE_EXHAUSTED (8) for limits, UNIMPLEMENTED (12) for a refused method, INTERNAL (13) for a
    /// malformed request (the HTTP-to-gRPC mapping of 400).
    var grpcStatus: Int {
        switch self.code {
        case .noEndpoint, .noHealthyEndpoint, .connectFailed, .upstreamClosedEarly, .badUpstreamResponse: 14
        case .connectTimeout, .upstreamTimeout, .requestTimeout: 4
        case .connectionLimit, .pendingLimit, .requestTooLarge, .tooManyConnections: 8
        case .methodNotAllowed: 12
        case .malformedRequest: 13
        }
    }

    var isRetryableLater: Bool { self.status == .serviceUnavailable }

    /// Headway's own answer: the status, a plain-text body saying why, and the connection fields.
    func response(clientVersionMinor: UInt8, closeConnection: Bool, allocator: ByteBufferAllocator) -> ByteBuffer {
        let body = self.body
        assert(body.utf8.count == self.bodyLength)
        var bytes = allocator.buffer(capacity: 192 + body.utf8.count)
        bytes.writeStaticString("HTTP/1.1 ")
        bytes.writeString("\(self.status.code) \(self.status.reasonPhrase)\r\n")
        bytes.writeStaticString("Content-Type: ")
        bytes.writeString(Self.bodyContentType)
        bytes.writeStaticString("\r\nContent-Length: ")
        bytes.writeString("\(body.utf8.count)\r\n")
        if self.isRetryableLater {
            bytes.writeStaticString("Retry-After: 1\r\n")
        }
        if closeConnection {
            bytes.writeStaticString("Connection: close\r\n")
        } else if clientVersionMinor == 0 {
            bytes.writeStaticString("Connection: keep-alive\r\n")
        }
        bytes.writeStaticString("\r\n")
        bytes.writeString(body)
        return bytes
    }

    /// The answer's body, on HTTP/1 and HTTP/2 alike: the detail and a newline.
    var body: String { self.detail + "\n" }

    /// The length of ``body``, without building it.
    var bodyLength: Int { self.detail.utf8.count + 1 }

    static let bodyContentType = "text/plain; charset=utf-8"

    var description: String { self.detail }

    /// A socket error as an operator reads it ("Connection refused"), rather than NIO's full description.
    static func describe(_ error: any Error) -> String {
        if let error = error as? IOError {
            return String(cString: strerror(error.errnoCode))
        }
        return "\(error)"
    }

    static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }
    func hash(into hasher: inout Hasher) { hasher.combine(self.status.code) }
}
