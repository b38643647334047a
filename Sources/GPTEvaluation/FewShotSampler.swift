import TensorCore

/// Draws the demonstrations of each query from a pool, deterministically: the same seed and query index give the
/// same demonstrations in the same order, whatever else is evaluated. When the pool is the evaluated file itself,
/// the query is never among its own demonstrations.
public struct FewShotSampler: Sendable {
    public let poolSize: Int
    /// Whether pool index i is query i (the pool is the data file).
    public let poolIsData: Bool
    public let seed: UInt64

    public init(poolSize: Int, poolIsData: Bool, seed: UInt64) {
        self.poolSize = poolSize
        self.poolIsData = poolIsData
        self.seed = seed
    }

    /// The largest number of demonstrations a query can have.
    public var available: Int { poolIsData ? poolSize - 1 : poolSize }

    /// `count` distinct pool indices for query `query`, in random order (Floyd's sampling, then a shuffle: work in
    /// the number drawn, not the pool's size).
    public func sample(_ count: Int, forQuery query: Int) -> [Int] {
        precondition(count <= available, "more demonstrations than the pool holds")
        guard count > 0 else { return [] }
        var random = SeededRandom(seed: seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(query) &* 0xBF58_476D_1CE4_E5B9 &+ 1)
        let draw = poolIsData ? count + 1 : count
        var chosen: [Int] = [], members = Set<Int>()
        for j in (poolSize - draw)..<poolSize {
            let t = random.nextInt(below: j + 1)
            let pick = members.contains(t) ? j : t
            members.insert(pick)
            chosen.append(pick)
        }
        chosen.shuffle(using: &random)
        if poolIsData { chosen.removeAll { $0 == query } }
        return Array(chosen.prefix(count))
    }
}
