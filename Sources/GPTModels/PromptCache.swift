/// Keys and values of token sequences decoded before, kept so that a prompt that begins with one of them computes
/// only its remaining tokens: a chat's next turn (which repeats the conversation so far), or requests that share a
/// system prompt or few-shot examples.
///
/// Each entry is the exact token sequence a slot held and a copy of its keys and values; a prompt reuses the longest
/// prefix it shares with any entry of the same adapter. Entries are immutable and evicted whole, least recently used
/// first, to keep their bytes within `byteLimit`; a sequence that extends an entry replaces it. Not thread-safe: the
/// decoder that owns it uses it.
package final class PromptCache {
    /// Bytes of keys and values held at most.
    package let byteLimit: Int
    /// Bytes held now.
    package private(set) var bytes = 0
    private var entries: [Entry] = []
    /// Counts uses, for least-recently-used eviction.
    private var clock: UInt64 = 0

    /// One decoded sequence: its tokens, the adapter it was decoded with, and its keys and values
    /// (`InferenceSession.prefixStates`).
    package final class Entry {
        package let tokens: [Int32]
        package let adapter: Int?
        package let states: [Float]
        fileprivate var lastUse: UInt64 = 0

        fileprivate init(tokens: [Int32], adapter: Int?, states: [Float]) {
            self.tokens = tokens
            self.adapter = adapter
            self.states = states
        }

        fileprivate var bytes: Int { states.count * MemoryLayout<Float>.stride }
    }

    /// An empty cache that holds at most `byteLimit` bytes of keys and values.
    package init(byteLimit: Int) {
        precondition(byteLimit >= 0, "a negative cache size")
        self.byteLimit = byteLimit
    }

    /// Entries held.
    package var count: Int { entries.count }

    /// The entry that shares the longest prefix with `tokens` among those decoded with `adapter`, and the length of
    /// that prefix (at least 1); nil when none shares a first token. The entry counts as used.
    package func longestPrefix(of tokens: [Int32], adapter: Int?) -> (entry: Entry, length: Int)? {
        var best: (entry: Entry, length: Int)?
        for entry in entries where entry.adapter == adapter {
            let length = Self.commonPrefixLength(entry.tokens, tokens)
            if length > (best?.length ?? 0) { best = (entry, length) }
        }
        if let best { touch(best.entry) }
        return best
    }

    /// Whether an entry decoded with `adapter` begins with all of `tokens` (storing them would add nothing).
    package func covers(_ tokens: [Int32], adapter: Int?) -> Bool {
        entries.contains { $0.adapter == adapter && $0.tokens.count >= tokens.count && Self.commonPrefixLength($0.tokens, tokens) == tokens.count }
    }

    /// Keeps the keys and values `states` of `tokens` decoded with `adapter`, unless they alone exceed the limit.
    /// Entries that are prefixes of `tokens` go (the new one holds them), then the least recently used ones until the
    /// bytes are within the limit.
    package func insert(_ tokens: [Int32], adapter: Int?, states: [Float]) {
        guard !tokens.isEmpty, !covers(tokens, adapter: adapter) else { return }
        let entry = Entry(tokens: tokens, adapter: adapter, states: states)
        guard entry.bytes <= byteLimit else { return }
        touch(entry)
        for old in entries where old.adapter == adapter && Self.commonPrefixLength(old.tokens, tokens) == old.tokens.count {
            remove(old)
        }
        while bytes + entry.bytes > byteLimit, let oldest = entries.min(by: { $0.lastUse < $1.lastUse }) { remove(oldest) }
        entries.append(entry)
        bytes += entry.bytes
    }

    private func touch(_ entry: Entry) {
        clock += 1
        entry.lastUse = clock
    }

    private func remove(_ entry: Entry) {
        entries.removeAll { $0 === entry }
        bytes -= entry.bytes
    }

    private static func commonPrefixLength(_ a: [Int32], _ b: [Int32]) -> Int {
        var n = 0
        let limit = min(a.count, b.count)
        while n < limit, a[n] == b[n] { n += 1 }
        return n
    }
}
