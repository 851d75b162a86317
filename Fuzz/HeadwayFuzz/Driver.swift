// One libFuzzer binary for every fuzz target: `HEADWAY_FUZZ_TARGET` (request, response or http2) chooses the
// function libFuzzer's driver calls; all other arguments are libFuzzer's own.

#if canImport(Glibc)
import Glibc
#endif

@_silgen_name("LLVMFuzzerRunDriver")
private func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt

/// The target chosen at start-up; set once, before libFuzzer's driver runs.
nonisolated(unsafe) private var selectedTarget: (UnsafePointer<UInt8>, Int) -> CInt = requestFuzz

/// libFuzzer's runtime refers to this symbol; it runs the chosen target.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    selectedTarget(data, size)
}

/// SwiftPM links an executable target's entry point under this name.
@_cdecl("HeadwayFuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    let target = getenv("HEADWAY_FUZZ_TARGET").map { String(cString: $0) } ?? "request"
    switch target {
    case "request": selectedTarget = requestFuzz
    case "response": selectedTarget = responseFuzz
    case "http2": selectedTarget = http2Fuzz
    default:
        print("HEADWAY_FUZZ_TARGET must be request, response or http2, not \(target)")
        return 2
    }
    return runFuzzerDriver(&argc, &argv, fuzzOneInput)
}
