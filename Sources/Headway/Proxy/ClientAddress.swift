import NIOCore

/// How log lines name a client: `127.0.0.1:51234`, `[::1]:51234`, or `?` when the socket has no peer address.
enum ClientAddress {
    static func describe(ip: String?, port: Int) -> String {
        guard let ip else { return "?" }
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }

    static func describe(_ address: SocketAddress?) -> String {
        Self.describe(ip: address?.ipAddress, port: address?.port ?? 0)
    }
}
