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
            /// The pod may get the start of the request, or nothing: whether a head already went out when the
            /// bad part arrives depends on how the client's bytes were split into reads.
            var podMayGetThePrefix = false

            var testDescription: String { self.id }
        }

        static let cases: [Case] = [
            Case(
                id: "R1 CL and TE",
                request:
                    "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                status: 400
            ),
            Case(
                id: "R2 two CLs",
                request: "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
                status: 400
            ),
            Case(
                id: "R3 CL 4, 4",
                request: "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 4, 4\r\n\r\nabcd",
                status: 400
            ),
            Case(
                id: "R4 CL +4",
                request: "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: +4\r\n\r\nabcd",
                status: 400
            ),
            Case(
                id: "R4 CL 0004 is re-emitted from the integer",
                request: "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 0004\r\n\r\nabcd",
                status: 200,
                podSees: ["Content-Length: 4\r\n\r\nabcd"],
                podNeverSees: ["0004"]
            ),
            // RFC 9112 §6.3: chunked not last means the length cannot be known: 400 and close.
            Case(
                id: "R5 TE gzip",
                request: "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: gzip\r\n\r\n",
                status: 400
            ),
            Case(
                id: "R5 TE chunked, gzip",
                request: "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                status: 400
            ),
            Case(
                id: "R5 TE xchunked",
                request: "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: xchunked\r\n\r\n",
                status: 400
            ),
            Case(
                id: "R5 TE obs-folded",
                request: "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding:\r\n chunked\r\n\r\n",
                status: 400
            ),
            Case(
                id: "R6 TE gzip, chunked",
                request: "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                status: 501
            ),
            Case(
                id: "R6 TE Chunked is re-framed as exactly one chunked",
                request:
                    "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: Chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nTrailer-X: 1\r\n\r\n",
                status: 200,
                podSees: ["Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"],
                podNeverSees: ["Chunked", "ext=1", "Trailer-X"]
            ),
            Case(
                id: "R7 HTTP/1.0 with TE goes upstream as HTTP/1.1",
                request:
                    "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
                status: 200,
                podSees: ["POST / HTTP/1.1\r\n", "Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"],
                podNeverSees: ["keep-alive"]
            ),
            Case(id: "R8 obs-fold", request: "GET / HTTP/1.1\r\nHost: web\r\nX: a\r\n b\r\n\r\n", status: 400),
            Case(
                id: "R9 space before colon",
                request: "GET / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding : chunked\r\n\r\n",
                status: 400
            ),
            Case(id: "R10 bare LF", request: "GET / HTTP/1.1\nHost: web\n\n", status: 400),
            Case(id: "R10 bare CR", request: "GET / HTTP/1.1\r\nHost: web\r\nX: a\rb\r\n\r\n", status: 400),
            Case(id: "R11 NUL in a value", request: "GET / HTTP/1.1\r\nHost: web\r\nX: a\u{0}b\r\n\r\n", status: 400),
            Case(
                id: "R12 line without a colon",
                request: "GET / HTTP/1.1\r\nHost: web\r\nNoColon\r\n\r\n",
                status: 400
            ),
            // If the head has gone upstream before the bad chunk arrives, that upstream request is aborted; in
            // one read with it, the head is not flushed before the abort and the pod sees nothing.
            Case(
                id: "R15 bad chunk size",
                request: "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                status: 400,
                podNeverSees: ["zz"],
                podMayGetThePrefix: true
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
            Case(
                id: "R20 absolute form for another host",
                request: "GET http://other/ HTTP/1.1\r\nHost: web\r\n\r\n",
                status: 400
            ),
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
                request:
                    "GET /first HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\nGET /second HTTP/1.1\r\nHost: web\r\n\r\n",
                status: 200,
                podSees: ["GET /first "],
                podNeverSees: ["/second"]
            ),
            Case(
                id: "R26 hop-by-hop fields stay here",
                request:
                    "GET / HTTP/1.1\r\nHost: web\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n"
                    + "Proxy-Connection: keep-alive\r\nTE: trailers\r\nX-Kept: yes\r\n\r\n",
                status: 200,
                podSees: ["X-Kept: yes\r\n", "Via: 1.1 headway\r\n", "X-Forwarded-For: 127.0.0.1\r\n"],
                podNeverSees: ["X-Secret", "Keep-Alive", "Proxy-Connection", "TE: trailers"]
            ),
        ]

        @Test(arguments: Self.cases)
        func requestFraming(_ testCase: Case) async throws {
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let pod = try await ScriptedPod.start(
                host: "127.0.0.2",
                port: NginxPods.port,
                behaviour: .recordAndAnswer,
                group: group
            )
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = [pod.address] }
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
            if testCase.podMayGetThePrefix {
                #expect(
                    atPod.isEmpty || atPod.hasPrefix(String(testCase.request.prefix { $0 != "\r\n" })),
                    "the pod got something other than the request's start: \(atPod.debugDescription)"
                )
            } else if testCase.podSees.isEmpty {
                #expect(atPod.isEmpty, "a refused request reached the pod: \(atPod.debugDescription)")
            }
            for text in testCase.podSees {
                #expect(
                    atPod.contains(text),
                    "the pod did not get \(text.debugDescription) in \(atPod.debugDescription)"
                )
            }
            for text in testCase.podNeverSees {
                #expect(!atPod.contains(text), "the pod got \(text.debugDescription): \(atPod.debugDescription)")
            }
        }
    }

    /// HTTP-EDGE-CASES.md §3, "Upstream faults": a pod that answers with exactly these bytes, and what the
    /// client gets for them.
    @Suite struct UpstreamFaultTable {
        struct Case: CustomTestStringConvertible, Sendable {
            var id: String
            var response: String
            var podCloses = false
            var request = "GET / HTTP/1.1\r\nHost: web\r\n\r\n"
            /// The client's status line must start with this.
            var status: String
            /// Texts the client's bytes must contain, and must not.
            var clientSees: [String] = []
            var clientNeverSees: [String] = []

            var testDescription: String { self.id }
        }

        static let cases: [Case] = [
            Case(id: "U5 garbage status line", response: "HTTP/1.1 OK\r\n\r\n", status: "HTTP/1.1 502"),
            Case(
                id: "U5 obs-fold",
                response: "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
                status: "HTTP/1.1 502"
            ),
            Case(
                id: "U5 bare LF",
                response: "HTTP/1.1 200 OK\nContent-Length: 0\n\n",
                podCloses: true,
                status: "HTTP/1.1 502"
            ),
            Case(
                id: "U5 two CLs",
                response: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                status: "HTTP/1.1 502"
            ),
            Case(
                id: "U5 CL and TE",
                response: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                status: "HTTP/1.1 502"
            ),
            Case(
                id: "U6 status 600",
                response: "HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n",
                status: "HTTP/1.1 502"
            ),
            Case(
                id: "U6 status 099",
                response: "HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n",
                status: "HTTP/1.1 502"
            ),
            Case(
                id: "U7 204 with a body",
                response: "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                status: "HTTP/1.1 204",
                clientNeverSees: ["Content-Length"]
            ),
            Case(
                id: "U8 101 nobody asked for",
                response: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
                status: "HTTP/1.1 502"
            ),
            Case(
                id: "U8 103 then 200 are both relayed",
                response:
                    "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                status: "HTTP/1.1 103",
                clientSees: ["Link: </a.css>", "HTTP/1.1 200 OK", "\r\n\r\nok"]
            ),
            Case(
                id: "U8 no 1xx for an HTTP/1.0 client",
                response:
                    "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                request: "GET / HTTP/1.0\r\n\r\n",
                status: "HTTP/1.1 200",
                clientNeverSees: ["103"]
            ),
            Case(
                id: "U9 close-delimited body is re-chunked for HTTP/1.1",
                response: "HTTP/1.1 200 OK\r\n\r\nuntil the end",
                podCloses: true,
                status: "HTTP/1.1 200",
                clientSees: ["Transfer-Encoding: chunked\r\n", "until the end", "0\r\n\r\n"]
            ),
            Case(
                id: "U10 bytes after the response never reach the client",
                response:
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsmuggl",
                status: "HTTP/1.1 200",
                clientSees: ["\r\n\r\nok"],
                clientNeverSees: ["smuggl"]
            ),
            Case(
                id: "U11 huge response head",
                response: "HTTP/1.1 200 OK\r\nX: " + String(repeating: "a", count: 70_000)
                    + "\r\nContent-Length: 0\r\n\r\n",
                status: "HTTP/1.1 502"
            ),
            Case(
                id: "U12 hop-by-hop response fields are stripped",
                response: "HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: secret\r\nKeep-Alive: timeout=1\r\n"
                    + "Trailer: X-T\r\nX-Public: yes\r\nContent-Length: 2\r\n\r\nok",
                status: "HTTP/1.1 200",
                clientSees: ["X-Public: yes"],
                clientNeverSees: ["X-Internal", "Keep-Alive", "Trailer"]
            ),
            Case(
                id: "U4 truncated after the head: the client sees no clean end",
                response: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b",
                podCloses: true,
                status: "HTTP/1.1 200",
                clientSees: ["only ten b"]
            ),
        ]

        @Test(arguments: Self.cases)
        func upstreamFault(_ testCase: Case) async throws {
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let pod = try await ScriptedPod.start(
                host: "127.0.0.2",
                port: NginxPods.port,
                behaviour: .respond(testCase.response, thenClose: testCase.podCloses),
                group: group
            )
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = [pod.address] }
            let answer = try await RawHTTP.exchange(
                host: "127.0.0.1",
                port: headway.listen.port!,
                request: testCase.request,
                timeout: 3,
                halfClose: true
            )
            try await headway.stop()
            try await pod.stop()
            try await group.shutdownGracefully()
            #expect(answer.hasPrefix(testCase.status), "\(answer.debugDescription)")
            for text in testCase.clientSees {
                #expect(
                    answer.contains(text),
                    "the client did not get \(text.debugDescription) in \(answer.debugDescription)"
                )
            }
            for text in testCase.clientNeverSees {
                #expect(!answer.contains(text), "the client got \(text.debugDescription): \(answer.debugDescription)")
            }
        }

        /// A pod that answers a POST before its body was sent: the rest of the request cannot follow on that
        /// connection, so the relayed head itself says `Connection: close`; without it a keep-alive client sends
        /// its next request into the close (found by scripts/chaos: Python's http.client saw RemoteDisconnected).
        @Test func anAnswerBeforeTheBodyTellsTheClientTheConnectionCloses() async throws {
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let pod = try await ScriptedPod.start(
                host: "127.0.0.2",
                port: NginxPods.port,
                behaviour: .respond(
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy",
                    thenClose: false
                ),
                group: group
            )
            let headway = try await InProcessHeadway.start { $0[list: "--endpoints"] = [pod.address] }
            let client = try RawConnection(host: "127.0.0.1", port: headway.listen.port!)
            try client.send("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
            let answer = await client.readUntilClosed(timeout: 3)
            client.close()
            try await headway.stop()
            try await pod.stop()
            try await group.shutdownGracefully()
            #expect(answer.text.hasPrefix("HTTP/1.1 503"), "\(answer.text.debugDescription)")
            #expect(answer.text.lowercased().contains("connection: close\r\n"), "\(answer.text.debugDescription)")
            #expect(answer.closedAfter != nil, "Headway keeps the connection it said it closes")
        }
    }
}
