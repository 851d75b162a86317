import ArgumentParser
import Foundation
import Headway
import Logging

@main
struct HeadwayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "headway",
        abstract: "A client-side load-balancing HTTP proxy for Kubernetes headless services.",
        discussion: """
            Shell completions: headway --generate-completion-script bash|zsh|fish (see the README).
            """,
        version: HeadwayVersion.string,
        subcommands: [Run.self, Validate.self, Demo.self],
        defaultSubcommand: Run.self
    )

    /// `headway --help` also lists `run`'s options: running the proxy is what a newcomer came for, and the list of
    /// subcommands alone would hide every flag.
    static func main() async {
        let arguments = Array(Swift.CommandLine.arguments.dropFirst())
        if arguments == ["--help"] || arguments == ["-h"] || arguments == ["help"] {
            print(Self.helpMessage())
            print("\nWith no subcommand, headway runs the proxy:\n")
            print(Self.helpMessage(for: Run.self))
            return
        }
        await Self.main(arguments)
    }
}

/// The options shared by `run` and `validate`: a file and the flags that override it.
struct ConfigurationOptions: ParsableArguments {
    @Option(name: [.short, .long], help: "YAML configuration file.")
    var config: String?
    @Flag(help: "Reload when the configuration file changes (checked every 2 s), as on SIGHUP.")
    var watchConfig = false

    // One option per flag of the settings tables (HeadwayConfiguration+Settings.swift), which give the help
    // line; every value stays text, so that the flag is checked exactly as the file's key would be.
    @Option(help: "Address to accept client connections on (default 127.0.0.1:15001).")
    var listen: String?
    @Option(help: "Static endpoints, comma-separated: 127.0.0.2:8080,127.0.0.3:8080.")
    var endpoints: String?
    @Option(help: "Headless service to resolve by DNS, NAME:PORT (e.g. nginx-headless-service:80).")
    var service: String?
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--admin"))) var admin: String?
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--threads"))) var threads: String?
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--dns-server"))) var dnsServer: [String] = []
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--resolv-conf"))) var resolvConf: String?
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--refresh"))) var refresh: String?
    @Flag(help: .init(HeadwayConfiguration.help(forFlag: "--respect-ttl"))) var respectTTL = false
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--policy"))) var policy: String?
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--hash-key"))) var hashKey: String?
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--upstream-protocol"))) var upstreamProtocol: String?
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--slow-start"))) var slowStart: String?
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--connect-timeout"))) var connectTimeout: String?
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--request-timeout"))) var requestTimeout: String?
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--idle-timeout"))) var idleTimeout: String?
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--keepalive-timeout"))) var keepaliveTimeout: String?
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--max-connections-per-endpoint")))
    var maxConnectionsPerEndpoint: String?
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--health-path"))) var healthPath: String?
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--health-interval"))) var healthInterval: String?
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--health-timeout"))) var healthTimeout: String?
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--healthy-threshold"))) var healthyThreshold: String?
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--unhealthy-threshold"))) var unhealthyThreshold: String?
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--max-retries"))) var maxRetries: String?
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--per-try-timeout"))) var perTryTimeout: String?
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--drain-timeout"))) var drainTimeout: String?
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--shutdown-delay"))) var shutdownDelay: String?
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--log-level"))) var logLevel: String?
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--log-format"))) var logFormat: String?
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--access-log"))) var accessLog: String?
    @Option(help: .init(HeadwayConfiguration.help(forFlag: "--access-log-format"))) var accessLogFormat: String?

