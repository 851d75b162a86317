import NIOCore
import Testing

@testable import Headway

/// The h2c pool's decisions on plain values: which connection a stream goes on, when another connection is
/// opened, who waits for it, GOAWAY, idle expiry and drain.
struct UpstreamPoolHTTP2StateMachineTests {
    final class Connection: CustomStringConvertible {
        let name: String
        init(_ name: String) { self.name = name }
        var description: String { self.name }
    }

    typealias Machine = UpstreamPool.HTTP2StateMachine<Connection, Int>
    private let start = NIODeadline.uptimeNanoseconds(9_000_000_000_000)
    private var limit: Int { Machine.assumedStreamLimit }

    private func names(_ connections: [Connection]) -> [String] { connections.map(\.name) }

    /// A routable pool with `connection` open and no stream.
    private func pool(with connection: Connection, minIdle: Int = 0) -> Machine {
        var machine = Machine(minIdle: minIdle)
        machine.routabilityChanged(true)
        guard case .connect = machine.streamRequested(by: 0) else {
            Issue.record("an empty pool must connect")
            return machine
        }
        #expect(machine.connected(connection, now: self.start) == [0])
        _ = machine.streamClosed(on: connection, now: self.start)
        return machine
    }

    /// Limits `a` to one stream, gives it request 1, and opens `b` for request 2; `false` if the machine did not.
    private func fill(_ a: Connection, thenOpen b: Connection, in machine: inout Machine) -> Bool {
        _ = machine.streamLimitChanged(1, on: a)
        guard case .open = machine.streamRequested(by: 1), case .connect = machine.streamRequested(by: 2) else {
            Issue.record("a full, b opens")
            return false
        }
        #expect(machine.connected(b, now: self.start) == [2])
        return true
    }

    @Test func requestsWaitForTheConnectionBeingOpenedInsteadOfOpeningTheirOwn() {
        var machine = Machine(minIdle: 0)
        guard case .connect = machine.streamRequested(by: 1) else {
            Issue.record("the first request opens a connection")
            return
        }
        // Up to the assumed stream limit, later requests ride on the same connect.
        for waiter in 2...self.limit {
            guard case .wait = machine.streamRequested(by: waiter) else {
                Issue.record("request \(waiter) should wait for the opening connection")
                return
            }
        }
        guard case .connect = machine.streamRequested(by: self.limit + 1) else {
            Issue.record("past the limit a second connection opens")
            return
        }
        #expect(machine.opening == 2)
        let a = Connection("a")
        #expect(machine.connected(a, now: self.start) == Array(1...self.limit))
        #expect(machine.waiters == [self.limit + 1])
        #expect(machine.openStreams == self.limit)
    }

    @Test func streamsGoOnTheFullestConnectionWithRoomUpToThePodsLimit() {
        let a = Connection("a")
        var machine = self.pool(with: a)
        #expect(machine.streamLimitChanged(2, on: a) == [])
        for _ in 0..<2 {
            guard case .open(let on) = machine.streamRequested(by: 0), on === a else {
                Issue.record("a has room")
                return
            }
        }
        // The pod's SETTINGS said 2: the third request needs another connection.
        guard case .connect = machine.streamRequested(by: 3) else {
            Issue.record("a is full")
            return
        }
        let b = Connection("b")
        #expect(machine.connected(b, now: self.start) == [3])
        // One stream ends on a: the next goes to b, the fuller connection with room.
        #expect(machine.streamLimitChanged(100, on: b) == [])
        _ = machine.streamClosed(on: a, now: self.start)
        guard case .open(let next) = machine.streamRequested(by: 4) else {
            Issue.record("room on both")
            return
        }
        #expect(next === a || next === b)
        #expect(machine.openConnections == 2)
    }

    @Test func aStreamLimitThatGrowsLetsWaitersIn() {
        let a = Connection("a")
        var machine = self.pool(with: a)
        _ = machine.streamLimitChanged(1, on: a)
        guard case .open = machine.streamRequested(by: 1), case .connect = machine.streamRequested(by: 2) else {
            Issue.record("a takes one stream, the second request opens another connection")
            return
        }
        #expect(machine.streamLimitChanged(5, on: a) == [2])
    }

