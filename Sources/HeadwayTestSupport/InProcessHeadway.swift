import Headway
import Logging
import NIOCore

/// A Headway application running inside the test process, on port 0, stopped by the test.
package struct InProcessHeadway: Sendable {
    package let application: HeadwayApplication
    package let listen: SocketAddress
    package let admin: SocketAddress
    package let task: Task<Void, any Error>

    package var listenURL: String { "http://127.0.0.1:\(self.listen.port!)" }
    package var adminURL: String { "http://127.0.0.1:\(self.admin.port!)" }

    /// Starts Headway with `yaml` or the given flags (listen and admin default to free ports on 127.0.0.1).
    package static func start(
        yaml: String? = nil,
        configure: (inout ConfigurationOverrides) -> Void = { _ in }
    ) async throws -> InProcessHeadway {
        var overrides = ConfigurationOverrides()
        overrides["--admin"] = "127.0.0.1:0"
        if yaml == nil { overrides["--listen"] = "127.0.0.1:0" }
        overrides["--threads"] = "1"
        configure(&overrides)
        let configuration = try HeadwayConfiguration.load(yaml: yaml, overrides: overrides)
        var logger = Logger(label: "headway-test")
        logger.logLevel = .warning
        let application = try HeadwayApplication(configuration: configuration, logger: logger, handleSignals: false)
        let task = Task { try await application.run() }
        guard let bound = await application.waitUntilBound() else {
            _ = try await task.value
            throw CommandError(description: "headway stopped before it was bound")
        }
        return InProcessHeadway(application: application, listen: bound.listeners[0], admin: bound.admin, task: task)
    }

    package func stop() async throws {
        await self.application.triggerGracefulShutdown()
        try await self.task.value
    }
}
