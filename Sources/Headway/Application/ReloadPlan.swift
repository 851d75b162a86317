/// What a reload changes, worked out from the running configuration and the new one, as a value: no
/// sockets, no clock. ``HeadwayApplication`` carries it out.
struct ReloadPlan: Equatable, Sendable {
    /// Listeners whose address goes, or now sends to another upstream (those are stopped and bound again).
    var listenersRemoved: [HeadwayConfiguration.Listener] = []
    /// Listeners to bind, in the new configuration's order.
    var listenersAdded: [HeadwayConfiguration.Listener] = []
    var upstreamsRemoved: [String] = []
    var upstreamsAdded: [String] = []
    /// Upstreams in both configurations whose settings differ; they are changed in place, so that the
    /// endpoints that stay keep their connections and counters.
    var upstreamsChanged: [String] = []
    /// Upstreams in both whose discovery changed (DNS settings, or static to DNS and back): the old discovery
    /// stops and the new one, if DNS, starts.
    var discoveryChanged: [String] = []
    /// Upstreams static in the new configuration whose endpoints or weights changed, or that were DNS before.
    var staticEndpointsChanged: [String] = []
    /// Top-level keys that differ but take effect only at the next start.
    var needsRestart: [String] = []
    /// Client limits, drain and shutdown timing, which apply to what starts after the reload.
    var listenerSettingsChanged = false

    init(from old: HeadwayConfiguration, to new: HeadwayConfiguration) {
        let oldListeners = Set(old.listeners.map(ListenerKey.init))
        let newListeners = Set(new.listeners.map(ListenerKey.init))
        self.listenersRemoved = old.listeners.filter { !newListeners.contains(ListenerKey($0)) }
        self.listenersAdded = new.listeners.filter { !oldListeners.contains(ListenerKey($0)) }

        let oldNames = Set(old.upstreams.map(\.name))
        let newNames = Set(new.upstreams.map(\.name))
        self.upstreamsRemoved = old.upstreams.map(\.name).filter { !newNames.contains($0) }
        self.upstreamsAdded = new.upstreams.map(\.name).filter { !oldNames.contains($0) }
        for upstream in new.upstreams {
            guard let previous = old.upstream(named: upstream.name), previous != upstream else { continue }
            self.upstreamsChanged.append(upstream.name)
            if previous.httpProtocol != upstream.httpProtocol {
                // Pools are built for one protocol; their connections cannot change what they speak.
                self.needsRestart.append("upstreams.\(upstream.name).protocol")
            }
            if previous.dns != upstream.dns {
                self.discoveryChanged.append(upstream.name)
            }
            if upstream.dns == nil
                && (previous.dns != nil || previous.endpoints != upstream.endpoints
                    || previous.endpointWeights != upstream.endpointWeights)
            {
                self.staticEndpointsChanged.append(upstream.name)
            }
        }

        if old.threads != new.threads { self.needsRestart.append("threads") }
        if old.admin != new.admin { self.needsRestart.append("admin") }
        if old.logLevel != new.logLevel { self.needsRestart.append("log_level") }
        if old.logFormat != new.logFormat { self.needsRestart.append("log_format") }
        if old.accessLog != new.accessLog { self.needsRestart.append("access_log") }
        if old.readyRequiresEndpoints != new.readyRequiresEndpoints {
            self.needsRestart.append("ready_requires_endpoints")
        }
        self.listenerSettingsChanged =
            old.client != new.client || old.drainTimeout != new.drainTimeout || old.shutdownDelay != new.shutdownDelay
    }

    var isEmpty: Bool {
        self.listenersRemoved.isEmpty && self.listenersAdded.isEmpty && self.upstreamsRemoved.isEmpty
            && self.upstreamsAdded.isEmpty && self.upstreamsChanged.isEmpty && self.needsRestart.isEmpty
            && !self.listenerSettingsChanged
    }

    /// One line for the log: what changed.
    var summary: String {
        guard !self.isEmpty else { return "no change" }
        var parts: [String] = []
        func listeners(_ list: [HeadwayConfiguration.Listener]) -> String {
            list.map { "\($0.listen)->\($0.upstream)" }.joined(separator: ",")
        }
        if !self.listenersAdded.isEmpty { parts.append("listeners added [\(listeners(self.listenersAdded))]") }
        if !self.listenersRemoved.isEmpty { parts.append("listeners removed [\(listeners(self.listenersRemoved))]") }
        if !self.upstreamsAdded.isEmpty { parts.append("upstreams added \(self.upstreamsAdded)") }
        if !self.upstreamsRemoved.isEmpty { parts.append("upstreams removed \(self.upstreamsRemoved)") }
        if !self.upstreamsChanged.isEmpty { parts.append("upstreams changed \(self.upstreamsChanged)") }
        if self.listenerSettingsChanged { parts.append("client, drain or shutdown settings changed") }
        return parts.joined(separator: "; ")
    }

    /// A listener is its address and the upstream it sends to.
    private struct ListenerKey: Hashable {
        var listen: HostAndPort
        var upstream: String

        init(_ listener: HeadwayConfiguration.Listener) {
            self.listen = listener.listen
            self.upstream = listener.upstream
        }
    }
}
