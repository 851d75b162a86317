// The request path under libFuzzer: Headway's request parser and checks, fed arbitrary bytes in two
// pieces, and the head rebuilt for the upstream, which must parse again to the same framing.
//
// A crash, a trap or a broken invariant is a finding; libFuzzer saves the input (keep it as a regression
// test in Tests/HeadwayTests/RequestParserTests.swift).

import NIOCore

@testable import Headway

func requestFuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    // The first byte chooses where the input is split, so that incremental parsing is exercised too.
    let split = size > 0 ? min(Int(bytes[0]), size) : 0
    var parser = RequestParser()
    for piece in [bytes[..<split], bytes[split...]] {
        var buffer = ByteBuffer(bytes: piece)
        do {
            while let event = try parser.next(from: &buffer) {
                if case .head(let head) = event {
                    checkRebuiltHead(head)
                }
            }
        } catch {
            return 0  // Refused: the proxy answers 4xx/5xx and closes; nothing more to check.
        }
    }
    return 0
}

/// The head Headway sends upstream must be a valid request with the framing it parsed.
private func checkRebuiltHead(_ head: RequestHead) {
    var upstream = ByteBuffer()
    head.writeUpstreamHead(into: &upstream, clientIP: "127.0.0.1")
    var parser = RequestParser()
    let reparsed: RequestHead
    do {
        guard case .head(let parsed)? = try parser.next(from: &upstream) else {
            fatalError("the rebuilt head is incomplete: \(String(buffer: upstream).debugDescription)")
        }
        reparsed = parsed
    } catch {
        // An HTTP/1.0 request may come without Host; it goes upstream without one (as HTTP/1.1).
        if head.versionMinor == 0, error.reason == "missing Host" { return }
        fatalError("the rebuilt head does not parse (\(error.reason)): \(String(buffer: upstream).debugDescription)")
    }
    precondition(reparsed.framing == head.framing, "framing changed: \(head.framing) -> \(reparsed.framing)")
    precondition(reparsed.method == head.method || head.method == .other, "method changed")
}
