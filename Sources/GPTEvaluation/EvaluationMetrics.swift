import Foundation

/// The statistics `gpt eval` reports, computed as lm-evaluation-harness computes them.
package enum EvaluationMetrics {
    /// The mean and its standard error (sample standard deviation over √n; nil for fewer than two values).
    package static func mean(_ values: [Double]) -> (value: Double, standardError: Double?) {
        guard !values.isEmpty else { return (.nan, nil) }
        let n = Double(values.count)
        let mean = values.reduce(0, +) / n
        guard values.count > 1 else { return (mean, nil) }
        let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / (n - 1)
        return (mean, (variance / n).squareRoot())
    }

    /// Text normalised as SQuAD's evaluation does: lower case, punctuation and the articles a/an/the removed,
    /// whitespace collapsed.
    package static func normalizedAnswer(_ text: String) -> String {
        let lowered = text.lowercased()
        let unpunctuated = String(lowered.unicodeScalars.filter { !($0.isASCII && CharacterSet.punctuationCharacters.union(.symbols).contains($0)) }
            .map(Character.init))
        let words = unpunctuated.split(whereSeparator: { $0.isWhitespace }).filter { !["a", "an", "the"].contains($0) }
        return words.joined(separator: " ")
    }

    /// 1 when the normalised texts are equal, else 0.
    package static func exactMatch(_ prediction: String, _ reference: String) -> Double {
        normalizedAnswer(prediction) == normalizedAnswer(reference) ? 1 : 0
    }

    /// SQuAD's token F1 between the normalised texts (bags of words).
    package static func tokenF1(_ prediction: String, _ reference: String) -> Double {
        let predicted = normalizedAnswer(prediction).split(separator: " "), expected = normalizedAnswer(reference).split(separator: " ")
        if predicted.isEmpty || expected.isEmpty { return predicted.isEmpty && expected.isEmpty ? 1 : 0 }
        var counts: [Substring: Int] = [:]
        for word in expected { counts[word, default: 0] += 1 }
        var common = 0
        for word in predicted where counts[word, default: 0] > 0 {
            counts[word]! -= 1
            common += 1
        }
        guard common > 0 else { return 0 }
        let precision = Double(common) / Double(predicted.count), recall = Double(common) / Double(expected.count)
        return 2 * precision * recall / (precision + recall)
    }

    /// Words as lm-evaluation-harness counts them for word perplexity: the pieces of the text split at runs of
    /// whitespace (empty pieces at the ends included, as Python's `re.split(r"\s+", text)`).
    package static func wordCount(_ text: String) -> Int {
        var count = 1, inWhitespace = false
        for scalar in text.unicodeScalars {
            let space = scalar.properties.isWhitespace
            if space && !inWhitespace { count += 1 }
            inWhitespace = space
        }
        return count
    }
}
