import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Byte-level HTTP over a plain blocking socket, for tests that must control every byte on the wire
/// (pipelining, odd framing) where curl would normalise the request.
package enum RawHTTP {
    /// Whether a TCP connection to `host:port` succeeds now.
    package static func canConnect(host: String, port: Int) -> Bool {
        guard let fd = try? Self.connectSocket(host: host, port: port, timeout: 1) else { return false }
        close(fd)
        return true
    }

    /// Sends `request` and returns everything received until the server closes or `timeout` passes.
    ///
    /// - Parameter halfClose: shut down the sending side after the request, as netcat does.
    package static func exchange(
        host: String,
        port: Int,
        request: String,
        timeout: Double = 10,
        halfClose: Bool = false
    ) async throws -> String {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(
                    with: Result {
                        try Self.exchangeBlocking(
                            host: host,
                            port: port,
                            request: Array(request.utf8),
                            timeout: timeout,
                            halfClose: halfClose
                        )
                    }
                )
            }
        }
    }

    private static func exchangeBlocking(
        host: String,
        port: Int,
        request: [UInt8],
        timeout: Double,
        halfClose: Bool
    ) throws -> String {
        let fd = try Self.connectSocket(host: host, port: port, timeout: timeout)
        defer { close(fd) }
        var sent = 0
        while sent < request.count {
            let n = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw CommandError(description: "send failed: \(errno)") }
            sent += n
        }
        if halfClose { shutdown(fd, Int32(SHUT_WR)) }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                received.append(contentsOf: buffer[0..<n])
            } else if n == 0 {
                break
            } else if errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR {
                break
            }
        }
        return String(decoding: received, as: UTF8.self)
    }

    /// `host:port` as the socket calls take it (IPv4).
    static func ipv4Address(_ host: String, port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, host, &address.sin_addr)
        return address
    }

    static func connectSocket(host: String, port: Int, timeout: Double) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw CommandError(description: "socket failed") }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var address = Self.ipv4Address(host, port: port)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            close(fd)
            throw CommandError(description: "connect to \(host):\(port) failed: errno \(errno)")
        }
        return fd
    }
}

/// One client connection driven byte by byte: for slow and stubborn clients (slowloris, slow POST, idle
/// keep-alive, connection floods) whose timing a test controls.
package final class RawConnection: @unchecked Sendable {
    private let fd: Int32

    /// Connects; the receive timeout is short so that reads poll.
    package init(host: String, port: Int) throws {
        self.fd = try RawHTTP.connectSocket(host: host, port: port, timeout: 0.05)
    }

    private var isClosed = false

    deinit {
        self.close()
    }

    package func close() {
        guard !self.isClosed else { return }
        self.isClosed = true
        Glibc.close(self.fd)
    }

    package func send(_ text: String) throws {
        let bytes = Array(text.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes {
                Glibc.send(self.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            guard n > 0 else { throw CommandError(description: "send failed: errno \(errno)") }
            sent += n
        }
    }

    /// Reads until the peer closes the connection or `timeout` passes; returns what arrived and, if the
    /// peer closed (FIN or RST), how many seconds that took.
    package func readUntilClosed(timeout: Double) async -> (text: String, closedAfter: Double?) {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                let start = Date()
                var received: [UInt8] = []
                var buffer = [UInt8](repeating: 0, count: 65536)
                while Date().timeIntervalSince(start) < timeout {
                    let n = buffer.withUnsafeMutableBytes { recv(self.fd, $0.baseAddress, $0.count, 0) }
                    if n > 0 {
                        received.append(contentsOf: buffer[0..<n])
                    } else if n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                        continuation.resume(
                            returning: (String(decoding: received, as: UTF8.self), Date().timeIntervalSince(start))
                        )
                        return
                    }
                }
                continuation.resume(returning: (String(decoding: received, as: UTF8.self), nil))
            }
        }
    }
}
