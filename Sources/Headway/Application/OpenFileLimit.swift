#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The process's open-file limit, raised at start-up as HAProxy and nginx do: every client connection and
/// every pod connection is a descriptor, and the usual soft limit (1,024) would refuse connections long
/// before `client.max_connections` (16,384 by default).
enum OpenFileLimit {
    /// Raises the soft limit to the hard one; returns the limit before and after (equal when nothing changed
    /// or the raise failed), or `nil` when the limit cannot be read.
    static func raiseToHardLimit() -> (before: Int, after: Int)? {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return nil }
        let before = limit.rlim_cur
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        return (Self.count(before), Self.count(limit.rlim_cur))
    }

    private static func count(_ value: rlim_t) -> Int {
        // RLIM_INFINITY is the largest value.
        value >= rlim_t(Int.max) ? Int.max : Int(value)
    }
}
