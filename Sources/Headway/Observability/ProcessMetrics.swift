#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The process figures Prometheus users expect of every exporter (the names of client_golang's process
/// collector), read from `/proc` at each scrape. Off Linux, only what `getrlimit` gives.
struct ProcessMetrics: Equatable {
    var cpuSeconds: Double?
    var residentBytes: Int?
    var virtualBytes: Int?
    var startTimeSeconds: Double?
    var openFileDescriptors: Int?
    var maxFileDescriptors: Int?

    static func read() -> ProcessMetrics {
        var metrics = ProcessMetrics()
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            metrics.maxFileDescriptors = Int(limit.rlim_cur)
        }
        let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))
        let pageSize = sysconf(Int32(_SC_PAGESIZE))
        if let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
            let fields = Self.statFields(stat), fields.count > 21
        {
            // Fields after the command, numbered as in proc(5) minus 3: utime 14, stime 15, starttime 22,
            // vsize 23, rss 24.
            if let user = Double(fields[11]), let system = Double(fields[12]) {
                metrics.cpuSeconds = (user + system) / ticksPerSecond
            }
            if let start = Double(fields[19]), let bootTime = Self.bootTime() {
                metrics.startTimeSeconds = bootTime + start / ticksPerSecond
            }
            metrics.virtualBytes = Int(fields[20])
            metrics.residentBytes = Int(fields[21]).map { $0 * pageSize }
        }
        if let descriptors = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
            metrics.openFileDescriptors = descriptors.count
        }
        return metrics
    }

    /// The fields of `/proc/self/stat` after `(comm)`, which may itself hold spaces and parentheses.
    static func statFields(_ stat: String) -> [Substring]? {
        guard let end = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: end)...].split(separator: " ")
    }

    private static func bootTime() -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8) else { return nil }
        let line = stat.split(separator: "\n").first { $0.hasPrefix("btime ") }
        return line.flatMap { Double($0.dropFirst("btime ".count)) }
    }

    /// Prometheus text for the figures that could be read.
    var exposition: String {
        var text = ""
        func family(_ name: String, _ type: String, _ help: String, _ value: Double?) {
            guard let value else { return }
            text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n\(name) \(value)\n"
        }
        family("process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.", self.cpuSeconds)
        family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            self.residentBytes.map(Double.init)
        )
        family(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            self.virtualBytes.map(Double.init)
        )
        family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, in seconds.",
            self.startTimeSeconds
        )
        family(
            "process_open_fds",
            "gauge",
            "Open file descriptors.",
            self.openFileDescriptors.map(Double.init)
        )
        family(
            "process_max_fds",
            "gauge",
            "Limit on open file descriptors.",
            self.maxFileDescriptors.map(Double.init)
        )
        return text
    }
}
