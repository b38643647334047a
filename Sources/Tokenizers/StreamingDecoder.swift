/// Turns a stream of token ids into text pieces that never split a UTF-8 character: bytes of an incomplete
/// character wait for the next token; bytes that can never become valid UTF-8 come out as U+FFFD.
package struct StreamingDecoder {
    private let tokenizer: any Tokenizer
    private var pending: [UInt8] = []

    package init(tokenizer: any Tokenizer) { self.tokenizer = tokenizer }

    /// The text completed by `id` (possibly empty).
    package mutating func append(_ id: Int32) throws -> String {
        pending += try tokenizer.decodeBytes([id])
        let complete = Self.completePrefixLength(pending)
        let text = String(decoding: pending[..<complete], as: UTF8.self)
        pending.removeFirst(complete)
        return text
    }

    /// Whatever is still held back, decoded with replacement characters (call at the end of the stream).
    package mutating func finish() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    /// The length of the longest prefix that does not end inside a character that may still be completed.
    package static func completePrefixLength(_ bytes: [UInt8]) -> Int {
        let n = bytes.count
        // Look back at most 3 bytes for the start of a multi-byte character.
        var start = n - 1
        while start >= 0, start >= n - 3, bytes[start] & 0xC0 == 0x80 { start -= 1 }
        guard start >= 0 else { return n }
        let lead = bytes[start]
        let needed = lead & 0xE0 == 0xC0 ? 2 : lead & 0xF0 == 0xE0 ? 3 : lead & 0xF8 == 0xF0 ? 4 : 1
        return n - start < needed ? start : n
    }
}
