import Foundation
import Headway
import HeadwayTestSupport
import NIOCore
import NIOPosix
import Testing

extension IntegrationTests {
    /// HTTP-EDGE-CASES.md §3, "Request framing", one row per case: raw bytes to a running Headway, the
    /// status the client gets, and the raw bytes the pod received (recorded before any parsing).
    @Suite struct RequestFramingTable {
        struct Case: CustomTestStringConvertible, Sendable {
            var id: String
            var request: String
            /// The status the client must get (200 means the pod answered).
            var status: Int
            /// Texts the bytes at the pod must contain (empty: the request must not reach the pod at all).
            var podSees: [String] = []
            /// Texts that must not be in the bytes at the pod.
            var podNeverSees: [String] = []

            var testDescription: String { self.id }
        }

        static let cases: [Case] = [
            Case(id: "R1 CL and TE", request: "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", status: 400),
            Case(id: "R2 two CLs", request: "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", status: 400),
            Case(id: "R3 CL 4, 4", request: "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 4, 4\r\n\r\nabcd", status: 400),
            Case(id: "R4 CL +4", request: "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: +4\r\n\r\nabcd", status: 400),
            Case(
                id: "R4 CL 0004 is re-emitted from the integer",
                request: "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 0004\r\n\r\nabcd",
                status: 200,
                podSees: ["Content-Length: 4\r\n\r\nabcd"],
                podNeverSees: ["0004"]
            ),
            Case(id: "R5 TE gzip", request: "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: gzip\r\n\r\n", status: 501),
            Case(id: "R5 TE chunked, gzip", request: "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", status: 501),
            Case(
                id: "R6 TE Chunked is re-framed as exactly one chunked",
                request: "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: Chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nTrailer-X: 1\r\n\r\n",
                status: 200,
                podSees: ["Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"],
                podNeverSees: ["Chunked", "ext=1", "Trailer-X"]
            ),
            Case(
                id: "R7 HTTP/1.0 with TE goes upstream as HTTP/1.1",
                request: "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
                status: 200,
                podSees: ["POST / HTTP/1.1\r\n", "Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"],
                podNeverSees: ["keep-alive"]
            ),
            Case(id: "R8 obs-fold", request: "GET / HTTP/1.1\r\nHost: web\r\nX: a\r\n b\r\n\r\n", status: 400),
            Case(id: "R9 space before colon", request: "GET / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding : chunked\r\n\r\n", status: 400),
            Case(id: "R10 bare LF", request: "GET / HTTP/1.1\nHost: web\n\n", status: 400),
            Case(id: "R10 bare CR", request: "GET / HTTP/1.1\r\nHost: web\r\nX: a\rb\r\n\r\n", status: 400),
            Case(id: "R11 NUL in a value", request: "GET / HTTP/1.1\r\nHost: web\r\nX: a\u{0}b\r\n\r\n", status: 400),
            Case(id: "R12 line without a colon", request: "GET / HTTP/1.1\r\nHost: web\r\nNoColon\r\n\r\n", status: 400),
            // The head has gone upstream before the bad chunk arrives: that upstream request is aborted.
            Case(
                id: "R15 bad chunk size",
                request: "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                status: 400,
                podSees: ["Transfer-Encoding: chunked\r\n\r\n"],
                podNeverSees: ["zz"]
            ),
            Case(id: "R19 no Host", request: "GET / HTTP/1.1\r\n\r\n", status: 400),
            Case(id: "R19 two Hosts", request: "GET / HTTP/1.1\r\nHost: web\r\nHost: other\r\n\r\n", status: 400),
            Case(id: "R19 invalid Host", request: "GET / HTTP/1.1\r\nHost: a b@c\r\n\r\n", status: 400),
            Case(
                id: "R20 absolute form reaches the pod in origin form",
                request: "GET http://web/a?b HTTP/1.1\r\nHost: web\r\n\r\n",
                status: 200,
                podSees: ["GET /a?b HTTP/1.1\r\n"],
                podNeverSees: ["http://"]
            ),
            Case(id: "R20 absolute form for another host", request: "GET http://other/ HTTP/1.1\r\nHost: web\r\n\r\n", status: 400),
            Case(id: "R20 * outside OPTIONS", request: "GET * HTTP/1.1\r\nHost: web\r\n\r\n", status: 400),
            Case(id: "R20 fragment", request: "GET /a#frag HTTP/1.1\r\nHost: web\r\n\r\n", status: 400),
            Case(id: "R20 CONNECT", request: "CONNECT web:443 HTTP/1.1\r\nHost: web:443\r\n\r\n", status: 405),
            Case(
                id: "R22 extension method",
                request: "QUERY /q HTTP/1.1\r\nHost: web\r\nContent-Length: 2\r\n\r\nq1",
                status: 200,
                podSees: ["QUERY /q HTTP/1.1\r\n", "Content-Length: 2\r\n\r\nq1"]
            ),
            Case(
                id: "R23 GET with a body is framed explicitly",
                request: "GET / HTTP/1.1\r\nHost: web\r\nContent-Length: 3\r\n\r\nabc",
                status: 200,
                podSees: ["Content-Length: 3\r\n\r\nabc"]
            ),
            Case(id: "R23 TRACE", request: "TRACE / HTTP/1.1\r\nHost: web\r\n\r\n", status: 405),
            Case(
                id: "R24 nothing after Connection: close",
                request: "GET /first HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\nGET /second HTTP/1.1\r\nHost: web\r\n\r\n",
                status: 200,
                podSees: ["GET /first "],
                podNeverSees: ["/second"]
            ),
            Case(
                id: "R26 hop-by-hop fields stay here",
                request: "GET / HTTP/1.1\r\nHost: web\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n"
                    + "Proxy-Connection: keep-alive\r\nTE: trailers\r\nX-Kept: yes\r\n\r\n",
                status: 200,
                podSees: ["X-Kept: yes\r\n", "Via: 1.1 headway\r\n", "X-Forwarded-For: 127.0.0.1\r\n"],
                podNeverSees: ["X-Secret", "Keep-Alive", "Proxy-Connection", "TE: trailers"]
            ),
        ]

