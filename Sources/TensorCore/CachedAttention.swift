#if arch(x86_64)
import GPTUtilities
import _Builtin_intrinsics.intel
#endif

/// Attention of new query rows over a key/value cache, for incremental decoding (no gradient).
package enum CachedAttention {
    /// Where the cache lives: layout [sequence, head, slot, d], so that one head's keys (and values) are
    /// contiguous and stream in order. The key of sequence s, head h in slot n is the d floats at
    /// `keys + ((s * heads + h) * capacity + n) * d`. With shared key/value heads (multi-query or grouped-query
    /// attention) the cache holds those only, and `queryHeads / heads` query heads read each.
    ///
    /// The cache holds only what later queries of its pattern can still read. Dense and strided layers keep every
    /// position (a strided key stays visible to the later queries a multiple of the stride away). A local layer
    /// (window w) keeps the last 2w positions, as a ring. A fixed layer (block l, c summaries) keeps a ring of the
    /// last 2l positions for its bands, and the summaries of every block in slots of their own after the ring.
    /// A ring of twice what a band reads lets one pass store up to `longestFeed` positions a sequence before
    /// reading: none overwrites a key a query of the same pass still reads.
    package struct Cache {
        package let keys: UnsafeMutablePointer<Float>
        package let values: UnsafeMutablePointer<Float>
        /// Key and value heads held.
        package let heads: Int
        /// Query heads that read them, in equal groups.
        package let queryHeads: Int
        /// Slots per sequence.
        package let capacity: Int
        /// Floats per head (d).
        package let headWidth: Int
        package let pattern: AttentionPattern
        /// Slots of the ring the bands read.
        private let ring: Int

        /// A cache for sequences of up to `contextLength` positions at `keys` and `values`, each
        /// `sequences × heads × Cache.capacity(pattern:contextLength:) × headWidth` floats, read by `queryHeads`
        /// query heads (default: `heads`).
        package init(keys: UnsafeMutablePointer<Float>, values: UnsafeMutablePointer<Float>, heads: Int, queryHeads: Int? = nil,
                    headWidth: Int, pattern: AttentionPattern, contextLength: Int) {
            precondition((queryHeads ?? heads) % heads == 0, "\(queryHeads ?? heads) query heads do not share \(heads) key/value heads evenly")
            self.keys = keys
            self.values = values
            self.heads = heads
            self.queryHeads = queryHeads ?? heads
            self.headWidth = headWidth
            self.pattern = pattern
            capacity = Self.capacity(pattern: pattern, contextLength: contextLength)
            ring = Self.ring(pattern: pattern, contextLength: contextLength)
        }

        private static func ring(pattern: AttentionPattern, contextLength: Int) -> Int {
            switch pattern {
            case .dense, .strided: contextLength
            case .local(let window): min(contextLength, 2 * window)
            case .fixed(let block, _): min(contextLength, 2 * block)
            }
        }

        /// Slots per sequence for `pattern` and sequences of up to `contextLength` positions.
        package static func capacity(pattern: AttentionPattern, contextLength: Int) -> Int {
            let ring = ring(pattern: pattern, contextLength: contextLength)
            if case .fixed(let block, let summaries) = pattern, ring < contextLength {
                return ring + (contextLength + block - 1) / block * summaries
            }
            return ring
        }

        /// The most positions of one sequence a pass may store before it reads (see the type's description).
        package static func longestFeed(pattern: AttentionPattern, contextLength: Int) -> Int {
            switch pattern {
            case .dense, .strided: contextLength
            case .local(let window): window
            case .fixed(let block, _): block
            }
        }

        /// Offset of (sequence, head, slot).
        @inline(__always) func offset(_ sequence: Int, _ head: Int, slot: Int) -> Int {
            ((sequence * heads + head) * capacity + slot) * headWidth
        }

        /// The slot a band reads position p from.
        @inline(__always) func bandSlot(_ p: Int) -> Int { p % ring }

        /// The slot position p is read from as a key before a later query's band: its summary slot in a fixed
        /// layer that has them, its band slot otherwise.
        @inline(__always) func earlierSlot(_ p: Int) -> Int {
            guard case .fixed(let block, let summaries) = pattern, ring < capacity else { return bandSlot(p) }
            return ring + p / block * summaries + p % block - (block - summaries)
        }

        /// Stores the key and value rows (all heads, `heads * d` floats each) of one position.
        package func store(key: UnsafePointer<Float>, value: UnsafePointer<Float>, sequence: Int, position: Int) {
            func write(_ slot: Int) {
                for h in 0..<heads {
                    let o = offset(sequence, h, slot: slot)
                    (keys + o).update(from: key + h * headWidth, count: headWidth)
                    (values + o).update(from: value + h * headWidth, count: headWidth)
                }
            }
            write(bandSlot(position))
            if case .fixed(let block, let summaries) = pattern, ring < capacity, position % block >= block - summaries {
                write(earlierSlot(position))
            }
        }

        /// Positions 0..<n of a sequence lie in slots 0..<n, whole, for every n up to this: the ring's length when the
        /// layer keeps no summaries, 0 when it does (its summary slots mix positions beyond the ring).
        package var positionsInOrder: Int { ring < capacity ? 0 : ring }

        /// Copies the keys and values of positions 0..<count of `sequence` (at most `positionsInOrder`) to `keys`
        /// and `values`, or back from them with `restoring`; those hold `heads × positions × headWidth` floats each
        /// (positions ≥ count).
        package func transfer(sequence: Int, count: Int, keys outsideKeys: UnsafeMutablePointer<Float>,
                              values outsideValues: UnsafeMutablePointer<Float>, positions: Int, restoring: Bool) {
            precondition(count <= min(positions, positionsInOrder), "positions 0..<\(count) are not all in this cache's slots")
            for h in 0..<heads {
                let inside = offset(sequence, h, slot: 0), outside = h * positions * headWidth
                if restoring {
                    (keys + inside).update(from: outsideKeys + outside, count: count * headWidth)
                    (values + inside).update(from: outsideValues + outside, count: count * headWidth)
                } else {
                    (outsideKeys + outside).update(from: keys + inside, count: count * headWidth)
                    (outsideValues + outside).update(from: values + inside, count: count * headWidth)
                }
            }
        }

        /// Hands the pages of `sequence`'s keys and values back to the system (see `TensorMemory.releasePages`): the
        /// slots hold nothing a sequence still reads, and take memory again only as a new one is stored.
        package func release(sequence: Int) {
            let floats = heads * capacity * headWidth
            TensorMemory.releasePages(keys + sequence * floats, count: floats)
            TensorMemory.releasePages(values + sequence * floats, count: floats)
        }

        /// Makes sequence `target` hold what sequence `source` holds (`length` positions).
        package func copy(sequence source: Int, to target: Int, length: Int) {
            // Slots fill in order up to the ring; a fixed layer's summary slots lie beyond it.
            let slots = ring < capacity ? capacity : min(length, capacity)
            for h in 0..<heads {
                let from = offset(source, h, slot: 0), to = offset(target, h, slot: 0)
                (keys + to).update(from: keys + from, count: slots * headWidth)
                (values + to).update(from: values + from, count: slots * headWidth)
            }
        }
    }

    /// For each row r and query head h: out[r, h] = softmax(q[r, h] · K[s_r, keys, g]ᵀ · scale) · V[s_r, keys, g]
    /// over the keys the cache's pattern lets position p_r see, g being the key/value head h reads, with q read from
    /// `queries + r * queryStride` and out written to `output + r * queryHeads * d`; `scale` replaces 1/√d.
    package static func attend(queries: UnsafePointer<Float>, queryStride: Int, cache: Cache, sequences: [Int], positions: [Int],
                              scale: Float? = nil, into output: UnsafeMutablePointer<Float>) {
        let rows = sequences.count, heads = cache.queryHeads, group = cache.queryHeads / cache.heads, d = cache.headWidth
        let scale = scale ?? 1 / Float(d).squareRoot()
        let longest = (positions.max() ?? 0) + 1
        sequences.withUnsafeBufferPointer { sequences in
            positions.withUnsafeBufferPointer { positions in
                Parallel.forEach(rows * heads, costPerItem: 4 * d * longest) { range in
                    let scores = UnsafeMutablePointer<Float>.allocate(capacity: longest)
                    defer { scores.deallocate() }
                    for item in range {
                        let r = item / heads, h = item % heads, p = positions[r]
                        let q = queries + r * queryStride + h * d
                        let start = cache.pattern.bandStart(p), count = p + 1 - start
                        let earlier = cache.pattern.keysBeforeBand(p, limit: p + 1)
                        let o = output + r * heads * d + h * d
                        let first = cache.bandSlot(start)
                        if earlier.isEmpty, first + count <= cache.capacity {
                            // The band lies in consecutive slots.
                            let base = cache.offset(sequences[r], h / group, slot: first)
                            let k = UnsafePointer(cache.keys + base), v = UnsafePointer(cache.values + base)
                            if d == 64 {
                                attend64(q, k, v, count, scale, scores, o)
                                continue
                            }
                            for j in 0..<count { scores[j] = q.dot(k + j * d, d) * scale }
                            causalSoftmaxRow(scores, valid: count, length: count)
                            o.update(repeating: 0, count: d)
                            for j in 0..<count { o.axpy(scores[j], v + j * d, d) }
                            continue
                        }
                        // The keys before the band, then the band (which may wrap around its ring), slot by slot.
                        let head = cache.offset(sequences[r], h / group, slot: 0)
                        func slot(_ t: Int) -> Int {
                            head + (t < earlier.count ? cache.earlierSlot(earlier[t]) : cache.bandSlot(start + t - earlier.count)) * d
                        }
                        let total = earlier.count + count
                        for t in 0..<total { scores[t] = q.dot(cache.keys + slot(t), d) * scale }
                        causalSoftmaxRow(scores, valid: total, length: total)
                        o.update(repeating: 0, count: d)
                        for t in 0..<total { o.axpy(scores[t], cache.values + slot(t), d) }
                    }
                }
            }
        }
    }

    /// The same for a head width of 64 (every GPT-2 size), with the query and the output held in registers. Scores
    /// are taken eight keys at a time: each key's products are summed to eight lanes, and the eight keys' lanes are
    /// then reduced together (`totals`), instead of one horizontal sum a key.
    @inline(__always)
    private static func attend64(_ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>, _ count: Int,
                                 _ scale: Float, _ scores: UnsafeMutablePointer<Float>, _ o: UnsafeMutablePointer<Float>) {
        typealias V = SIMD16<Float>
        let q0 = load(q) * scale, q1 = load(q + 16) * scale, q2 = load(q + 32) * scale, q3 = load(q + 48) * scale
        /// q · key j, summed to eight lanes.
        @inline(__always) func partial(_ j: Int) -> SIMD8<Float> {
            let kj = k + j * 64
            var a = q0 * load(kj)
            a.addProduct(q1, load(kj + 16))
            a.addProduct(q2, load(kj + 32))
            a.addProduct(q3, load(kj + 48))
            return a.lowHalf + a.highHalf
        }
        var j = 0
        while j + 8 <= count {
            let sums = totals(partial(j), partial(j + 1), partial(j + 2), partial(j + 3),
                              partial(j + 4), partial(j + 5), partial(j + 6), partial(j + 7))
            UnsafeMutableRawPointer(scores + j).storeBytes(of: sums, as: SIMD8<Float>.self)
            j += 8
        }
        while j < count {
            let p = partial(j)
            scores[j] = (p.lowHalf + p.highHalf).sum()
            j += 1
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

    /// The totals of eight vectors: [Σ r0, Σ r1, …, Σ r7].
    @inline(__always)
    static func totals(_ r0: SIMD8<Float>, _ r1: SIMD8<Float>, _ r2: SIMD8<Float>, _ r3: SIMD8<Float>,
                       _ r4: SIMD8<Float>, _ r5: SIMD8<Float>, _ r6: SIMD8<Float>, _ r7: SIMD8<Float>) -> SIMD8<Float> {
        #if arch(x86_64)
        // Horizontal adds give each vector's sums over its two 128-bit halves; the halves are then added.
        let h0123 = _mm256_hadd_ps(_mm256_hadd_ps(r0, r1), _mm256_hadd_ps(r2, r3))
        let h4567 = _mm256_hadd_ps(_mm256_hadd_ps(r4, r5), _mm256_hadd_ps(r6, r7))
        return SIMD8(lowHalf: h0123.lowHalf + h0123.highHalf, highHalf: h4567.lowHalf + h4567.highHalf)
        #else
        return SIMD8(r0.sum(), r1.sum(), r2.sum(), r3.sum(), r4.sum(), r5.sum(), r6.sum(), r7.sum())
        #endif
    }
}
