import Foundation
import NIOCore
import Testing

@testable import Headway

/// What discovery makes of DNS answers, with explicit times: no resolver, no sleep.
struct DNSDiscoveryStateMachineTests {
    private let now = Date(timeIntervalSince1970: 1_800_000_000)
    private let pods = (2...4).map { try! SocketAddress(ipAddress: "127.0.0.\($0)", port: 8080) }

    private func machine(respectTTL: Bool = false) -> DNSDiscovery.StateMachine {
        var settings = DNSDiscoverySettings(name: "web.test", port: 8080)
        settings.refresh = .seconds(5)
        settings.respectTTL = respectTTL
        settings.minRefresh = .seconds(1)
        settings.maxRefresh = .seconds(60)
        return DNSDiscovery.StateMachine(settings: settings)
    }

    private func answer(_ addresses: [SocketAddress], ttl: UInt32 = 30) -> Result<DNSAnswer, DNSResolutionError> {
        .success(DNSAnswer(addresses: addresses, ttl: ttl))
    }

    @Test func anAnswerReplacesTheSetSortedAndWaitsRefresh() {
        var machine = self.machine()
        let action = machine.resolved(self.answer(self.pods.reversed()), now: self.now)
        #expect(action.update == .replace(self.pods, weights: [:]))
        #expect(action.delay == .seconds(5))
        #expect(action.notice == nil)
        #expect(machine.status.addresses == ["127.0.0.2:8080", "127.0.0.3:8080", "127.0.0.4:8080"])
        #expect(machine.status.resolvedAt == self.now)
    }

    @Test func respectTTLClampsTheTTL() {
        var machine = self.machine(respectTTL: true)
        #expect(machine.resolved(self.answer(self.pods, ttl: 30), now: self.now).delay == .seconds(30))
        #expect(machine.resolved(self.answer(self.pods, ttl: 0), now: self.now).delay == .seconds(1))
        #expect(machine.resolved(self.answer(self.pods, ttl: 3600), now: self.now).delay == .seconds(60))
    }

    @Test func aNameThatHadPodsEmptiesOnlyWhenASecondAnswerConfirms() {
        var machine = self.machine()
        _ = machine.resolved(self.answer(self.pods), now: self.now)
        let first = machine.resolved(.failure(.nameNotFound), now: self.now)
        #expect(first.update == nil, "one odd answer keeps the pods")
        #expect(first.notice == .awaitingConfirmation(.nameNotFound))
        #expect(first.delay == .seconds(1), "confirmed a second later")
        #expect(machine.status.addresses.count == 3)

        let second = machine.resolved(.failure(.noRecords), now: self.now)
        #expect(second.update == .empty(reason: "DNS name web.test has no pods (\(DNSResolutionError.noRecords))"))
        #expect(second.notice == .confirmedEmpty(.noRecords))
        #expect(machine.status.addresses.isEmpty)
    }

    @Test func anAnswerWithPodsBetweenTwoEmptyOnesCancelsTheConfirmation() {
        var machine = self.machine()
        _ = machine.resolved(self.answer(self.pods), now: self.now)
        _ = machine.resolved(.failure(.nameNotFound), now: self.now)
        _ = machine.resolved(self.answer(self.pods), now: self.now)
        #expect(machine.resolved(.failure(.nameNotFound), now: self.now).update == nil)
    }

    @Test func aNameThatNeverHadPodsIsEmptyAtOnceWithoutAWarning() {
        var machine = self.machine()
        let action = machine.resolved(.success(DNSAnswer(addresses: [], ttl: 0)), now: self.now)
        #expect(action.update == .empty(reason: "DNS name web.test has no pods (\(DNSResolutionError.noRecords))"))
        #expect(action.notice == nil)
    }

    @Test func failuresKeepTheSetAndBackOffUpToRefresh() {
        var machine = self.machine()
        _ = machine.resolved(self.answer(self.pods), now: self.now)
        var delays: [TimeAmount] = []
        var notices: [DNSDiscovery.StateMachine.Notice?] = []
        for _ in 0..<5 {
            let action = machine.resolved(.failure(.unavailable), now: self.now)
            #expect(action.update == nil)
            delays.append(action.delay)
            notices.append(action.notice)
        }
        #expect(delays == [.milliseconds(500), .seconds(1), .seconds(2), .seconds(4), .seconds(5)])
        #expect(notices.first == .failing(.unavailable, keeping: 3), "logged once when it starts")
        #expect(notices.dropFirst().allSatisfy { $0 == nil })
        #expect(machine.status.consecutiveFailures == 5)
        let recovered = machine.resolved(self.answer(self.pods), now: self.now)
        #expect(recovered.notice == .recovered(addresses: 3), "and once when it ends")
        #expect(machine.status.consecutiveFailures == 0)
    }

    @Test func jitterScalesTheDelayAndRecordsTheNextQuery() {
        var machine = self.machine()
        let delay = machine.jittered(.seconds(10), factor: 1.1, now: self.now)
        #expect(delay == .seconds(11))
        #expect(machine.nextDelay == .seconds(11))
        #expect(machine.status.nextResolutionAt == self.now.addingTimeInterval(11))
    }
}
