import GPTUtilities
import TensorCore

/// Draws the demonstrations of each query from a pool, deterministically: the same seed and query index give the
/// same demonstrations in the same order, whatever else is evaluated. A task with a few-shot group draws only
/// from the pool examples of the query's group. When the pool is the evaluated file itself, the query is never
/// among its own demonstrations.
package struct FewShotSampler: Sendable {
    /// Pool indices by group (all under nil for a task without groups).
    private let members: [String?: [Int]]
    /// Whether pool index i is query i (the pool is the data file).
    package let poolIsData: Bool
    package let seed: UInt64

    /// A sampler over a pool whose examples belong to `poolGroups` (one entry per pool example; all nil without
    /// groups).
    package init(poolGroups: [String?], poolIsData: Bool, seed: UInt64) {
        var members: [String?: [Int]] = [:]
        for (index, group) in poolGroups.enumerated() { members[group, default: []].append(index) }
        self.members = members
        self.poolIsData = poolIsData
        self.seed = seed
    }

    /// A sampler over a pool of `poolSize` examples without groups.
    package init(poolSize: Int, poolIsData: Bool, seed: UInt64) {
        self.init(poolGroups: [String?](repeating: nil, count: poolSize), poolIsData: poolIsData, seed: seed)
    }

    /// The pool examples `query` may draw from: its group's members (ascending), less the query itself, whose
    /// position among them is `skipped` (found by bisection: no pass over the pool per query).
    private struct Candidates {
        let members: [Int], skipped: Int?
        var count: Int { members.count - (skipped == nil ? 0 : 1) }
        subscript(t: Int) -> Int { members[skipped.map { t >= $0 ? t + 1 : t } ?? t] }
    }

    private func candidates(forQuery query: Int, group: String?) -> Candidates {
        let all = members[group] ?? []
        guard poolIsData else { return Candidates(members: all, skipped: nil) }
        var low = 0, high = all.count
        while low < high {
            let middle = (low + high) / 2
            if all[middle] < query { low = middle + 1 } else { high = middle }
        }
        return Candidates(members: all, skipped: low < all.count && all[low] == query ? low : nil)
    }

    /// The largest number of demonstrations `query` (of `group`) can have.
    package func available(forQuery query: Int, group: String?) -> Int {
        candidates(forQuery: query, group: group).count
    }

    /// `count` distinct pool indices for query `query`, in random order (Floyd's sampling, then a shuffle).
    package func sample(_ count: Int, forQuery query: Int, group: String? = nil) -> [Int] {
        guard count > 0 else { return [] }
        let candidates = candidates(forQuery: query, group: group)
        precondition(count <= candidates.count, "more demonstrations than the pool holds")
        var random = SeededRandom(seed: seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(query) &* 0xBF58_476D_1CE4_E5B9 &+ 1)
        var chosen: [Int] = [], taken = Set<Int>()
        for j in (candidates.count - count)..<candidates.count {
            let t = random.nextInt(below: j + 1)
            let pick = taken.contains(t) ? j : t
            taken.insert(pick)
            chosen.append(pick)
        }
        chosen.shuffle(using: &random)
        return chosen.map { candidates[$0] }
    }
}