    var overrides: ConfigurationOverrides {
        var overrides = ConfigurationOverrides()
        let given: [(String, String?)] = [
            ("--listen", self.listen), ("--service", self.service), ("--admin", self.admin),
            ("--threads", self.threads), ("--resolv-conf", self.resolvConf), ("--refresh", self.refresh),
            ("--respect-ttl", self.respectTTL ? "true" : nil), ("--policy", self.policy),
            ("--hash-key", self.hashKey), ("--upstream-protocol", self.upstreamProtocol),
            ("--slow-start", self.slowStart),
            ("--connect-timeout", self.connectTimeout), ("--request-timeout", self.requestTimeout),
            ("--idle-timeout", self.idleTimeout), ("--keepalive-timeout", self.keepaliveTimeout),
            ("--max-connections-per-endpoint", self.maxConnectionsPerEndpoint), ("--health-path", self.healthPath),
            ("--health-interval", self.healthInterval), ("--health-timeout", self.healthTimeout),
            ("--healthy-threshold", self.healthyThreshold), ("--unhealthy-threshold", self.unhealthyThreshold),
            ("--max-retries", self.maxRetries), ("--per-try-timeout", self.perTryTimeout),
            ("--drain-timeout", self.drainTimeout),
            ("--shutdown-delay", self.shutdownDelay),
            ("--log-level", self.logLevel), ("--log-format", self.logFormat), ("--access-log", self.accessLog),
            ("--access-log-format", self.accessLogFormat),
        ]
        for (flag, value) in given {
            overrides[flag] = value
        }
        overrides[list: "--endpoints"] = self.endpoints.map {
            $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        }
        overrides[list: "--dns-server"] = self.dnsServer.isEmpty ? nil : self.dnsServer
        return overrides
    }

    /// Reads the file (if any) with the flags over it, checking everything; what SIGHUP calls again.
    static func read(path: String?, overrides: ConfigurationOverrides) throws -> HeadwayConfiguration {
        var yaml: String?
        if let path {
            do {
                yaml = try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                throw UnreadableFile(path: path, reason: error.localizedDescription)
            }
        }
        return try HeadwayConfiguration.load(yaml: yaml, overrides: overrides)
    }

    struct UnreadableFile: Error, CustomStringConvertible {
        let path: String
        let reason: String

        var description: String { "cannot read configuration file \(self.path): \(self.reason)" }
    }

    /// Loads and checks the configuration; on problems prints one line each and exits with status 2.
    func load() throws -> HeadwayConfiguration {
        do {
            return try Self.read(path: self.config, overrides: self.overrides)
        } catch let error as UnreadableFile {
            FileHandle.standardError.write(Data("headway: \(error)\n".utf8))
            throw ExitCode(2)
        } catch let error as ConfigurationError {
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

func makeLogger(level: String, format: LogFormat = .text) -> Logger {
    let level = Logger.Level(rawValue: level) ?? .info
    LoggingSystem.bootstrap { label in
        switch format {
        case .text:
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        case .json:
            return JSONLogHandler(label: label, level: level)
        }
    }
    return Logger(label: "headway")
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the proxy (the default).")

    @OptionGroup var options: ConfigurationOptions

    func run() async throws {
        if self.options.watchConfig && self.options.config == nil {
            FileHandle.standardError.write(Data("headway: --watch-config: needs --config FILE to watch\n".utf8))
            throw ExitCode(2)
        }
        let configuration = try self.options.load()
        let logger = makeLogger(level: configuration.logLevel, format: configuration.logFormat)
        do {
            // SIGHUP reads the same file again, with the same flags over it.
            let (path, overrides) = (self.options.config, self.options.overrides)
            let application = try HeadwayApplication(
                configuration: configuration,
                logger: logger,
                reloadSource: { try ConfigurationOptions.read(path: path, overrides: overrides) },
                watchedFile: self.options.watchConfig ? path : nil
            )
            try await application.run()
        } catch let error as BindError {
            // An address in use is a configuration problem: one line naming the address and its owner, exit 2.
            FileHandle.standardError.write(Data("headway: \(error)\n".utf8))
            throw ExitCode(2)
        } catch let error as AccessLogError {
            FileHandle.standardError.write(Data("headway: \(error)\n".utf8))
            throw ExitCode(2)
        }
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
