import CMPI
import Foundation
import GPTModels
import TensorCore

/// The processes of a data-parallel run: every rank `mpirun` started (Open MPI), or this process alone when it was
/// not started by `mpirun`. Rank 0 is the main process: it alone writes checkpoints, metrics and progress.
///
/// Every collective operation is watched: when one waits longer than `timeout` seconds (another rank died or hangs),
/// this process says so on standard error and exits with status 1, and `mpirun` then ends the whole job.
package final class ProcessGroup: @unchecked Sendable {
    package let rank: Int
    package let size: Int
    /// Whether this process writes the run's files.
    package var isMain: Bool { rank == 0 }
    /// Seconds a collective operation may wait for the other ranks before this process gives up.
    package var timeout: Double {
        get { lock.withLock { timeoutSeconds } }
        set { lock.withLock { timeoutSeconds = newValue } }
    }
    private let lock = NSLock()
    private var timeoutSeconds: Double = 300
    /// The collective operation under way and when it started (uptime nanoseconds).
    private var pending: (operation: String, since: UInt64)?

    /// All the processes of this job, MPI being started on first use when `mpirun` launched this process.
    package static let world = ProcessGroup()

    private init() {
        let environment = ProcessInfo.processInfo.environment
        guard environment["OMPI_COMM_WORLD_SIZE"] != nil || environment["PMIX_RANK"] != nil else {
            rank = 0
            size = 1
            return
        }
        MPI_Init(nil, nil)
        var rank: Int32 = 0, size: Int32 = 0
        MPI_Comm_rank(swiftgpt_mpi_comm_world(), &rank)
        MPI_Comm_size(swiftgpt_mpi_comm_world(), &size)
        self.rank = Int(rank)
        self.size = Int(size)
        atexit { MPI_Finalize() }
        if size > 1 { startWatchdog() }
    }

    /// Runs `body`, a collective operation called `operation`, under the watchdog.
    private func collective<T>(_ operation: String, _ body: () -> T) -> T {
        lock.withLock { pending = (operation, DispatchTime.now().uptimeNanoseconds) }
        defer { lock.withLock { pending = nil } }
        return body()
    }

    /// A thread that ends this process when a collective operation has waited longer than `timeout`.
    private func startWatchdog() {
        let thread = Thread { [self] in
            while true {
                Thread.sleep(forTimeInterval: 0.5)
                let (waiting, limit) = lock.withLock { () -> ((String, Double)?, Double) in
                    (pending.map { ($0.operation, Double(DispatchTime.now().uptimeNanoseconds - $0.since) / 1e9) }, timeoutSeconds)
                }
                guard let (operation, seconds) = waiting, seconds > limit else { continue }
                let message = "error: rank \(rank) of \(size): no answer from the other ranks for \(Int(seconds)) s in \(operation) "
                    + "(a rank died or hangs; the limit is --rank-timeout \(Int(limit)) s). Stopping; resume the run from its last "
                    + "checkpoint with --resume.\n"
                FileHandle.standardError.write(Data(message.utf8))
                // Not exit(): its MPI_Finalize would wait for the missing rank too.
                _exit(1)
            }
        }
        thread.name = "MPI watchdog"
        thread.start()
    }

    /// The parts of an arena of `count` elements that the ranks own, in rank order: consecutive, as equal as
    /// possible, made of whole pieces of `ParameterSet.normPiece` elements (so each rank computes its part of the
    /// gradient norm exactly as one process would).
    package func shares(of count: Int) -> [Range<Int>] {
        let piece = ParameterSet.normPiece, pieces = (count + piece - 1) / piece
        return (0..<size).map { r in
            min(count, pieces * r / size * piece)..<min(count, pieces * (r + 1) / size * piece)
        }
    }

    /// Adds `count` floats at `buffer` over every rank, in place (one all-reduce, in pieces below 2³¹ elements).
    package func sumInPlace(_ buffer: UnsafeMutablePointer<Float>, count: Int) {
        guard size > 1 else { return }
        var start = 0
        while start < count {
            let piece = min(count - start, Int(Int32.max))
            collective("the gradient all-reduce") {
                _ = MPI_Allreduce(swiftgpt_mpi_in_place(), buffer + start, Int32(piece), swiftgpt_mpi_float(), swiftgpt_mpi_sum(),
                                  swiftgpt_mpi_comm_world())
            }
            start += piece
        }
    }

    /// Replaces `count` floats at `buffer` by their mean over every rank.
    package func averageInPlace(_ buffer: UnsafeMutablePointer<Float>, count: Int) {
        guard size > 1 else { return }
        sumInPlace(buffer, count: count)
        scale(buffer, count: count, by: 1 / Float(size))
    }

    private func scale(_ buffer: UnsafeMutablePointer<Float>, count: Int, by factor: Float) {
        forEachChunk(count) { lo, hi in
            for i in lo..<hi { buffer[i] *= factor }
        }
    }

    /// Averages `count` floats at `buffer` over every rank into this rank's share (`shares` from `shares(of:)`):
    /// afterwards `buffer[shares[rank]]` holds the means of those elements, and the other shares are unchanged.
    package func averageIntoShare(_ buffer: UnsafeMutablePointer<Float>, count: Int, shares: [Range<Int>]) {
        guard size > 1 else { return }
        precondition(count <= Int(Int32.max), "a sharded arena holds fewer than 2³¹ elements")
        // One reduction to each share's owner. (Open MPI's in-place MPI_Reduce_scatter copies the whole buffer, and
        // measured slower here.)
        collective("the gradient reduce-scatter") {
            for (owner, share) in shares.enumerated() where !share.isEmpty {
                let part = buffer + share.lowerBound
                _ = MPI_Reduce(owner == rank ? UnsafeRawPointer(swiftgpt_mpi_in_place()) : UnsafeRawPointer(part), part, Int32(share.count),
                               swiftgpt_mpi_float(), swiftgpt_mpi_sum(), Int32(owner), swiftgpt_mpi_comm_world())
            }
        }
        let share = shares[rank]
        scale(buffer + share.lowerBound, count: share.count, by: 1 / Float(size))
    }

    /// Gives every rank the whole of `count` floats at `buffer` when each rank holds its share (`shares`) of them.
    package func gatherShares(_ buffer: UnsafeMutablePointer<Float>, count: Int, shares: [Range<Int>]) {
        guard size > 1 else { return }
        precondition(count <= Int(Int32.max), "a sharded arena holds fewer than 2³¹ elements")
        let counts = shares.map { Int32($0.count) }, starts = shares.map { Int32($0.lowerBound) }
        collective("the parameter all-gather") {
            _ = MPI_Allgatherv(swiftgpt_mpi_in_place(), 0, swiftgpt_mpi_float(), buffer, counts, starts, swiftgpt_mpi_float(),
                               swiftgpt_mpi_comm_world())
        }
    }

    /// Collects an arena of `count` elements, of which each rank holds its share (`shares`; `part` is this rank's),
    /// on rank 0, `piece` elements at a time: rank 0's `consume` gets the arena's pieces in order; the other ranks'
    /// is not called. Every rank must call this, with the same shares and piece size.
    package func collectShares(_ part: UnsafePointer<Float>, count: Int, shares: [Range<Int>], piece: Int = 1 << 24,
                              consume: (UnsafeBufferPointer<Float>) throws -> Void) throws {
        guard size > 1 else { return try consume(UnsafeBufferPointer(start: part, count: count)) }
        var buffer = [Float](repeating: 0, count: isMain ? min(piece, count) : 0)
        for start in stride(from: 0, to: count, by: piece) {
            let end = min(count, start + piece)
            // Each rank sends the part of its share that falls in start..<end.
            let overlaps = shares.map { max(start, $0.lowerBound)..<max(max(start, $0.lowerBound), min(end, $0.upperBound)) }
            let counts = overlaps.map { Int32($0.count) }, starts = overlaps.map { Int32($0.lowerBound - start) }
            let mine = overlaps[rank]
            collective("collecting optimizer moments") {
                buffer.withUnsafeMutableBufferPointer {
                    _ = MPI_Gatherv(part + (mine.lowerBound - shares[rank].lowerBound), counts[rank], swiftgpt_mpi_float(),
                                    $0.baseAddress, counts, starts, swiftgpt_mpi_float(), 0, swiftgpt_mpi_comm_world())
                }
            }
            if isMain { try buffer.withUnsafeBufferPointer { try consume(UnsafeBufferPointer(rebasing: $0[0..<(end - start)])) } }
        }
    }

    /// Every rank's `values` (of any length), in rank order, on every rank.
    package func allGather(_ values: [Double]) -> [[Double]] {
        guard size > 1 else { return [values] }
        var counts = [Int32](repeating: 0, count: size)
        collective("an all-gather of lengths") {
            _ = MPI_Allgather([Int32(values.count)], 1, swiftgpt_mpi_int(), &counts, 1, swiftgpt_mpi_int(), swiftgpt_mpi_comm_world())
        }
        var starts: [Int32] = [], total: Int32 = 0
        for count in counts { starts.append(total); total += count }
        var gathered = [Double](repeating: 0, count: Int(total))
        collective("an all-gather") {
            _ = MPI_Allgatherv(values, Int32(values.count), swiftgpt_mpi_double(), &gathered, counts, starts,
                               swiftgpt_mpi_double(), swiftgpt_mpi_comm_world())
        }
        return (0..<size).map { Array(gathered[Int(starts[$0])..<Int(starts[$0] + counts[$0])]) }
    }

    /// The element-wise sums of `values` over every rank.
    package func sum(_ values: [Double]) -> [Double] { reduce(values, swiftgpt_mpi_sum()) }

    /// The element-wise maxima of `values` over every rank.
    package func maximum(_ values: [Double]) -> [Double] { reduce(values, swiftgpt_mpi_max()) }

    private func reduce(_ values: [Double], _ operation: MPI_Op) -> [Double] {
        guard size > 1 else { return values }
        var result = values
        collective("a reduction of \(values.count) number\(values.count == 1 ? "" : "s")") {
            result.withUnsafeMutableBufferPointer {
                _ = MPI_Allreduce(swiftgpt_mpi_in_place(), $0.baseAddress, Int32($0.count), swiftgpt_mpi_double(), operation,
                                  swiftgpt_mpi_comm_world())
            }
        }
        return result
    }

    /// Checks that every rank passes the same bytes (a run's configuration): an error names the first rank that
    /// differs from rank 0.
    package func checkSame(_ bytes: Data, what: String) throws {
        guard size > 1 else { return }
        // FNV-1a of the bytes, as two halves that a double holds exactly.
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01B3 }
        let halves = [Double(hash >> 32), Double(hash & 0xFFFF_FFFF)]
        let low = maximum(halves.map { -$0 }).map { -$0 }, high = maximum(halves)
        guard low == high else {
            throw ConfigurationError(.ranksDisagree, "the ranks of this run were given different \(what) (rank \(rank) of \(size)); every rank needs the same command line and files")
        }
    }
}
