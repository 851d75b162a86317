import Foundation
import NIOCore
import Yams

extension HeadwayConfiguration {
    static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

    /// Builds the configuration from a YAML document (or none) and command-line flags, checking everything.
    ///
    /// This is the only way a configuration is made: `headway validate` and `headway run` both call it, so
    /// they accept and refuse exactly the same input with the same messages.
    /// - Throws: ``ConfigurationError`` listing every problem found, each naming its key path.
    package static func load(yaml: String?, overrides: ConfigurationOverrides) throws(ConfigurationError) -> Self {
        var reader = ConfigurationReader()
        var configuration = HeadwayConfiguration(
            listeners: [.init(listen: Self.defaultListen, upstream: "default")],
            upstreams: [.init(name: "default")]
        )
        if let yaml {
            reader.read(yaml: yaml, into: &configuration)
        }
        reader.apply(overrides, to: &configuration)
        reader.checkConsistency(
            of: configuration,
            flagsGaveEndpoints: overrides.isGiven("--endpoints") || overrides.isGiven("--service")
        )
        guard reader.problems.isEmpty else {
            throw ConfigurationError(problems: reader.problems)
        }
        return configuration
    }
}

/// Flags laid over the file, and the checks that span several keys.
extension ConfigurationReader {
    static let singleUpstreamFlags =
        ["--listen", "--endpoints", "--service"]
        + (HeadwayConfiguration.Upstream.settings.compactMap(\.flag) + DNSDiscoverySettings.settings.compactMap(\.flag)
            + HealthCheckSettings.settings.compactMap(\.flag))

    mutating func apply(_ overrides: ConfigurationOverrides, to configuration: inout HeadwayConfiguration) {
        self.applyFlags(overrides, of: HeadwayConfiguration.settings, to: &configuration)
        if AccessLogSettings.settings.contains(where: { $0.flag.map(overrides.isGiven) == true }) {
            // Either flag turns the access log on; the other keeps the file's value or the default.
            var settings = configuration.accessLog ?? AccessLogSettings()
            self.applyFlags(overrides, of: AccessLogSettings.settings, to: &settings)
            configuration.accessLog = settings
        }
        let singleFlags = Self.singleUpstreamFlags.filter(overrides.isGiven)
        guard !singleFlags.isEmpty else { return }
        guard configuration.upstreams.count == 1, configuration.listeners.count == 1 else {
            for flag in singleFlags {
                self.problem(
                    flag,
                    "applies to a configuration with one listener and one upstream; this file has"
                        + " \(configuration.listeners.count) listeners and \(configuration.upstreams.count) upstreams"
                )
            }
            return
        }
        if let listen = overrides["--listen"], let address = self.address(text: listen, at: "--listen", bindable: true)
        {
            configuration.listeners[0].listen = address
        }
        var upstream = configuration.upstreams[0]
        if let endpoints = overrides[list: "--endpoints"] {
            upstream.endpoints = endpoints.compactMap { self.address(text: $0, at: "--endpoints") }
            upstream.dns = nil
        }
        if let service = overrides["--service"] {
            if overrides.isGiven("--endpoints") {
                self.problem("--service", "give either --service or --endpoints, not both")
            } else if let settings = self.service(text: service, at: "--service") {
                upstream.endpoints = []
                upstream.dns = settings
            }
        }
        if DNSDiscoverySettings.settings.contains(where: { $0.flag.map(overrides.isGiven) == true }) {
            if upstream.dns == nil {
                let flags = DNSDiscoverySettings.settings.compactMap(\.flag).joined(separator: ", ")
                self.problem("--service", "\(flags) need a service to resolve")
            } else {
                self.applyFlags(overrides, of: DNSDiscoverySettings.settings, to: &upstream.dns!)
            }
        }
        self.applyFlags(overrides, of: HeadwayConfiguration.Upstream.settings, to: &upstream)
        self.applyHealthFlags(overrides, to: &upstream)
        configuration.upstreams[0] = upstream
    }

