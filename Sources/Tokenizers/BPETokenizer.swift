import Dispatch
import Foundation
import GPTUtilities

/// Byte-level BPE as in GPT-2: GPT-2's pre-tokenization, then rank-ordered merges over each piece's bytes.
/// Tokens that are neither single bytes nor made by a merge are special tokens (such as `<|endoftext|>`), or added
/// tokens, which (as Hugging Face tokenizers' non-special added tokens) are cut out of any text before the merges.
package final class BPETokenizer: Tokenizer, @unchecked Sendable {
    package let kind: String
    package let vocabularySize: Int
    package let endOfText: Int32?
    /// Special tokens by their text.
    package let specialTokens: [String: Int32]
    /// Added tokens by their text: recognised in all text, before the merges (GPT-NeoX's runs of spaces).
    package let addedTokens: [String: Int32]
    /// The added tokens' bytes and ids, in one order: what each encoding cuts text at, made once.
    private let addedTokenBytes: [[UInt8]], addedTokenIDs: [Int32]
    /// What happens to text before GPT-2's pre-tokenizer (Hugging Face tokenizers' normalizer and digit splitting).
    package let preparation: TextPreparation
    /// The merges in rank order, as pairs of token ids.
    package let merges: [(Int32, Int32)]

    private let tokenBytes: [UInt8]
    private let tokenOffsets: [Int]
    private let byteTokens: [Int32]
    private let pieces: ByteStringTable
    private let mergeTable: MergeTable
    /// The vocabulary files, made on the first save (checkpoints save the tokenizer many times).
    private var files: (Data, Data)?
    private let filesLock = NSLock()

    /// Builds a tokenizer from each id's bytes (nil for special and added tokens, given by `specialTokens` and
    /// `addedTokens`) and the merges. Every merge's result must be the concatenation of its two tokens.
    package init(tokens: [[UInt8]?], specialTokens: [String: Int32], addedTokens: [String: Int32] = [:], merges: [(Int32, Int32)],
                 preparation: TextPreparation = TextPreparation(), kind: String) throws {
        self.kind = kind
        vocabularySize = tokens.count
        self.specialTokens = specialTokens
        self.addedTokens = addedTokens
        let addedNames = addedTokens.keys.sorted()
        addedTokenBytes = addedNames.map { Array($0.utf8) }
        addedTokenIDs = addedNames.map { addedTokens[$0]! }
        self.preparation = preparation
        endOfText = specialTokens["<|endoftext|>"]
        self.merges = merges
        var names: [Int32: String] = [:]
        for (name, id) in specialTokens.merging(addedTokens, uniquingKeysWith: { a, _ in a }) { names[id] = name }
        var arena: [UInt8] = [], offsets = [0]
        for (id, token) in tokens.enumerated() {
            if let token { arena += token } else if let name = names[Int32(id)] { arena += Array(name.utf8) }
            offsets.append(arena.count)
        }
        tokenBytes = arena
        tokenOffsets = offsets
        var byteTokens = [Int32](repeating: -1, count: 256)
        var table = ByteStringTable(capacity: tokens.count)
        for (id, token) in tokens.enumerated() where token?.count == 1 {
            if byteTokens[Int(token![0])] < 0 { byteTokens[Int(token![0])] = Int32(id) }
        }
        if let missing = byteTokens.firstIndex(of: -1) {
            throw TokenizerError(.invalidVocabulary, "the vocabulary has no token for byte \(missing); a byte-level BPE needs all 256")
        }
        for (id, token) in tokens.enumerated() { if let token { table.insert(token, value: Int32(id)) } }
        var mergeTable = MergeTable(capacity: merges.count)
        for (rank, (left, right)) in merges.enumerated() {
            guard let a = tokens[Int(left)], let b = tokens[Int(right)] else {
                throw TokenizerError(.invalidVocabulary, "merge \(rank + 1) uses a special token")
            }
            guard let merged = table.find(a + b) else {
                throw TokenizerError(.unencodableText, "merge \(rank + 1) makes a token that is not in the vocabulary")
            }
            mergeTable.insert(left, right, rank: Int32(rank), merged: merged)
        }
        pieces = table
        self.byteTokens = byteTokens
        self.mergeTable = mergeTable
    }

    // MARK: Encoding

    package func encode(bytes: [UInt8]) throws -> [Int32] {
        var bytes = bytes
        if preparation.normalizesToNFC, let text = String(validating: bytes, as: UTF8.self) {
            bytes = Array(text.precomposedStringWithCanonicalMapping.utf8)
        }
        guard !addedTokens.isEmpty || preparation.digits != nil else { return bytes.withUnsafeBufferPointer { encodeParallel($0) } }
        var result: [Int32] = []
        for (run, added) in SpecialTokenSplit.segments(bytes, specials: addedTokenBytes) {
            for piece in preparation.digitSegments(run) { result += Array(piece).withUnsafeBufferPointer { encodeParallel($0) } }
            if let added { result.append(addedTokenIDs[added]) }
        }
        return result
    }

    package func encode(_ text: String, allowedSpecial: Set<String>) throws -> [Int32] {
        var names: [[UInt8]] = [], ids: [Int32] = []
        for name in allowedSpecial.sorted() {
            guard let id = specialTokens[name] else { throw TokenizerError(.unknownSpecialToken, "unknown special token \(name)") }
            names.append(Array(name.utf8))
            ids.append(id)
        }
        var result: [Int32] = []
        for (run, special) in SpecialTokenSplit.segments(Array(text.utf8), specials: names) {
            result += try encode(bytes: Array(run))
            if let special { result.append(ids[special]) }
        }
        return result
    }

    /// Encodes with all cores when the input is large: it is cut at positions where a piece certainly ends, so the
    /// result is identical to a sequential encoding.
    func encodeParallel(_ bytes: UnsafeBufferPointer<UInt8>) -> [Int32] {
        let threads = Parallel.threadCount
        let minimumChunk = 1 << 18
        guard threads > 1, bytes.count >= 2 * minimumChunk else { return encodeSequential(bytes) }
        let chunkCount = min(threads * 8, bytes.count / minimumChunk)
        var bounds = [0]
        for k in 1..<chunkCount {
            if let cut = PreTokenizer.safeSplit(bytes, near: bytes.count * k / chunkCount), cut > bounds.last! {
                bounds.append(cut)
            }
        }
        bounds.append(bytes.count)
        let results = UnsafeMutableBufferPointer<[Int32]>.allocate(capacity: bounds.count - 1)
        results.initialize(repeating: [])
        defer { results.deinitialize(); results.deallocate() }
        let next = Counter()
        DispatchQueue.concurrentPerform(iterations: min(threads, bounds.count - 1)) { _ in
            while let k = next.take(below: bounds.count - 1) {
                results[k] = encodeSequential(UnsafeBufferPointer(rebasing: bytes[bounds[k]..<bounds[k + 1]]))
            }
        }
        var all: [Int32] = []
        all.reserveCapacity(results.reduce(0) { $0 + $1.count })
        for part in results { all += part }
        return all
    }

    func encodeSequential(_ bytes: UnsafeBufferPointer<UInt8>) -> [Int32] {
        guard let base = bytes.baseAddress else { return [] }
        var out: [Int32] = []
        out.reserveCapacity(bytes.count / 3)
        var scratch = MergeScratch()
        PreTokenizer.forEachPiece(bytes) { range in
            let p = base + range.lowerBound
            if let id = pieces.find(p, range.count) {
                out.append(id)
            } else {
                merge(p, range.count, into: &out, scratch: &scratch)
            }
        }
        return out
    }

    /// Reusable buffers for merging one piece.
    struct MergeScratch {
        var ids: [Int32] = []
        var ranks: [UInt64] = []
        var next: [Int32] = []
        var previous: [Int32] = []
        var heap: [UInt64] = []
    }

    /// Applies the merges to one piece's bytes: repeatedly the lowest-ranked adjacent pair, leftmost first.
    @inline(__always)
    private func merge(_ p: UnsafePointer<UInt8>, _ n: Int, into out: inout [Int32], scratch: inout MergeScratch) {
        if n > 48 { return mergeLong(p, n, into: &out, scratch: &scratch) }
        scratch.ids.removeAll(keepingCapacity: true)
        scratch.ranks.removeAll(keepingCapacity: true)
        for i in 0..<n { scratch.ids.append(byteTokens[Int(p[i])]) }
        for i in 0..<(n - 1) { scratch.ranks.append(mergeTable.lookup(scratch.ids[i], scratch.ids[i + 1])) }
        var m = n
        scratch.ids.withUnsafeMutableBufferPointer { ids in
            scratch.ranks.withUnsafeMutableBufferPointer { ranks in
                while m > 1 {
                    var best = 0, bestRank = ranks[0]
                    for i in 1..<(m - 1) where ranks[i] < bestRank { best = i; bestRank = ranks[i] }
                    if bestRank == .max { break }
                    ids[best] = Int32(truncatingIfNeeded: bestRank & 0xFFFF_FFFF)
                    for i in (best + 1)..<(m - 1) { ids[i] = ids[i + 1] }
                    for i in best..<(m - 2) { ranks[i] = ranks[i + 1] }
                    m -= 1
                    if best > 0 { ranks[best - 1] = mergeTable.lookup(ids[best - 1], ids[best]) }
                    if best < m - 1 { ranks[best] = mergeTable.lookup(ids[best], ids[best + 1]) }
                }
            }
        }
        out.append(contentsOf: scratch.ids[0..<m])
    }

    /// The same merges for long pieces, in O(n log n): a linked list of symbols and a heap of (rank, position).
    private func mergeLong(_ p: UnsafePointer<UInt8>, _ n: Int, into out: inout [Int32], scratch: inout MergeScratch) {
        scratch.ids = (0..<n).map { byteTokens[Int(p[$0])] }
        scratch.next = (0..<n).map { Int32($0 + 1) }
        scratch.previous = (0..<n).map { Int32($0 - 1) }
        scratch.ranks = [UInt64](repeating: .max, count: n)
        scratch.heap.removeAll(keepingCapacity: true)
        var heap = MinHeap(storage: scratch.heap)
        for i in 0..<(n - 1) {
            let rank = mergeTable.lookup(scratch.ids[i], scratch.ids[i + 1])
            scratch.ranks[i] = rank
            if rank != .max { heap.push((rank & 0xFFFF_FFFF_0000_0000) | UInt64(i)) }
        }
        while let top = heap.pop() {
            let i = Int(top & 0xFFFF_FFFF), rank = top >> 32
            guard scratch.ranks[i] != .max, scratch.ranks[i] >> 32 == rank else { continue }  // stale entry
            let j = Int(scratch.next[i])
            scratch.ids[i] = Int32(truncatingIfNeeded: scratch.ranks[i] & 0xFFFF_FFFF)
            scratch.ranks[j] = .max
            scratch.ids[j] = -1
            let k = Int(scratch.next[j])
            scratch.next[i] = Int32(k)
            if k < n { scratch.previous[k] = Int32(i) }
            scratch.ranks[i] = k < n ? mergeTable.lookup(scratch.ids[i], scratch.ids[k]) : .max
            if scratch.ranks[i] != .max { heap.push((scratch.ranks[i] & 0xFFFF_FFFF_0000_0000) | UInt64(i)) }
            let h = Int(scratch.previous[i])
            if h >= 0 {
                scratch.ranks[h] = mergeTable.lookup(scratch.ids[h], scratch.ids[i])
                if scratch.ranks[h] != .max { heap.push((scratch.ranks[h] & 0xFFFF_FFFF_0000_0000) | UInt64(h)) }
            }
        }
        scratch.heap = heap.storage
        var i = 0
        while i < n { out.append(scratch.ids[i]); i = Int(scratch.next[i]) }
    }

    // MARK: Decoding

    package func decodeBytes(_ ids: [Int32]) throws -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        for id in ids {
            guard id >= 0, Int(id) < vocabularySize else {
                throw TokenizerError(.idOutsideVocabulary, "token id \(id) is outside the vocabulary (0..<\(vocabularySize))")
            }
            bytes += tokenBytes[tokenOffsets[Int(id)]..<tokenOffsets[Int(id) + 1]]
        }
        return bytes
    }

    package func addingSpecialTokens(_ names: [String]) throws -> any Tokenizer {
        var specials = specialTokens
        for (k, name) in names.enumerated() {
            guard addedTokens[name] == nil, specials.updateValue(Int32(vocabularySize + k), forKey: name) == nil else {
                throw TokenizerError(.duplicateSpecialToken, "\(name) is already a special token of this vocabulary")
            }
        }
        // Added tokens that merges also make stay pieces; the others, as special tokens, have no bytes of their own.
        let specialIDs = Set(specialTokens.values).union(addedTokens.values.filter { !isPiece($0) })
        let tokens = (0..<vocabularySize).map { specialIDs.contains(Int32($0)) ? nil : Array(bytes(of: Int32($0))) }
            + [[UInt8]?](repeating: nil, count: names.count)
        return try BPETokenizer(tokens: tokens, specialTokens: specials, addedTokens: addedTokens, merges: merges,
                                preparation: preparation, kind: kind)
    }

    /// Whether token `id` is one the merges work with (a byte or a merge's result), not a special or added token
    /// outside them.
    func isPiece(_ id: Int32) -> Bool { pieces.find(Array(bytes(of: id))) == id }

    /// The bytes of one token.
    package func bytes(of id: Int32) -> ArraySlice<UInt8> {
        tokenBytes[tokenOffsets[Int(id)]..<tokenOffsets[Int(id) + 1]]
    }

    /// The vocabulary files' contents, computed once.
    func vocabularyFiles() throws -> (Data, Data) {
        filesLock.lock()
        defer { filesLock.unlock() }
        if let files { return files }
        let made = try serialized()
        files = made
        return made
    }
}

