import Foundation
import NIOCore
import Yams

/// The blocks of the file that hold structure: listeners, upstreams and their nested blocks.
extension ConfigurationReader {
    mutating func read(yaml: String, into configuration: inout HeadwayConfiguration) {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            self.problem("(file)", "not valid YAML: \(error)")
            return
        }
        guard let root else { return }  // An empty file is the default configuration.
        var sawListeners = false
        var sawUpstreams = false
        self.readBlock(
            root,
            at: "",
            settings: HeadwayConfiguration.settings,
            into: &configuration,
            structural: ["access_log", "client", "listeners", "upstreams"]
        ) { reader, key, value, keyPath, configuration in
            switch key {
            case "access_log":
                var settings = AccessLogSettings()
                reader.readBlock(value, at: keyPath, settings: AccessLogSettings.settings, into: &settings)
                configuration.accessLog = settings
            case "client":
                reader.readClient(value, at: keyPath, into: &configuration.client)
            case "listeners":
                sawListeners = true
                configuration.listeners = reader.listeners(value)
            case "upstreams":
                sawUpstreams = true
                configuration.upstreams = reader.upstreams(value)
            default:
                return false
            }
            return true
        }
        if sawUpstreams && !sawListeners {
            // A file with upstreams but no listeners: listen on the default address for its only upstream.
            configuration.listeners =
                configuration.upstreams.count == 1
                ? [.init(listen: HeadwayConfiguration.defaultListen, upstream: configuration.upstreams[0].name)]
                : []
        }
    }

    mutating func listeners(_ node: Node) -> [HeadwayConfiguration.Listener] {
        guard let sequence = node.sequence else {
            self.problem("listeners", "must be a list of {listen, upstream}")
            return []
        }
        var listeners: [HeadwayConfiguration.Listener] = []
        for (index, item) in sequence.enumerated() {
            let path = "listeners[\(index)]"
            guard let mapping = item.mapping else {
                self.problem(path, "must be a mapping with keys listen and upstream")
                continue
            }
            var listen = HeadwayConfiguration.defaultListen
            var upstream: String?
            for (keyNode, value) in mapping {
                let key = keyNode.string ?? "?"
                switch key {
                case "listen":
                    if let address = self.address(value, at: "\(path).listen", bindable: true) { listen = address }
                case "upstream":
                    upstream = value.string
                default:
                    self.problem("\(path).\(key)", "unknown key (known: listen, upstream)")
                }
            }
            guard let upstream, !upstream.isEmpty else {
                self.problem("\(path).upstream", "missing: name the upstream this listener sends requests to")
                continue
            }
            listeners.append(.init(listen: listen, upstream: upstream))
        }
        return listeners
    }

    mutating func upstreams(_ node: Node) -> [HeadwayConfiguration.Upstream] {
        guard let mapping = node.mapping else {
            self.problem("upstreams", "must be a mapping of upstream names to settings")
            return []
        }
        var upstreams: [HeadwayConfiguration.Upstream] = []
        for (nameNode, value) in mapping {
            let name = nameNode.string ?? "?"
            let path = "upstreams.\(name)"
            guard value.mapping != nil else {
                self.problem(path, "must be a mapping of settings")
                continue
            }
            var upstream = HeadwayConfiguration.Upstream(name: name)
            var sawEndpoints = false
            var dnsBlock: Node?
            self.readBlock(
                value,
                at: path,
                settings: HeadwayConfiguration.Upstream.settings,
                into: &upstream,
                structural: ["endpoints", "service", "srv", "dns", "health_check", "outlier_detection", "retry_budget"]
            ) { reader, key, value, keyPath, upstream in
                switch key {
                case "endpoints":
                    sawEndpoints = true
                    guard let list = value.sequence else {
                        reader.problem(keyPath, "must be a list of HOST:PORT")
                        return true
                    }
                    upstream.endpoints = list.enumerated().compactMap { index, item in
                        reader.endpoint(item, at: "\(keyPath)[\(index)]", weights: &upstream.endpointWeights)
                    }
                case "service":
                    if let text = value.scalar?.string, let service = reader.service(text: text, at: keyPath) {
                        upstream.dns = service
                    } else if value.scalar == nil {
                        reader.problem(keyPath, "must be NAME:PORT, e.g. nginx-headless-service:80")
                    }
                case "srv":
                    if let text = value.scalar?.string, var settings = reader.service(text: text, at: keyPath),
                        !text.contains(":")
                    {
                        settings.isSRV = true
                        upstream.dns = settings
                    } else {
                        reader.problem(
                            keyPath,
                            "must be an SRV name such as _http._tcp.web (ports come from the records)"
                        )
                    }
                case "dns":
                    dnsBlock = value
                case "health_check":
                    upstream.healthCheck = reader.healthCheck(value, at: keyPath)
                case "outlier_detection":
                    reader.readOutlierDetection(value, at: keyPath, into: &upstream.outlierDetection)
                case "retry_budget":
                    reader.readBlock(
                        value,
                        at: keyPath,
                        settings: RetrySettings.budgetSettings,
                        into: &upstream.retries,
                        mustBe: "must be a mapping, e.g. {percent: 20, min_per_second: 10}"
                    )
                default:
                    return false
                }
                return true
            }
            if let dnsBlock {
                if upstream.dns == nil {
                    self.problem("\(path).dns", "applies only to an upstream with service")
                } else {
                    self.readDNS(dnsBlock, at: "\(path).dns", into: &upstream.dns!)
                }
            }
            if sawEndpoints && upstream.dns != nil {
                self.problem(path, "has both endpoints and service; give one")
            } else if !sawEndpoints && upstream.dns == nil {
                self.problem("\(path).endpoints", "missing: list at least one HOST:PORT, or give service")
            }
            upstreams.append(upstream)
        }
        return upstreams
    }

    /// `health_check:` as a mapping; an empty mapping (`health_check: {}`) turns checks on with the defaults.
    mutating func healthCheck(_ node: Node, at path: String) -> HealthCheckSettings? {
        guard node.mapping != nil else {
            self.problem(path, "must be a mapping, e.g. {path: /healthz, interval: 2s} ({} for the defaults)")
            return nil
        }
        var settings = HealthCheckSettings()
        self.readBlock(node, at: path, settings: HealthCheckSettings.settings, into: &settings)
        self.checkHealthTimeout(settings, at: "\(path).timeout")
        return settings
    }

    /// A check that may outlast its interval would overlap the next one.
    mutating func checkHealthTimeout(_ settings: HealthCheckSettings, at keyPath: String) {
        if settings.timeout > settings.interval {
            self.problem(keyPath, "is longer than the interval (\(DurationText.format(settings.interval)))")
        }
    }

    mutating func healthPath(_ text: String, at keyPath: String) -> String? {
        guard text.hasPrefix("/"), text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            self.problem(keyPath, "must be an absolute path such as /healthz, without spaces or control characters")
            return nil
        }
        return text
    }

    /// `[200-399, 404]`: statuses or inclusive ranges of statuses.
    mutating func statusRanges(_ node: Node, at keyPath: String) -> [ClosedRange<Int>]? {
        guard let list = node.sequence, list.count > 0 else {
            self.problem(keyPath, "must be a list of statuses or ranges, e.g. [200-399]")
            return nil
        }
        var ranges: [ClosedRange<Int>] = []
        for (index, item) in list.enumerated() {
            let text = item.scalar?.string ?? ""
            let bounds = text.split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
            guard (1...2).contains(bounds.count), let low = bounds.first!, let high = bounds.last!,
                (100...599).contains(low), (low...599).contains(high)
            else {
                self.problem("\(keyPath)[\(index)]", "bad status range '\(text)': write 200 or 200-399, within 100-599")
                continue
            }
            ranges.append(low...high)
        }
        return ranges.isEmpty ? nil : ranges
    }

    mutating func readOutlierDetection(_ node: Node, at path: String, into settings: inout OutlierDetectionSettings) {
        self.readBlock(node, at: path, settings: OutlierDetectionSettings.settings, into: &settings)
        if settings.baseEjectionTime > settings.maxEjectionTime {
            self.problem("\(path).base_ejection_time", "is longer than max_ejection_time")
        }
    }

    /// `[503, gateway-error]`: statuses to retry; `gateway-error` means 502, 503 and 504, `5xx` any 5xx.
    mutating func retryOn(_ node: Node, at keyPath: String) -> Set<Int>? {
        guard let list = node.sequence else {
            self.problem(keyPath, "must be a list of statuses, gateway-error or 5xx, e.g. [503, gateway-error]")
            return nil
        }
        var statuses = Set<Int>()
        for (index, item) in list.enumerated() {
            let text = item.scalar?.string ?? ""
            switch text {
            case "gateway-error": statuses.formUnion([502, 503, 504])
            case "5xx": statuses.formUnion(500...599)
            default:
                if let status = Int(text), (500...599).contains(status) {
                    statuses.insert(status)
                } else {
                    self.problem("\(keyPath)[\(index)]", "'\(text)' is not a 5xx status, gateway-error or 5xx")
                }
            }
        }
        return statuses
    }

    mutating func readDNS(_ node: Node, at path: String, into settings: inout DNSDiscoverySettings) {
        self.readBlock(node, at: path, settings: DNSDiscoverySettings.settings, into: &settings)
        if settings.minRefresh > settings.maxRefresh {
            self.problem("\(path).min_refresh", "is longer than max_refresh")
        }
    }

    /// `NAME:PORT` (port 80 when omitted): a DNS name as the pod's resolver would look it up.
    mutating func service(text: String, at keyPath: String) -> DNSDiscoverySettings? {
        var name = Substring(text)
        var port = 80
        if let colon = text.lastIndex(of: ":") {
            name = text[..<colon]
            guard let parsed = Int(text[text.index(after: colon)...]), (1...65535).contains(parsed) else {
                self.problem(keyPath, "bad service '\(text)': the port must be 1-65535")
                return nil
            }
            port = parsed
        }
        let labels = name.hasSuffix(".") ? name.dropLast() : name
        let isValidName =
            !labels.isEmpty && labels.count <= 253
            && labels.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
                (1...63).contains(label.count)
                    && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }
            }
        guard isValidName else {
            self.problem(keyPath, "bad service '\(text)': not a DNS name")
            return nil
        }
        return DNSDiscoverySettings(name: String(name), port: port)
    }

    mutating func dnsServer(text: String, at keyPath: String) -> HostAndPort? {
        let withPort = text.contains(":") ? text : "\(text):53"
        guard let address = self.address(text: withPort, at: keyPath) else { return nil }
        guard !address.host.contains(":") else {
            self.problem(keyPath, "DNS servers must be IPv4 addresses (libresolv's server list is IPv4)")
            return nil
        }
        return address
    }

    mutating func resolvConf(path: String, at keyPath: String, into settings: inout DNSDiscoverySettings) {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            self.problem(keyPath, "cannot read '\(path)'")
            return
        }
        settings.resolvConf = ResolvConf(parsing: text)
        settings.resolvConfPath = path
    }

    /// Flags that only make sense for a configuration with one listener and one upstream.
}
