import CMPI
import Foundation
import GPTModels

/// The processes of a data-parallel run: every rank `mpirun` started (Open MPI), or this process alone when it was
/// not started by `mpirun`. Rank 0 is the main process: it alone writes checkpoints, metrics and progress.
public final class ProcessGroup: @unchecked Sendable {
    public let rank: Int
    public let size: Int
    /// Whether this process writes the run's files.
    public var isMain: Bool { rank == 0 }

    /// All the processes of this job, MPI being started on first use when `mpirun` launched this process.
    public static let world = ProcessGroup()

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
    }

    /// Adds `count` floats at `buffer` over every rank, in place (one all-reduce, in pieces below 2³¹ elements).
    public func sumInPlace(_ buffer: UnsafeMutablePointer<Float>, count: Int) {
        guard size > 1 else { return }
        var start = 0
        while start < count {
            let piece = min(count - start, Int(Int32.max))
            MPI_Allreduce(swiftgpt_mpi_in_place(), buffer + start, Int32(piece), swiftgpt_mpi_float(), swiftgpt_mpi_sum(),
                          swiftgpt_mpi_comm_world())
            start += piece
        }
    }

    /// Replaces `count` floats at `buffer` by their mean over every rank.
    public func averageInPlace(_ buffer: UnsafeMutablePointer<Float>, count: Int) {
        guard size > 1 else { return }
        sumInPlace(buffer, count: count)
        let factor = 1 / Float(size)
        for i in 0..<count { buffer[i] *= factor }
    }

    /// The element-wise sums of `values` over every rank.
    public func sum(_ values: [Double]) -> [Double] { reduce(values, swiftgpt_mpi_sum()) }

    /// The element-wise maxima of `values` over every rank.
    public func maximum(_ values: [Double]) -> [Double] { reduce(values, swiftgpt_mpi_max()) }

    private func reduce(_ values: [Double], _ operation: MPI_Op) -> [Double] {
        guard size > 1 else { return values }
        var result = values
        result.withUnsafeMutableBufferPointer {
            _ = MPI_Allreduce(swiftgpt_mpi_in_place(), $0.baseAddress, Int32($0.count), swiftgpt_mpi_double(), operation,
                              swiftgpt_mpi_comm_world())
        }
        return result
    }

    /// Checks that every rank passes the same bytes (a run's configuration): an error names the first rank that
    /// differs from rank 0.
    public func checkSame(_ bytes: Data, what: String) throws {
        guard size > 1 else { return }
        // FNV-1a of the bytes, as two halves that a double holds exactly.
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01B3 }
        let halves = [Double(hash >> 32), Double(hash & 0xFFFF_FFFF)]
        let low = maximum(halves.map { -$0 }).map { -$0 }, high = maximum(halves)
        guard low == high else {
            throw ConfigurationError(message: "the ranks of this run were given different \(what) (rank \(rank) of \(size)); every rank needs the same command line and files")
        }
    }
}
