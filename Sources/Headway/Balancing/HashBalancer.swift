/// Consistent hashing with Maglev (Eisenbud et al., NSDI 2016): a lookup table of a prime size in which each
/// endpoint fills an equal share of the slots along its own permutation. A request's key picks a slot, O(1).
/// Removing one of N endpoints moves only about 1/N of the keys, and every sidecar builds the same table from
/// the same set (the hash is FNV-1a, not Swift's per-process seeded `Hasher`), so the same key reaches the
/// same pod whichever sidecar sends it.
///
/// Weights and slow start do not apply: either would move keys between pods. A request without a key (the
/// header or cookie is absent) goes to a random endpoint; a retry goes to the next endpoint of the table.
final class HashBalancer: LoadBalancer {
    /// Comfortably over 100 slots per endpoint for sets up to ~650 endpoints, as the paper advises.
    static let tableSize = 65_537

    private var count = 0
    private var table: [Int32] = []
    private var random = PickRandom()

    func endpointsChanged(_ endpoints: [Endpoint], weights: [Int]) {
        self.count = endpoints.count
        self.table = Self.buildTable(names: endpoints.map(\.label), size: Self.tableSize)
    }

    func pick(_ request: PickRequest) -> Int? {
        guard self.count > 0 else { return nil }
        guard let key = request.hashKey else {
            return randomIndex(count: self.count, excluding: request.excluding, using: &self.random)
        }
        var slot = Int(key % UInt64(self.table.count))
        var index = Int(self.table[slot])
        if index == request.excluding, self.count > 1 {
            // Walk the table to the next endpoint: deterministic, so a retried key lands on the same fallback.
            while index == request.excluding {
                slot = (slot + 1) % self.table.count
                index = Int(self.table[slot])
            }
        }
        return index
    }

    /// The Maglev population: endpoint `i` walks slots `offset_i + j * skip_i (mod size)`, taking each
    /// free one in turn with the others, until the table is full.
    static func buildTable(names: [String], size: Int) -> [Int32] {
        guard !names.isEmpty else { return [] }
        let permutations = names.map { name -> (offset: Int, skip: Int) in
            let offset = Int(StableHash.fnv1a(name, seed: 0xCBF2_9CE4_8422_2325) % UInt64(size))
            let skip = Int(StableHash.fnv1a(name, seed: 0x8422_2325_CBF2_9CE4) % UInt64(size - 1)) + 1
            return (offset, skip)
        }
        var next = [Int](repeating: 0, count: names.count)
        var table = [Int32](repeating: -1, count: size)
        var filled = 0
        while true {
            for index in names.indices {
                var slot = (permutations[index].offset + next[index] * permutations[index].skip) % size
                while table[slot] >= 0 {
                    next[index] += 1
                    slot = (permutations[index].offset + next[index] * permutations[index].skip) % size
                }
                table[slot] = Int32(index)
                next[index] += 1
                filled += 1
                if filled == size { return table }
            }
        }
    }
}

/// A hash that is the same in every process and on every machine: FNV-1a, finished with a 64-bit mix so
/// that keys differing in one byte land far apart.
enum StableHash {
    static func fnv1a<Bytes: Sequence<UInt8>>(_ bytes: Bytes, seed: UInt64 = 0xCBF2_9CE4_8422_2325) -> UInt64 {
        var hash = seed
        for byte in bytes {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        return Self.mix(hash)
    }

    static func fnv1a(_ text: String, seed: UInt64 = 0xCBF2_9CE4_8422_2325) -> UInt64 {
        Self.fnv1a(text.utf8, seed: seed)
    }

    /// splitmix64's finaliser.
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
