import NIOCore
import Testing

@testable import Headway

struct HealthCheckCounterTests {
    @Test func aNewEndpointIsHealthyAtItsFirstPass() {
        var counter = HealthCheckCounter()
        #expect(counter.record(passed: true, healthyThreshold: 3, unhealthyThreshold: 3) == .healthy)
        #expect(counter.health == .healthy)
    }

    @Test func failuresInARowMakeItUnhealthyAndPassesInARowBringItBack() {
        var counter = HealthCheckCounter()
        _ = counter.record(passed: true, healthyThreshold: 2, unhealthyThreshold: 3)
        #expect(counter.record(passed: false, healthyThreshold: 2, unhealthyThreshold: 3) == nil)
        #expect(counter.record(passed: false, healthyThreshold: 2, unhealthyThreshold: 3) == nil)
        #expect(counter.record(passed: false, healthyThreshold: 2, unhealthyThreshold: 3) == .unhealthy)
        #expect(
            counter.record(passed: false, healthyThreshold: 2, unhealthyThreshold: 3) == nil,
            "a transition is reported once"
        )
        #expect(counter.record(passed: true, healthyThreshold: 2, unhealthyThreshold: 3) == nil)
        #expect(counter.record(passed: true, healthyThreshold: 2, unhealthyThreshold: 3) == .healthy)
    }

    @Test func aPassBetweenFailuresResetsTheCount() {
        var counter = HealthCheckCounter()
        _ = counter.record(passed: true, healthyThreshold: 1, unhealthyThreshold: 2)
        _ = counter.record(passed: false, healthyThreshold: 1, unhealthyThreshold: 2)
        _ = counter.record(passed: true, healthyThreshold: 1, unhealthyThreshold: 2)
        #expect(counter.record(passed: false, healthyThreshold: 1, unhealthyThreshold: 2) == nil)
        #expect(counter.health == .healthy)
    }

    @Test func anEndpointThatNeverPassedBecomesUnhealthyAfterTheThreshold() {
        var counter = HealthCheckCounter()
        #expect(counter.record(passed: false, healthyThreshold: 2, unhealthyThreshold: 2) == nil)
        #expect(counter.health == .unknown)
        #expect(counter.record(passed: false, healthyThreshold: 2, unhealthyThreshold: 2) == .unhealthy)
    }
}

struct RetryBudgetTests {
    private let start = NIODeadline.uptimeNanoseconds(1_000 * 1_000_000_000)

    /// Asks for `count` retries at `time`; returns how many were granted.
    private func grant(_ count: Int, from budget: inout RetryBudget, at time: NIODeadline) -> Int {
        var granted = 0
        for _ in 0..<count where budget.spendRetry(at: time) { granted += 1 }
        return granted
    }

    @Test func retriesAreCappedAtAShareOfRecentRequests() {
        var budget = RetryBudget(percent: 20, minPerSecond: 0)
        for _ in 0..<100 { budget.requestStarted(at: self.start) }
        #expect(self.grant(50, from: &budget, at: self.start) == 20)
    }

    @Test func theFloorLetsAQuietUpstreamRetry() {
        var budget = RetryBudget(percent: 20, minPerSecond: 1)
        budget.requestStarted(at: self.start)
        // 20% of one request rounds down to nothing; the floor gives 1 per second over the 10 s window.
        #expect(self.grant(50, from: &budget, at: self.start) == 10)
    }

    @Test func theWindowSlides() {
        var budget = RetryBudget(percent: 10, minPerSecond: 0)
        for _ in 0..<100 { budget.requestStarted(at: self.start) }
        #expect(self.grant(20, from: &budget, at: self.start) == 10)
        #expect(self.grant(1, from: &budget, at: self.start + .seconds(5)) == 0)
        // Eleven seconds on, the old requests and retries are gone; new requests earn new retries.
        let later = self.start + .seconds(11)
        #expect(self.grant(1, from: &budget, at: later) == 0)
        for _ in 0..<30 { budget.requestStarted(at: later) }
        #expect(self.grant(20, from: &budget, at: later) == 3)
    }
}

struct OutlierDetectionTests {
    private func endpoint() throws -> Endpoint {
        Endpoint(
            address: try SocketAddress(ipAddress: "127.0.0.2", port: 8080),
            label: "127.0.0.2:8080",
            health: .healthy,
            metrics: ProxyMetrics().endpointMetrics(upstream: "web", endpoint: "127.0.0.2:8080")
        )
    }

    @Test func consecutive5xxReportOnceAtTheThreshold() throws {
        let endpoint = try self.endpoint()
        #expect(endpoint.recordResponseStatus(503, consecutive5xxThreshold: 3) == nil)
        #expect(endpoint.recordResponseStatus(500, consecutive5xxThreshold: 3) == nil)
        #expect(
            endpoint.recordResponseStatus(502, consecutive5xxThreshold: 3)
                == .init(run: .consecutive5xx, reason: "3 consecutive 5xx responses")
        )
        #expect(endpoint.recordResponseStatus(502, consecutive5xxThreshold: 3) == nil)
    }

    @Test func aSuccessResetsBothRuns() throws {
        let endpoint = try self.endpoint()
        _ = endpoint.recordResponseStatus(500, consecutive5xxThreshold: 2)
        _ = endpoint.recordGatewayFailure(gatewayThreshold: 2, fiveXXThreshold: 0, what: "reset")
        _ = endpoint.recordResponseStatus(200, consecutive5xxThreshold: 2)
        #expect(endpoint.recordGatewayFailure(gatewayThreshold: 2, fiveXXThreshold: 0, what: "reset") == nil)
        #expect(
            endpoint.recordGatewayFailure(gatewayThreshold: 2, fiveXXThreshold: 0, what: "reset")
                == .init(run: .consecutiveGatewayFailures, reason: "2 consecutive gateway failures (last: reset)")
        )
    }

    @Test func aThresholdOfZeroNeverEjects() throws {
        let endpoint = try self.endpoint()
        for _ in 0..<10 {
            #expect(endpoint.recordResponseStatus(500, consecutive5xxThreshold: 0) == nil)
            #expect(endpoint.recordGatewayFailure(gatewayThreshold: 0, fiveXXThreshold: 0, what: "refused") == nil)
        }
    }

    @Test func routabilityFollowsHealthEjectionAndTheGate() throws {
        let endpoint = try self.endpoint()
        #expect(endpoint.isRoutable(gateUnknown: true))
        endpoint.isEjected = true
        #expect(!endpoint.isRoutable(gateUnknown: true))
        endpoint.isEjected = false
        endpoint.health = .unknown
        #expect(!endpoint.isRoutable(gateUnknown: true))
        #expect(endpoint.isRoutable(gateUnknown: false))
        endpoint.health = .unhealthy
        #expect(!endpoint.isRoutable(gateUnknown: false))
        endpoint.health = .healthy
        endpoint.state = .draining
        #expect(!endpoint.isRoutable(gateUnknown: false))
    }

    @Test func panicStartsBelowTheThreshold() {
        #expect(!UpstreamCluster.isPanic(passingChecks: 2, total: 4, thresholdPercent: 50))
        #expect(UpstreamCluster.isPanic(passingChecks: 1, total: 3, thresholdPercent: 50))
        #expect(UpstreamCluster.isPanic(passingChecks: 0, total: 3, thresholdPercent: 50))
        #expect(!UpstreamCluster.isPanic(passingChecks: 0, total: 3, thresholdPercent: 0))
        #expect(!UpstreamCluster.isPanic(passingChecks: 0, total: 0, thresholdPercent: 50))
    }
}
