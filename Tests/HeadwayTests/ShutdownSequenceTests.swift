import NIOCore
import Testing

@testable import Headway

/// What SIGTERM and SIGINT do, with and without `shutdown_delay`.
struct ShutdownSequenceTests {
    @Test func withoutADelayTheFirstSignalDrains() {
        var sequence = ShutdownSequence(delay: .zero)
        #expect(sequence.received(.terminate) == .drain)
        #expect(sequence.received(.terminate) == .none)
        #expect(sequence.delayElapsed() == .none)
    }

    @Test func sigtermWaitsOutTheDelayThenDrains() {
        var sequence = ShutdownSequence(delay: .seconds(5))
        #expect(sequence.received(.terminate) == .reportNotReadyAndWait(.seconds(5)))
        #expect(sequence.phase == .delaying)
        #expect(sequence.delayElapsed() == .drain)
        #expect(sequence.phase == .draining)
        #expect(sequence.received(.terminate) == .none, "a signal during the drain changes nothing")
    }

    @Test func aSecondSignalSkipsTheRestOfTheDelay() {
        var sequence = ShutdownSequence(delay: .seconds(5))
        _ = sequence.received(.terminate)
        #expect(sequence.received(.terminate) == .drain)
        #expect(sequence.delayElapsed() == .none, "the delay's end after a second signal is not a second drain")
    }

    @Test func sigintSkipsTheDelay() {
        var sequence = ShutdownSequence(delay: .seconds(5))
        #expect(sequence.received(.interrupt) == .drain)
        var delaying = ShutdownSequence(delay: .seconds(5))
        _ = delaying.received(.terminate)
        #expect(delaying.received(.interrupt) == .drain)
    }

    @Test func aReloadChangesTheDelayOnlyBeforeItStarts() {
        var sequence = ShutdownSequence(delay: .zero)
        sequence.delayChanged(to: .seconds(3))
        #expect(sequence.received(.terminate) == .reportNotReadyAndWait(.seconds(3)))
        sequence.delayChanged(to: .seconds(30))
        #expect(sequence.delay == .seconds(3), "a delay already running keeps its length")
    }
}
