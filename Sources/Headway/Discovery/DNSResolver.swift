import CHeadwayResolv
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// Which address records a DNS upstream asks for.
package enum AddressFamily: String, Sendable, Hashable, CaseIterable {
    /// A records; AAAA only when the name has no A record (the default).
    case auto
    case ipv4
    case ipv6
    /// A and AAAA records together.
    case dual
}

/// The answer of one resolution: the pods' addresses (with the service port) and the smallest TTL.
package struct DNSAnswer: Sendable, Equatable {
    package var addresses: [SocketAddress]
    package var ttl: UInt32
    /// SRV weights by address, kept for weighted policies; empty for A/AAAA answers.
    package var weights: [SocketAddress: Int] = [:]
}

/// Why a resolution gave no address. NXDOMAIN and "no data" are answers (the name or its records do not
/// exist); `unavailable` means nothing is known (timeout, SERVFAIL, no server reachable).
package enum DNSResolutionError: Error, Sendable, Equatable, CustomStringConvertible {
    case nameNotFound
    case noRecords
    case unavailable
    case failure(String)

    package var description: String {
        switch self {
        case .nameNotFound: "NXDOMAIN: the name does not exist"
        case .noRecords: "the name has no address record"
        case .unavailable: "no answer (timeout, SERVFAIL or no server reachable)"
        case .failure(let reason): reason
        }
    }
}

