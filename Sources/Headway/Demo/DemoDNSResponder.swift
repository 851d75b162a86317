import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A minimal DNS responder for `headway demo` only: it answers A queries for one name with the current list
/// of demo pods (TTL 1 s), NODATA for other types of that name and NXDOMAIN for anything else. It lets the
/// demo show discovery without installing a DNS server; the tests use a real one (dnsmasq).
package final class DemoDNSResponder: Sendable {
    package let name: String
    package let address: SocketAddress
    private let channel: any Channel
    private let records: NIOLockedValueBox<[[UInt8]]>

    private init(name: String, address: SocketAddress, channel: any Channel, records: NIOLockedValueBox<[[UInt8]]>) {
        self.name = name
        self.address = address
        self.channel = channel
        self.records = records
    }

    /// Starts answering for `name` on a free UDP port of 127.0.0.1.
    package static func start(
        name: String,
        addresses: [String],
        group: any EventLoopGroup
    ) async throws -> DemoDNSResponder {
        let records = NIOLockedValueBox(Self.packed(addresses))
        let wireName = Self.wireName(name)
        let channel = try await DatagramBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Responder(name: wireName, records: records))
                }
            }
            .bind(to: try SocketAddress(ipAddress: "127.0.0.1", port: 0))
            .get()
        return DemoDNSResponder(name: name, address: channel.localAddress!, channel: channel, records: records)
    }

    /// Replaces the addresses the name resolves to.
    package func setAddresses(_ addresses: [String]) {
        self.records.withLockedValue { $0 = Self.packed(addresses) }
    }

    package func stop() async throws {
        try await self.channel.close()
    }

    private static func packed(_ addresses: [String]) -> [[UInt8]] {
        addresses.compactMap { address in
            let parts = address.split(separator: ".").compactMap { UInt8($0) }
            return parts.count == 4 ? parts : nil
        }
    }

    /// The name in DNS wire format, lowercased: length-prefixed labels and a zero byte.
    fileprivate static func wireName(_ name: String) -> [UInt8] {
        var bytes: [UInt8] = []
        for label in name.lowercased().split(separator: ".") {
            bytes.append(UInt8(label.utf8.count))
            bytes.append(contentsOf: label.utf8)
        }
        bytes.append(0)
        return bytes
    }
}

private final class Responder: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private let name: [UInt8]
    private let records: NIOLockedValueBox<[[UInt8]]>

    init(name: [UInt8], records: NIOLockedValueBox<[[UInt8]]>) {
        self.name = name
        self.records = records
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = self.unwrapInboundIn(data)
        guard let reply = self.answer(envelope.data) else { return }
        let out = AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: reply)
        context.writeAndFlush(self.wrapOutboundOut(out), promise: nil)
    }

    private func answer(_ query: ByteBuffer) -> ByteBuffer? {
        let bytes = Array(query.readableBytesView)
        guard bytes.count >= 17 else { return nil }
        // Question: the name's labels, then QTYPE and QCLASS.
        var index = 12
        var questionName: [UInt8] = []
        while index < bytes.count, bytes[index] != 0 {
            let length = Int(bytes[index])
            guard length < 64, index + 1 + length <= bytes.count else { return nil }
            questionName.append(bytes[index])
            questionName.append(
                contentsOf: bytes[(index + 1)...(index + length)].map { $0 | ($0 >= 65 && $0 <= 90 ? 0x20 : 0) }
            )
            index += 1 + length
        }
        questionName.append(0)
        guard index + 5 <= bytes.count else { return nil }
        let qtype = UInt16(bytes[index + 1]) << 8 | UInt16(bytes[index + 2])
        let questionEnd = index + 5
        let isOurName = questionName == self.name
        let answers = isOurName && qtype == 1 ? self.records.withLockedValue { $0 } : []

        var reply = ByteBuffer()
        reply.writeBytes(bytes[0..<2])  // ID
        let recursionDesired = bytes[2] & 0x01
        reply.writeInteger(UInt8(0x84 | recursionDesired))  // QR, AA, RD as asked
        reply.writeInteger(UInt8(isOurName ? 0x00 : 0x03))  // RCODE: NOERROR or NXDOMAIN
        reply.writeInteger(UInt16(1))
        reply.writeInteger(UInt16(answers.count))
        reply.writeInteger(UInt16(0))
        reply.writeInteger(UInt16(0))
        reply.writeBytes(bytes[12..<questionEnd])
        for address in answers {
            reply.writeInteger(UInt16(0xC00C))  // the name, by pointer to the question
            reply.writeInteger(UInt16(1))  // A
            reply.writeInteger(UInt16(1))  // IN
            reply.writeInteger(UInt32(1))  // TTL
            reply.writeInteger(UInt16(4))
            reply.writeBytes(address)
        }
        return reply
    }
}
