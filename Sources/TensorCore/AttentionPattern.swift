/// Which earlier positions a query sees in causal self-attention: a contiguous band of keys ending at the query
/// itself, and for the sparse patterns some keys before that band.
public enum AttentionPattern: Codable, Equatable, Hashable, Sendable {
    /// Every earlier position and itself (causal).
    case dense
    /// The last `window` positions: key j is visible from query i when i − window < j ≤ i (GPT-Neo's local
    /// layers, GPT-3's locally banded ones).
    case local(window: Int)
    /// The last `window` positions and every `stride`-th one before them ((i − j) mod stride = 0): Sparse
    /// Transformer's strided pattern with window 1, GPT-3's "local and strided" with window = stride.
    case strided(window: Int, stride: Int)
    /// Sparse Transformer's fixed pattern: the positions are cut into blocks of `block`; a query sees the earlier
    /// positions of its own block, and the last `summaries` positions of every earlier block (j mod block ≥
    /// block − summaries), which summarise their blocks.
    case fixed(block: Int, summaries: Int)

    /// Whether the numbers are usable: windows, strides and blocks positive, 1 ≤ summaries ≤ block.
    package var isValid: Bool {
        switch self {
        case .dense: true
        case .local(let window): window >= 1
        case .strided(let window, let stride): window >= 1 && stride >= 1
        case .fixed(let block, let summaries): block >= 1 && (1...block).contains(summaries)
        }
    }

    /// The first key of query i's band (the band runs from there to i).
    @inline(__always)
    package func bandStart(_ i: Int) -> Int {
        switch self {
        case .dense: 0
        case .local(let window), .strided(let window, _): max(0, i - window + 1)
        case .fixed(let block, _): i / block * block
        }
    }

    /// The keys query i sees before its band, in increasing order, below `limit` (a row's key length).
    @inline(__always)
    package func keysBeforeBand(_ i: Int, limit: Int) -> KeyPositions {
        switch self {
        case .dense, .local:
            return KeyPositions(first: 0, step: 1, group: 1, count: 0)
        case .strided(let window, let stride):
            // The nearest strided key outside the window: i − k·stride with k·stride ≥ window.
            let k = (window + stride - 1) / stride
            let last = min(i - k * stride, limit - 1)
            guard last >= 0 else { return KeyPositions(first: 0, step: stride, group: 1, count: 0) }
            let first = (i - k * stride) % stride
            return KeyPositions(first: first, step: stride, group: 1, count: last >= first ? (last - first) / stride + 1 : 0)
        case .fixed(let block, let summaries):
            // The summaries of every block before the query's own, below the limit.
            let end = min(i / block * block, limit), skipped = block - summaries
            let count = end / block * summaries + max(0, end % block - skipped)
            return KeyPositions(first: skipped, step: block, group: summaries, count: count)
        }
    }
}

/// Key positions in groups of `group` consecutive ones, the groups `step` apart: first, first + 1, …,
/// first + group − 1, first + step, … (`count` positions in all).
package struct KeyPositions: RandomAccessCollection, Equatable, Sendable {
    package let first: Int, step: Int, group: Int, count: Int
    package var startIndex: Int { 0 }
    package var endIndex: Int { count }
    @inline(__always) package subscript(t: Int) -> Int {
        group == 1 ? first + t * step : first + t / group * step + t % group
    }
}
