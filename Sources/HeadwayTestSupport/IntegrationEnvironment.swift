import Foundation

/// Which external programs the integration tests need, and whether they may be skipped.
///
/// On a developer's machine a missing program skips the tests that need it, with a message saying which.
/// With `HEADWAY_REQUIRE_INTEGRATION=1` (set by `.ci/run`) nothing is skipped: a missing program fails.
package enum IntegrationEnvironment {
    package static let requiredPrograms = [
        "nginx", "curl", "wrk", "dnsmasq", "promtool", "chromium", "h2load", "nghttp",
    ]

    package static var missingPrograms: [String] {
        Self.requiredPrograms.filter { Self.path(of: $0) == nil }
    }

    package static var isRequired: Bool {
        ProcessInfo.processInfo.environment["HEADWAY_REQUIRE_INTEGRATION"] == "1"
    }

    /// Whether integration tests run: every program is there, or they are required (and then fail loudly).
    package static var shouldRun: Bool {
        let missing = Self.missingPrograms
        if missing.isEmpty || Self.isRequired { return true }
        FileHandle.standardError.write(
            Data(
                "\n*** SKIPPING integration tests: missing \(missing.joined(separator: ", ")). Install them (see .ci/run). ***\n\n"
                    .utf8
            )
        )
        return false
    }

    /// The absolute path of `program` on `PATH` (plus /usr/sbin, where Debian puts nginx).
    package static func path(of program: String) -> String? {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin") + ":/usr/sbin:/usr/local/sbin"
        for directory in path.split(separator: ":") {
            let candidate = "\(directory)/\(program)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// The directory holding the built products (`headway` among them), found from the test binary's path.
    package static var productsDirectory: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
    }

    package static var headwayBinary: String {
        let direct = Self.productsDirectory.appendingPathComponent("headway").path
        if FileManager.default.isExecutableFile(atPath: direct) { return direct }
        // swift-testing may run from inside the .xctest bundle directory.
        return Self.productsDirectory.deletingLastPathComponent().appendingPathComponent("headway").path
    }
}
