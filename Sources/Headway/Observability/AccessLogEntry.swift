import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// What one request's access log line says, and how it is written in each format.
struct AccessLogEntry: Equatable {
    var clientHost: String
    var clientPort: Int
    var method: String
    var target: String
    var versionMinor: UInt8
    /// The status the client got; 0 when the connection was cut before an answer could be sent.
    var status: UInt
    /// The grpc-status of a gRPC call, from the pod's trailers (or the head of a trailers-only answer) or
    /// Headway's own answer: a call can fail inside an HTTP 200.
    var grpcStatus: Int?
    /// Request body bytes read from the client.
    var bytesIn: Int
    /// Response body bytes sent to the client.
    var bytesOut: Int
    /// From the request head to the end of the response.
    var duration: TimeAmount
    /// From sending the request to the pod to its response head, for the attempt that answered.
    var upstreamFirstByte: TimeAmount?
    /// The pod whose answer the client got; `nil` when Headway answered itself.
    var endpoint: String?
    /// Every pod an attempt went to, in order: the first apart, so that a request without a retry allocates
    /// no array.
    var firstEndpointTried: String?
    var laterEndpointsTried: [String] = []
    /// Why Headway answered itself (or cut the connection), when it did.
    var localReason: String?
    var referer: String?
    var userAgent: String?

    var attempts: Int { self.firstEndpointTried == nil ? 0 : 1 + self.laterEndpointsTried.count }

    func write(_ format: AccessLogFormat, at time: AccessLogTime, into buffer: inout ByteBuffer) {
        switch format {
        case .json: self.writeJSON(at: time, into: &buffer)
        case .combined: self.writeCombined(at: time, into: &buffer)
        }
    }

    /// `{"time":"2026-12-02T07:30:00.123Z","client":"127.0.0.1:40512",...}`, keys always in the same order.
    private func writeJSON(at time: AccessLogTime, into buffer: inout ByteBuffer) {
        buffer.writeStaticString("{\"time\":\"")
        buffer.writeString(time.isoSeconds)
        buffer.writeInteger(UInt8(ascii: "."))
        Self.writeDigits(time.milliseconds, width: 3, into: &buffer)
        buffer.writeStaticString("Z\",\"client\":")
        Self.writeJSONString(
            self.clientHost.contains(":")
                ? "[\(self.clientHost)]:\(self.clientPort)" : "\(self.clientHost):\(self.clientPort)",
            into: &buffer
        )
        buffer.writeStaticString(",\"method\":")
        Self.writeJSONString(self.method, into: &buffer)
        buffer.writeStaticString(",\"target\":")
        Self.writeJSONString(self.target, into: &buffer)
        buffer.writeStaticString(self.versionMinor == 0 ? ",\"protocol\":\"HTTP/1.0\"" : ",\"protocol\":\"HTTP/1.1\"")
        buffer.writeStaticString(",\"status\":")
        buffer.writeString(String(self.status))
        buffer.writeStaticString(",\"grpc_status\":")
        buffer.writeString(self.grpcStatus.map(String.init) ?? "null")
        buffer.writeStaticString(",\"bytes_in\":")
        buffer.writeString(String(self.bytesIn))
        buffer.writeStaticString(",\"bytes_out\":")
        buffer.writeString(String(self.bytesOut))
        buffer.writeStaticString(",\"duration_ms\":")
        Self.writeMilliseconds(self.duration, into: &buffer)
        buffer.writeStaticString(",\"upstream_first_byte_ms\":")
        if let firstByte = self.upstreamFirstByte {
            Self.writeMilliseconds(firstByte, into: &buffer)
        } else {
            buffer.writeStaticString("null")
        }
        buffer.writeStaticString(",\"endpoint\":")
        Self.writeJSONString(self.endpoint, into: &buffer)
        buffer.writeStaticString(",\"attempts\":")
        buffer.writeString(String(self.attempts))
        buffer.writeStaticString(",\"endpoints_tried\":[")
        if let first = self.firstEndpointTried {
            Self.writeJSONString(first, into: &buffer)
            for endpoint in self.laterEndpointsTried {
                buffer.writeInteger(UInt8(ascii: ","))
                Self.writeJSONString(endpoint, into: &buffer)
            }
        }
        buffer.writeStaticString("],\"local_reason\":")
        Self.writeJSONString(self.localReason, into: &buffer)
        buffer.writeStaticString(",\"referer\":")
        Self.writeJSONString(self.referer, into: &buffer)
        buffer.writeStaticString(",\"user_agent\":")
        Self.writeJSONString(self.userAgent, into: &buffer)
        buffer.writeStaticString("}\n")
    }

