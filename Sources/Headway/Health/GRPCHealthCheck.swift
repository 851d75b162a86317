import NIOCore

/// The gRPC health-checking protocol (`grpc.health.v1.Health/Check`), as values: the request a check sends
/// and what the answer means. Its two messages have one field each, so they are written and read here rather
/// than with a protobuf library:
///
///     message HealthCheckRequest { string service = 1; }
///     message HealthCheckResponse { enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; ... }
///                                   ServingStatus status = 1; }
enum GRPCHealthCheck {
    static let path = "/grpc.health.v1.Health/Check"

    /// The HTTP/1.1 form of the call (the h2c stream codec carries it as HEADERS and DATA).
    static func request(service: String, host: String) -> ByteBuffer {
        var message = ByteBuffer()
        if !service.isEmpty {
            // Field 1, length-delimited (wire type 2), then the name's length as a varint.
            message.writeInteger(UInt8(0x0A))
            Self.writeVarint(UInt64(service.utf8.count), into: &message)
            message.writeString(service)
        }
        var request = ByteBuffer()
        request.writeString(
            "POST \(Self.path) HTTP/1.1\r\nHost: \(host)\r\nUser-Agent: headway-health-check\r\n"
                + "Content-Type: application/grpc\r\nContent-Length: \(5 + message.readableBytes)\r\n\r\n"
        )
        // The gRPC frame: not compressed, then the message's length, big-endian.
        request.writeInteger(UInt8(0))
        request.writeInteger(UInt32(message.readableBytes))
        request.writeBuffer(&message)
        return request
    }

    /// What the pod answered, as the check's outcome: it passes only for grpc-status 0 and SERVING.
    enum Answer: Equatable {
        case serving
        /// The call succeeded with another serving status (UNKNOWN, NOT_SERVING, SERVICE_UNKNOWN).
        case notServing(status: UInt64)
        /// The call failed: its grpc-status (5, NOT_FOUND, for a service the pod does not know) and message.
        case failed(grpcStatus: Int, message: String)
        case malformed(String)

        var detail: String {
            switch self {
            case .serving: "gRPC SERVING"
            case .notServing(let status): "gRPC \(Self.statusName(status))"
            case .failed(let code, let message):
                "grpc-status \(code) (\(Self.codeName(code)))" + (message.isEmpty ? "" : ": \(message)")
            case .malformed(let reason): "invalid gRPC health answer: \(reason)"
            }
        }

        /// The gRPC status codes' names (grpc/doc/statuscodes.md).
        private static func codeName(_ code: Int) -> String {
            let names = [
                "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
                "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
                "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
            ]
            return names.indices.contains(code) ? names[code] : "unknown code"
        }

        private static func statusName(_ status: UInt64) -> String {
            switch status {
            case 0: "UNKNOWN"
            case 2: "NOT_SERVING"
            case 3: "SERVICE_UNKNOWN"
            default: "serving status \(status)"
            }
        }
    }

    /// Reads the answer: `grpcStatus` and `grpcMessage` from the trailers (or the head, for a trailers-only
    /// answer), `body` the response's gRPC frame.
    static func answer(grpcStatus: String?, grpcMessage: String?, body: ByteBuffer) -> Answer {
        guard let grpcStatus, let code = Int(grpcStatus) else { return .malformed("no grpc-status") }
        guard code == 0 else { return .failed(grpcStatus: code, message: grpcMessage ?? "") }
        var body = body
        guard let compressed = body.readInteger(as: UInt8.self), let length = body.readInteger(as: UInt32.self),
            compressed == 0, body.readableBytes == Int(length)
        else {
            return .malformed("not one uncompressed gRPC message")
        }
        // An absent field is its default, UNKNOWN; fields other than 1 are skipped as protobuf says.
        var status: UInt64 = 0
        while body.readableBytes > 0 {
            guard let key = Self.readVarint(from: &body) else { return .malformed("truncated field") }
            switch key & 7 {
            case 0:
                guard let value = Self.readVarint(from: &body) else { return .malformed("truncated varint") }
                if key >> 3 == 1 { status = value }
            case 2:
                guard let length = Self.readVarint(from: &body), body.readableBytes >= length else {
                    return .malformed("truncated field")
                }
                body.moveReaderIndex(forwardBy: Int(length))
            default:
                return .malformed("unexpected wire type \(key & 7)")
            }
        }
        return status == 1 ? .serving : .notServing(status: status)
    }

    private static func writeVarint(_ value: UInt64, into buffer: inout ByteBuffer) {
        var value = value
        while value >= 0x80 {
            buffer.writeInteger(UInt8(value & 0x7F) | 0x80)
            value >>= 7
        }
        buffer.writeInteger(UInt8(value))
    }

    private static func readVarint(from buffer: inout ByteBuffer) -> UInt64? {
        var value: UInt64 = 0
        for shift in stride(from: 0, to: 64, by: 7) {
            guard let byte = buffer.readInteger(as: UInt8.self) else { return nil }
            value |= UInt64(byte & 0x7F) << shift
            if byte < 0x80 { return value }
        }
        return nil
    }
}
