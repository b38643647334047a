import Foundation
import GPTUtilities

/// A dense, contiguous, row-major float32 tensor.
///
/// `Tensor` is a reference to memory: a view made by `reshaped`, `rows(_:)` or `slice` shares its elements with
/// the tensor it came from, and writing through one is seen through the other.
package final class Tensor: @unchecked Sendable {
    /// Size of each dimension, outermost first.
    package let shape: [Int]
    /// The storage this tensor (or view) lives in.
    package let storage: TensorStorage
    /// Pointer to the first element.
    package let pointer: UnsafeMutablePointer<Float>

    /// Number of elements.
    package var count: Int { shape.reduce(1, *) }
    /// Number of dimensions.
    package var rank: Int { shape.count }

    /// A tensor of the given shape with unspecified contents (fastest; use when every element is written next).
    package init(uninitializedShape shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        self.storage = TensorStorage(uninitializedCount: shape.reduce(1, *))
        self.pointer = storage.base
    }

    /// A tensor of zeros in pages of its own that take memory only once written (see `TensorStorage(zeroedCount:)`).
    package convenience init(zeroedShape shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.init(viewing: TensorStorage(zeroedCount: shape.reduce(1, *)), offset: 0, shape: shape)
    }

    /// A tensor filled with `value`.
    package convenience init(shape: [Int], repeating value: Float = 0) {
        self.init(uninitializedShape: shape)
        fill(value)
    }

    /// A tensor holding `values` in row-major order.
    package convenience init(shape: [Int], values: [Float]) {
        precondition(shape.reduce(1, *) == values.count, "\(values.count) values do not fill shape \(shape)")
        self.init(uninitializedShape: shape)
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    /// A view of `count` elements of `storage` starting at `offset`.
    package init(viewing storage: TensorStorage, offset: Int, shape: [Int]) {
        precondition(offset >= 0 && offset + shape.reduce(1, *) <= storage.count, "view outside storage")
        self.shape = shape
        self.storage = storage
        self.pointer = storage.base + offset
    }

    /// The elements as an array (a copy).
    package var scalars: [Float] { Array(buffer) }

    /// The elements as a mutable buffer (no copy).
    package var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: pointer, count: count) }

    /// Element access by flat index.
    package subscript(flat index: Int) -> Float {
        get { pointer[index] }
        set { pointer[index] = newValue }
    }

    /// Sets every element to `value`.
    package func fill(_ value: Float) {
        if value == 0 { memset(pointer, 0, count * MemoryLayout<Float>.stride) } else { pointer.update(repeating: value, count: count) }
    }

    /// A view of the same elements with another shape of equal element count.
    package func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(newShape.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        return Tensor(viewing: storage, offset: pointer - storage.base, shape: newShape)
    }

    /// A view of rows `range` along the first dimension.
    package func rows(_ range: Range<Int>) -> Tensor {
        precondition(rank >= 1 && range.lowerBound >= 0 && range.upperBound <= shape[0], "rows \(range) outside \(shape)")
        let inner = shape.dropFirst().reduce(1, *)
        return Tensor(viewing: storage, offset: pointer - storage.base + range.lowerBound * inner,
                      shape: [range.count] + shape.dropFirst())
    }

    /// A fresh copy that shares nothing with this tensor.
    package func copy() -> Tensor {
        let t = Tensor(uninitializedShape: shape)
        t.pointer.update(from: pointer, count: count)
        return t
    }

    /// The transpose of a matrix: a new [columns, rows] tensor.
    package func transposed2D() -> Tensor {
        precondition(rank == 2, "transposing a tensor of shape \(shape)")
        let t = Tensor(uninitializedShape: [shape[1], shape[0]])
        transpose2D(into: t.pointer)
        return t
    }

    /// Writes the transpose of this 2-D tensor (`[columns, rows]`, row-major) to `target`.
    package func transpose2D(into target: UnsafeMutablePointer<Float>) {
        precondition(rank == 2, "transposing a tensor of shape \(shape)")
        let rows = shape[0], columns = shape[1]
        for r in 0..<rows { for c in 0..<columns { target[c * rows + r] = pointer[r * columns + c] } }
    }

    /// Copies the elements of `other` (same element count) into this tensor.
    package func assign(_ other: Tensor) {
        precondition(other.count == count, "assigning \(other.shape) to \(shape)")
        pointer.update(from: other.pointer, count: count)
    }

    /// A new tensor of `shape` filled from `random` with N(mean, std²).
    package static func normal(shape: [Int], mean: Float = 0, std: Float = 1, using random: inout SeededRandom) -> Tensor {
        let t = Tensor(uninitializedShape: shape)
        random.fillNormal(t.buffer, mean: mean, std: std)
        return t
    }

    /// A new tensor of `shape` filled from `random` with U[low, high).
    package static func uniform(shape: [Int], low: Float = 0, high: Float = 1, using random: inout SeededRandom) -> Tensor {
        let t = Tensor(uninitializedShape: shape)
        for i in 0..<t.count { t.pointer[i] = low + (high - low) * random.nextFloat() }
        return t
    }

    /// Joins tensors along their first dimension (the other dimensions must agree).
    package static func concatenate(_ parts: [Tensor]) -> Tensor {
        precondition(!parts.isEmpty, "nothing to concatenate")
        let inner = Array(parts[0].shape.dropFirst())
        precondition(parts.allSatisfy { Array($0.shape.dropFirst()) == inner }, "shapes disagree: \(parts.map(\.shape))")
        let result = Tensor(uninitializedShape: [parts.reduce(0) { $0 + $1.shape[0] }] + inner)
        var offset = 0
        for p in parts {
            (result.pointer + offset).update(from: p.pointer, count: p.count)
            offset += p.count
        }
        return result
    }
}

extension Tensor: CustomStringConvertible {
    package var description: String {
        let shown = scalars.prefix(8).map { String(format: "%.4g", $0) }.joined(separator: ", ")
        return "Tensor(\(shape): [\(shown)\(count > 8 ? ", …" : "")])"
    }
}