extension ByteStringTable {
    func find(_ bytes: [UInt8]) -> Int32? {
        bytes.withUnsafeBufferPointer { $0.isEmpty ? nil : find($0.baseAddress!, $0.count) }
    }
}

/// A binary min-heap of packed keys.
struct MinHeap {
    var storage: [UInt64]

    mutating func push(_ value: UInt64) {
        storage.append(value)
        var i = storage.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if storage[parent] <= storage[i] { break }
            storage.swapAt(parent, i)
            i = parent
        }
    }

    mutating func pop() -> UInt64? {
        guard let first = storage.first else { return nil }
        let last = storage.removeLast()
        if storage.isEmpty { return first }
        storage[0] = last
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var smallest = i
            if l < storage.count, storage[l] < storage[smallest] { smallest = l }
            if r < storage.count, storage[r] < storage[smallest] { smallest = r }
            if smallest == i { break }
            storage.swapAt(i, smallest)
            i = smallest
        }
        return first
    }
}

/// A shared counter handing out work items to threads.
final class Counter: @unchecked Sendable {
    private var value = 0
    private let lock = NSLock()

    func take(below limit: Int) -> Int? {
        lock.lock()
        defer { lock.unlock() }
        guard value < limit else { return nil }
        value += 1
        return value - 1
    }
}
