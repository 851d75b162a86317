/// The random numbers a balancer draws its picks from: wyrand, seeded once from the system.
///
/// `SystemRandomNumberGenerator` makes a `getrandom` system call per number on Linux: two or three per request
/// for p2c, and one per tied endpoint for least-connections (a thousand per request with 1,000 idle pods).
/// Picks need spread, not secrecy, so each balancer (one per loop, never shared) keeps its own generator.
struct PickRandom: RandomNumberGenerator {
    private var state: UInt64

    init() {
        var system = SystemRandomNumberGenerator()
        self.state = system.next()
    }

    mutating func next() -> UInt64 {
        self.state &+= 0xa076_1d64_78bd_642f
        let product = self.state.multipliedFullWidth(by: self.state ^ 0xe703_7ed1_a0b4_28db)
        return product.high ^ product.low
    }
}
