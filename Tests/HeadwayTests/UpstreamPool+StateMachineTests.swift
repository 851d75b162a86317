import NIOCore
import Testing

@testable import Headway

/// The pool's decisions on plain objects: which connection a request gets, warmth, keep-alive and drain.
struct UpstreamPoolStateMachineTests {
    final class Connection {
        let name: String
        init(_ name: String) { self.name = name }
    }

    typealias Machine = UpstreamPool.StateMachine<Connection>
    private let start = NIODeadline.uptimeNanoseconds(9_000_000_000_000)

    /// A pool with `connections` open and idle, released in order at `start`, `start + 1 s`, ...
    private func pool(minIdle: Int = 1, routable: Bool = true, idle connections: [Connection]) -> Machine {
        var machine = Machine(minIdle: minIdle)
        machine.routabilityChanged(routable)
        // All are opened for requests first, then come back one by one.
        for _ in connections {
            guard case .connect = machine.leaseRequested() else {
                Issue.record("a pool with nothing idle must connect")
                return machine
            }
            machine.connectFinished(isWarm: false, succeeded: true)
        }
        for (index, connection) in connections.enumerated() {
            _ = machine.released(connection, isReusable: true, now: self.start + .seconds(Int64(index)))
        }
        return machine
    }

    @Test func theMostRecentlyUsedConnectionIsLeasedFirst() {
        let (a, b) = (Connection("a"), Connection("b"))
        var machine = self.pool(idle: [a, b])
        guard case .lease(let first) = machine.leaseRequested() else {
            Issue.record("no lease")
            return
        }
        #expect(first === b)
        guard case .lease(let second) = machine.leaseRequested() else {
            Issue.record("no lease")
            return
        }
        #expect(second === a)
        guard case .connect = machine.leaseRequested() else {
            Issue.record("an empty pool must connect")
            return
        }
        #expect(machine.owned == 3)
    }

    @Test func warmConnectionsAreOpenedOnlyWhileRoutableAndNotDraining() {
        var machine = Machine(minIdle: 2)
        #expect(machine.warmConnectionsWanted() == 0, "not routable yet")
        machine.routabilityChanged(true)
        #expect(machine.warmConnectionsWanted() == 2)
        #expect(machine.warmConnectionsWanted() == 0, "two are warming already")
        machine.connectFinished(isWarm: true, succeeded: false)
        #expect(machine.warmConnectionsWanted() == 1, "a failed warm connect is replaced at the next call")
        _ = machine.drain()
        #expect(machine.warmConnectionsWanted() == 0)
    }

    @Test func aRefusedReservationUndoesTheCount() {
        var machine = Machine(minIdle: 1)
        machine.routabilityChanged(true)
        #expect(machine.warmConnectionsWanted() == 1)
        machine.connectNotStarted(isWarm: true)
        #expect(machine.isEmpty)
        #expect(machine.warmConnectionsWanted() == 1)
    }

    @Test func onlyCleanConnectionsAreKeptAndNoneWhileDraining() {
        let (a, b) = (Connection("a"), Connection("b"))
        var machine = self.pool(idle: [])
        _ = machine.leaseRequested()
        _ = machine.leaseRequested()
        #expect(machine.released(a, isReusable: false, now: self.start) == .close)
        #expect(machine.released(b, isReusable: true, now: self.start) == .keep)
        #expect(machine.idleCount == 1)
        let closing = machine.drain()
        #expect(closing.map(\.name) == ["b"], "the idle ones close at once")
        #expect(machine.released(a, isReusable: true, now: self.start) == .close, "a draining pool keeps nothing")
    }

    @Test func aClosedIdleConnectionLeavesTheIdleListAndTheCount() {
        let (a, b) = (Connection("a"), Connection("b"))
        var machine = self.pool(idle: [a, b])
        let wasIdle = machine.closed(a)
        #expect(wasIdle, "it was idle: the pool may warm another")
        #expect(machine.idleCount == 1)
        #expect(machine.owned == 1)
        guard case .lease(let connection) = machine.leaseRequested() else {
            Issue.record("no lease")
            return
        }
        #expect(connection === b)
        let leasedWasIdle = machine.closed(b)
        #expect(!leasedWasIdle, "a leased connection closing is not an idle one")
        #expect(machine.isEmpty)
    }

    @Test func theKeepAliveSweepClosesTheOldestButSparesTheWarmOnes() {
        let connections = (0..<4).map { Connection("c\($0)") }
        let routable = self.pool(minIdle: 1, idle: connections)
        // Idle since start + 0, 1, 2, 3 s; the cutoff is start + 2.5 s; the most recent one stays warm.
        let cutoff = self.start + .milliseconds(2500)
        #expect(routable.expiredIdleConnections(before: cutoff).map(\.name) == ["c0", "c1", "c2"])
        let down = self.pool(minIdle: 3, routable: false, idle: connections)
        #expect(
            down.expiredIdleConnections(before: cutoff).map(\.name) == ["c0", "c1", "c2"],
            "nothing is kept warm for an unroutable pod"
        )
        let warm = self.pool(minIdle: 3, idle: connections)
        #expect(warm.expiredIdleConnections(before: cutoff).map(\.name) == ["c0"])
    }

    @Test func aRevivedPoolServesAgain() {
        let a = Connection("a")
        var machine = self.pool(idle: [])
        _ = machine.drain()
        machine.revived()
        _ = machine.leaseRequested()
        #expect(machine.released(a, isReusable: true, now: self.start) == .keep)
    }
}
