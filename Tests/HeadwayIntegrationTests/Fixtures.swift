import Foundation
import Headway
import HeadwayTestSupport
import NIOCore
import NIOPosix
import Testing

/// The loopback addresses that play pods, and those that tests add beside them (blackholes, scripted pods).
let podHosts = (2...9).map { "127.0.0.\($0)" }

/// The three "pods" of the test bed: nginx on 127.0.0.2–4, on one port the kernel found free on every pod
/// address.
struct NginxPods {
    static let port = FreePort.onAll(podHosts)
    let pods: [NginxPod]

    /// - Parameter http2: the pods speak h2c only (prior knowledge), as an upstream with `protocol: h2c` does.
    static func start(count: Int = 3, http2: Bool = false) async throws -> NginxPods {
        var pods: [NginxPod] = []
        for index in 0..<count {
            pods.append(
                try await NginxPod.start(
                    name: "pod-\(index + 1)",
                    host: "127.0.0.\(index + 2)",
                    port: Self.port,
                    http2: http2
                )
            )
        }
        return NginxPods(pods: pods)
    }

    var endpoints: [String] { self.pods.map(\.address) }

    func stop() {
        for pod in self.pods { pod.stop() }
    }
}

/// Demo pods (Headway's own responder) on 127.0.0.2–4 at a port of their own: for echo, delays and faults.
struct EchoPods {
    static let port = FreePort.onAll(podHosts, except: [NginxPods.port])
    let group: MultiThreadedEventLoopGroup
    let pods: [DemoPod]

    static func start(count: Int = 3, latency: TimeAmount = .zero) async throws -> EchoPods {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var pods: [DemoPod] = []
        for index in 0..<count {
            let address = try SocketAddress(ipAddress: "127.0.0.\(index + 2)", port: Self.port)
            pods.append(
                try await DemoPod.start(name: "pod-\(index + 1)", address: address, latency: latency, group: group)
            )
        }
        return EchoPods(group: group, pods: pods)
    }

    var endpoints: [String] { self.pods.map { "\($0.address.ipAddress!):\(Self.port)" } }

