/// Attention of new query rows over a key/value cache, for incremental decoding (no gradient).
public enum CachedAttention {
    /// Where the cache lives: layout [sequence, head, position, d], so that one head's keys (and values) are
    /// contiguous and stream in order. The key of sequence s, head h, position p is the d floats at
    /// `keys + ((s * heads + h) * capacity + p) * d`.
    public struct Cache {
        public let keys: UnsafeMutablePointer<Float>
        public let values: UnsafeMutablePointer<Float>
        public let heads: Int
        /// Positions per sequence.
        public let capacity: Int
        /// Floats per head (d).
        public let headWidth: Int

        public init(keys: UnsafeMutablePointer<Float>, values: UnsafeMutablePointer<Float>, heads: Int, capacity: Int, headWidth: Int) {
            self.keys = keys
            self.values = values
            self.heads = heads
            self.capacity = capacity
            self.headWidth = headWidth
        }

        /// Offset of (sequence, head, position): positions beyond the capacity wrap around (a ring that keeps the
        /// last `capacity` positions).
        @inline(__always)
        public func offset(_ sequence: Int, _ head: Int, _ position: Int) -> Int {
            ((sequence * heads + head) * capacity + position % capacity) * headWidth
        }

        /// Stores the key and value rows (all heads, `heads * d` floats each) of one position.
        public func store(key: UnsafePointer<Float>, value: UnsafePointer<Float>, sequence: Int, position: Int) {
            for h in 0..<heads {
                let o = offset(sequence, h, position)
                (keys + o).update(from: key + h * headWidth, count: headWidth)
                (values + o).update(from: value + h * headWidth, count: headWidth)
            }
        }
    }

    /// For each row r and head h: out[r, h] = softmax(q[r, h] · K[s_r, 0...p_r, h]ᵀ / √d) · V[s_r, 0...p_r, h],
    /// with q read from `queries + r * queryStride` and out written to `output + r * heads * d`. With `window`,
    /// only the keys of the last `window` positions (p_r − window < j ≤ p_r) are read, and with `stride` also every
    /// stride-th one before them ((p_r − j) mod stride = 0); `scale` replaces 1/√d.
    public static func attend(queries: UnsafePointer<Float>, queryStride: Int, cache: Cache, sequences: [Int], positions: [Int],
                              window: Int? = nil, stride: Int? = nil, scale: Float? = nil, into output: UnsafeMutablePointer<Float>) {
        let rows = sequences.count, heads = cache.heads, d = cache.headWidth
        let scale = scale ?? 1 / Float(d).squareRoot()
        let longest = (positions.max() ?? 0) + 1
        sequences.withUnsafeBufferPointer { sequences in
            positions.withUnsafeBufferPointer { positions in
                Parallel.forEach(rows * heads, costPerItem: 4 * d * longest) { range in
                    let scores = UnsafeMutablePointer<Float>.allocate(capacity: longest)
                    defer { scores.deallocate() }
                    for item in range {
                        let r = item / heads, h = item % heads
                        let q = queries + r * queryStride + h * d
                        let start = window.map { max(0, positions[r] - $0 + 1) } ?? 0
                        let count = positions[r] + 1 - start
                        let o = output + r * heads * d + h * d
                        let first = start % cache.capacity
                        if let stride, let window {
                            // The window's keys and the strided ones before it (a strided layer's cache is no ring).
                            let ring = cache.offset(sequences[r], h, 0)
                            let extra = StridedKeys.keys(positions[r], limit: positions[r] + 1, window: window, stride: stride)
                            func key(_ t: Int) -> Int { t < extra.count ? extra[t] : start + t - extra.count }
                            let total = extra.count + count
                            for t in 0..<total { scores[t] = q.dot(cache.keys + ring + key(t) * d, d) * scale }
                            causalSoftmaxRow(scores, valid: total, length: total)
                            o.update(repeating: 0, count: d)
                            for t in 0..<total { o.axpy(scores[t], cache.values + ring + key(t) * d, d) }
                            continue
                        }
                        if first + count > cache.capacity {
                            // The positions wrap around a ring: each key and value where its position lands.
                            let ring = cache.offset(sequences[r], h, 0)
                            func slot(_ j: Int) -> Int { ring + ((first + j) % cache.capacity) * d }
                            for j in 0..<count { scores[j] = q.dot(cache.keys + slot(j), d) * scale }
                            causalSoftmaxRow(scores, valid: count, length: count)
                            o.update(repeating: 0, count: d)
                            for j in 0..<count { o.axpy(scores[j], cache.values + slot(j), d) }
                            continue
                        }
                        let base = cache.offset(sequences[r], h, start)
                        let k = UnsafePointer(cache.keys + base), v = UnsafePointer(cache.values + base)
                        if d == 64 {
                            attend64(q, k, v, count, scale, scores, o)
                            continue
                        }
                        for j in 0..<count { scores[j] = q.dot(k + j * d, d) * scale }
                        causalSoftmaxRow(scores, valid: count, length: count)
                        o.update(repeating: 0, count: d)
                        for j in 0..<count { o.axpy(scores[j], v + j * d, d) }
                    }
                }
            }
        }
    }

    /// The same for a head width of 64 (every GPT-2 size), with the query and the output held in registers.
    @inline(__always)
    private static func attend64(_ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>, _ count: Int,
                                 _ scale: Float, _ scores: UnsafeMutablePointer<Float>, _ o: UnsafeMutablePointer<Float>) {
        typealias V = SIMD16<Float>
        let q0 = load(q) * scale, q1 = load(q + 16) * scale, q2 = load(q + 32) * scale, q3 = load(q + 48) * scale
        for j in 0..<count {
            let kj = k + j * 64
            var a = q0 * load(kj)
            a.addProduct(q1, load(kj + 16))
            a.addProduct(q2, load(kj + 32))
            a.addProduct(q3, load(kj + 48))
            scores[j] = a.sum()
        }
        causalSoftmaxRow(scores, valid: count, length: count)
        var o0 = V(), o1 = V(), o2 = V(), o3 = V()
        for j in 0..<count {
            let p = V(repeating: scores[j]), vj = v + j * 64
            o0.addProduct(p, load(vj)); o1.addProduct(p, load(vj + 16))
            o2.addProduct(p, load(vj + 32)); o3.addProduct(p, load(vj + 48))
        }
        store(o0, o); store(o1, o + 16); store(o2, o + 32); store(o3, o + 48)
    }
}
