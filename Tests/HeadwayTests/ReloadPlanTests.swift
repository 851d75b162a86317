import Testing

@testable import Headway

/// What a reload changes, from the running configuration and the new one.
struct ReloadPlanTests {
    private func configuration(_ yaml: String) throws -> HeadwayConfiguration {
        try HeadwayConfiguration.load(yaml: yaml, overrides: .init())
    }

    private var base: String {
        """
        listeners:
          - {listen: 127.0.0.1:15001, upstream: web}
        upstreams:
          web: {endpoints: [127.0.0.2:80, 127.0.0.3:80]}
        """
    }

    @Test func theSameFileChangesNothing() throws {
        let plan = ReloadPlan(from: try self.configuration(self.base), to: try self.configuration(self.base))
        #expect(plan.isEmpty)
        #expect(plan.summary == "no change")
    }

    @Test func aNewPolicyAndEndpointsChangeTheUpstreamInPlace() throws {
        let new = try self.configuration(
            """
            listeners:
              - {listen: 127.0.0.1:15001, upstream: web}
            upstreams:
              web: {endpoints: [127.0.0.2:80, 127.0.0.4:80], policy: p2c}
            """
        )
        let plan = ReloadPlan(from: try self.configuration(self.base), to: new)
        #expect(plan.upstreamsChanged == ["web"])
        #expect(plan.staticEndpointsChanged == ["web"])
        #expect(plan.discoveryChanged.isEmpty && plan.upstreamsAdded.isEmpty && plan.upstreamsRemoved.isEmpty)
        #expect(plan.listenersAdded.isEmpty && plan.listenersRemoved.isEmpty)
    }

    @Test func listenersAreAddedRemovedAndRetargeted() throws {
        let old = try self.configuration(
            """
            listeners:
              - {listen: 127.0.0.1:15001, upstream: web}
              - {listen: 127.0.0.1:15002, upstream: web}
            upstreams:
              web: {endpoints: [127.0.0.2:80]}
              api: {endpoints: [127.0.0.3:80]}
            """
        )
        let new = try self.configuration(
            """
            listeners:
              - {listen: 127.0.0.1:15001, upstream: api}
              - {listen: 127.0.0.1:15003, upstream: web}
            upstreams:
              web: {endpoints: [127.0.0.2:80]}
              api: {endpoints: [127.0.0.3:80]}
            """
        )
        let plan = ReloadPlan(from: old, to: new)
        #expect(plan.listenersRemoved.map(\.listen.port) == [15001, 15002])
        #expect(plan.listenersAdded.map(\.listen.port) == [15001, 15003])
        #expect(plan.listenersAdded[0].upstream == "api", "15001 now sends to api: stopped and bound again")
        #expect(plan.upstreamsChanged.isEmpty)
    }

    @Test func dnsAndUpstreamChangesAreTold() throws {
        let old = try self.configuration(
            """
            listeners:
              - {listen: 127.0.0.1:15001, upstream: web}
            upstreams:
              web: {service: web-headless:80}
              old: {endpoints: [127.0.0.3:80]}
            """
        )
        let new = try self.configuration(
            """
            threads: 7
            listeners:
              - {listen: 127.0.0.1:15001, upstream: web}
            upstreams:
              web: {endpoints: [127.0.0.2:80]}
              fresh: {endpoints: [127.0.0.4:80]}
            """
        )
        let plan = ReloadPlan(from: old, to: new)
        #expect(plan.upstreamsRemoved == ["old"])
        #expect(plan.upstreamsAdded == ["fresh"])
        #expect(plan.discoveryChanged == ["web"], "DNS to static stops the discovery")
        #expect(plan.staticEndpointsChanged == ["web"])
        #expect(plan.needsRestart == ["threads"])
    }

    @Test func clientAndShutdownSettingsApplyToWhatStartsAfter() throws {
        let new = try self.configuration("shutdown_delay: 3s\nclient: {idle_timeout: 5s}\n" + self.base)
        let plan = ReloadPlan(from: try self.configuration(self.base), to: new)
        #expect(plan.listenerSettingsChanged)
        #expect(!plan.isEmpty)
        #expect(plan.needsRestart.isEmpty)
    }
}
