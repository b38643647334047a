import Foundation
import GPTUtilities
import TensorCore

/// A synthetic task that only in-context learning can solve. Each episode draws a fresh random label (a digit)
/// and shows lines `k7`: a random letter, then the label, except that a quarter of the lines (by default) carry a
/// random digit instead. The answer for a new letter is the episode's label. A model pretrained on such episodes
/// cannot know an episode's label before it is shown, so with no demonstrations it is at chance (one in ten), and
/// its accuracy rises with the number of demonstrations as the evidence outweighs the noise.
package struct NoisyLabelTask: Sendable {
    /// Lines an episode shows, and the fraction of them whose digit is random.
    package var linesPerEpisode = 24
    package var noise = 0.25
    package var seed: UInt64 = 1

    package init() {}

    static let keys = Array("abcdefghijklmnopqrstuvwxyz").map(String.init)
    static let labels = (0...9).map(String.init)

    private func line(label: String, _ random: inout SeededRandom) -> (key: String, value: String) {
        let key = Self.keys[random.nextInt(below: Self.keys.count)]
        let value = random.nextDouble() < noise ? Self.labels[random.nextInt(below: Self.labels.count)] : label
        return (key, value)
    }

    /// Pretraining text: `episodes` episodes, each with its own label, separated by blank lines.
    package func corpus(episodes: Int) -> String {
        var random = SeededRandom(seed: seed)
        var text = ""
        for _ in 0..<episodes {
            let label = Self.labels[random.nextInt(below: Self.labels.count)]
            for _ in 0..<linesPerEpisode {
                let (key, value) = line(label: label, &random)
                text += key + value + "\n"
            }
            text += "\n"
        }
        return text
    }

    /// The evaluation split: ten episodes whose labels are the ten digits in a random order (so a model that
    /// ignores its context scores one in ten), `queries` queries each (a letter and the true label) and a
    /// demonstration pool of `demonstrations` noisy lines each; the field `episode` groups them.
    package func evaluationSplits(queries: Int, demonstrations: Int) -> (queries: [[String: String]], pool: [[String: String]]) {
        var random = SeededRandom(seed: seed &+ 0x5EED)
        var labels = Self.labels
        labels.shuffle(using: &random)
        var queryRows: [[String: String]] = [], poolRows: [[String: String]] = []
        for (episode, label) in labels.enumerated() {
            for _ in 0..<queries {
                queryRows.append(["episode": String(episode), "key": Self.keys[random.nextInt(below: Self.keys.count)], "value": label])
            }
            for _ in 0..<demonstrations {
                let (key, value) = line(label: label, &random)
                poolRows.append(["episode": String(episode), "key": key, "value": value])
            }
        }
        return (queryRows, poolRows)
    }

    /// The task definition for the splits, with data paths as given.
    package static func taskDefinition(data: String, fewShotData: String) -> [String: Any] {
        ["name": "noisy-label", "output_type": "multiple_choice", "data": data, "fewshot_data": fewShotData,
         "fewshot_group": "episode", "template": "{key}", "target_delimiter": "", "fewshot_delimiter": "\n",
         "choices": labels, "answer": "{value}"]
    }

    /// Writes `corpus.txt` (when `episodes` > 0), `eval.jsonl`, `pool.jsonl` and the task file `noisy-label.json`
    /// into `directory`.
    package func write(to directory: URL, episodes: Int, queries: Int, demonstrations: Int) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        if episodes > 0 { try AtomicFile.write(Data(corpus(episodes: episodes).utf8), to: directory.appendingPathComponent("corpus.txt")) }
        let (queryRows, poolRows) = evaluationSplits(queries: queries, demonstrations: demonstrations)
        func lines(_ rows: [[String: String]]) throws -> Data {
            var data = Data()
            for row in rows {
                data += try JSONSerialization.data(withJSONObject: row, options: [.sortedKeys])
                data += Data("\n".utf8)
            }
            return data
        }
        try AtomicFile.write(try lines(queryRows), to: directory.appendingPathComponent("eval.jsonl"))
        try AtomicFile.write(try lines(poolRows), to: directory.appendingPathComponent("pool.jsonl"))
        let task = Self.taskDefinition(data: "eval.jsonl", fewShotData: "pool.jsonl")
        try AtomicFile.write(try JSONSerialization.data(withJSONObject: task, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]),
                             to: directory.appendingPathComponent("noisy-label.json"))
    }
}
