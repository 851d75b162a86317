import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Ports taken from the kernel for test servers, so that a port some other program holds never fails a test.
package enum FreePort {
    /// A TCP and UDP port that is free on every one of `hosts` (IPv4 loopback addresses): the kernel picks
    /// one for the first host, and it is kept only if it can be bound on all of them.
    ///
    /// The port is released before it is returned; between suites nothing else binds loopback aliases such
    /// as 127.0.0.2, so the test server that takes it next gets it.
    /// - Parameter taken: ports already handed to other servers of the test, never returned again.
    package static func onAll(_ hosts: [String], except taken: [Int] = []) -> Int {
        for _ in 0..<50 {
            guard let port = Self.bind(hosts[0], port: 0, type: SOCK_STREAM), !taken.contains(port) else { continue }
            let free = hosts.allSatisfy { host in
                [SOCK_STREAM, SOCK_DGRAM].allSatisfy { type in Self.bind(host, port: port, type: type) != nil }
            }
            if free { return port }
        }
        fatalError("no port is free on all of \(hosts) after 50 tries")
    }

    /// Binds a socket of `type` to `host:port` and closes it; returns the bound port, or `nil` if the bind failed.
    private static func bind(_ host: String, port: Int, type: __socket_type) -> Int? {
        let fd = socket(AF_INET, Int32(type.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var address = RawHTTP.ipv4Address(host, port: port)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0 else { return nil }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return named == 0 ? Int(UInt16(bigEndian: address.sin_port)) : nil
    }
}
