import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The access log: one line per request, formatted on the request's event loop into that loop's buffer, and
/// handed to one writer thread when the buffer passes 64 KiB or after at most half a second. No event loop
/// ever waits on the disk or on a lock shared with another loop per request.
package final class AccessLog: Sendable {
    let settings: AccessLogSettings
    private let output: NIOLockedValueBox<CInt>
    private let writer: NIOThreadPool
    private let loops: [LoopAccessLog]

    /// Opens the destination (a file is created if missing and appended to) and starts the writer thread.
    init(settings: AccessLogSettings, eventLoops: [any EventLoop]) throws(AccessLogError) {
        self.settings = settings
        self.output = NIOLockedValueBox(try Self.openDestination(settings.path))
        self.writer = NIOThreadPool(numberOfThreads: 1)
        self.writer.start()
        var loops: [LoopAccessLog] = []
        for eventLoop in eventLoops {
            loops.append(LoopAccessLog(eventLoop: eventLoop, format: settings.format))
        }
        self.loops = loops
        for loop in loops {
            loop.log = self
        }
    }

    private static func openDestination(_ path: String) throws(AccessLogError) -> CInt {
        switch path {
        case "stdout": return STDOUT_FILENO
        case "stderr": return STDERR_FILENO
        default:
            let descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
            guard descriptor >= 0 else {
                throw AccessLogError(path: path, reason: String(cString: strerror(errno)))
            }
            return descriptor
        }
    }

    /// The buffer that requests served on `eventLoop` write their lines to.
    func loop(for eventLoop: any EventLoop) -> LoopAccessLog {
        for loop in self.loops where loop.eventLoop === eventLoop {
            return loop
        }
        preconditionFailure("event loop \(eventLoop) does not belong to this proxy's group")
    }

    /// Called by a loop with a full buffer: the bytes go to the writer thread, in the order loops hand them.
    func enqueue(_ bytes: ByteBuffer) {
        let output = self.output
        self.writer.submit { _ in
            // Run even when the pool is shutting down (`.cancelled`): the lines are already taken.
            output.withLockedValue { descriptor in
                bytes.withUnsafeReadableBytes { raw in
                    var offset = 0
                    while offset < raw.count {
                        let written = write(descriptor, raw.baseAddress! + offset, raw.count - offset)
                        if written < 0 && errno == EINTR { continue }
                        guard written > 0 else { return }  // A full disk or a closed pipe: the lines are lost.
                        offset += written
                    }
                }
            }
        }
    }

    /// Opens the path again (after log rotation moved the file away) and closes the old descriptor.
    func reopen() throws(AccessLogError) {
        let descriptor = try Self.openDestination(self.settings.path)
        let old = self.output.withLockedValue { output in
            let old = output
            output = descriptor
            return old
        }
        if old > STDERR_FILENO { close(old) }
    }

    /// Hands every loop's buffered lines to the writer, waits until they are written, and closes the file.
    func finish() async {
        for loop in self.loops {
            try? await loop.eventLoop.submit { loop.flush() }.get()
        }
        try? await self.writer.shutdownGracefully()
        let descriptor = self.output.withLockedValue { $0 }
        if descriptor > STDERR_FILENO { close(descriptor) }
    }
}

/// The access log file could not be opened: the path and the system's reason.
package struct AccessLogError: Error, CustomStringConvertible {
    package let path: String
    package let reason: String

    package var description: String { "access_log.path: cannot open \(self.path): \(self.reason)" }
}

/// One event loop's share of the access log: lines are formatted straight into `pending`.
///
/// `@unchecked Sendable`: shared only so that the ``AccessLog`` can post its final flush to `eventLoop`; every
/// other use is on that loop.
final class LoopAccessLog: @unchecked Sendable {
    let eventLoop: any EventLoop
    let format: AccessLogFormat
    /// Set once, by the log that owns this loop.
    weak var log: AccessLog?
    private var pending: ByteBuffer
    private var flushTimer: Scheduled<Void>?
    private var time = AccessLogTime()

    static let flushBytes = 64 * 1024
    static let flushDelay: TimeAmount = .milliseconds(500)

    init(eventLoop: any EventLoop, format: AccessLogFormat) {
        self.eventLoop = eventLoop
        self.format = format
        self.pending = ByteBuffer()
        self.pending.reserveCapacity(Self.flushBytes + 4096)
    }

    func record(_ entry: AccessLogEntry) {
        self.eventLoop.preconditionInEventLoop()
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        self.time.update(to: now)
        entry.write(self.format, at: self.time, into: &self.pending)
        if self.pending.readableBytes >= Self.flushBytes {
            self.flush()
        } else if self.flushTimer == nil {
            self.flushTimer = self.eventLoop.scheduleTask(in: Self.flushDelay) { [self] in
                self.flushTimer = nil
                self.flush()
            }
        }
    }

    func flush() {
        self.flushTimer?.cancel()
        self.flushTimer = nil
        guard self.pending.readableBytes > 0, let log = self.log else { return }
        let bytes = self.pending
        self.pending = ByteBuffer()
        self.pending.reserveCapacity(Self.flushBytes + 4096)
        log.enqueue(bytes)
    }
}