    /// Reads every given flag of `settings` into `block` exactly as the file's value would be read: the flag's
    /// text becomes the YAML scalar (or, for a list, the sequence) it would be in the file.
    mutating func applyFlags<Block>(
        _ overrides: ConfigurationOverrides,
        of settings: [Setting<Block>],
        to block: inout Block
    ) {
        for setting in settings {
            guard let flag = setting.flag, let values = overrides[list: flag] else { continue }
            let node = setting.takesList ? Node(values.map { Node($0) }) : Node(values.last ?? "")
            setting.read(&self, node, flag, &block)
        }
    }

    /// `--health-path` turns HTTP checks on; the other health flags adjust checks that are on.
    mutating func applyHealthFlags(
        _ overrides: ConfigurationOverrides,
        to upstream: inout HeadwayConfiguration.Upstream
    ) {
        if let path = overrides["--health-path"], let valid = self.healthPath(path, at: "--health-path") {
            var settings = upstream.healthCheck ?? HealthCheckSettings()
            settings.kind = .http
            settings.path = valid
            upstream.healthCheck = settings
        }
        let adjustments = HealthCheckSettings.settings.compactMap(\.flag).filter { $0 != "--health-path" }
            .filter(overrides.isGiven)
        guard !adjustments.isEmpty else { return }
        guard var settings = upstream.healthCheck else {
            for flag in adjustments {
                self.problem(flag, "needs active health checks: give --health-path or a health_check block")
            }
            return
        }
        self.applyFlags(
            overrides,
            of: HealthCheckSettings.settings.filter { $0.flag != "--health-path" },
            to: &settings
        )
        self.checkHealthTimeout(settings, at: "--health-timeout")
        upstream.healthCheck = settings
    }

    mutating func checkConsistency(of configuration: HeadwayConfiguration, flagsGaveEndpoints: Bool) {
        if configuration.listeners.isEmpty {
            self.problem("listeners", "no listener: add one with listen and upstream")
        }
        var seenListen = Set<HostAndPort>()
        for (index, listener) in configuration.listeners.enumerated() {
            if configuration.upstream(named: listener.upstream) == nil {
                self.problem(
                    "listeners[\(index)].upstream",
                    "names upstream '\(listener.upstream)', which is not defined"
                )
            }
            if listener.listen.port != 0, !seenListen.insert(listener.listen).inserted {
                self.problem("listeners[\(index)].listen", "\(listener.listen) is used by another listener")
            }
            if listener.listen.port != 0, listener.listen == configuration.admin {
                self.problem("listeners[\(index)].listen", "\(listener.listen) is also the admin address")
            }
        }
        for upstream in configuration.upstreams {
            if upstream.policy == .hash && upstream.hashKey == nil {
                self.problem(
                    "upstreams.\(upstream.name).hash_key",
                    "missing: the hash policy needs header:NAME, cookie:NAME or client-ip"
                )
            } else if upstream.policy != .hash && upstream.hashKey != nil {
                self.problem("upstreams.\(upstream.name).hash_key", "applies only to policy: hash")
            }
            if let perTry = upstream.retries.perTryTimeout, perTry >= upstream.requestTimeout {
                self.problem(
                    "upstreams.\(upstream.name).per_try_timeout",
                    "is not shorter than request_timeout (\(DurationText.format(upstream.requestTimeout))),"
                        + " so it would never send a request elsewhere"
                )
            }
        }
        for upstream in configuration.upstreams where upstream.endpoints.isEmpty && upstream.dns == nil {
            let keyPath = "upstreams.\(upstream.name).endpoints"
            if self.problems.contains(where: { $0.keyPath.hasPrefix(keyPath) || $0.keyPath == "--endpoints" }) {
                continue  // Already reported: its endpoints were malformed or missing.
            }
            if upstream.name == "default" && !flagsGaveEndpoints {
                self.problem(
                    "--endpoints",
                    "no endpoints: give --endpoints HOST:PORT,..., --service NAME:PORT or --config FILE"
                )
            } else {
                self.problem(keyPath, "is empty: list at least one HOST:PORT")
            }
        }
    }

}