    /// Apache's combined format, then Headway's own fields as `key=value` (times in seconds, as nginx writes
    /// `$request_time`): `127.0.0.1 - - [02/Dec/2026:07:30:00 +0000] "GET / HTTP/1.1" 200 612 "-" "curl/8.0"
    /// rt=0.001 uft=0.001 endpoint=127.0.0.2:8080 attempts=1 tried=127.0.0.2:8080 bytes_in=0 grpc_status=-
    /// reason="-"`.
    private func writeCombined(at time: AccessLogTime, into buffer: inout ByteBuffer) {
        buffer.writeString(self.clientHost)
        buffer.writeStaticString(" - - [")
        buffer.writeString(time.combinedSeconds)
        buffer.writeStaticString(" +0000] \"")
        Self.writeQuotedContent(self.method, into: &buffer)
        buffer.writeInteger(UInt8(ascii: " "))
        Self.writeQuotedContent(self.target, into: &buffer)
        buffer.writeStaticString(self.versionMinor == 0 ? " HTTP/1.0\" " : " HTTP/1.1\" ")
        buffer.writeString(String(self.status))
        buffer.writeInteger(UInt8(ascii: " "))
        buffer.writeString(String(self.bytesOut))
        buffer.writeStaticString(" \"")
        Self.writeQuotedContent(self.referer ?? "-", into: &buffer)
        buffer.writeStaticString("\" \"")
        Self.writeQuotedContent(self.userAgent ?? "-", into: &buffer)
        buffer.writeStaticString("\" rt=")
        Self.writeSeconds(self.duration, into: &buffer)
        buffer.writeStaticString(" uft=")
        if let firstByte = self.upstreamFirstByte {
            Self.writeSeconds(firstByte, into: &buffer)
        } else {
            buffer.writeInteger(UInt8(ascii: "-"))
        }
        buffer.writeStaticString(" endpoint=")
        buffer.writeString(self.endpoint ?? "-")
        buffer.writeStaticString(" attempts=")
        buffer.writeString(String(self.attempts))
        buffer.writeStaticString(" tried=")
        buffer.writeString(self.firstEndpointTried ?? "-")
        for endpoint in self.laterEndpointsTried {
            buffer.writeInteger(UInt8(ascii: ","))
            buffer.writeString(endpoint)
        }
        buffer.writeStaticString(" bytes_in=")
        buffer.writeString(String(self.bytesIn))
        buffer.writeStaticString(" grpc_status=")
        buffer.writeString(self.grpcStatus.map(String.init) ?? "-")
        buffer.writeStaticString(" reason=\"")
        Self.writeQuotedContent(self.localReason ?? "-", into: &buffer)
        buffer.writeStaticString("\"\n")
    }

    static func writeDigits(_ value: Int, width: Int, into buffer: inout ByteBuffer) {
        var divisor = 1
        for _ in 1..<width { divisor *= 10 }
        var rest = value
        while divisor > 0 {
            buffer.writeInteger(UInt8(ascii: "0") + UInt8((rest / divisor) % 10))
            rest %= divisor
            divisor /= 10
        }
    }

