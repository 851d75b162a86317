// The response path under libFuzzer: Headway's response parser fed arbitrary bytes (as a pod might send),
// in two pieces, then the close; each head is rebuilt for the client, and that head must parse again with
// the same status.
//
// A crash, a trap or a broken invariant is a finding; libFuzzer saves the input (keep it as a regression
// test in Tests/HeadwayTests/ResponseParserTests.swift).

import NIOCore

@testable import Headway

func responseFuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    // The first byte chooses the split point and what the request was (HEAD, an upgrade, or neither).
    let control = size > 0 ? bytes[0] : 0
    let isHeadRequest = control & 1 == 1
    let upgradeRequested = control & 2 == 2
    let split = min(Int(control), size)
    var parser = ResponseParser()
    parser.expectResponse()
    do {
        for piece in [bytes[..<split], bytes[split...]] {
            var buffer = ByteBuffer(bytes: piece)
            while let event = try parser.next(
                from: &buffer,
                isHeadRequest: isHeadRequest,
                upgradeRequested: upgradeRequested
            ) {
                switch event {
                case .head(let head), .informational(let head):
                    checkRebuiltHead(head)
                case .body, .trailers, .end:
                    break
                }
            }
        }
        _ = try parser.inputClosed()
    } catch {
        return 0  // Refused: the client gets 502 (or a truncated response); nothing more to check.
    }
    return 0
}

/// The head Headway writes for its client must be a valid response head with the same status.
private func checkRebuiltHead(_ head: ResponseHead) {
    var client = ByteBuffer()
    head.writeClientHead(
        into: &client,
        clientVersionMinor: 1,
        chunked: head.framing == .chunked,
        closeConnection: false
    )
    var parser = ResponseParser()
    parser.expectResponse()
    do {
        guard let event = try parser.next(from: &client, isHeadRequest: false, upgradeRequested: head.status == 101)
        else {
            fatalError("the rebuilt head is incomplete: \(String(buffer: client).debugDescription)")
        }
        switch event {
        case .head(let reparsed), .informational(let reparsed):
            precondition(reparsed.status == head.status, "status changed: \(head.status) -> \(reparsed.status)")
        case .body, .trailers, .end:
            fatalError("the rebuilt head parsed as a body")
        }
    } catch {
        fatalError("the rebuilt head does not parse (\(error.reason)): \(String(buffer: client).debugDescription)")
    }
}
