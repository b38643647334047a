import Foundation
import TensorCore

/// A synthetic task that only in-context learning can solve. Each episode draws a fresh random mapping from a few
/// letters to digits and shows pairs `k7` of it (a letter, then its digit), one a line; the answer to `k` is whatever digit the context
/// showed after `k`. A model pretrained on such episodes cannot know a mapping it has not been shown, so its accuracy with no
/// demonstrations is chance (one in ten) and rises as demonstrations reveal the mapping.
public struct KeyValueRecall: Sendable {
    /// Letters an episode maps, and pairs it shows.
    public var keysPerEpisode = 4
    public var linesPerEpisode = 24
    public var seed: UInt64 = 1

    public init() {}

    static let keys = Array("abcdefghijklmnopqrstuvwxyz").map(String.init)
    static let values = (0...9).map(String.init)

    private func mapping(_ random: inout SeededRandom) -> [(key: String, value: String)] {
        var keys = Self.keys
        keys.shuffle(using: &random)
        return keys.prefix(keysPerEpisode).map { ($0, Self.values[random.nextInt(below: Self.values.count)]) }
    }

    /// Pretraining text: `episodes` episodes, each its own mapping, separated by blank lines.
    public func corpus(episodes: Int) -> String {
        var random = SeededRandom(seed: seed)
        var text = ""
        for _ in 0..<episodes {
            let pairs = mapping(&random)
            for _ in 0..<linesPerEpisode {
                let pair = pairs[random.nextInt(below: pairs.count)]
                text += "\(pair.key)\(pair.value)\n"
            }
            text += "\n"
        }
        return text
    }

    /// The evaluation split: one mapping drawn apart from the corpus's (another seed stream), `count` queries
    /// and a demonstration pool of `count` pairs of the same mapping.
    public func evaluationSplits(count: Int) -> (queries: [[String: String]], pool: [[String: String]]) {
        var random = SeededRandom(seed: seed &+ 0x5EED)
        let pairs = mapping(&random)
        func split(_ name: String) -> [[String: String]] {
            (0..<count).map { index in
                let pair = pairs[random.nextInt(below: pairs.count)]
                return ["id": "\(name)-\(index)", "key": pair.key, "value": pair.value]
            }
        }
        return (split("query"), split("pool"))
    }

    /// The task definition for the splits, with data paths as given.
    public static func taskDefinition(data: String, fewShotData: String) -> [String: Any] {
        ["name": "kv-recall", "output_type": "multiple_choice", "data": data, "fewshot_data": fewShotData,
         "template": "{key}", "target_delimiter": "", "fewshot_delimiter": "\n", "choices": values, "answer": "{value}"]
    }

    /// Writes `corpus.txt` (when `episodes` > 0), `eval.jsonl`, `pool.jsonl` and the task file `kv-recall.json`
    /// into `directory`.
    public func write(to directory: URL, episodes: Int, examples: Int) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        if episodes > 0 { try AtomicFile.write(Data(corpus(episodes: episodes).utf8), to: directory.appendingPathComponent("corpus.txt")) }
        let (queries, pool) = evaluationSplits(count: examples)
        func lines(_ rows: [[String: String]]) throws -> Data {
            var data = Data()
            for row in rows {
                data += try JSONSerialization.data(withJSONObject: row, options: [.sortedKeys])
                data += Data("\n".utf8)
            }
            return data
        }
        try AtomicFile.write(try lines(queries), to: directory.appendingPathComponent("eval.jsonl"))
        try AtomicFile.write(try lines(pool), to: directory.appendingPathComponent("pool.jsonl"))
        let task = Self.taskDefinition(data: "eval.jsonl", fewShotData: "pool.jsonl")
        try AtomicFile.write(try JSONSerialization.data(withJSONObject: task, options: [.sortedKeys, .prettyPrinted]),
                             to: directory.appendingPathComponent("kv-recall.json"))
    }
}
