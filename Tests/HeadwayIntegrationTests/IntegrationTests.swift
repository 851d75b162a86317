import HeadwayTestSupport
import Testing

/// Every integration suite nests in this one, so that they all run one at a time: they share fixed
/// loopback addresses (the pods on 127.0.0.2–4) and the machine's two cores.
@Suite(.serialized, .enabled(if: IntegrationEnvironment.shouldRun, "needs nginx, curl, wrk and dnsmasq (see .ci/run)"))
struct IntegrationTests {}
