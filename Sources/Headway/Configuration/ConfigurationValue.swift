import NIOCore

/// A `HOST:PORT` pair as written in the configuration: an IPv4 address, a bracketed IPv6 address or `localhost`.
package struct HostAndPort: Sendable, Hashable, CustomStringConvertible {
    package var host: String
    package var port: Int

    package init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `127.0.0.1:8080`, `[::1]:8080` or `localhost:8080`, or explains what is wrong.
    ///
    /// - Parameter allowsAnyPort: accept port 0 (the kernel picks one), which makes sense only for addresses
    ///   Headway binds, never for a pod.
    package static func parse(_ text: String, allowsAnyPort: Bool = false) -> Result<HostAndPort, ParseFailure> {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else {
                return .failure(ParseFailure("'\(text)' has '[' without ']'"))
            }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else {
                return .failure(ParseFailure("'\(text)' needs a port, as in [::1]:8080"))
            }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                return .failure(ParseFailure("'\(text)' needs a port, as in 127.0.0.1:8080"))
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") {
                return .failure(ParseFailure("'\(text)': write an IPv6 address in brackets, as in [::1]:8080"))
            }
        }
        let lowest = allowsAnyPort ? 0 : 1
        guard let port = Int(portText), (lowest...65535).contains(port) else {
            return .failure(ParseFailure("'\(text)' has no valid port (\(lowest)-65535)"))
        }
        let candidate = HostAndPort(host: String(host), port: port)
        guard (try? candidate.socketAddress()) != nil else {
            return .failure(ParseFailure("'\(host)' is not an IP address"))
        }
        return .success(candidate)
    }

    /// The address to bind or connect to; `localhost` means 127.0.0.1, and no name is ever resolved here.
    package func socketAddress() throws -> SocketAddress {
        let ip = self.host == "localhost" ? "127.0.0.1" : self.host
        return try SocketAddress(ipAddress: ip, port: self.port)
    }

    package var description: String {
        self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)"
    }

    package struct ParseFailure: Error, Sendable, CustomStringConvertible {
        package var description: String
        init(_ description: String) { self.description = description }
    }
}

/// Durations as written in the configuration and on the command line: `250ms`, `2s`, `1.5s`, `1m`, `1h`.
package enum DurationText {
    package static func parse(_ text: String) -> TimeAmount? {
        let units: [(suffix: String, nanoseconds: Double)] = [
            ("ms", 1e6), ("us", 1e3), ("ns", 1), ("s", 1e9), ("m", 60e9), ("h", 3600e9),
        ]
        for unit in units where text.hasSuffix(unit.suffix) {
            let number = text.dropLast(unit.suffix.count)
            guard !number.isEmpty, number.allSatisfy({ $0.isNumber || $0 == "." }),
                let value = Double(number), value >= 0
            else { return nil }
            return .nanoseconds(Int64((value * unit.nanoseconds).rounded()))
        }
        return nil
    }

    /// Formats a duration back in the largest unit that keeps it exact, for logs and the admin page.
    package static func format(_ amount: TimeAmount) -> String {
        let ns = amount.nanoseconds
        if ns != 0 && ns % 3_600_000_000_000 == 0 { return "\(ns / 3_600_000_000_000)h" }
        if ns != 0 && ns % 60_000_000_000 == 0 { return "\(ns / 60_000_000_000)m" }
        if ns % 1_000_000_000 == 0 { return "\(ns / 1_000_000_000)s" }
        if ns % 1_000_000 == 0 { return "\(ns / 1_000_000)ms" }
        return "\(ns / 1000)us"
    }
}
