import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// One nginx process playing one pod: it listens on its own loopback address and answers with `X-Pod`.
///
/// Each pod has its own prefix directory (config, pid, logs, temp files), so tests never touch the
/// system's nginx. The access log records nginx's connection serial number per request, which lets tests
/// count how many upstream connections a proxy opened.
///
/// Locations: `/files/NAME` serves files written with ``writeFile(named:size:)``; `/healthz` answers 200, or
/// 503 after ``setHealthCheckFailing(_:)``; anything else answers `NAME` (any method, any body size).
package final class NginxPod: @unchecked Sendable {
    package let name: String
    package let host: String
    package let port: Int
    package let prefix: URL
    private let process: Process
    /// Set by ``kill()``: the process is gone, whatever Foundation believes.
    private var isKilled = false

    package var address: String { "\(self.host):\(self.port)" }
    package var filesDirectory: URL { self.prefix.appendingPathComponent("files") }

    private init(name: String, host: String, port: Int, prefix: URL, process: Process) {
        self.name = name
        self.host = host
        self.port = port
        self.prefix = prefix
        self.process = process
    }

    /// Starts nginx on `host:port` and waits until it accepts connections.
    ///
    /// - Parameter moreHosts: further addresses the same nginx listens on (pods by the hundred); then
    ///   `X-Pod` and the body name the address that answered instead of `name`.
    /// - Parameter http2: the pod speaks h2c with prior knowledge only (nginx's `listen … http2` without TLS).
    package static func start(
        name: String,
        host: String,
        port: Int,
        moreHosts: [String] = [],
        http2: Bool = false
    ) async throws -> NginxPod {
        // Another server on the address would answer in this pod's place and make every assertion lie.
        guard !RawHTTP.canConnect(host: host, port: port) else {
            throw CommandError(description: "\(host):\(port) is already in use by another process; stop it first")
        }
        let prefix = FileManager.default.temporaryDirectory.appendingPathComponent(
            "headway-\(name)-\(UUID().uuidString.prefix(8))"
        )
        for sub in ["files", "tmp", "logs"] {
            try FileManager.default.createDirectory(
                at: prefix.appendingPathComponent(sub),
                withIntermediateDirectories: true
            )
        }
        let p = prefix.path
        let listens = ([host] + moreHosts).map { "listen \($0):\(port)\(http2 ? " http2" : "");" }.joined(
            separator: "\n                    "
        )
        let podName = moreHosts.isEmpty ? name : "$server_addr"
        let config = """
            \(getuid() == 0 ? "user root;" : "")
            worker_processes 1;
            daemon off;
            pid \(p)/nginx.pid;
            error_log \(p)/logs/error.log warn;
            events { worker_connections 4096; }
            http {
                log_format pods '$connection $request_method $request_uri $status';
                access_log \(p)/logs/access.log pods;
                client_body_temp_path \(p)/tmp/body;
                proxy_temp_path \(p)/tmp/proxy;
                fastcgi_temp_path \(p)/tmp/fastcgi;
                uwsgi_temp_path \(p)/tmp/uwsgi;
                scgi_temp_path \(p)/tmp/scgi;
                keepalive_requests 1000000;
                keepalive_timeout 75s;
                client_max_body_size 0;
                sendfile on;
                default_type application/octet-stream;
                server {
                    \(listens)
                    add_header X-Pod \(podName) always;
                    location /files/ { alias \(p)/files/; }
                    location = /healthz {
                        if (-f \(p)/healthz-failing) { return 503 "failing\\n"; }
                        return 200 "ok\\n";
                    }
                    location / { return 200 "\(podName)\\n"; }
                }
            }
            """
        let configPath = prefix.appendingPathComponent("nginx.conf")
        try config.write(to: configPath, atomically: true, encoding: .utf8)
        guard let nginx = IntegrationEnvironment.path(of: "nginx") else {
            throw CommandError(description: "nginx is not installed")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: nginx)
        process.arguments = ["-p", p, "-c", configPath.path, "-e", "\(p)/logs/error.log"]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let pod = NginxPod(name: name, host: host, port: port, prefix: prefix, process: process)
        try await pod.waitUntilListening()
        return pod
    }

    private func waitUntilListening() async throws {
        for _ in 0..<100 {
            if RawHTTP.canConnect(host: self.host, port: self.port) { return }
            guard self.process.isRunning else { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        let log = (try? String(contentsOf: self.prefix.appendingPathComponent("logs/error.log"), encoding: .utf8)) ?? ""
        self.stop()
        throw CommandError(description: "nginx pod \(self.name) did not start on \(self.address): \(log)")
    }

    /// Writes a file of `size` pseudo-random bytes that the pod serves at `/files/NAME`.
    @discardableResult
    package func writeFile(named fileName: String, size: Int) throws -> URL {
        let url = self.filesDirectory.appendingPathComponent(fileName)
        try TestData.writeRandomFile(to: url, size: size)
        return url
    }

    /// Serves a copy of `source` at `/files/NAME`, so that several pods can serve identical bytes.
    package func copyFile(_ source: URL, named fileName: String) throws {
        try FileManager.default.copyItem(at: source, to: self.filesDirectory.appendingPathComponent(fileName))
    }

    /// Requests this pod logged, as `(connection serial, method, uri)`.
    package func accessLog() throws -> [(connection: Int, method: String, uri: String)] {
        let text =
            (try? String(contentsOf: self.prefix.appendingPathComponent("logs/access.log"), encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count >= 3, let connection = Int(fields[0]) else { return nil }
            return (connection, String(fields[1]), String(fields[2]))
        }
    }

    /// Makes `/healthz` answer 503 (while every other path still works), or 200 again.
    package func setHealthCheckFailing(_ failing: Bool) throws {
        let marker = self.prefix.appendingPathComponent("healthz-failing")
        if failing {
            try Data().write(to: marker)
        } else {
            try? FileManager.default.removeItem(at: marker)
        }
    }

    /// Kills the pod as the kernel's OOM killer would: SIGKILL to nginx's master and its workers, no goodbye
    /// to any connection (the kernel resets them). ``stop()`` then only cleans up.
    package func kill() {
        guard !self.isKilled, self.process.isRunning else { return }
        self.isKilled = true
        let master = self.process.processIdentifier
        // The master first: killed workers would otherwise be replaced by it before it dies.
        let workers = Self.children(of: master)
        Glibc.kill(master, SIGKILL)
        for pid in workers {
            Glibc.kill(pid, SIGKILL)
        }
        // Reap the master here rather than through Foundation's `waitUntilExit`, which can miss the exit;
        // then wait (bounded) until nothing answers on the pod's address.
        var status: Int32 = 0
        for _ in 0..<300 {
            let reaped = waitpid(master, &status, WNOHANG)
            if reaped == master || (reaped == -1 && errno == ECHILD) { break }
            usleep(10_000)
        }
        for _ in 0..<300 where RawHTTP.canConnect(host: self.host, port: self.port) {
            usleep(10_000)
        }
    }

    /// Processes whose parent is `pid`, from `/proc/PID/stat`.
    private static func children(of pid: Int32) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { entry -> Int32? in
            guard let child = Int32(entry),
                let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return nil }
            // Fields after the command name: state, ppid, ...
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 1 && Int32(fields[1]) == pid ? child : nil
        }
    }

    /// Stops nginx at once (SIGKILL would leave the worker behind; SIGTERM is nginx's fast shutdown).
    package func stop() {
        if !self.isKilled, self.process.isRunning {
            self.process.terminate()
            self.process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: self.prefix)
    }

    deinit {
        self.stop()
    }
}

package enum TestData {
    /// Writes `size` bytes from a fast PRNG (so 100 MiB takes well under a second).
    package static func writeRandomFile(to url: URL, size: Int) throws {
        _ = FileManager.default.createFile(atPath: url.path, contents: nil)
        let handle = try FileHandle(forWritingTo: url)
        defer { try? handle.close() }
        var generator = SystemRandomNumberGenerator()
        var state = generator.next() | 1
        var remaining = size
        let blockSize = 1 << 20
        var block = [UInt8](repeating: 0, count: blockSize)
        while remaining > 0 {
            let count = min(blockSize, remaining)
            block.withUnsafeMutableBytes { raw in
                let words = raw.bindMemory(to: UInt64.self)
                for index in 0..<(blockSize / 8) {
                    state ^= state << 13
                    state ^= state >> 7
                    state ^= state << 17
                    words[index] = state
                }
            }
            handle.write(Data(block[0..<count]))
            remaining -= count
        }
    }
}
