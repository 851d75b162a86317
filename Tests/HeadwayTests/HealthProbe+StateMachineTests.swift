import NIOCore
import Testing

@testable import Headway

/// One endpoint's check cycle, without a socket or a timer.
struct HealthProbeStateMachineTests {
    private func machine(expected: [ClosedRange<Int>] = [200...399]) -> HealthProbe.StateMachine {
        var settings = HealthCheckSettings()
        settings.interval = .seconds(2)
        settings.timeout = .milliseconds(300)
        settings.jitterPercent = 10
        settings.expectedStatuses = expected
        return HealthProbe.StateMachine(settings: settings)
    }

    @Test func anExpectedStatusPassesAndKeepsAKeepAliveConnection() {
        var machine = self.machine()
        let number = machine.checkDue()!
        let verdict = machine.checkEnded(number, .answered(status: 204, keepAlive: true))
        #expect(verdict == .init(passed: true, detail: "HTTP 204", closeConnection: false))
    }

    @Test func anUnexpectedStatusFailsAndAClosingPodsConnectionIsDropped() {
        var machine = self.machine(expected: [200...200])
        let number = machine.checkDue()!
        #expect(
            machine.checkEnded(number, .answered(status: 503, keepAlive: false))
                == .init(passed: false, detail: "HTTP 503", closeConnection: true)
        )
    }

    @Test func aTimeoutFailsAndDropsTheConnectionThatMayHoldALateAnswer() {
        var machine = self.machine()
        let number = machine.checkDue()!
        #expect(
            machine.checkEnded(number, .timedOut)
                == .init(passed: false, detail: "no answer within 300ms", closeConnection: true)
        )
        #expect(
            machine.checkEnded(number, .answered(status: 200, keepAlive: true)) == nil,
            "the late answer does not count"
        )
    }

    @Test func onlyTheCheckUnderWayCounts() {
        var machine = self.machine()
        let first = machine.checkDue()!
        _ = machine.checkEnded(first, .failed("connect failed: Connection refused"))
        let second = machine.checkDue()!
        #expect(!machine.isCurrent(first))
        #expect(machine.isCurrent(second))
        #expect(machine.checkEnded(first, .connected) == nil)
        #expect(
            machine.checkEnded(second, .connected) == .init(passed: true, detail: "connected", closeConnection: true)
        )
    }

    @Test func aStoppedProbeStartsNoCheckAndIgnoresOutcomes() {
        var machine = self.machine()
        let number = machine.checkDue()!
        machine.stopped()
        #expect(machine.checkEnded(number, .connected) == nil)
        #expect(machine.checkDue() == nil)
    }

    @Test func theNextCheckComesAfterTheIntervalWithinItsJitter() {
        let machine = self.machine()
        #expect(machine.nextCheckDelay(factor: 0) == .seconds(2))
        #expect(machine.nextCheckDelay(factor: 1) == .milliseconds(2200))
        #expect(machine.nextCheckDelay(factor: -1) == .milliseconds(1800))
    }
}
