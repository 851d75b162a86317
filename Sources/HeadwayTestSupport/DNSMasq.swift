import Foundation

/// A real DNS server for the tests: dnsmasq on a loopback port, answering only from a hosts file that the
/// test rewrites (then SIGHUP makes dnsmasq read it again). It logs every query, so tests can count them.
package final class DNSMasq: @unchecked Sendable {
    package let port: Int
    package let ttl: Int
    /// SRV records as dnsmasq's `--srv-host` values (`_service._proto.name,target,port,priority,weight`);
    /// unlike the hosts file they are fixed for the server's life.
    private let srvHosts: [String]
    private let directory: URL
    private var pid: pid_t?

    private var hostsFile: URL { self.directory.appendingPathComponent("hosts") }
    private var logFile: URL { self.directory.appendingPathComponent("queries.log") }

    private init(port: Int, ttl: Int, srvHosts: [String], directory: URL) {
        self.port = port
        self.ttl = ttl
        self.srvHosts = srvHosts
        self.directory = directory
    }

    /// Starts dnsmasq on 127.0.0.1:`port` answering `records` (name, IPv4) with `ttl` seconds.
    package static func start(
        port: Int,
        ttl: Int = 0,
        records: [(name: String, ip: String)],
        srvHosts: [String] = []
    ) async throws -> DNSMasq {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "headway-dnsmasq-\(UUID().uuidString.prefix(8))"
        )
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let server = DNSMasq(port: port, ttl: ttl, srvHosts: srvHosts, directory: directory)
        try server.writeRecords(records)
        try await server.launch()
        return server
    }

    private func launch() async throws {
        guard !RawHTTP.canConnect(host: "127.0.0.1", port: self.port) else {
            throw CommandError(
                description: "127.0.0.1:\(self.port) is already in use by another process; stop it first"
            )
        }
        guard let dnsmasq = IntegrationEnvironment.path(of: "dnsmasq") else {
            throw CommandError(description: "dnsmasq is not installed")
        }
        let arguments =
            [
                dnsmasq, "--keep-in-foreground", "--port=\(self.port)", "--listen-address=127.0.0.1",
                "--bind-interfaces",
                // --local=/#/: every name is local, so an unknown one gets NXDOMAIN (as from CoreDNS), not REFUSED.
                "--no-resolv", "--no-hosts", "--local=/#/", "--addn-hosts=\(self.hostsFile.path)",
                "--local-ttl=\(self.ttl)",
                "--log-queries", "--log-facility=\(self.logFile.path)", "--pid-file=",
                "--user=\(getuid() == 0 ? "root" : NSUserName())",
            ] + self.srvHosts.map { "--srv-host=\($0)" }
        self.pid = try Self.spawn(arguments)
        // dnsmasq answers TCP on the same port as UDP: a TCP connect says it is up.
        for _ in 0..<100 {
            if RawHTTP.canConnect(host: "127.0.0.1", port: self.port) { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw CommandError(description: "dnsmasq did not start on 127.0.0.1:\(self.port)")
    }

    private func writeRecords(_ records: [(name: String, ip: String)]) throws {
        let text = records.map { "\($0.ip) \($0.name)\n" }.joined()
        try text.write(to: self.hostsFile, atomically: true, encoding: .utf8)
    }

    /// Replaces the answers; dnsmasq reads them again at once (SIGHUP).
    package func setRecords(_ records: [(name: String, ip: String)]) throws {
        try self.writeRecords(records)
        if let pid = self.pid {
            kill(pid, SIGHUP)
        }
    }

    /// Stops answering (the port closes): resolvers see no server.
    package func stop() {
        guard let pid = self.pid else { return }
        self.pid = nil
        kill(pid, SIGTERM)
        var status: Int32 = 0
        // Bounded: a server that ignores SIGTERM must not hang the test run.
        for _ in 0..<100 {
            if waitpid(pid, &status, WNOHANG) == pid { return }
            Thread.sleep(forTimeInterval: 0.02)
        }
        kill(pid, SIGKILL)
        waitpid(pid, &status, 0)
    }

    /// dnsmasq is started with posix_spawn rather than Foundation's Process, with an empty signal mask:
    /// the test runner's threads block most signals and a child inherits that mask (dnsmasq would then
    /// ignore SIGHUP and SIGTERM), and a long-lived child of Foundation's Process kept it from noticing
    /// when curl and wrk children exited.
    private static func spawn(_ arguments: [String]) throws -> pid_t {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigfillset(&defaults)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var fileActions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&fileActions)
        defer { posix_spawn_file_actions_destroy(&fileActions) }
        posix_spawn_file_actions_addopen(&fileActions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&fileActions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&fileActions, 2, "/dev/null", O_WRONLY, 0)
        var cStrings = arguments.map { strdup($0) }
        defer {
            for string in cStrings { free(string) }
        }
        cStrings.append(nil)
        var pid: pid_t = 0
        let result = posix_spawn(&pid, arguments[0], &fileActions, &attributes, cStrings, environ)
        guard result == 0 else {
            throw CommandError(description: "cannot start dnsmasq: error \(result)")
        }
        return pid
    }

    /// Starts again with the current records.
    package func restart() async throws {
        self.stop()
        try await self.launch()
    }

    /// How many queries for `name` dnsmasq has logged.
    package func queryCount(for name: String) -> Int {
        let log = (try? String(contentsOf: self.logFile, encoding: .utf8)) ?? ""
        return log.split(separator: "\n").filter { $0.contains("query[") && $0.contains(" \(name) from ") }.count
    }

    deinit {
        self.stop()
        try? FileManager.default.removeItem(at: self.directory)
    }
}
