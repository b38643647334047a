#if arch(x86_64)
import GPTUtilities
import _Builtin_intrinsics.intel
#endif

/// Attention of new query rows over a key/value cache, for incremental decoding (no gradient).
package enum CachedAttention {
    /// Where the cache lives: layout [sequence, head, slot, d], so that one head's keys (and values) are
    /// contiguous and stream in order. The key of sequence s, head h in slot n is the d values (of `precision`) from
    /// value ((s * heads + h) * capacity + n) * d of `keys` on. With shared key/value heads (multi-query or grouped-query
    /// attention) the cache holds those only, and `queryHeads / heads` query heads read each.
    ///
    /// The cache holds only what later queries of its pattern can still read. Dense and strided layers keep every
    /// position (a strided key stays visible to the later queries a multiple of the stride away). A local layer
    /// (window w) keeps the last 2w positions, as a ring. A fixed layer (block l, c summaries) keeps a ring of the
    /// last 2l positions for its bands, and the summaries of every block in slots of their own after the ring.
    /// A ring of twice what a band reads lets one pass store up to `longestFeed` positions a sequence before
    /// reading: none overwrites a key a query of the same pass still reads.
    ///
    /// Keys and values are held in `precision`: fp32 as computed, or bfloat16 (half the memory, and half the bytes
    /// attention reads a position; each value rounded to 8 significant bits).
    package struct Cache {
        /// How the keys and values are stored.
        package enum Precision: String, CaseIterable, Sendable {
            case float32 = "fp32"
            case bfloat16 = "bf16"

            /// Bytes of one value.
            package var bytes: Int { self == .float32 ? 4 : 2 }
        }

        package let keys: UnsafeMutableRawPointer
        package let values: UnsafeMutableRawPointer
        package let precision: Precision
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
        /// `sequences × heads × Cache.capacity(pattern:contextLength:) × headWidth` values in `precision`, read by
        /// `queryHeads` query heads (default: `heads`).
        package init(keys: UnsafeMutableRawPointer, values: UnsafeMutableRawPointer, precision: Precision = .float32, heads: Int,
                     queryHeads: Int? = nil, headWidth: Int, pattern: AttentionPattern, contextLength: Int) {
            precondition((queryHeads ?? heads) % heads == 0, "\(queryHeads ?? heads) query heads do not share \(heads) key/value heads evenly")
            self.keys = keys
            self.values = values
            self.precision = precision
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

        /// Offset of (sequence, head, slot), in values.
        @inline(__always) func offset(_ sequence: Int, _ head: Int, slot: Int) -> Int {
            ((sequence * heads + head) * capacity + slot) * headWidth
        }

        /// Writes `count` floats at `rows` as values of this cache's precision at value offset `offset` of `base`.
        @inline(__always) private func put(_ rows: UnsafePointer<Float>, count: Int, into base: UnsafeMutableRawPointer, at offset: Int) {
            switch precision {
            case .float32: (base.assumingMemoryBound(to: Float.self) + offset).update(from: rows, count: count)
            case .bfloat16: BFloat16Conversion.round(rows, into: base.assumingMemoryBound(to: BFloat16.self) + offset, count: count)
            }
        }

        /// Reads `count` values at value offset `offset` of `base` as floats into `rows`.
        @inline(__always) func get(_ base: UnsafeMutableRawPointer, at offset: Int, count: Int, into rows: UnsafeMutablePointer<Float>) {
            switch precision {
            case .float32: rows.update(from: base.assumingMemoryBound(to: Float.self) + offset, count: count)
            case .bfloat16: BFloat16Conversion.widen(base.assumingMemoryBound(to: BFloat16.self) + offset, into: rows, count: count)
            }
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
                    put(key + h * headWidth, count: headWidth, into: keys, at: o)
                    put(value + h * headWidth, count: headWidth, into: values, at: o)
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
        /// (positions ≥ count). Values copied out of a 16-bit cache and restored are the same values.
        package func transfer(sequence: Int, count: Int, keys outsideKeys: UnsafeMutablePointer<Float>,
                              values outsideValues: UnsafeMutablePointer<Float>, positions: Int, restoring: Bool) {
            precondition(count <= min(positions, positionsInOrder), "positions 0..<\(count) are not all in this cache's slots")
            for h in 0..<heads {
                let inside = offset(sequence, h, slot: 0), outside = h * positions * headWidth
                if restoring {
                    put(outsideKeys + outside, count: count * headWidth, into: keys, at: inside)
                    put(outsideValues + outside, count: count * headWidth, into: values, at: inside)
                } else {
                    get(keys, at: inside, count: count * headWidth, into: outsideKeys + outside)
                    get(values, at: inside, count: count * headWidth, into: outsideValues + outside)
                }
            }
        }

        /// Hands the pages of `sequence`'s keys and values back to the system (see `TensorMemory.releasePages`): the
        /// slots hold nothing a sequence still reads, and take memory again only as a new one is stored.
        package func release(sequence: Int) {
            let bytes = heads * capacity * headWidth * precision.bytes
            TensorMemory.releasePages(keys + sequence * bytes, bytes: bytes)
            TensorMemory.releasePages(values + sequence * bytes, bytes: bytes)
        }

        /// Makes sequence `target` hold what sequence `source` holds (`length` positions).
        package func copy(sequence source: Int, to target: Int, length: Int) {
            // Slots fill in order up to the ring; a fixed layer's summary slots lie beyond it.
            let slots = ring < capacity ? capacity : min(length, capacity), size = precision.bytes
            for h in 0..<heads {
                let from = offset(source, h, slot: 0) * size, to = offset(target, h, slot: 0) * size
                (keys + to).copyMemory(from: keys + from, byteCount: slots * headWidth * size)
                (values + to).copyMemory(from: values + from, byteCount: slots * headWidth * size)
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
                // Each row's keys: the cost of its items, which grows along a prompt.
                let cost = { (item: Int) in
                    let p = positions[item / heads]
                    return 4 * d * (p + 1 - cache.pattern.bandStart(p) + cache.pattern.keysBeforeBand(p, limit: p + 1).count)
                }
                Parallel.forEach(rows * heads, cost: cost) { range in
                    let scores = UnsafeMutablePointer<Float>.allocate(capacity: longest + d)
                    defer { scores.deallocate() }
                    // A key or value of a 16-bit cache as floats, for the general loop.
                    let widened = scores + longest
                    func row(_ base: UnsafeMutableRawPointer, _ offset: Int) -> UnsafePointer<Float> {
                        if cache.precision == .float32 { return UnsafePointer(base.assumingMemoryBound(to: Float.self) + offset) }
                        cache.get(base, at: offset, count: d, into: widened)
                        return UnsafePointer(widened)
                    }
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
                            if d == 64 {
                                let bytes = base * cache.precision.bytes
                                let (k, v) = (UnsafeRawPointer(cache.keys + bytes), UnsafeRawPointer(cache.values + bytes))
                                switch cache.precision {
                                case .float32: attend64(q, k, v, count, scale, scores, o, Float.self)
                                case .bfloat16: attend64(q, k, v, count, scale, scores, o, BFloat16.self)
                                }
                                continue
                            }
                            for j in 0..<count { scores[j] = q.dot(row(cache.keys, base + j * d), d) * scale }
                            causalSoftmaxRow(scores, valid: count, length: count)
                            o.update(repeating: 0, count: d)
                            for j in 0..<count { o.axpy(scores[j], row(cache.values, base + j * d), d) }
                            continue
                        }
                        // The keys before the band, then the band (which may wrap around its ring), slot by slot.
                        let head = cache.offset(sequences[r], h / group, slot: 0)
                        func slot(_ t: Int) -> Int {
                            head + (t < earlier.count ? cache.earlierSlot(earlier[t]) : cache.bandSlot(start + t - earlier.count)) * d
                        }
                        let total = earlier.count + count
                        for t in 0..<total { scores[t] = q.dot(row(cache.keys, slot(t)), d) * scale }
                        causalSoftmaxRow(scores, valid: total, length: total)
                        o.update(repeating: 0, count: d)
                        for t in 0..<total { o.axpy(scores[t], row(cache.values, slot(t)), d) }
                    }
                }
            }
        }
    }

    /// The same for a head width of 64 (every GPT-2 size), with the query and the output held in registers, over keys
    /// and values of type `Value` (a cache's precision). Scores are taken eight keys at a time: each key's products
    /// are summed to eight lanes, and the eight keys' lanes are then reduced together (`totals`), instead of one
    /// horizontal sum a key.
    @inline(__always)
    private static func attend64<Value: CachedValue>(_ q: UnsafePointer<Float>, _ k: UnsafeRawPointer, _ v: UnsafeRawPointer, _ count: Int,
                                                     _ scale: Float, _ scores: UnsafeMutablePointer<Float>, _ o: UnsafeMutablePointer<Float>,
                                                     _: Value.Type) {
        typealias V = SIMD16<Float>
        let q0 = load(q) * scale, q1 = load(q + 16) * scale, q2 = load(q + 32) * scale, q3 = load(q + 48) * scale
        let rowBytes = 64 * MemoryLayout<Value>.stride
        /// Values 16i..<16i + 16 of the row at `p`.
        @inline(__always) func sixteen(_ p: UnsafeRawPointer, _ i: Int) -> V { Value.sixteen(p + i * 16 * MemoryLayout<Value>.stride) }
        /// q · key j, summed to eight lanes.
        @inline(__always) func partial(_ j: Int) -> SIMD8<Float> {
            let kj = k + j * rowBytes
            var a = q0 * sixteen(kj, 0)
            a.addProduct(q1, sixteen(kj, 1))
            a.addProduct(q2, sixteen(kj, 2))
            a.addProduct(q3, sixteen(kj, 3))
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
            let p = V(repeating: scores[j]), vj = v + j * rowBytes
            o0.addProduct(p, sixteen(vj, 0)); o1.addProduct(p, sixteen(vj, 1))
            o2.addProduct(p, sixteen(vj, 2)); o3.addProduct(p, sixteen(vj, 3))
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

/// A type a key/value cache stores its values in.
protocol CachedValue {
    /// The 16 values at `p` as floats.
    static func sixteen(_ p: UnsafeRawPointer) -> SIMD16<Float>
}

extension Float: CachedValue {
    @inline(__always) static func sixteen(_ p: UnsafeRawPointer) -> SIMD16<Float> { p.loadUnaligned(as: SIMD16<Float>.self) }
}

extension BFloat16: CachedValue {
    @inline(__always) static func sixteen(_ p: UnsafeRawPointer) -> SIMD16<Float> { WeightFormat.widenBFloat16(p) }
}
