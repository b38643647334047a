/// GPT-2's pre-tokenization, a hand-written scanner equivalent to the regular expression
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+` with Unicode semantics
/// (`\p{L}` letters, `\p{N}` numbers, `\s` the White_Space property), as in tiktoken and Hugging Face tokenizers.
/// It reads UTF-8 bytes; a byte that does not start a valid UTF-8 sequence counts as one "other" character.
package enum PreTokenizer {
    /// The classes the pattern distinguishes.
    @usableFromInline enum Class: UInt8 { case letter = 0, number, space, other }

    /// Classes of all scalars below U+30000 (BMP, SMP, SIP), computed once; rarer scalars are looked up directly.
    @usableFromInline static let table: [UInt8] = {
        (0..<0x30000).map { value -> UInt8 in
            guard let scalar = Unicode.Scalar(UInt32(value)) else { return Class.other.rawValue }
            return classify(scalar).rawValue
        }
    }()

    static func classify(_ scalar: Unicode.Scalar) -> Class {
        let properties = scalar.properties
        if properties.isWhitespace { return .space }
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        default: return .other
        }
    }

    /// Class and byte length of the character starting at `i`.
    @inline(__always)
    static func character(_ p: UnsafePointer<UInt8>, _ i: Int, _ n: Int, _ table: UnsafePointer<UInt8>) -> (Class, Int) {
        let b0 = UInt32(p[i])
        if b0 < 0x80 { return (Class(rawValue: table[Int(b0)])!, 1) }
        var value: UInt32, length: Int
        if b0 & 0xE0 == 0xC0 { value = b0 & 0x1F; length = 2 }
        else if b0 & 0xF0 == 0xE0 { value = b0 & 0x0F; length = 3 }
        else if b0 & 0xF8 == 0xF0 { value = b0 & 0x07; length = 4 }
        else { return (.other, 1) }
        guard i + length <= n else { return (.other, 1) }
        for k in 1..<length {
            let b = UInt32(p[i + k])
            guard b & 0xC0 == 0x80 else { return (.other, 1) }
            value = value << 6 | (b & 0x3F)
        }
        // Overlong encodings and surrogates are not valid UTF-8.
        let minimum: UInt32 = length == 2 ? 0x80 : length == 3 ? 0x800 : 0x10000
        guard value >= minimum, value <= 0x10FFFF, !(0xD800...0xDFFF).contains(value) else { return (.other, 1) }
        if value < 0x30000 { return (Class(rawValue: table[Int(value)])!, length) }
        return (classify(Unicode.Scalar(value)!), length)
    }

    /// Calls `body` with the byte range of each piece of `bytes`, in order; the pieces cover `bytes` exactly.
    @inlinable
    package static func forEachPiece(_ bytes: UnsafeBufferPointer<UInt8>, _ body: (Range<Int>) -> Void) {
        guard let p = bytes.baseAddress else { return }
        table.withUnsafeBufferPointer { tableBuffer in
            scan(p, bytes.count, tableBuffer.baseAddress!, body)
        }
    }

    @usableFromInline
    static func scan(_ p: UnsafePointer<UInt8>, _ n: Int, _ table: UnsafePointer<UInt8>, _ body: (Range<Int>) -> Void) {
        var i = 0
        while i < n {
            let start = i
            // Contractions: 's 't 're 've 'm 'll 'd.
            if p[i] == UInt8(ascii: "'"), i + 1 < n {
                let c1 = p[i + 1]
                var length = 0
                switch c1 {
                case UInt8(ascii: "s"), UInt8(ascii: "t"), UInt8(ascii: "m"), UInt8(ascii: "d"): length = 2
                case UInt8(ascii: "r"), UInt8(ascii: "v"):
                    if i + 2 < n, p[i + 2] == UInt8(ascii: "e") { length = 3 }
                case UInt8(ascii: "l"):
                    if i + 2 < n, p[i + 2] == UInt8(ascii: "l") { length = 3 }
                default: break
                }
                if length > 0 {
                    i += length
                    body(start..<i)
                    continue
                }
            }
            var (cls, length) = character(p, i, n, table)
            if cls == .space {
                // A single space joins the letter, number or other run that follows it.
                if p[i] == UInt8(ascii: " "), i + 1 < n {
                    let (next, nextLength) = character(p, i + 1, n, table)
                    if next != .space {
                        i += 1
                        cls = next
                        length = nextLength
                    }
                }
                if cls == .space {
                    // A whitespace run; when non-space follows it, its last character is left to the next piece.
                    var end = i + length, lastStart = i
                    while end < n {
                        let (c, l) = character(p, end, n, table)
                        if c != .space { break }
                        lastStart = end
                        end += l
                    }
                    i = end == n || lastStart == start ? end : lastStart
                    body(start..<i)
                    continue
                }
            }
            // A run of one class: letters, numbers, or other characters.
            i += length
            while i < n {
                let (c, l) = character(p, i, n, table)
                if c != cls { break }
                i += l
            }
            body(start..<i)
        }
    }

    /// A position near `target` where a piece certainly ends, so that the text before and after it pre-tokenize
    /// independently with the same result as the whole; nil when none is found within `searchLimit` bytes.
    /// Such a position lies between two non-space characters of different classes, the first not an apostrophe.
    package static func safeSplit(_ bytes: UnsafeBufferPointer<UInt8>, near target: Int, searchLimit: Int = 1 << 16) -> Int? {
        guard let p = bytes.baseAddress else { return nil }
        let n = bytes.count
        return table.withUnsafeBufferPointer { tableBuffer -> Int? in
            let table = tableBuffer.baseAddress!
            var i = target
            while i < n, p[i] & 0xC0 == 0x80 { i += 1 }  // the start of a character
            guard i < n else { return nil }
            var (previous, length) = character(p, i, n, table)
            var previousByte = p[i]
            i += length
            let limit = min(n, target + searchLimit)
            while i < limit {
                let (cls, l) = character(p, i, n, table)
                if previous != .space, cls != .space, cls != previous, previousByte != UInt8(ascii: "'") { return i }
                previous = cls
                previousByte = p[i]
                i += l
            }
            return nil
        }
    }
}