/// Resolves names with glibc's libresolv (`res_nsearch`), exactly as `nslookup` would inside a pod: the
/// search list and `ndots` apply, answers too large for UDP come over TCP, EDNS0 is requested.
///
/// Calls block; ``DNSDiscovery`` runs them on a thread pool, never on an event loop.
package struct DNSResolver: Sendable {
    /// Name servers to ask instead of the system's (IPv4 only: libresolv's server list is IPv4).
    package var servers: [HostAndPort]
    /// Search list and `ndots` to use instead of the system's, from a resolv.conf-style file.
    package var resolvConf: ResolvConf?
    package var family: AddressFamily

    package init(servers: [HostAndPort] = [], resolvConf: ResolvConf? = nil, family: AddressFamily = .auto) {
        self.servers = servers
        self.resolvConf = resolvConf
        self.family = family
    }

    /// Resolves `name` and returns every address with `port`.
    package func resolve(_ name: String, port: Int) throws(DNSResolutionError) -> DNSAnswer {
        switch self.family {
        case .ipv4:
            return try self.query(name, type: 1, port: port)
        case .ipv6:
            return try self.query(name, type: 28, port: port)
        case .auto:
            do {
                return try self.query(name, type: 1, port: port)
            } catch .noRecords {
                return try self.query(name, type: 28, port: port)
            }
        case .dual:
            let v4 = Result { () throws(DNSResolutionError) in try self.query(name, type: 1, port: port) }
            let v6 = Result { () throws(DNSResolutionError) in try self.query(name, type: 28, port: port) }
            switch (v4, v6) {
            case (.success(let a), .success(let b)):
                return DNSAnswer(addresses: a.addresses + b.addresses, ttl: min(a.ttl, b.ttl))
            case (.success(let answer), .failure), (.failure, .success(let answer)):
                return answer
            case (.failure(let error), .failure):
                throw error
            }
        }
    }

    /// Resolves the SRV records of `name` (e.g. `_http._tcp.web`), then each target's addresses; every
    /// address gets its record's port and weight. Only the records of the lowest priority are used: the
    /// others are backups (RFC 2782).
    package func resolveSRV(_ name: String) throws(DNSResolutionError) -> DNSAnswer {
        var records = [headway_srv_record](repeating: headway_srv_record(), count: 256)
        var total: Int32 = 0
        let result = self.withConfig { config in
            records.withUnsafeMutableBufferPointer { buffer in
                headway_dns_resolve_srv(name, &config, buffer.baseAddress, Int32(buffer.count), &total)
            }
        }
        try Self.check(result)
        let found = records.prefix(Int(result))
        guard let priority = found.map(\.priority).min() else { throw .noRecords }
        var answer = DNSAnswer(addresses: [], ttl: found.map(\.ttl).min() ?? 0)
        for record in found where record.priority == priority {
            var target = record.target
            let targetName = withUnsafeBytes(of: &target) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            // Targets are absolute names: no search list.
            guard let resolved = try? self.resolve(targetName + ".", port: Int(record.port)) else { continue }
            for address in resolved.addresses {
                answer.addresses.append(address)
                answer.weights[address] = Int(record.weight)
            }
            answer.ttl = min(answer.ttl, resolved.ttl)
        }
        guard !answer.addresses.isEmpty else { throw .noRecords }
        return answer
    }

    private static func check(_ result: Int32) throws(DNSResolutionError) {
        switch result {
        case Int32(HEADWAY_DNS_NXDOMAIN): throw .nameNotFound
        case Int32(HEADWAY_DNS_NODATA): throw .noRecords
        case Int32(HEADWAY_DNS_TRY_AGAIN): throw .unavailable
        case ..<0: throw .failure("the resolver failed")
        default: break
        }
    }

    /// Calls `body` with the C configuration for this resolver (servers, search list, timeouts).
    private func withConfig<T>(_ body: (inout headway_dns_config) -> T) -> T {
        var config = headway_dns_config()
        config.search_count = -1
        // C strings must outlive the call: keep them in this scope.
        let serverStrings = self.servers.prefix(Int(HEADWAY_DNS_MAX_SERVERS)).map { strdup($0.host) }
        let searchStrings = (self.resolvConf?.search ?? []).prefix(Int(HEADWAY_DNS_MAX_SEARCH)).map { strdup($0) }
        defer {
            for string in serverStrings + searchStrings { free(string) }
        }
        withUnsafeMutableBytes(of: &config.servers) { raw in
            let slots = raw.bindMemory(to: UnsafePointer<CChar>?.self)
            for (index, string) in serverStrings.enumerated() { slots[index] = UnsafePointer(string) }
        }
        withUnsafeMutableBytes(of: &config.ports) { raw in
            let slots = raw.bindMemory(to: Int32.self)
            for (index, server) in self.servers.prefix(Int(HEADWAY_DNS_MAX_SERVERS)).enumerated() {
                slots[index] = Int32(server.port)
            }
        }
        config.server_count = Int32(serverStrings.count)
        if let resolvConf = self.resolvConf {
            withUnsafeMutableBytes(of: &config.search) { raw in
                let slots = raw.bindMemory(to: UnsafePointer<CChar>?.self)
                for (index, string) in searchStrings.enumerated() { slots[index] = UnsafePointer(string) }
            }
            config.search_count = Int32(searchStrings.count)
            config.ndots = Int32(resolvConf.ndots)
            config.timeout_seconds = Int32(resolvConf.timeoutSeconds ?? 0)
            config.attempts = Int32(resolvConf.attempts ?? 0)
        } else {
            config.timeout_seconds = 2
            config.attempts = 2
        }
        return body(&config)
    }

    private func query(_ name: String, type: Int32, port: Int) throws(DNSResolutionError) -> DNSAnswer {
        let capacity = 1024
        var records = [headway_dns_record](repeating: headway_dns_record(), count: capacity)
        var total: Int32 = 0
        let result = self.withConfig { config in
            records.withUnsafeMutableBufferPointer { buffer in
                headway_dns_resolve(name, type, &config, buffer.baseAddress, Int32(capacity), &total)
            }
        }
        try Self.check(result)
        var addresses: [SocketAddress] = []
        var ttl = UInt32.max
        for record in records.prefix(Int(result)) {
            ttl = min(ttl, record.ttl)
            var bytes = record.address
            let packed = withUnsafeBytes(of: &bytes) { raw in
                ByteBuffer(bytes: raw.prefix(record.family == 4 ? 4 : 16))
            }
            let address = try? SocketAddress(packedIPAddress: packed, port: port)
            if let address { addresses.append(address) }
        }
        return DNSAnswer(addresses: addresses, ttl: ttl == .max ? 0 : ttl)
    }
}

/// The parts of a resolv.conf file that Headway uses: name servers, the search list and options.
package struct ResolvConf: Sendable, Equatable {
    package var nameservers: [HostAndPort] = []
    package var search: [String] = []
    package var ndots = 1
    package var timeoutSeconds: Int?
    package var attempts: Int?

    package init() {}

    /// Parses resolv.conf syntax (`nameserver`, `search`, `domain`, `options ndots:N timeout:N attempts:N`).
    package init(parsing text: String) {
        for line in text.split(whereSeparator: \.isNewline) {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard let keyword = fields.first, !keyword.hasPrefix("#"), !keyword.hasPrefix(";") else { continue }
            let values = fields.dropFirst().map(String.init)
            switch keyword {
            case "nameserver":
                if let ip = values.first { self.nameservers.append(HostAndPort(host: ip, port: 53)) }
            case "search", "domain":
                self.search = values
            case "options":
                for option in values {
                    let parts = option.split(separator: ":", maxSplits: 1)
                    guard parts.count == 2, let value = Int(parts[1]) else { continue }
                    switch parts[0] {
                    case "ndots": self.ndots = min(value, 15)
                    case "timeout": self.timeoutSeconds = value
                    case "attempts": self.attempts = value
                    default: break
                    }
                }
            default:
                continue
            }
        }
    }
}
