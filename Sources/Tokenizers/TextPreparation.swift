import Foundation

/// What a byte-level BPE does to text before GPT-2's pre-tokenizer, as Hugging Face tokenizers' `tokenizer.json` can
/// ask: Unicode normalization form C (GPT-NeoX), and numbers cut out as pieces of their own (StarCoder's `Digits`).
package struct TextPreparation: Equatable, Sendable {
    /// How numbers are cut out of text.
    package enum DigitSplit: Equatable, Sendable {
        /// Every numeric character alone (`individual_digits: true`).
        case individual
        /// Every run of numeric characters.
        case runs
    }

    /// Whether text is put in normalization form C first.
    package var normalizesToNFC = false
    /// Numbers cut out before the regular expression, which then sees each piece alone; nil: none.
    package var digits: DigitSplit?

    package init(normalizesToNFC: Bool = false, digits: DigitSplit? = nil) {
        self.normalizesToNFC = normalizesToNFC
        self.digits = digits
    }

    /// `run` cut as `digits` says: numeric characters (Unicode's decimal, letter and other numbers, as the Rust
    /// `char::is_numeric` of `tokenizers` has it) alone or in runs, and the text between them. Bytes that are not
    /// UTF-8 belong to the text between.
    func digitSegments(_ run: ArraySlice<UInt8>) -> [ArraySlice<UInt8>] {
        guard let digits, !run.isEmpty else { return [run] }
        // The byte offset and width of each numeric character.
        var numeric: [(start: Int, width: Int)] = []
        if run.allSatisfy({ $0 < 0x80 }) {
            for i in run.indices where (0x30...0x39).contains(run[i]) { numeric.append((i, 1)) }
        } else if let text = String(validating: run, as: UTF8.self) {
            var offset = run.startIndex
            for scalar in text.unicodeScalars {
                let width = UTF8.width(scalar)
                switch scalar.properties.generalCategory {
                case .decimalNumber, .letterNumber, .otherNumber: numeric.append((offset, width))
                default: break
                }
                offset += width
            }
        } else {
            for i in run.indices where (0x30...0x39).contains(run[i]) { numeric.append((i, 1)) }
        }
        guard !numeric.isEmpty else { return [run] }
        var segments: [ArraySlice<UInt8>] = [], start = run.startIndex, k = 0
        while k < numeric.count {
            let first = numeric[k].start
            var end = first + numeric[k].width
            if digits == .runs {
                while k + 1 < numeric.count, numeric[k + 1].start == end { k += 1; end += numeric[k].width }
            }
            if start < first { segments.append(run[start..<first]) }
            segments.append(run[first..<end])
            start = end
            k += 1
        }
        if start < run.endIndex { segments.append(run[start...]) }
        return segments
    }
}
