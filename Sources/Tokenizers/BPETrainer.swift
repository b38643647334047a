import Foundation

/// Learns a byte-level BPE from text, deterministically: GPT-2 pre-tokenization, then repeatedly the most frequent
/// adjacent pair (ties: the pair with the smaller ids) becomes a new token, until the vocabulary has the size asked.
package struct BPETrainer {
    /// Size of the final vocabulary, special tokens included (at least 256 + the special tokens).
    package var vocabularySize: Int
    /// Special tokens, appended after the learned tokens; their text in the corpus is never merged into others.
    package var specialTokens: [String]

    package init(vocabularySize: Int, specialTokens: [String] = ["<|endoftext|>"]) {
        self.vocabularySize = vocabularySize
        self.specialTokens = specialTokens
    }

    /// Word counts of a corpus: each pre-tokenized piece and how often it occurs (special-token text excluded).
    package struct WordCounts {
        var counts: [[UInt8]: Int] = [:]

        package init() {}

        /// Adds the pieces of `bytes`; text of the special tokens is left out.
        package mutating func add(_ bytes: [UInt8], specialTokens: [String]) {
            for (run, _) in SpecialTokenSplit.segments(bytes, specials: specialTokens.map { Array($0.utf8) }) {
                Array(run).withUnsafeBufferPointer { buffer in
                    PreTokenizer.forEachPiece(buffer) { counts[Array(buffer[$0]), default: 0] += 1 }
                }
            }
        }
    }

    /// Learns the merges. `progress` is called with (merges done, merges wanted).
    package func train(_ words: WordCounts, progress: (Int, Int) -> Void = { _, _ in }) throws -> BPETokenizer {
        let wanted = vocabularySize - 256 - specialTokens.count
        guard wanted >= 0 else {
            throw TokenizerError(.invalidVocabulary, "a vocabulary of \(vocabularySize) cannot hold the 256 bytes and \(specialTokens.count) special tokens")
        }
        guard Set(specialTokens).count == specialTokens.count else { throw TokenizerError(.invalidVocabulary, "special tokens must be distinct") }
        // Byte tokens in the order of their vocabulary-file characters, as GPT-2's vocabulary.
        let byteOrder = (0..<256).sorted { ByteLevel.characterForByte[$0] < ByteLevel.characterForByte[$1] }
        var tokens: [[UInt8]] = byteOrder.map { [UInt8($0)] }
        var idForByte = [Int32](repeating: 0, count: 256)
        for (id, byte) in byteOrder.enumerated() { idForByte[byte] = Int32(id) }
        var known = Set(tokens)

        // Words in a fixed order, so that the result does not depend on hashing.
        let sortedWords = words.counts.sorted { $0.key.lexicographicallyPrecedes($1.key) }
        var symbols = sortedWords.map { $0.key.map { idForByte[Int($0)] } }
        let frequency = sortedWords.map(\.value)
        var pairCount: [UInt64: Int] = [:]
        var pairWords: [UInt64: [Int32]] = [:]
        for (w, word) in symbols.enumerated() where word.count > 1 {
            for i in 0..<(word.count - 1) {
                let key = Self.key(word[i], word[i + 1])
                pairCount[key, default: 0] += frequency[w]
                pairWords[key, default: []].append(Int32(w))
            }
        }
        var heap = PairHeap()
        for (key, count) in pairCount { heap.push(count: count, key: key) }

        var merges: [(Int32, Int32)] = []
        var lastVisit = [Int](repeating: -1, count: symbols.count)
        while merges.count < wanted, let (count, key) = heap.pop() {
            guard let current = pairCount[key], current > 0 else { continue }
            if current != count {
                heap.push(count: current, key: key)
                continue
            }
            let left = Int32(truncatingIfNeeded: key >> 32), right = Int32(truncatingIfNeeded: key & 0xFFFF_FFFF)
            let joined = tokens[Int(left)] + tokens[Int(right)]
            // A string already in the vocabulary would get two ids; such a pair is never merged.
            guard known.insert(joined).inserted else {
                pairCount[key] = 0
                continue
            }
            let merged = Int32(tokens.count)
            tokens.append(joined)
            merges.append((left, right))
            var changed: [UInt64: Int] = [:]
            for w in pairWords.removeValue(forKey: key) ?? [] where lastVisit[Int(w)] != merges.count {
                lastVisit[Int(w)] = merges.count
                let old = symbols[Int(w)]
                var new: [Int32] = []
                new.reserveCapacity(old.count)
                var i = 0
                while i < old.count {
                    if i + 1 < old.count, old[i] == left, old[i + 1] == right {
                        new.append(merged)
                        i += 2
                    } else {
                        new.append(old[i])
                        i += 1
                    }
                }
                guard new.count < old.count else { continue }
                let f = frequency[Int(w)]
                for i in 0..<(old.count - 1) { changed[Self.key(old[i], old[i + 1]), default: 0] -= f }
                for i in 0..<(new.count - 1) {
                    let pair = Self.key(new[i], new[i + 1])
                    changed[pair, default: 0] += f
                    if new[i] == merged || new[i + 1] == merged { pairWords[pair, default: []].append(w) }
                }
                symbols[Int(w)] = new
            }
            for (pair, delta) in changed.sorted(by: { $0.key < $1.key }) where delta != 0 {
                let updated = (pairCount[pair] ?? 0) + delta
                pairCount[pair] = updated
                if delta > 0, updated > 0 { heap.push(count: updated, key: pair) }
            }
            pairCount[key] = 0
            progress(merges.count, wanted)
        }

        var all: [[UInt8]?] = tokens
        var specials: [String: Int32] = [:]
        for name in specialTokens {
            specials[name] = Int32(all.count)
            all.append(nil)
        }
        return try BPETokenizer(tokens: all, specialTokens: specials, merges: merges, kind: "bpe")
    }

    static func key(_ a: Int32, _ b: Int32) -> UInt64 { UInt64(UInt32(a)) << 32 | UInt64(UInt32(b)) }
}

/// A max-heap of (count, pair); among equal counts the smaller pair key comes first.
struct PairHeap {
    private var items: [(count: Int, key: UInt64)] = []

    private static func before(_ a: (count: Int, key: UInt64), _ b: (count: Int, key: UInt64)) -> Bool {
        a.count > b.count || (a.count == b.count && a.key < b.key)
    }

    mutating func push(count: Int, key: UInt64) {
        items.append((count, key))
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard Self.before(items[i], items[parent]) else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> (Int, UInt64)? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var best = i
                if l < items.count, Self.before(items[l], items[best]) { best = l }
                if r < items.count, Self.before(items[r], items[best]) { best = r }
                if best == i { break }
                items.swapAt(i, best)
                i = best
            }
        }
        return top
    }
}
