/// How the end of a message body is found (RFC 9112 §6.3), for requests and responses alike.
enum MessageFraming: Equatable, Sendable {
    /// No body: a request without one; a response to HEAD, a 1xx, 204 or 304, or `Content-Length: 0`.
    case none
    case contentLength(UInt64)
    case chunked
    /// Everything until the peer closes the connection (responses only: a request never ends that way).
    case untilClose
}
