import NIOCore
import NIOHTTP1
import Testing

@testable import Headway

/// The four client timeouts, decided from what a sweep sees, at explicit times.
struct ClientTimeoutsTests {
    private let start = NIODeadline.uptimeNanoseconds(7_000_000_000_000)

    private var timeouts: ClientTimeouts {
        var settings = ClientSettings()
        settings.headerTimeout = .seconds(10)
        settings.bodyTimeout = .seconds(20)
        settings.idleTimeout = .seconds(30)
        settings.writeTimeout = .seconds(40)
        return ClientTimeouts(settings: settings)
    }

    private func observation(
        notWritableSince: NIODeadline? = nil,
        readHeld: Bool = false,
        readingHead: Bool = false,
        insideRequest: Bool = false,
        idle: Bool = false
    ) -> ClientTimeouts.Observation {
        .init(
            notWritableSince: notWritableSince,
            isReadHeld: readHeld,
            isReadingHead: readingHead,
            headStartedAt: self.start,
            isInsideRequest: insideRequest,
            lastActivity: self.start,
            isIdle: idle
        )
    }

    @Test func aSlowlorisHeadGets408AtTheHeaderTimeout() {
        let slowloris = self.observation(readingHead: true, insideRequest: true)
        #expect(self.timeouts.check(slowloris, now: self.start + .seconds(10)) == .none)
        guard case .refuse(let error) = self.timeouts.check(slowloris, now: self.start + .seconds(11)) else {
            Issue.record("no 408 after header_timeout")
            return
        }
        #expect(error.status.code == 408)
        #expect(error.detail.contains("header_timeout (10s)"))
    }

    @Test func aStalledBodyGets408AtTheBodyTimeout() {
        let stalled = self.observation(insideRequest: true)
        #expect(self.timeouts.check(stalled, now: self.start + .seconds(20)) == .none)
        guard case .refuse(let error) = self.timeouts.check(stalled, now: self.start + .seconds(21)) else {
            Issue.record("no 408 after body_timeout")
            return
        }
        #expect(error.detail.contains("body_timeout (20s)"))
    }

    @Test func aQuietKeepAliveConnectionClosesAtTheIdleTimeoutButNotWhileAnExchangeRuns() {
        #expect(self.timeouts.check(self.observation(idle: true), now: self.start + .seconds(31)) == .closeIdle)
        #expect(self.timeouts.check(self.observation(idle: false), now: self.start + .seconds(31)) == .none)
    }

    @Test func aClientThatTakesNoBytesIsCutOffAtTheWriteTimeout() {
        let slowReader = self.observation(notWritableSince: self.start, readHeld: true)
        #expect(self.timeouts.check(slowReader, now: self.start + .seconds(40)) == .activityContinues)
        #expect(
            self.timeouts.check(slowReader, now: self.start + .seconds(41))
                == .disconnect(reason: "client took no response byte for write_timeout (40s)")
        )
    }

    @Test func backpressureIsNotTheClientsFault() {
        // Headway holds the reads (the pod is slow to take the upload): no body timeout.
        let held = self.observation(readHeld: true, insideRequest: true)
        #expect(self.timeouts.check(held, now: self.start + .seconds(100)) == .activityContinues)
    }
}
