import GPTUtilities

extension Tape {
    /// Token embedding plus position embedding: out[b, t] = tokens[ids[b, t]] + positions[positionOffset + t].
    ///
    /// `ids` holds `batch` rows of equal length, row-major. `positions` may be a constant (sinusoidal table).
    package func embed(ids: [Int32], batch: Int, tokens: Variable, positions: Variable?, positionOffset: Int = 0) -> Variable {
        precondition(batch > 0 && ids.count % batch == 0, "embed: \(ids.count) ids do not form \(batch) rows")
        let length = ids.count / batch
        return embedding(ids: ids, positionIndices: (0..<ids.count).map { positionOffset + $0 % length }, tokens: tokens,
                         positions: positions, shape: [batch, length, tokens.shape[1]])
    }

    /// Token embedding plus position embedding of ids at given positions: out[n] = tokens[ids[n]] +
    /// positions[positionIndices[n]], a `[ids.count, width]` tensor (e.g. the real tokens of padded rows).
    package func embed(ids: [Int32], at positionIndices: [Int], tokens: Variable, positions: Variable?) -> Variable {
        embedding(ids: ids, positionIndices: positionIndices, tokens: tokens, positions: positions, shape: [ids.count, tokens.shape[1]])
    }

    private func embedding(ids: [Int32], positionIndices: [Int], tokens: Variable, positions: Variable?, shape: [Int]) -> Variable {
        let c = tokens.shape[1], vocabulary = tokens.shape[0]
        precondition(positionIndices.count == ids.count, "embed: \(positionIndices.count) positions for \(ids.count) ids")
        precondition(ids.allSatisfy { $0 >= 0 && Int($0) < vocabulary }, "embed: token id outside 0..<\(vocabulary)")
        if let p = positions {
            precondition(p.shape[1] == c && positionIndices.allSatisfy { $0 >= 0 && $0 < p.shape[0] },
                         "embed: a position is outside the table \(p.shape)")
        }
        let y = Tensor(uninitializedShape: shape)
        let table = tokens.value.pointer, pos = positions?.value.pointer, yp = y.pointer
        ids.withUnsafeBufferPointer { idp in
            positionIndices.withUnsafeBufferPointer { pp in
                Parallel.forEach(ids.count, costPerItem: c) { range in
                    for n in range {
                        let dst = yp + n * c, src = table + Int(idp[n]) * c
                        if let pos { dst.update(from: src, count: c); dst.axpy(1, pos + pp[n] * c, c) }
                        else { dst.update(from: src, count: c) }
                    }
                }
            }
        }
        let out = output(y, inputs: [tokens] + (positions.map { [$0] } ?? []))
        record(out) {
            let dy = out.grad!.pointer
            // Rows repeat when ids repeat, so split the work by columns, not rows.
            let blocks = (c + 15) / 16
            if tokens.requiresGrad {
                let (g, accumulate) = tokens.gradientTarget()
                if !accumulate { g.fill(0) }
                Parallel.forEach(blocks, costPerItem: ids.count * 16) { r in
                    let lo = r.lowerBound * 16, width = min(c, r.upperBound * 16) - lo
                    for n in 0..<ids.count { (g.pointer + Int(ids[n]) * c + lo).axpy(1, dy + n * c + lo, width) }
                }
            }
            if let positions, positions.requiresGrad {
                let (g, accumulate) = positions.gradientTarget()
                if !accumulate { g.fill(0) }
                Parallel.forEach(blocks, costPerItem: ids.count * 16) { r in
                    let lo = r.lowerBound * 16, width = min(c, r.upperBound * 16) - lo
                    for n in 0..<ids.count { (g.pointer + positionIndices[n] * c + lo).axpy(1, dy + n * c + lo, width) }
                }
            }
        }
        return out
    }

    /// Rows `indices` of a 2-D `x`, as a `[indices.count, columns]` tensor (e.g. the hidden state a head reads).
    package func gatherRows(_ x: Variable, _ indices: [Int]) -> Variable {
        precondition(x.value.rank == 2, "gatherRows needs a 2-D input, got \(x.shape)")
        let c = x.shape[1]
        precondition(indices.allSatisfy { $0 >= 0 && $0 < x.shape[0] }, "gatherRows: index outside 0..<\(x.shape[0])")
        let y = Tensor(uninitializedShape: [indices.count, c])
        for (k, i) in indices.enumerated() { (y.pointer + k * c).update(from: x.value.pointer + i * c, count: c) }
        let out = output(y, inputs: [x])
        record(out) {
            let (g, accumulate) = x.gradientTarget()
            if !accumulate { g.fill(0) }
            for (k, i) in indices.enumerated() { (g.pointer + i * c).axpy(1, out.grad!.pointer + k * c, c) }
        }
        return out
    }

    /// A `[rowCount, columns]` tensor of zeros whose row `indices[k]` is row k of a 2-D `x`: the inverse of
    /// `gatherRows` (e.g. real tokens put back in their padded rows). Indices must be distinct.
    package func scatterRows(_ x: Variable, _ indices: [Int], rowCount: Int) -> Variable {
        precondition(x.value.rank == 2 && indices.count == x.shape[0], "scatterRows: \(indices.count) indices for \(x.shape)")
        precondition(indices.allSatisfy { $0 >= 0 && $0 < rowCount }, "scatterRows: index outside 0..<\(rowCount)")
        let c = x.shape[1]
        let y = Tensor(shape: [rowCount, c])
        for (k, i) in indices.enumerated() { (y.pointer + i * c).update(from: x.value.pointer + k * c, count: c) }
        let out = output(y, inputs: [x])
        record(out) {
            let (g, accumulate) = x.gradientTarget()
            for (k, i) in indices.enumerated() { (g.pointer + k * c).axpy(1, out.grad!.pointer + i * c, c, accumulate: accumulate) }
        }
        return out
    }
}
