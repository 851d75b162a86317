import Foundation
import Headway
import HeadwayTestSupport
import NIOCore
import NIOPosix
import Testing

/// The three "pods" of the test bed: nginx on 127.0.0.2–4:8080, as in the examples.
struct NginxPods {
    static let port = 8080
    let pods: [NginxPod]

    static func start(count: Int = 3) async throws -> NginxPods {
        var pods: [NginxPod] = []
        for index in 0..<count {
            pods.append(try await NginxPod.start(name: "pod-\(index + 1)", host: "127.0.0.\(index + 2)", port: Self.port))
        }
        return NginxPods(pods: pods)
    }

    var endpoints: [String] { self.pods.map(\.address) }

    func stop() {
        for pod in self.pods { pod.stop() }
    }
}

/// Demo pods (Headway's own responder) on 127.0.0.2–4 at a test port: for echo, delays and faults.
struct EchoPods {
    static let port = 18080
    let group: MultiThreadedEventLoopGroup
    let pods: [DemoPod]

    static func start(count: Int = 3, latency: TimeAmount = .zero) async throws -> EchoPods {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var pods: [DemoPod] = []
        for index in 0..<count {
            let address = try SocketAddress(ipAddress: "127.0.0.\(index + 2)", port: Self.port)
            pods.append(try await DemoPod.start(name: "pod-\(index + 1)", address: address, latency: latency, group: group))
        }
        return EchoPods(group: group, pods: pods)
    }

    var endpoints: [String] { self.pods.map { "\($0.address.ipAddress!):\(Self.port)" } }

    func stop() async throws {
        for pod in self.pods { try await pod.stop() }
        try await self.group.shutdownGracefully()
    }
}

/// Runs curl with `arguments` and a bounded run time.
@discardableResult
func curl(_ arguments: [String], timeout: Double = 60) async throws -> CommandResult {
    try await Command.run(["curl", "--silent", "--show-error", "--max-time", String(Int(timeout))] + arguments, timeout: timeout + 5)
}

/// Counts `X-Pod` values in curl's dumped response headers.
func podCounts(inHeaders dump: String) -> [String: Int] {
    var counts: [String: Int] = [:]
    for line in dump.split(whereSeparator: \.isNewline) where line.lowercased().hasPrefix("x-pod:") {
        counts[line.dropFirst("x-pod:".count).trimmingCharacters(in: .whitespaces), default: 0] += 1
    }
    return counts
}

func temporaryFile(_ name: String) -> URL {
    FileManager.default.temporaryDirectory.appendingPathComponent("headway-test-\(UUID().uuidString.prefix(8))-\(name)")
}

/// The admin `/endpoints` document, decoded loosely.
struct EndpointsDocument: Decodable {
    struct Upstream: Decodable {
        var name: String
        var discovery: Discovery?
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
        var weight: Int
        var in_flight: Int
        var requests: Int
        var failures: Int
        var connections: Int
    }
    var upstreams: [Upstream]

    static func fetch(from headway: InProcessHeadway) async throws -> EndpointsDocument {
        let result = try await curl(["\(headway.adminURL)/endpoints"])
        return try JSONDecoder().decode(EndpointsDocument.self, from: Data(result.stdout.utf8))
    }
}
