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
    private let settings: HealthCheckSettings
    private let report: @Sendable (_ endpoint: Endpoint, _ passed: Bool, _ detail: String) -> Void
    private let request: ByteBuffer
    private var connection: HealthCheckConnection?
    private var nextCheck: Scheduled<Void>?
    private var timeout: Scheduled<Void>?
    /// The number of the check under way, if one is; results of earlier checks are ignored.
    private var checkUnderWay: Int?
    private var checkNumber = 0
    private var isStopped = false

    init(
        endpoint: Endpoint,
        eventLoop: any EventLoop,
        settings: HealthCheckSettings,
        report: @escaping @Sendable (_ endpoint: Endpoint, _ passed: Bool, _ detail: String) -> Void
    ) {
        self.endpoint = endpoint
        self.eventLoop = eventLoop
        self.settings = settings
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
        self.isStopped = true
        self.nextCheck?.cancel()
        self.timeout?.cancel()
        self.checkUnderWay = nil
        self.connection?.close()
        self.connection = nil
    }

    private func runCheck() {
        guard !self.isStopped else { return }
        self.checkNumber += 1
        let number = self.checkNumber
        self.checkUnderWay = number
        self.timeout = self.eventLoop.scheduleTask(in: self.settings.timeout) {
            // The connection may hold a late answer that must not pass the next check: it goes.
            self.connection?.close()
            self.connection = nil
            self.finish(number, passed: false, detail: "no answer within \(DurationText.format(self.settings.timeout))")
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
                    self.finish(number, passed: false, detail: "connect failed: \(ProxyError.describe(error))")
                case .success(let channel):
                    guard self.checkUnderWay == number, !self.isStopped else {
                        channel.close(promise: nil)
                        return
                    }
                    switch kind {
                    case .tcp:
                        channel.close(promise: nil)
                        self.finish(number, passed: true, detail: "connected")
                    case .http:
                        guard
                            let connection = try? channel.pipeline.syncOperations.handler(
                                type: HealthCheckConnection.self
                            )
                        else {
                            channel.close(promise: nil)
                            self.finish(number, passed: false, detail: "connection closed at once")
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
            if !answer.keepAlive {
                self.connection?.close()
                self.connection = nil
            }
            let passed = self.settings.isExpected(status: Int(answer.status))
            self.finish(number, passed: passed, detail: "HTTP \(answer.status)")
        case .failure(let failure):
            self.connection = nil
            self.finish(number, passed: false, detail: failure.reason)
        }
    }

    private func finish(_ number: Int, passed: Bool, detail: String) {
        guard self.checkUnderWay == number, !self.isStopped else { return }
        self.checkUnderWay = nil
        self.timeout?.cancel()
        self.timeout = nil
        self.report(self.endpoint, passed, detail)
        let interval = self.settings.interval.nanoseconds
        let spread = interval * Int64(self.settings.jitterPercent) / 100
        let delay = interval + (spread > 0 ? Int64.random(in: -spread...spread) : 0)
        self.nextCheck = self.eventLoop.scheduleTask(in: .nanoseconds(max(delay, 1_000_000))) { self.runCheck() }
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
                case .informational, .body:
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
