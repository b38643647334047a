import Foundation
import GPTUtilities
import TensorCore

/// Batches drawn from a fixed set of examples in epochs: each epoch visits every example once, in an order fixed
/// by the seed and the epoch alone, so a resumed run sees exactly the batches the uninterrupted one would have.
/// An optimizer step takes `accumulation` micro-batches of `batchSize` examples; the last step of an epoch may be
/// short.
package final class EpochBatches {
    package let count: Int
    package let batchSize: Int
    package let accumulation: Int
    package let seed: UInt64
    /// Optimizer steps per pass over the examples.
    package let stepsPerEpoch: Int
    private var order: (epoch: Int, indices: [Int])?

    package init(count: Int, batchSize: Int, accumulation: Int, seed: UInt64) {
        self.count = count
        self.batchSize = batchSize
        self.accumulation = accumulation
        self.seed = seed
        stepsPerEpoch = (count + batchSize * accumulation - 1) / (batchSize * accumulation)
    }

    /// Epochs done after `step` optimizer steps.
    package func epoch(afterSteps step: Int) -> Double { Double(step) / Double(stepsPerEpoch) }

    /// The example indices of micro-batch `microBatch` of optimizer step `step`, and its share of the step's
    /// examples (the weight of its loss); nil when the step has fewer micro-batches left (the end of an epoch).
    package func microBatch(step: Int, microBatch: Int) -> (indices: ArraySlice<Int>, share: Float)? {
        let stepInEpoch = step % stepsPerEpoch
        let stepStart = stepInEpoch * accumulation * batchSize, stepEnd = min(count, stepStart + accumulation * batchSize)
        let start = stepStart + microBatch * batchSize, end = min(stepEnd, start + batchSize)
        guard start < end else { return nil }
        return (order(step / stepsPerEpoch)[start..<end], Float(end - start) / Float(stepEnd - stepStart))
    }

    /// This rank's part of micro-batch `microBatch` of step `step` when the batch size is the global one (ranks
    /// take consecutive equal parts), and the weight of its mean loss: with the ranks' gradients averaged, the
    /// weights make the step's gradient that of the whole micro-batch weighted by its share. Nil when this rank's
    /// part is empty.
    package func microBatch(step: Int, microBatch: Int, shard: Shard) -> (indices: ArraySlice<Int>, weight: Float)? {
        guard let (indices, share) = self.microBatch(step: step, microBatch: microBatch) else { return nil }
        let part = (batchSize + shard.count - 1) / shard.count
        let start = indices.startIndex + shard.index * part, end = min(indices.endIndex, start + part)
        guard start < end else { return nil }
        return (indices[start..<end], share * Float(shard.count) * Float(end - start) / Float(indices.count))
    }

    /// The order of the examples in `epoch`: a shuffle fixed by the seed and the epoch.
    func order(_ epoch: Int) -> [Int] {
        if let order, order.epoch == epoch { return order.indices }
        var random = SeededRandom(seed: seed ^ (0xF1E7_0000 &+ UInt64(epoch)))
        var indices = Array(0..<count)
        for i in stride(from: indices.count - 1, to: 0, by: -1) { indices.swapAt(i, random.nextInt(below: i + 1)) }
        order = (epoch, indices)
        return indices
    }
}
