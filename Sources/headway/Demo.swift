import ArgumentParser
import Headway
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// `headway demo`: demo pods on 127.0.0.2, 127.0.0.3, … behind a DNS name, Headway resolving that name in
/// front of them, and requests through it while a pod joins and another leaves.
///
/// With `--pods-only` it runs just the pods (each with its own `--latency`), for the policy lab
/// (`scripts/policy-lab`) or any experiment with pods of uneven speed.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run demo pods behind a demo DNS name and Headway in front of them; show a pod joining and leaving."
    )

    static let serviceName = "pods.headway.demo"

    @Option(help: "Number of demo pods in the DNS answer at start (one more joins during the demo).")
    var pods: Int = 3

    @Option(help: "Port every demo pod listens on.")
    var podPort: Int = 8080

    @Option(
        help:
            "Each pod's added latency, comma-separated in pod order, e.g. 5ms,5ms,50ms (the last value applies to the rest)."
    )
    var latency: String?

    @Flag(help: "Run only the pods, on 127.0.0.2 and up, until stopped: no DNS, no Headway, no requests.")
    var podsOnly = false

    @Option(help: "Address Headway listens on.")
    var listen: String = "127.0.0.1:15001"

    @Option(help: "Admin endpoint address.")
    var admin: String = "127.0.0.1:9901"

    @Option(help: "Requests the demo sends in each of its three phases before it waits for yours.")
    var requests: Int = 6

    @Flag(help: "Stop after the demo requests instead of serving until Ctrl-C.")
    var exit = false

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "warning"

    func validate() throws {
        guard (1...200).contains(self.pods) else { throw ValidationError("--pods must be between 1 and 200") }
        guard self.requests >= 0 else { throw ValidationError("--requests must not be negative") }
        _ = try self.latencies()
    }

    /// Each pod's latency, from `--latency`.
    private func latencies() throws -> [TimeAmount] {
        guard let text = self.latency else { return [] }
        return try text.split(separator: ",").map { item in
            guard let amount = DurationText.parse(String(item.filter { $0 != " " })) else {
                throw ValidationError("--latency: '\(item)' is not a duration such as 5ms")
            }
            return amount
        }
    }

    func run() async throws {
        let logger = makeLogger(level: self.logLevel)
        let podGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let latencies = try self.latencies()
        var demoPods: [DemoPod] = []
        // One more pod than are in DNS at start: it joins during the demo.
        for index in 0..<(self.podsOnly ? self.pods : self.pods + 1) {
            let address = try SocketAddress(ipAddress: "127.0.0.\(index + 2)", port: self.podPort)
            let latency = latencies.isEmpty ? .zero : latencies[min(index, latencies.count - 1)]
            demoPods.append(
                try await DemoPod.start(name: "pod-\(index + 1)", address: address, latency: latency, group: podGroup)
            )
        }
        if self.podsOnly {
            print(
                "demo pods:  \(demoPods.map { "\($0.name) \(Self.text($0.address)) +\(DurationText.format($0.latency))" }.joined(separator: ", "))"
            )
            print("Ctrl-C stops them.")
            while true { try await Task.sleep(for: .seconds(3600)) }
        }
        let ips = demoPods.map { $0.address.ipAddress! }
        // Only the first `pods` are in DNS at start; the last one joins later.
        let dns = try await DemoDNSResponder.start(
            name: Self.serviceName,
            addresses: Array(ips.dropLast()),
            group: podGroup
        )

        var overrides = ConfigurationOverrides()
        overrides["--listen"] = self.listen
        overrides["--admin"] = self.admin
        overrides["--service"] = "\(Self.serviceName):\(self.podPort)"
        overrides[list: "--dns-server"] = ["127.0.0.1:\(dns.address.port!)"]
        overrides["--refresh"] = "500ms"
        let configuration: HeadwayConfiguration
        do {
            configuration = try HeadwayConfiguration.load(yaml: nil, overrides: overrides)
        } catch {
            throw ValidationError(error.description)
        }
        let application = try HeadwayApplication(configuration: configuration, logger: logger)
        let requests = self.requests
        let exitAfterRequests = self.exit
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await application.run() }
            guard let bound = await application.waitUntilBound() else { return }
            let listen = Self.text(bound.listeners[0])
            let admin = Self.text(bound.admin)
            print("demo pods:  \(demoPods.map { "\($0.name) \(Self.text($0.address))" }.joined(separator: ", "))")
            print(
                "demo DNS:   \(Self.serviceName) -> \(ips.dropLast().joined(separator: ", ")) (server \(Self.text(dns.address)))"
            )
            print("headway:    listening on \(listen), admin on \(admin), resolving \(Self.serviceName) every 500ms\n")
            let client = try await DemoClient.connect(to: bound.listeners[0], group: podGroup)

            try await Self.send(requests, through: client, phase: "pods 1-\(ips.count - 1) in DNS")
            dns.setAddresses(ips)
            print(
                "\n+ DNS now also answers \(ips.last!) (\(demoPods.last!.name)); waiting for Headway to resolve again"
            )
            try await Task.sleep(for: .seconds(1.2))
            try await Self.send(requests, through: client, phase: "\(demoPods.last!.name) joined")
            dns.setAddresses(Array(ips.dropFirst()))
            print("\n- DNS no longer answers \(ips[0]) (\(demoPods[0].name)); it drains and gets no new request")
            try await Task.sleep(for: .seconds(1.2))
            try await Self.send(requests, through: client, phase: "\(demoPods[0].name) left")
            try await client.close()

            if exitAfterRequests {
                await application.triggerGracefulShutdown()
            } else {
                print("\ntry: curl -i http://\(listen)/")
                print("     curl http://\(admin)/endpoints")
                print("Ctrl-C stops the demo.")
            }
        }
        try? await dns.stop()
        for pod in demoPods { try? await pod.stop() }
        try await podGroup.shutdownGracefully()
    }

    private static func send(_ count: Int, through client: DemoClient, phase: String) async throws {
        guard count > 0 else { return }
        var counts: [String: Int] = [:]
        var line: [String] = []
        for number in 1...count {
            let response = try await client.get("/hello/\(number)")
            let pod = response.headers.first(name: "x-pod") ?? "?"
            counts[pod, default: 0] += 1
            line.append(response.status.code == 200 ? pod : "\(pod)(\(response.status.code))")
        }
        let spread = counts.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")
        print("\(phase): \(line.joined(separator: " "))  [\(spread)]")
    }

    private static func text(_ address: SocketAddress) -> String {
        "\(address.ipAddress ?? "?"):\(address.port ?? 0)"
    }
}