    @Test func aFailedConnectSendsItsWaitersElsewhere() {
        var machine = Machine(minIdle: 0)
        _ = machine.streamRequested(by: 1)
        _ = machine.streamRequested(by: 2)
        #expect(machine.connectFailed() == [1, 2])
        #expect(machine.isEmpty)
    }

    @Test func aConnectThatCouldNotStartWithdrawsItsRequestOnly() {
        var machine = Machine(minIdle: 0)
        _ = machine.streamRequested(by: 1)
        // The shared connection limit refused the connect this request asked for.
        #expect(machine.connectNotStarted(isWarm: false) == [])
        #expect(machine.waiters == [])
        #expect(machine.isEmpty)
    }

    @Test func goAwayStopsNewStreamsAndClosesAfterTheLast() {
        let a = Connection("a")
        var machine = self.pool(with: a)
        guard case .open = machine.streamRequested(by: 1) else {
            Issue.record("a has room")
            return
        }
        #expect(machine.goAwayReceived(on: a) == false)
        guard case .connect = machine.streamRequested(by: 2) else {
            Issue.record("no new stream on a connection going away")
            return
        }
        guard case .close(let closing) = machine.streamClosed(on: a, now: self.start), closing === a else {
            Issue.record("its last stream done, a closes")
            return
        }
        machine.closed(a)
        #expect(machine.openConnections == 0)
        #expect(machine.waiters == [2])
    }

    @Test func idleConnectionsExpireButTheWarmOnesStay() {
        let (a, b) = (Connection("a"), Connection("b"))
        var machine = Machine(minIdle: 1)
        machine.routabilityChanged(true)
        #expect(machine.warmConnectionsWanted() == 1)
        #expect(machine.connected(a, now: self.start) == [])
        #expect(machine.warmConnectionsWanted() == 0)
        guard self.fill(a, thenOpen: b, in: &machine) else { return }
        _ = machine.streamClosed(on: a, now: self.start)
        _ = machine.streamClosed(on: b, now: self.start + .seconds(1))
        // Both idle; the most recently idle one is the warm one kept.
        #expect(self.names(machine.expiredIdleConnections(before: self.start + .seconds(60))) == ["a"])
        machine.routabilityChanged(false)
        #expect(Set(self.names(machine.expiredIdleConnections(before: self.start + .seconds(60)))) == ["a", "b"])
    }

    @Test func aWarmConnectionNoRequestUsedExpiresOnceItIsNotWanted() {
        let a = Connection("a")
        var machine = Machine(minIdle: 1)
        machine.routabilityChanged(true)
        #expect(machine.warmConnectionsWanted() == 1)
        #expect(machine.connected(a, now: self.start) == [])
        #expect(machine.expiredIdleConnections(before: self.start + .seconds(60)).isEmpty, "it is the warm one")
        machine.minIdle = 0
        #expect(self.names(machine.expiredIdleConnections(before: self.start + .seconds(60))) == ["a"])
        #expect(machine.expiredIdleConnections(before: self.start).isEmpty, "not idle long enough")
    }

    @Test func drainClosesIdleConnectionsNowAndBusyOnesAfterTheirLastStream() {
        let (a, b) = (Connection("a"), Connection("b"))
        var machine = self.pool(with: a)
        guard self.fill(a, thenOpen: b, in: &machine) else { return }
        _ = machine.streamClosed(on: b, now: self.start)
        #expect(self.names(machine.drain()) == ["b"])
        machine.closed(b)
        #expect(machine.warmConnectionsWanted() == 0)
        guard case .close(let last) = machine.streamClosed(on: a, now: self.start), last === a else {
            Issue.record("a closes after its stream")
            return
        }
        machine.closed(a)
        #expect(machine.isEmpty)
    }
}
