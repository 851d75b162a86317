import ArgumentParser
import Foundation
import Headway
import Logging

@main
struct HeadwayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "headway",
        abstract: "A client-side load-balancing HTTP proxy for Kubernetes headless services.",
        subcommands: [Run.self, Validate.self, Demo.self],
        defaultSubcommand: Run.self
    )
}

/// The options shared by `run` and `validate`: a file and the flags that override it.
struct ConfigurationOptions: ParsableArguments {
    @Option(name: [.short, .long], help: "YAML configuration file.")
    var config: String?

    @Option(help: "Address to accept client connections on (default 127.0.0.1:15001).")
    var listen: String?

    @Option(help: "Admin endpoint address (default 127.0.0.1:9901).")
    var admin: String?

    @Option(help: "Event loops (default: number of cores).")
    var threads: Int?

    @Option(help: "Static endpoints, comma-separated: 127.0.0.2:8080,127.0.0.3:8080.")
    var endpoints: String?

    @Option(help: "Headless service to resolve by DNS, NAME:PORT (e.g. nginx-headless-service:80).")
    var service: String?

    @Option(help: "DNS server IPv4:PORT to ask instead of the system's (repeatable).")
    var dnsServer: [String] = []

    @Option(help: "resolv.conf-style file whose servers, search list and ndots replace the system's.")
    var resolvConf: String?

    @Option(help: "How often to resolve the service, e.g. 5s.")
    var refresh: String?

    @Flag(help: "Resolve again when the answer's TTL expires (clamped to min/max_refresh).")
    var respectTTL = false

    @Option(help: "Balancing policy: round-robin, random, least-connections, p2c, ewma or hash.")
    var policy: String?

    @Option(help: "What the hash policy hashes: header:NAME, cookie:NAME or client-ip.")
    var hashKey: String?

    @Option(help: "Ramp a new endpoint's share up over this window, e.g. 30s.")
    var slowStart: String?

    @Option(help: "Connect timeout, e.g. 1s.")
    var connectTimeout: String?

    @Option(help: "Time to wait for the first response byte, e.g. 15s.")
    var requestTimeout: String?

    @Option(help: "Longest silence between two pieces of a response, e.g. 60s.")
    var idleTimeout: String?

    @Option(help: "Close pooled upstream connections unused this long, e.g. 60s.")
    var keepaliveTimeout: String?

    @Option(help: "Most connections to one endpoint, over all event loops.")
    var maxConnectionsPerEndpoint: Int?

    @Option(help: "Turn on active HTTP health checks of every endpoint at this path, e.g. /healthz.")
    var healthPath: String?

    @Option(help: "Time between two health checks of an endpoint (default 2s).")
    var healthInterval: String?

    @Option(help: "Time a health check may take (default 1s).")
    var healthTimeout: String?

    @Option(help: "Passing checks in a row that put an endpoint (back) in rotation (default 2).")
    var healthyThreshold: Int?

    @Option(help: "Failing checks in a row that take an endpoint out of rotation (default 3).")
    var unhealthyThreshold: Int?

    @Option(help: "Tries on other endpoints after a failed one (default 2).")
    var maxRetries: Int?

    @Option(help: "How long SIGTERM waits for in-flight requests, e.g. 10s.")
    var drainTimeout: String?

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String?

    var overrides: ConfigurationOverrides {
        var overrides = ConfigurationOverrides()
        overrides.listen = self.listen
        overrides.admin = self.admin
        overrides.threads = self.threads
        overrides.logLevel = self.logLevel
        overrides.drainTimeout = self.drainTimeout
        overrides.endpoints = self.endpoints.map {
            $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        }
        overrides.service = self.service
        overrides.dnsServers = self.dnsServer.isEmpty ? nil : self.dnsServer
        overrides.resolvConf = self.resolvConf
        overrides.refresh = self.refresh
        overrides.respectTTL = self.respectTTL ? true : nil
        overrides.policy = self.policy
        overrides.hashKey = self.hashKey
        overrides.slowStart = self.slowStart
        overrides.connectTimeout = self.connectTimeout
        overrides.requestTimeout = self.requestTimeout
        overrides.idleTimeout = self.idleTimeout
        overrides.keepaliveTimeout = self.keepaliveTimeout
        overrides.maxConnectionsPerEndpoint = self.maxConnectionsPerEndpoint
        overrides.healthPath = self.healthPath
        overrides.healthInterval = self.healthInterval
        overrides.healthTimeout = self.healthTimeout
        overrides.healthyThreshold = self.healthyThreshold
        overrides.unhealthyThreshold = self.unhealthyThreshold
        overrides.maxRetries = self.maxRetries
        return overrides
    }

    /// Loads and checks the configuration; on problems prints one line each and exits with status 2.
    func load() throws -> HeadwayConfiguration {
        var yaml: String?
        if let path = self.config {
            do {
                yaml = try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                FileHandle.standardError.write(
                    Data("headway: cannot read configuration file \(path): \(error.localizedDescription)\n".utf8)
                )
                throw ExitCode(2)
            }
        }
        do {
            return try HeadwayConfiguration.load(yaml: yaml, overrides: self.overrides)
        } catch {
            let source = self.config ?? "command line"
            var message = "headway: \(source): \(error.problems.count) configuration problem(s):\n"
            for problem in error.problems {
                message += "  \(problem)\n"
            }
            FileHandle.standardError.write(Data(message.utf8))
            throw ExitCode(2)
        }
    }
}

func makeLogger(level: String) -> Logger {
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = Logger.Level(rawValue: level) ?? .info
        return handler
    }
    return Logger(label: "headway")
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the proxy (the default).")

    @OptionGroup var options: ConfigurationOptions

    func run() async throws {
        let configuration = try self.options.load()
        let logger = makeLogger(level: configuration.logLevel)
        let application = try HeadwayApplication(configuration: configuration, logger: logger)
        try await application.run()
    }
}

struct Validate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a configuration: exit 0 if it is valid, else print each problem and exit 2."
    )

    @OptionGroup var options: ConfigurationOptions

    func run() async throws {
        let configuration = try self.options.load()
        print("configuration is valid: \(configuration.summary)")
    }
}
