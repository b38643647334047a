import ArgumentParser
import Foundation
import GPTBenchmarks
import GPTUtilities
import SwiftGPT
import TensorCore
import Tokenizers

struct TokenizerBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenizer",
        abstract: "Encode and decode speed: one thread, all cores, and decoding.")

    @OptionGroup var tokenizerOption: TokenizerOption
    @Option(help: "Text file to encode.") var file: String
    @Option(help: "Timed runs of each measurement (the median is reported).") var runs = 3

    func run() throws {
        let tokenizer = try tokenizerOption.load()
        let bytes = try Input.bytes(file: file)
        guard !bytes.isEmpty, runs > 0 else { throw ValidationError("need a non-empty file and --runs > 0") }
        let megabytes = Double(bytes.count) / 1e6
        let threads = Parallel.threadCount
        var ids: [Int32] = []
        func measure(_ body: () throws -> Void) rethrows -> Double {
            var times: [Double] = []
            for _ in 0..<runs { times.append(try Benchmark.time { try body() }) }
            return Benchmark.median(times)
        }
        print("\(file): " + String(format: "%.2f MB", megabytes) + ", tokenizer \(tokenizerOption.tokenizer)")
        Parallel.threadCount = 1
        let single = try measure { ids = try tokenizer.encode(bytes: bytes) }
        Parallel.threadCount = threads
        print(String(format: "encode, 1 thread: %.1f MB/s (%d tokens, %.2f s)", megabytes / single, ids.count, single))
        var parallelIDs: [Int32] = []
        let parallel = try measure { parallelIDs = try tokenizer.encode(bytes: bytes) }
        guard parallelIDs == ids else { throw CommandError("parallel encoding differs from sequential encoding") }
        print(String(format: "encode, parallel on %d threads: %.1f MB/s (%.2f s; identical to 1 thread)", threads, megabytes / parallel, parallel))
        var decoded: [UInt8] = []
        let decode = try measure { decoded = try tokenizer.decodeBytes(ids) }
        guard decoded == bytes else { throw CommandError("decoding did not give the input back") }
        print(String(format: "decode: %.1f MB/s (%.3f s; round trip exact)", megabytes / decode, decode))
    }
}
