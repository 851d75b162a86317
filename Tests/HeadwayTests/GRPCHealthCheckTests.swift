import NIOCore
import Testing

@testable import Headway

/// The gRPC health call as values: the request's bytes, and what each answer means.
struct GRPCHealthCheckTests {
    /// The gRPC frame of a HealthCheckResponse with `status` (field 1, varint), or of an empty message.
    private func frame(status: UInt8?) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt32(status == nil ? 0 : 2))
        if let status { buffer.writeBytes([0x08, status]) }
        return buffer
    }

    @Test func theRequestNamesTheServiceInAGRPCFrame() {
        var request = GRPCHealthCheck.request(service: "my.pkg.Svc", host: "10.0.0.7:50051")
        let text = request.readString(length: request.readableBytes - 17)!
        #expect(text.hasPrefix("POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: 10.0.0.7:50051\r\n"))
        #expect(text.contains("Content-Type: application/grpc\r\nContent-Length: 17\r\n\r\n"))
        // Not compressed, 12 bytes: field 1 (0x0A), length 10, the name.
        #expect(Array(request.readableBytesView.prefix(7)) == [0, 0, 0, 0, 12, 0x0A, 10])
        #expect(String(decoding: request.readableBytesView.dropFirst(7), as: UTF8.self) == "my.pkg.Svc")
        var whole = GRPCHealthCheck.request(service: "", host: "h")
        #expect(whole.readString(length: whole.readableBytes - 5)!.contains("Content-Length: 5\r\n"))
        #expect(Array(whole.readableBytesView) == [0, 0, 0, 0, 0])
    }

    @Test func onlySERVINGPasses() {
        #expect(GRPCHealthCheck.answer(grpcStatus: "0", grpcMessage: nil, body: self.frame(status: 1)) == .serving)
        #expect(
            GRPCHealthCheck.answer(grpcStatus: "0", grpcMessage: nil, body: self.frame(status: 2))
                == .notServing(status: 2)
        )
        // An empty message is the default status, UNKNOWN.
        let unknown = GRPCHealthCheck.answer(grpcStatus: "0", grpcMessage: nil, body: self.frame(status: nil))
        #expect(unknown == .notServing(status: 0))
        #expect(unknown.detail == "gRPC UNKNOWN")
    }

    @Test func aFailedCallOrABrokenAnswerFailsTheCheckAndSaysWhy() {
        let notFound = GRPCHealthCheck.answer(grpcStatus: "5", grpcMessage: "unknown service", body: ByteBuffer())
        #expect(notFound.detail == "grpc-status 5 (NOT_FOUND): unknown service")
        #expect(GRPCHealthCheck.answer(grpcStatus: nil, grpcMessage: nil, body: self.frame(status: 1)) != .serving)
        var truncated = self.frame(status: 1)
        truncated.moveWriterIndex(to: truncated.writerIndex - 1)
        guard case .malformed = GRPCHealthCheck.answer(grpcStatus: "0", grpcMessage: nil, body: truncated) else {
            Issue.record("a truncated frame must not pass")
            return
        }
    }

    @Test func unknownFieldsAreSkipped() {
        var buffer = ByteBuffer()
        // Field 2 (length-delimited, 3 bytes), then field 1 = SERVING.
        let message: [UInt8] = [0x12, 3, 0x61, 0x62, 0x63, 0x08, 1]
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt32(message.count))
        buffer.writeBytes(message)
        #expect(GRPCHealthCheck.answer(grpcStatus: "0", grpcMessage: nil, body: buffer) == .serving)
    }
}
