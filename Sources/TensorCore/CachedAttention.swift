/// Attention of new query rows over a key/value cache, for incremental decoding (no gradient).
public enum CachedAttention {
    /// Where the cache lives: for sequence s and position p, the keys of all heads are the `width` floats at
    /// `keys + s * sequenceStride + p * width` (values alike); head h uses floats h·d ..< (h+1)·d of that row.
    public struct Cache {
        public let keys: UnsafePointer<Float>
        public let values: UnsafePointer<Float>
        public let sequenceStride: Int
        public let width: Int

        public init(keys: UnsafePointer<Float>, values: UnsafePointer<Float>, sequenceStride: Int, width: Int) {
            self.keys = keys
            self.values = values
            self.sequenceStride = sequenceStride
            self.width = width
        }
    }

    /// For each row r and head h: out[r, h] = softmax(q[r, h] · K[s_r, 0...p_r, h]ᵀ / √d) · V[s_r, 0...p_r, h],
    /// with q read from `queries + r * queryStride` and out written to `output + r * cache.width`.
    public static func attend(queries: UnsafePointer<Float>, queryStride: Int, heads: Int, cache: Cache,
                              sequences: [Int], positions: [Int], into output: UnsafeMutablePointer<Float>) {
        let rows = sequences.count, d = cache.width / heads
        let scale = 1 / Float(d).squareRoot()
        let longest = (positions.max() ?? 0) + 1
        sequences.withUnsafeBufferPointer { sequences in
            positions.withUnsafeBufferPointer { positions in
                Parallel.forEach(rows * heads, costPerItem: 4 * d * longest) { range in
                    let scores = UnsafeMutablePointer<Float>.allocate(capacity: longest)
                    defer { scores.deallocate() }
                    for item in range {
                        let r = item / heads, h = item % heads
                        let q = queries + r * queryStride + h * d
                        let base = sequences[r] * cache.sequenceStride + h * d
                        let count = positions[r] + 1
                        for j in 0..<count { scores[j] = q.dot(cache.keys + base + j * cache.width, d) * scale }
                        causalSoftmaxRow(scores, valid: count, length: count)
                        let o = output + r * cache.width + h * d
                        o.update(repeating: 0, count: d)
                        for j in 0..<count { o.axpy(scores[j], cache.values + base + j * cache.width, d) }
                    }
                }
            }
        }
    }
}