    func stop() async throws {
        for pod in self.pods { try await pod.stop() }
        try await self.group.shutdownGracefully()
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns how long it took.
func waitFor(timeout: Duration, _ condition: () async throws -> Bool) async throws -> Duration? {
    let start = ContinuousClock.now
    while ContinuousClock.now - start < timeout {
        if try await condition() { return ContinuousClock.now - start }
        try await Task.sleep(for: .milliseconds(20))
    }
    return nil
}

/// What wrk reported: requests done, and the failures it saw.
struct WrkSummary {
    var requests = 0
    var non2xx = 0
    var socketErrors = 0

    init(_ output: String) {
        for line in output.split(separator: "\n") {
            let text = line.trimmingCharacters(in: .whitespaces)
            if text.contains("requests in") {
                self.requests = Int(text.split(separator: " ").first ?? "") ?? 0
            } else if text.hasPrefix("Non-2xx or 3xx responses:") {
                self.non2xx = Int(text.split(separator: " ").last ?? "") ?? 0
            } else if text.hasPrefix("Socket errors:") {
                // "Socket errors: connect 0, read 1, write 0, timeout 0"
                self.socketErrors = text.split(separator: ",").compactMap { Int($0.split(separator: " ").last ?? "") }
                    .reduce(0, +)
            }
        }
    }
}

/// Sends `count` GETs to `url` one after another on one keep-alive connection; returns each answer's status
/// and time in seconds.
func sequentialGets(_ url: String, count: Int, timeout: Double = 30) async throws -> [(status: Int, seconds: Double)] {
    let result = try await curl(
        ["--output", "/dev/null", "--write-out", "%{http_code} %{time_total}\n"] + Array(repeating: url, count: count),
        timeout: timeout
    )
    return result.stdout.split(separator: "\n").compactMap { line in
        let fields = line.split(separator: " ")
        guard fields.count == 2, let status = Int(fields[0]), let seconds = Double(fields[1]) else { return nil }
        return (status, seconds)
    }
}

/// Runs curl with `arguments` and a bounded run time.
@discardableResult
func curl(_ arguments: [String], timeout: Double = 60) async throws -> CommandResult {
    try await Command.run(
        ["curl", "--silent", "--show-error", "--max-time", String(Int(timeout))] + arguments,
        timeout: timeout + 5
    )
}

/// Counts `X-Pod` values in curl's dumped response headers.
func podCounts(inHeaders dump: String) -> [String: Int] {
    var counts: [String: Int] = [:]
    for line in dump.split(whereSeparator: \.isNewline) where line.lowercased().hasPrefix("x-pod:") {
        counts[line.dropFirst("x-pod:".count).trimmingCharacters(in: .whitespaces), default: 0] += 1
    }
    return counts
}

/// The lines of `file` written so far (none while it does not exist).
func fileLines(_ file: URL) -> [Substring] {
    ((try? String(contentsOf: file, encoding: .utf8)) ?? "").split(separator: "\n")
}

/// Each line of `file` (a JSON access log) as an object; a line that is not one fails the test.
func jsonLines(_ file: URL) throws -> [[String: Any]] {
    try fileLines(file).map { line in
        try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(line)")
    }
}

func temporaryFile(_ name: String) -> URL {
    FileManager.default.temporaryDirectory.appendingPathComponent("headway-test-\(UUID().uuidString.prefix(8))-\(name)")
}

/// The admin `/endpoints` document, decoded loosely.
struct EndpointsDocument: Decodable {
    struct Configuration: Decodable {
        var generation: Int
        var loaded_at: String
    }
    struct Upstream: Decodable {
        var name: String
        var `protocol`: String
        var policy: String
        var discovery: Discovery?
        var healthy_endpoints: Int
        var panic_mode: Bool
        var endpoints: [Endpoint]
    }
    struct Discovery: Decodable {
        var type: String
        var addresses: [String]?
        var last_error: String?
        var consecutive_failures: Int?
    }
    struct Endpoint: Decodable {
        var address: String
        var state: String
        var health: String
        var last_check: String?
        var last_check_detail: String?
        var ejections: Int
        var last_ejection_reason: String?
        var weight: Int
        var in_flight: Int
        var requests: Int
        var failures: Int
        var connections: Int
        var idle_connections: Int
        var http2_connections: Int?
        var streams_in_flight: Int?
    }
    var configuration: Configuration
    var upstreams: [Upstream]

    static func fetch(from headway: InProcessHeadway) async throws -> EndpointsDocument {
        try await Self.fetch(admin: headway.adminURL)
    }

    static func fetch(admin: String) async throws -> EndpointsDocument {
        let result = try await curl(["\(admin)/endpoints"])
        return try JSONDecoder().decode(EndpointsDocument.self, from: Data(result.stdout.utf8))
    }

    /// The first upstream's endpoint at `address`.
    static func endpoint(_ address: String, of headway: InProcessHeadway) async throws -> Endpoint? {
        try await Self.fetch(from: headway).upstreams[0].endpoints.first { $0.address == address }
    }
}

/// The `headway` binary as a child process, its standard error in a file: for signals, exit codes and logs.
final class HeadwayProcess {
    let process = Process()
    let logFile = temporaryFile("headway.log")

    init(_ arguments: [String]) throws {
        _ = FileManager.default.createFile(atPath: self.logFile.path, contents: nil)
        self.process.executableURL = URL(fileURLWithPath: IntegrationEnvironment.headwayBinary)
        self.process.arguments = arguments
        self.process.standardError = try FileHandle(forWritingTo: self.logFile)
        self.process.standardOutput = FileHandle.nullDevice
        try self.process.run()
    }

    deinit {
        if self.process.isRunning { self.process.terminate() }
        try? FileManager.default.removeItem(at: self.logFile)
    }

    var log: String { (try? String(contentsOf: self.logFile, encoding: .utf8)) ?? "" }

    /// Waits (up to 5 s) until `port` on 127.0.0.1 accepts connections.
    func waitUntilListening(on port: Int) async throws {
        for _ in 0..<100 where !RawHTTP.canConnect(host: "127.0.0.1", port: port) {
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    func signal(_ number: Int32) {
        kill(self.process.processIdentifier, number)
    }

    /// Waits up to `timeout` for the process to end; returns whether it did.
    func waitForExit(timeout: Duration) async throws -> Bool {
        try await waitFor(timeout: timeout) { !self.process.isRunning } != nil
    }
}