        @Test(arguments: Self.cases)
        func requestFraming(_ testCase: Case) async throws {
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let pod = try await ScriptedPod.start(host: "127.0.0.2", port: NginxPods.port, behaviour: .recordAndAnswer, group: group)
            let headway = try await InProcessHeadway.start { $0.endpoints = [pod.address] }
            let answer = try await RawHTTP.exchange(
                host: "127.0.0.1",
                port: headway.listen.port!,
                request: testCase.request,
                timeout: 5,
                halfClose: true
            )
            try await headway.stop()
            let atPod = pod.receivedBytes
            try await pod.stop()
            try await group.shutdownGracefully()

            let status = answer.split(separator: " ", maxSplits: 2).dropFirst().first.flatMap { Int($0) }
            #expect(status == testCase.status, "\(answer.debugDescription)")
            if testCase.podSees.isEmpty {
                #expect(atPod.isEmpty, "a refused request reached the pod: \(atPod.debugDescription)")
            }
            for text in testCase.podSees {
                #expect(atPod.contains(text), "the pod did not get \(text.debugDescription) in \(atPod.debugDescription)")
            }
            for text in testCase.podNeverSees {
                #expect(!atPod.contains(text), "the pod got \(text.debugDescription): \(atPod.debugDescription)")
            }
        }

        @Test func expectContinueIsForwardedWithoutWaitingForTheBody() async throws {
            // R25: curl sends `Expect: 100-continue` for this upload and waits up to 1 s for the 100 before it
            // sends the body; Headway must forward the head at once so that the pod's 100 comes back.
            let pods = try await NginxPods.start(count: 1)
            defer { pods.stop() }
            let upload = temporaryFile("upload")
            try TestData.writeRandomFile(to: upload, size: 2048)
            defer { try? FileManager.default.removeItem(at: upload) }
            let headway = try await InProcessHeadway.start { $0.endpoints = pods.endpoints }
            let result = try await curl(
                ["--output", "/dev/null", "--write-out", "%{http_code} %{time_total}", "--upload-file", upload.path,
                 "--header", "Expect: 100-continue", headway.listenURL + "/upload"]
            )
            try await headway.stop()
            let fields = result.stdout.split(separator: " ")
            #expect(fields.first == "200", "\(result.stdout)")
            #expect((Double(fields.last ?? "") ?? 9) < 0.5, "the upload stalled waiting for 100 Continue: \(result.stdout)")
        }
    }
}
