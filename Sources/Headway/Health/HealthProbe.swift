import Logging
import NIOCore
import NIOPosix

/// Checks one endpoint every `interval`, on one event loop, over a connection of its own.
///
/// HTTP checks keep their connection alive between checks (one connect per endpoint, not one per check, so a
/// fleet of sidecars checking 150 pods leaves no TIME_WAIT trail) and never borrow a pooled connection, so a
/// check never waits behind a request or makes one wait. TCP checks open a connection and close it.
///
/// `@unchecked Sendable`: the checker keeps probes in a locked table and reaches them only through
/// `eventLoop.execute`; all state is touched on `eventLoop` only.
final class HealthProbe: @unchecked Sendable {
    let endpoint: Endpoint
    let eventLoop: any EventLoop
    private var machine: StateMachine
    private let report: @Sendable (_ endpoint: Endpoint, _ passed: Bool, _ detail: String) -> Void
    private let request: ByteBuffer
    private var connection: HealthCheckConnection?
    private var nextCheck: Scheduled<Void>?
    private var timeout: Scheduled<Void>?

    private var settings: HealthCheckSettings { self.machine.settings }

    init(
        endpoint: Endpoint,
        eventLoop: any EventLoop,
        settings: HealthCheckSettings,
        report: @escaping @Sendable (_ endpoint: Endpoint, _ passed: Bool, _ detail: String) -> Void
    ) {
        self.endpoint = endpoint
        self.eventLoop = eventLoop
        self.machine = StateMachine(settings: settings)
        self.report = report
        let host = settings.host ?? endpoint.label
        self.request = ByteBuffer(
            string: "GET \(settings.path) HTTP/1.1\r\nHost: \(host)\r\nUser-Agent: headway-health-check\r\n\r\n"
        )
    }

    /// Starts checking now: a new endpoint waits for its first passing check, so it should come soon.
    func start() {
        self.eventLoop.execute { self.runCheck() }
    }

    func stop() {
        self.eventLoop.assertInEventLoop()
        self.machine.stopped()
        self.nextCheck?.cancel()
        self.timeout?.cancel()
        self.connection?.close()
        self.connection = nil
    }

    private func runCheck() {
        guard let number = self.machine.checkDue() else { return }
        self.timeout = self.eventLoop.scheduleTask(in: self.settings.timeout) {
            self.finish(number, .timedOut)
        }
        if self.settings.kind == .http, let connection = self.connection, connection.isOpen {
            connection.send(self.request) { result in self.httpCheckEnded(number, result) }
            return
        }
        self.connect(for: number)
    }

    private func connect(for number: Int) {
        let kind = self.settings.kind
        ClientBootstrap(group: self.eventLoop)
            .connectTimeout(self.settings.timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if kind == .http {
                        try channel.pipeline.syncOperations.addHandler(HealthCheckConnection())
                    }
                }
            }
            .connect(to: self.endpoint.address)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .failure(let error):
                    self.finish(number, .failed("connect failed: \(ProxyError.describe(error))"))
                case .success(let channel):
                    guard self.machine.isCurrent(number) else {
                        channel.close(promise: nil)
                        return
                    }
                    switch kind {
                    case .tcp:
                        channel.close(promise: nil)
                        self.finish(number, .connected)
                    case .http:
                        guard
                            let connection = try? channel.pipeline.syncOperations.handler(
                                type: HealthCheckConnection.self
                            )
                        else {
                            channel.close(promise: nil)
                            self.finish(number, .failed("connection closed at once"))
                            return
                        }
                        self.connection = connection
                        connection.send(self.request) { result in self.httpCheckEnded(number, result) }
                    }
                }
            }
    }

    private func httpCheckEnded(
        _ number: Int,
        _ result: Result<HealthCheckConnection.Answer, HealthCheckConnection.Failure>
    ) {
        switch result {
        case .success(let answer):
            self.finish(number, .answered(status: answer.status, keepAlive: answer.keepAlive))
        case .failure(let failure):
            self.finish(number, .failed(failure.reason))
        }
    }

    private func finish(_ number: Int, _ outcome: StateMachine.Outcome) {
        guard let verdict = self.machine.checkEnded(number, outcome) else { return }
        self.timeout?.cancel()
        self.timeout = nil
        if verdict.closeConnection {
            self.connection?.close()
            self.connection = nil
        }
        self.report(self.endpoint, verdict.passed, verdict.detail)
        let delay = self.machine.nextCheckDelay(factor: Double.random(in: -1...1))
        self.nextCheck = self.eventLoop.scheduleTask(in: delay) { self.runCheck() }
    }
}

/// The pipeline of a health-check connection: sends a check request, reads its answer's status.
final class HealthCheckConnection: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    struct Answer {
        var status: UInt
        var keepAlive: Bool
    }

    struct Failure: Error {
        var reason: String
    }

    private var context: ChannelHandlerContext?
    private var parser = ResponseParser()
    private var pending: ((Result<Answer, Failure>) -> Void)?
    private var answer: Answer?
    private(set) var isOpen = true

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func send(_ request: ByteBuffer, completion: @escaping (Result<Answer, Failure>) -> Void) {
        self.pending = completion
        self.answer = nil
        self.parser.expectResponse()
        self.context?.writeAndFlush(self.wrapOutboundOut(request), promise: nil)
    }

    func close() {
        guard self.isOpen else { return }
        self.isOpen = false
        self.pending = nil
        self.context?.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = self.unwrapInboundIn(data)
        guard self.pending != nil else {
            self.close()  // Bytes nobody asked for: this connection cannot be trusted for the next check.
            return
        }
        do {
            while let event = try self.parser.next(from: &buffer, isHeadRequest: false) {
                switch event {
                case .informational, .body, .trailers:
                    continue
                case .head(let head):
                    self.answer = Answer(status: head.status, keepAlive: head.isKeepAlive)
                case .end:
                    let completion = self.pending
                    self.pending = nil
                    if buffer.readableBytes > 0 { self.close() }
                    completion?(.success(self.answer!))
                    return
                }
            }
        } catch {
            self.fail("invalid response: \(error.reason)")
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.fail("connection error: \(error)")
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.isOpen = false
        if let end = try? self.parser.inputClosed(), case .end = end, let answer = self.answer,
            let completion = self.pending
        {
            self.pending = nil
            completion(.success(Answer(status: answer.status, keepAlive: false)))
        } else {
            self.fail("connection closed before the answer")
        }
    }

    private func fail(_ reason: String) {
        let completion = self.pending
        self.close()
        completion?(.failure(Failure(reason: reason)))
    }
}

@available(*, unavailable)
extension HealthCheckConnection: Sendable {}
