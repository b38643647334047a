/// Products of a few rows with a weight matrix, for decoding: each weight is read from memory once per call and
/// streamed at full bandwidth (a BLAS sgemm with one row is several times slower here).
public enum MatrixVector {
    /// out[r, :] = bias + x[r, :] · w for `rows` rows; x is [rows, k], w is [k, n], out is [rows, n].
    public static func multiply(_ x: UnsafePointer<Float>, rows: Int, _ w: UnsafePointer<Float>, k: Int, n: Int,
                                bias: UnsafePointer<Float>?, into out: UnsafeMutablePointer<Float>) {
        let blocks = (n + 15) / 16
        Parallel.forEach(blocks, costPerItem: 16 * k * max(rows, 2) / 2) { range in
            let lo = range.lowerBound * 16, hi = min(n, range.upperBound * 16)
            // Column panels small enough that the output rows stay in L1 while the weight rows stream past.
            let panel = 512
            var p0 = lo
            while p0 < hi {
                let p1 = min(hi, p0 + panel)
                for r in 0..<rows {
                    let o = out + r * n
                    if let bias { for j in p0..<p1 { o[j] = bias[j] } } else { for j in p0..<p1 { o[j] = 0 } }
                }
                var i = 0
                while i + 4 <= k {
                    let w0 = w + i * n, w1 = w0 + n, w2 = w1 + n, w3 = w2 + n
                    for r in 0..<rows {
                        let xr = x + r * k + i
                        accumulate4(out + r * n, w0, w1, w2, w3, xr[0], xr[1], xr[2], xr[3], p0, p1)
                    }
                    i += 4
                }
                while i < k {
                    let wi = w + i * n
                    for r in 0..<rows {
                        let a = x[r * k + i], o = out + r * n
                        for j in p0..<p1 { o[j] += a * wi[j] }
                    }
                    i += 1
                }
                p0 = p1
            }
        }
    }

    @inline(__always)
    private static func accumulate4(_ o: UnsafeMutablePointer<Float>, _ w0: UnsafePointer<Float>, _ w1: UnsafePointer<Float>,
                                    _ w2: UnsafePointer<Float>, _ w3: UnsafePointer<Float>,
                                    _ a0: Float, _ a1: Float, _ a2: Float, _ a3: Float, _ lo: Int, _ hi: Int) {
        var j = lo
        let v0 = SIMD16<Float>(repeating: a0), v1 = SIMD16<Float>(repeating: a1)
        let v2 = SIMD16<Float>(repeating: a2), v3 = SIMD16<Float>(repeating: a3)
        while j + 16 <= hi {
            var acc = UnsafeRawPointer(o + j).loadUnaligned(as: SIMD16<Float>.self)
            acc.addProduct(v0, UnsafeRawPointer(w0 + j).loadUnaligned(as: SIMD16<Float>.self))
            acc.addProduct(v1, UnsafeRawPointer(w1 + j).loadUnaligned(as: SIMD16<Float>.self))
            acc.addProduct(v2, UnsafeRawPointer(w2 + j).loadUnaligned(as: SIMD16<Float>.self))
            acc.addProduct(v3, UnsafeRawPointer(w3 + j).loadUnaligned(as: SIMD16<Float>.self))
            UnsafeMutableRawPointer(o + j).storeBytes(of: acc, as: SIMD16<Float>.self)
            j += 16
        }
        while j < hi {
            o[j] += a0 * w0[j] + a1 * w1[j] + a2 * w2[j] + a3 * w3[j]
            j += 1
        }
    }

    /// out[r, v] = x[r, :] · w[v, :] for `rows` rows; x is [rows, k], w is [n, k] (one row per output, as a tied
    /// embedding), out is [rows, n].
    public static func multiplyTransposed(_ x: UnsafePointer<Float>, rows: Int, _ w: UnsafePointer<Float>, k: Int, n: Int,
                                          into out: UnsafeMutablePointer<Float>) {
        Parallel.forEach(n, costPerItem: k * max(rows, 2) / 2) { range in
            var r0 = 0
            while r0 < rows {
                // Up to four input rows at a time against two weight rows: eight accumulators.
                let count = min(4, rows - r0)
                var v = range.lowerBound
                while v + 2 <= range.upperBound {
                    dots(x + r0 * k, count, w + v * k, w + (v + 1) * k, k) { r, d0, d1 in
                        out[(r0 + r) * n + v] = d0
                        out[(r0 + r) * n + v + 1] = d1
                    }
                    v += 2
                }
                if v < range.upperBound {
                    dots(x + r0 * k, count, w + v * k, w + v * k, k) { r, d0, _ in out[(r0 + r) * n + v] = d0 }
                }
                r0 += count
            }
        }
    }

    @inline(__always)
    private static func dots(_ x: UnsafePointer<Float>, _ rows: Int, _ wa: UnsafePointer<Float>, _ wb: UnsafePointer<Float>,
                             _ k: Int, _ result: (Int, Float, Float) -> Void) {
        var a = (SIMD16<Float>(), SIMD16<Float>(), SIMD16<Float>(), SIMD16<Float>())
        var b = a
        var i = 0
        while i + 16 <= k {
            let va = UnsafeRawPointer(wa + i).loadUnaligned(as: SIMD16<Float>.self)
            let vb = UnsafeRawPointer(wb + i).loadUnaligned(as: SIMD16<Float>.self)
            let x0 = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self)
            a.0.addProduct(va, x0); b.0.addProduct(vb, x0)
            if rows > 1 {
                let x1 = UnsafeRawPointer(x + k + i).loadUnaligned(as: SIMD16<Float>.self)
                a.1.addProduct(va, x1); b.1.addProduct(vb, x1)
            }
            if rows > 2 {
                let x2 = UnsafeRawPointer(x + 2 * k + i).loadUnaligned(as: SIMD16<Float>.self)
                a.2.addProduct(va, x2); b.2.addProduct(vb, x2)
            }
            if rows > 3 {
                let x3 = UnsafeRawPointer(x + 3 * k + i).loadUnaligned(as: SIMD16<Float>.self)
                a.3.addProduct(va, x3); b.3.addProduct(vb, x3)
            }
            i += 16
        }
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 8) { sums in
            sums[0] = a.0.sum(); sums[1] = b.0.sum(); sums[2] = a.1.sum(); sums[3] = b.1.sum()
            sums[4] = a.2.sum(); sums[5] = b.2.sum(); sums[6] = a.3.sum(); sums[7] = b.3.sum()
            while i < k {
                for r in 0..<rows {
                    sums[2 * r] += wa[i] * x[r * k + i]
                    sums[2 * r + 1] += wb[i] * x[r * k + i]
                }
                i += 1
            }
            for r in 0..<rows { result(r, sums[2 * r], sums[2 * r + 1]) }
        }
    }
}
