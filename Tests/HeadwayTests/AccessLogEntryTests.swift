import NIOCore
import Testing

@testable import Headway

#if canImport(Glibc)
import Glibc
#endif

/// The two access log formats, byte for byte, at a fixed time.
struct AccessLogEntryTests {
    /// 2026-12-02T07:30:05.042Z.
    private let time = AccessLogTime(timespec(tv_sec: 1_796_196_605, tv_nsec: 42_500_000))

    private var retried: AccessLogEntry {
        AccessLogEntry(
            clientHost: "127.0.0.1",
            clientPort: 40512,
            method: "GET",
            target: "/search?q=\"x\"",
            versionMinor: 1,
            status: 200,
            bytesIn: 0,
            bytesOut: 612,
            duration: .microseconds(1234),
            upstreamFirstByte: .microseconds(987),
            endpoint: "127.0.0.3:8080",
            firstEndpointTried: "127.0.0.2:8080",
            laterEndpointsTried: ["127.0.0.3:8080"],
            localReason: nil,
            referer: nil,
            userAgent: "curl/7.88.1"
        )
    }

    private var local: AccessLogEntry {
        AccessLogEntry(
            clientHost: "::1",
            clientPort: 5000,
            method: "POST",
            target: "/upload",
            versionMinor: 0,
            status: 503,
            bytesIn: 10,
            bytesOut: 40,
            duration: .milliseconds(2),
            upstreamFirstByte: nil,
            endpoint: nil,
            firstEndpointTried: nil,
            localReason: "no endpoint for upstream 'web'\tnow",
            referer: "http://a/",
            userAgent: nil
        )
    }

    private func line(_ entry: AccessLogEntry, _ format: AccessLogFormat) -> String {
        var buffer = ByteBuffer()
        entry.write(format, at: self.time, into: &buffer)
        return String(buffer: buffer)
    }

    @Test func jsonHasEveryFieldInOrder() {
        #expect(
            self.line(self.retried, .json)
                == #"{"time":"2026-12-02T07:30:05.042Z","client":"127.0.0.1:40512","method":"GET","target":"/search?q=\"x\"","protocol":"HTTP/1.1","status":200,"grpc_status":null,"bytes_in":0,"bytes_out":612,"duration_ms":1.234,"upstream_first_byte_ms":0.987,"endpoint":"127.0.0.3:8080","attempts":2,"endpoints_tried":["127.0.0.2:8080","127.0.0.3:8080"],"local_reason":null,"referer":null,"user_agent":"curl/7.88.1"}"#
                + "\n"
        )
        #expect(
            self.line(self.local, .json)
                == #"{"time":"2026-12-02T07:30:05.042Z","client":"[::1]:5000","method":"POST","target":"/upload","protocol":"HTTP/1.0","status":503,"grpc_status":null,"bytes_in":10,"bytes_out":40,"duration_ms":2.000,"upstream_first_byte_ms":null,"endpoint":null,"attempts":0,"endpoints_tried":[],"local_reason":"no endpoint for upstream 'web'\u0009now","referer":"http://a/","user_agent":null}"#
                + "\n"
        )
    }

    /// A gRPC call can fail inside an HTTP 200: the line carries the pod's grpc-status beside it.
    @Test func aGRPCCallCarriesItsStatus() {
        var call = self.retried
        call.method = "POST"
        call.target = "/headway.Echo/Unary"
        call.grpcStatus = 14
        let json = self.line(call, .json)
        #expect(json.contains(#""status":200,"grpc_status":14,"bytes_in":0"#), "\(json)")
        let combined = self.line(call, .combined)
        #expect(combined.contains(" bytes_in=0 grpc_status=14 reason=\"-\""), "\(combined)")
    }

    @Test func combinedIsApachesThenHeadwaysFields() {
        #expect(
            self.line(self.retried, .combined)
                == #"127.0.0.1 - - [02/Dec/2026:07:30:05 +0000] "GET /search?q=\"x\" HTTP/1.1" 200 612 "-" "curl/7.88.1" rt=0.001234 uft=0.000987 endpoint=127.0.0.3:8080 attempts=2 tried=127.0.0.2:8080,127.0.0.3:8080 bytes_in=0 grpc_status=- reason="-""#
                + "\n"
        )
        #expect(
            self.line(self.local, .combined)
                == #"::1 - - [02/Dec/2026:07:30:05 +0000] "POST /upload HTTP/1.0" 503 40 "http://a/" "-" rt=0.002000 uft=- endpoint=- attempts=0 tried=- bytes_in=10 grpc_status=- reason="no endpoint for upstream 'web'\x09now""#
                + "\n"
        )
    }
}
