import GPTUtilities

extension Tape {
    /// Layer normalisation over the last dimension: (x − mean) / sqrt(var + ε) · weight + bias (biased variance).
    package func layerNorm(_ x: Variable, weight: Variable, bias: Variable, epsilon: Float = 1e-5) -> Variable {
        let c = x.shape.last!
        precondition(weight.value.count == c && bias.value.count == c, "layerNorm: weight/bias must have \(c) elements")
        let rows = x.value.count / max(c, 1)
        let y = Tensor(uninitializedShape: x.shape)
        let mean = Tensor(uninitializedShape: [rows]), rstd = Tensor(uninitializedShape: [rows])
        let xp = x.value.pointer, yp = y.pointer, w = weight.value.pointer, b = bias.value.pointer
        Parallel.forEach(rows, costPerItem: 3 * c) { range in
            for r in range {
                let row = UnsafePointer(xp + r * c), out = yp + r * c
                let m = row.sum(c) / Float(c)
                var acc = Float16x(), i = 0
                while i + 16 <= c { let d = load(row + i) - m; acc = acc.addingProduct(d, d); i += 16 }
                var v = acc.sum()
                while i < c { let d = row[i] - m; v += d * d; i += 1 }
                let s = 1 / (v / Float(c) + epsilon).squareRoot()
                mean.pointer[r] = m; rstd.pointer[r] = s
                i = 0
                while i + 16 <= c { store(((load(row + i) - m) * s) * load(w + i) + load(b + i), out + i); i += 16 }
                while i < c { out[i] = (row[i] - m) * s * w[i] + b[i]; i += 1 }
            }
        }
        let out = output(y, inputs: [x, weight, bias])
        record(out) {
            let dy = out.grad!.pointer
            if x.requiresGrad {
                let (dxTensor, accumulate) = x.gradientTarget()
                let dx = dxTensor.pointer
                Parallel.forEach(rows, costPerItem: 4 * c) { range in
                    for r in range {
                        let row = UnsafePointer(xp + r * c), g = UnsafePointer(dy + r * c), d = dx + r * c
                        let m = mean.pointer[r], s = rstd.pointer[r]
                        // dnorm = dy · w; dx = s · (dnorm − mean(dnorm) − norm · mean(dnorm · norm))
                        var sumG = Float16x(), sumGN = Float16x(), i = 0
                        while i + 16 <= c {
                            let gn = load(g + i) * load(w + i)
                            sumG += gn; sumGN = sumGN.addingProduct(gn, (load(row + i) - m) * s); i += 16
                        }
                        var a = sumG.sum(), bsum = sumGN.sum()
                        while i < c { let gn = g[i] * w[i]; a += gn; bsum += gn * (row[i] - m) * s; i += 1 }
                        a /= Float(c); bsum /= Float(c)
                        i = 0
                        while i + 16 <= c {
                            let norm = (load(row + i) - m) * s
                            var v = (load(g + i) * load(w + i) - a - norm * bsum) * s
                            if accumulate { v += load(d + i) }
                            store(v, d + i); i += 16
                        }
                        while i < c {
                            let norm = (row[i] - m) * s
                            let v = (g[i] * w[i] - a - norm * bsum) * s
                            d[i] = accumulate ? d[i] + v : v; i += 1
                        }
                    }
                }
            }
            guard weight.requiresGrad || bias.requiresGrad else { return }
            let (dw, accW) = weight.gradientTarget(), (db, accB) = bias.gradientTarget()
            let blocks = (c + 15) / 16
            Parallel.forEach(blocks, costPerItem: rows * 16) { range in
                let lo = range.lowerBound * 16, hi = min(c, range.upperBound * 16)
                if !accW { (dw.pointer + lo).update(repeating: 0, count: hi - lo) }
                if !accB { (db.pointer + lo).update(repeating: 0, count: hi - lo) }
                for r in 0..<rows {
                    let m = mean.pointer[r], s = rstd.pointer[r]
                    for i in lo..<hi {
                        let g = dy[r * c + i]
                        dw.pointer[i] += g * (xp[r * c + i] - m) * s
                        db.pointer[i] += g
                    }
                }
            }
        }
        return out
    }
}
