import Dispatch
import Foundation

/// Splits loops across the machine's cores.
public enum Parallel {
    /// Number of worker threads used by the kernels: `SWIFTGPT_THREADS` if set, else the active processor count.
    nonisolated(unsafe) public static var threadCount: Int = {
        if let value = ProcessInfo.processInfo.environment["SWIFTGPT_THREADS"], let n = Int(value), n > 0 { return n }
        return ProcessInfo.processInfo.activeProcessorCount
    }()

    /// Handing work to another core costs microseconds (tens when its worker has gone to sleep), so loops below
    /// this many element-operations run serially.
    package static let minimumParallelWork = 131_072

    /// Runs `body` over disjoint subranges covering `0..<count`, in parallel when `count * costPerItem` is large
    /// enough to pay for waking the other cores. `body` must only write to memory owned by its subrange.
    @inline(__always)
    package static func forEach(_ count: Int, costPerItem: Int = 1, _ body: (Range<Int>) -> Void) {
        let tasks = min(threadCount, count, max(1, count * costPerItem / minimumParallelWork))
        if tasks <= 1 {
            if count > 0 { body(0..<count) }
            return
        }
        WorkerPool.shared.run(tasks) { t in
            let lo = count * t / tasks, hi = count * (t + 1) / tasks
            if lo < hi { body(lo..<hi) }
        }
    }

    /// `forEach` over items of unequal cost (`cost(i)` element-operations for item i): the subranges are cut where the
    /// running cost reaches each core's share, so that each gets about the same work (in causal attention over a
    /// prompt a late position reads many more keys than an early one; equal counts gave one core three times the other's).
    package static func forEach(_ count: Int, cost: (Int) -> Int, _ body: (Range<Int>) -> Void) {
        var total = 0
        for i in 0..<count { total += cost(i) }
        let tasks = min(threadCount, count, max(1, total / minimumParallelWork))
        if tasks <= 1 {
            if count > 0 { body(0..<count) }
            return
        }
        // Task t takes the items from the first whose running cost before it reaches t/tasks of the total.
        var cuts = [Int](repeating: count, count: tasks + 1), running = 0, t = 1
        cuts[0] = 0
        for i in 0..<count {
            while t < tasks && running * tasks >= total * t { cuts[t] = i; t += 1 }
            running += cost(i)
        }
        cuts.withUnsafeBufferPointer { cuts in
            WorkerPool.shared.run(tasks) { t in
                if cuts[t] < cuts[t + 1] { body(cuts[t]..<cuts[t + 1]) }
            }
        }
    }
}