    /// Milliseconds with three decimals: `1.234`.
    private static func writeMilliseconds(_ amount: TimeAmount, into buffer: inout ByteBuffer) {
        let microseconds = max(amount.nanoseconds, 0) / 1000
        buffer.writeString(String(microseconds / 1000))
        buffer.writeInteger(UInt8(ascii: "."))
        Self.writeDigits(Int(microseconds % 1000), width: 3, into: &buffer)
    }

    /// Seconds with six decimals: `0.001234`.
    private static func writeSeconds(_ amount: TimeAmount, into buffer: inout ByteBuffer) {
        let microseconds = max(amount.nanoseconds, 0) / 1000
        buffer.writeString(String(microseconds / 1_000_000))
        buffer.writeInteger(UInt8(ascii: "."))
        Self.writeDigits(Int(microseconds % 1_000_000), width: 6, into: &buffer)
    }

    private static func writeJSONString(_ text: String?, into buffer: inout ByteBuffer) {
        guard let text else {
            buffer.writeStaticString("null")
            return
        }
        buffer.writeInteger(UInt8(ascii: "\""))
        Self.writeEscaped(text, controlPrefix: "\\u00", into: &buffer)
        buffer.writeInteger(UInt8(ascii: "\""))
    }

    /// Inside the combined format's quotes: `"` and `\` escaped, control bytes as `\xHH` (as nginx does).
    private static func writeQuotedContent(_ text: String, into buffer: inout ByteBuffer) {
        Self.writeEscaped(text, controlPrefix: "\\x", into: &buffer)
    }

    /// `text` with `"` and `\` escaped by a backslash and control bytes as `controlPrefix` and two hex digits;
    /// a text with nothing to escape is written whole.
    private static func writeEscaped(_ text: String, controlPrefix: StaticString, into buffer: inout ByteBuffer) {
        guard text.utf8.contains(where: Self.needsEscape) else {
            buffer.writeString(text)
            return
        }
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                buffer.writeInteger(UInt8(ascii: "\\"))
                buffer.writeInteger(byte)
            case 0..<0x20, 0x7F:
                buffer.writeStaticString(controlPrefix)
                Self.writeHex(byte, into: &buffer)
            default:
                buffer.writeInteger(byte)
            }
        }
    }

    private static func needsEscape(_ byte: UInt8) -> Bool {
        byte < 0x20 || byte == 0x7F || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\")
    }

    private static func writeHex(_ byte: UInt8, into buffer: inout ByteBuffer) {
        let digits: StaticString = "0123456789ABCDEF"
        digits.withUTF8Buffer { hex in
            buffer.writeInteger(hex[Int(byte >> 4)])
            buffer.writeInteger(hex[Int(byte & 0x0F)])
        }
    }
}

/// The time of a line, with the whole seconds formatted once a second (per loop) rather than once a line.
struct AccessLogTime: Sendable {
    /// `2026-12-02T07:30:05`.
    private(set) var isoSeconds = ""
    /// `02/Dec/2026:07:30:05`.
    private(set) var combinedSeconds = ""
    private(set) var milliseconds = 0
    private var second: Int = -1

    /// Moves to `time`, formatting its seconds only when they changed.
    mutating func update(to time: timespec) {
        self.milliseconds = Int(time.tv_nsec) / 1_000_000
        guard Int(time.tv_sec) != self.second else { return }
        self.second = Int(time.tv_sec)
        var seconds = time.tv_sec
        var fields = tm()
        gmtime_r(&seconds, &fields)
        func digits(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(width - text.count, 0)) + text
        }
        let clock = "\(digits(fields.tm_hour, 2)):\(digits(fields.tm_min, 2)):\(digits(fields.tm_sec, 2))"
        let year = digits(fields.tm_year + 1900, 4)
        self.isoSeconds = "\(year)-\(digits(fields.tm_mon + 1, 2))-\(digits(fields.tm_mday, 2))T\(clock)"
        self.combinedSeconds = "\(digits(fields.tm_mday, 2))/\(Self.months[Int(fields.tm_mon)])/\(year):\(clock)"
    }

    init() {}

    init(_ time: timespec) {
        self.update(to: time)
    }

    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
}
