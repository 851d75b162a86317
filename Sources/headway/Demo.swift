import ArgumentParser
import Headway
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// `headway demo`: three demo pods on 127.0.0.2–4, Headway in front of them, and a few requests through it.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start demo pods on 127.0.0.2, 127.0.0.3, … and Headway in front of them; show where requests go."
    )

    @Option(help: "Number of demo pods (on 127.0.0.2, 127.0.0.3, …).")
    var pods: Int = 3

    @Option(help: "Port every demo pod listens on.")
    var podPort: Int = 8080

    @Option(help: "Address Headway listens on.")
    var listen: String = "127.0.0.1:15001"

    @Option(help: "Admin endpoint address.")
    var admin: String = "127.0.0.1:9901"

    @Option(help: "Requests the demo sends through Headway before it waits for yours.")
    var requests: Int = 12

    @Flag(help: "Stop after the demo requests instead of serving until Ctrl-C.")
    var exit = false

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "notice"

    func validate() throws {
        guard (1...200).contains(self.pods) else { throw ValidationError("--pods must be between 1 and 200") }
        guard self.requests >= 0 else { throw ValidationError("--requests must not be negative") }
    }

    func run() async throws {
        let logger = makeLogger(level: self.logLevel)
        let podGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var demoPods: [DemoPod] = []
        for index in 0..<self.pods {
            let address = try SocketAddress(ipAddress: "127.0.0.\(index + 2)", port: self.podPort)
            demoPods.append(try await DemoPod.start(name: "pod-\(index + 1)", address: address, group: podGroup))
        }
        var overrides = ConfigurationOverrides()
        overrides.listen = self.listen
        overrides.admin = self.admin
        overrides.endpoints = demoPods.map { "\($0.address.ipAddress!):\(self.podPort)" }
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
            print("demo pods: \(demoPods.map { "\($0.name) at \($0.address.ipAddress!):\($0.address.port!)" }.joined(separator: ", "))")
            let listen = Self.text(bound.listeners[0])
            let admin = Self.text(bound.admin)
            print("headway:   listening on \(listen), admin on \(admin)\n")
            let client = try await DemoClient.connect(to: bound.listeners[0], group: podGroup)
            var counts: [String: Int] = [:]
            for number in 1...max(requests, 1) where requests > 0 {
                let response = try await client.get("/hello/\(number)")
                let pod = response.headers.first(name: "x-pod") ?? "?"
                counts[pod, default: 0] += 1
                print("request \(number) -> \(response.status.code) from \(pod)")
            }
            try await client.close()
            if requests > 0 {
                let spread = counts.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")
                print("\nround-robin spread over \(demoPods.count) pods: \(spread)")
            }
            if exitAfterRequests {
                await application.triggerGracefulShutdown()
            } else {
                print("\ntry: curl -i http://\(listen)/")
                print("     curl http://\(admin)/endpoints")
                print("Ctrl-C stops the demo.")
            }
        }
        for pod in demoPods { try? await pod.stop() }
        try await podGroup.shutdownGracefully()
    }

    private static func text(_ address: SocketAddress) -> String {
        "\(address.ipAddress ?? "?"):\(address.port ?? 0)"
    }
}
