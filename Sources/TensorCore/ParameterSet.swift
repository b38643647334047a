import Foundation
import GPTUtilities

/// All trainable parameters of a model in one contiguous arena, with their gradients in a second arena of the
/// same layout: zeroing, clipping and the optimizer are single loops over memory, and each named parameter is a
/// view into both arenas.
package final class ParameterSet {
    /// Every parameter's values, back to back.
    package let values: Tensor
    /// Every parameter's gradient, in the same layout as `values`; empty when the parameters are frozen.
    package let gradients: Tensor
    /// Parameter names in arena order.
    package let names: [String]
    /// Each parameter's element range in the arenas.
    package let ranges: [String: Range<Int>]
    private let variables: [String: Variable]

    /// An arena for parameters of the given names and shapes (values unspecified, gradients zero).
    package init(_ specs: [(name: String, shape: [Int])]) {
        let total = specs.reduce(0) { $0 + $1.shape.reduce(1, *) }
        values = Tensor(uninitializedShape: [total])
        // Zero pages of their own: a model that only runs inference never makes its gradients resident.
        gradients = Tensor(zeroedShape: [total])
        var offset = 0
        var ranges: [String: Range<Int>] = [:], variables: [String: Variable] = [:]
        for (name, shape) in specs {
            precondition(ranges[name] == nil, "duplicate parameter \(name)")
            let n = shape.reduce(1, *)
            ranges[name] = offset..<(offset + n)
            variables[name] = Variable(Tensor(viewing: values.storage, offset: offset, shape: shape),
                                       grad: Tensor(viewing: gradients.storage, offset: offset, shape: shape))
            offset += n
        }
        names = specs.map(\.name)
        self.ranges = ranges
        self.variables = variables
    }

    /// A set over the values of `other`: constants when `withGradients` is false (a frozen base under a low-rank
    /// adapter: no gradient flows to them and none is kept), else trainable with a gradient arena of its own.
    private init(sharing other: ParameterSet, withGradients: Bool) {
        values = other.values
        gradients = Tensor(zeroedShape: [withGradients ? other.count : 0])
        names = other.names
        ranges = other.ranges
        var variables: [String: Variable] = [:]
        for (name, variable) in other.variables {
            let range = other.ranges[name]!
            variables[name] = withGradients
                ? Variable(variable.value, grad: Tensor(viewing: gradients.storage, offset: range.lowerBound, shape: variable.shape))
                : Variable(variable.value)
        }
        self.variables = variables
    }

    /// These parameters as constants: the same values, with no gradients (see `isFrozen`).
    package func frozen() -> ParameterSet { isFrozen ? self : ParameterSet(sharing: self, withGradients: false) }

    /// These parameters trainable again: the same values, with gradients.
    package func thawed() -> ParameterSet { isFrozen ? ParameterSet(sharing: self, withGradients: true) : self }

    /// Whether the parameters are constants that hold no gradients.
    package var isFrozen: Bool { gradients.count < values.count }

    /// Hands the memory of the named parameters' values back to the system, the whole pages within each one's range:
    /// those values are gone (they read as zeros) and take no memory until written again; the few on pages shared with
    /// a neighbour stay. For a frozen base whose matrices are held elsewhere (`GPTModel.holdFrozenBase`).
    package func releaseValues(of names: [String]) {
        for name in names {
            let range = ranges[name]!
            TensorMemory.releasePages(values.pointer + range.lowerBound, count: range.count)
        }
    }

    /// The parameter called `name` (a programming error if absent).
    package subscript(name: String) -> Variable {
        guard let v = variables[name] else { preconditionFailure("no parameter \(name)") }
        return v
    }

    /// Whether a parameter of that name exists.
    package func contains(_ name: String) -> Bool { variables[name] != nil }

    /// bf16 copies of every parameter, in the arena's layout: made by the first `prepareBFloat16()` and kept
    /// current from then on (AdamW rewrites them as it updates `values`; any other writer of `values` calls
    /// `valuesDidChange()`). Each parameter variable's `bfloat16` is a view into it.
    package private(set) var bfloat16Values: BFloat16Tensor?
    /// Whether `bfloat16Values` holds the rounding of the current `values`.
    var bfloat16IsCurrent = false

    /// Makes every parameter's bf16 copy current (rounding the whole arena if anything changed since the last time).
    package func prepareBFloat16() {
        if bfloat16Values == nil {
            let arena = BFloat16Tensor(uninitializedShape: [count])
            for name in names {
                let range = ranges[name]!, variable = self[name]
                variable.bfloat16 = BFloat16Tensor(viewing: arena, offset: range.lowerBound, shape: variable.shape)
            }
            bfloat16Values = arena
        }
        if !bfloat16IsCurrent {
            BFloat16Conversion.round(values.pointer, into: bfloat16Values!.pointer, count: count)
            bfloat16IsCurrent = true
        }
    }

    /// Says that `values` were written by something other than AdamW, so bf16 copies must be made again.
    package func valuesDidChange() { bfloat16IsCurrent = false }

    /// Total number of scalars.
    package var count: Int { values.count }

    /// Sets every gradient to zero.
    package func zeroGradients() { gradients.fill(0) }

    /// The L2 norm of all gradients together: the square root of the sum, in order, of `gradientSquareSums`.
    package func gradientNorm() -> Float {
        Float(gradientSquareSums(pieces: 0..<normPieceCount).reduce(0, +).squareRoot())
    }

    /// Norms are summed over pieces of this many arena elements: each piece's sum of squares, then those in order.
    /// A process that holds a share of the gradients made of whole pieces computes exactly its part of the norm.
    package static let normPiece = 4096

    /// The number of pieces of `normPiece` elements (the last may be short) the arena has.
    package var normPieceCount: Int { (count + Self.normPiece - 1) / Self.normPiece }

    /// The sum of the squared gradients of each piece in `pieces` (in double precision).
    package func gradientSquareSums(pieces: Range<Int>) -> [Double] {
        let g = gradients.pointer, n = count, piece = Self.normPiece
        var sums = [Double](repeating: 0, count: pieces.count)
        sums.withUnsafeMutableBufferPointer { out in
            Parallel.forEach(pieces.count, costPerItem: piece) { r in
                for k in r {
                    let lo = (pieces.lowerBound + k) * piece, hi = min(n, lo + piece)
                    out[k] = Double(UnsafePointer(g + lo).dot(g + lo, hi - lo))
                }
            }
        }
        return sums
    }

    /// The gradients' global norm and the factor that brings it to at most `maximum`, as
    /// torch.nn.utils.clip_grad_norm_ computes them: min(1, maximum / (norm + 1e-6)); 1 when the norm is not
    /// finite. Pass the factor to `AdamW.step(learningRate:gradientScale:)`, which applies it as it reads.
    package func gradientClipping(maximum: Float) -> (norm: Float, scale: Float) {
        let norm = gradientNorm()
        return (norm, Self.clippingScale(norm: norm, maximum: maximum))
    }

    /// The factor that brings gradients of global norm `norm` to at most `maximum` (see `gradientClipping`).
    package static func clippingScale(norm: Float, maximum: Float) -> Float {
        norm.isFinite ? min(1, maximum / (norm + 1e-6)) : 1
    }
}

/// Runs `body(lo, hi)` over 64K-element chunks of `0..<count`, in parallel.
package func forEachChunk(_ count: Int, _ body: (Int, Int) -> Void) {
    let chunk = 1 << 16, chunks = (count + chunk - 1) / chunk
    Parallel.forEach(chunks, costPerItem: chunk) { r in
        for c in r { body(c * chunk, min(count, (c + 1) * chunk)) }
    }
}
