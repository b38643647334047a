import Foundation

/// GPT-1's input transformations (section 3.3): how a task's texts become token sequences for a model with a
/// task head, around three special tokens appended to the vocabulary (start, delimiter, extract). The head reads
/// the final hidden state of the extract token, the last token of every sequence.
public struct InputFormat: Codable, Equatable, Sendable {
    /// The kinds of task and their layouts.
    public enum Task: String, Codable, CaseIterable, Sendable {
        /// `[start] text [extract]`
        case classification
        /// `[start] premise [delim] hypothesis [extract]`
        case entailment
        /// `[start] a [delim] b [extract]` and `[start] b [delim] a [extract]`; the two extract states are added.
        case similarity
        /// `[start] context [delim] choice [extract]` for each choice; one score each, softmax over the choices.
        case multipleChoice = "multiple-choice"

        /// How many text segments an input of this task has (multiple choice: the context and at least one choice).
        package var segmentCount: ClosedRange<Int> {
            switch self {
            case .classification: return 1...1
            case .entailment, .similarity: return 2...2
            case .multipleChoice: return 2...Int.max
            }
        }
    }

    /// Names of the special tokens in the tokenizer, in the order start, delimiter, extract.
    package static let specialTokenNames = ["<|start|>", "<|delimiter|>", "<|extract|>"]

    package var task: Task
    package var start: Int32
    package var delimiter: Int32
    package var extract: Int32

    package init(task: Task, start: Int32, delimiter: Int32, extract: Int32) {
        self.task = task
        self.start = start
        self.delimiter = delimiter
        self.extract = extract
    }

    /// The shortest context that holds an input's special tokens.
    package var minimumContext: Int { task == .classification ? 2 : 3 }

    /// The sequences of one input, and how much of its text had to be cut to fit.
    package struct Sequences: Equatable, Sendable {
        package var rows: [[Int32]]
        /// The largest fraction of a row's text tokens cut (0 when nothing was).
        package var lostFraction: Double
        /// Whether a text was cut to fit.
        package var truncated: Bool { lostFraction > 0 }
    }

    /// The token sequences for one input given as token segments: classification `[text]`, entailment
    /// `[premise, hypothesis]`, similarity `[a, b]`, multiple choice `[context, choice, choice, …]`. A sequence
    /// longer than `contextLength` (at least `minimumContext`) loses tokens from the end of its longest text segment
    /// (never a special token).
    package func sequences(_ segments: [[Int32]], contextLength: Int) -> Sequences {
        precondition(task.segmentCount.contains(segments.count), "\(task.rawValue) takes \(task.segmentCount) segments, got \(segments.count)")
        var lostFraction = 0.0
        func row(_ first: [Int32], _ second: [Int32]?) -> [Int32] {
            var parts = second == nil ? [first] : [first, second!]
            let budget = contextLength - parts.count - 1
            precondition(budget >= 0, "a context of \(contextLength) cannot hold the special tokens of a \(task.rawValue) input")
            let length = parts.reduce(0) { $0 + $1.count }
            var excess = length - budget
            if excess > 0 { lostFraction = max(lostFraction, Double(excess) / Double(length)) }
            while excess > 0 {
                // Cut the longest segment down towards the next longest, at least one token at a time.
                let order = parts.indices.sorted { parts[$0].count > parts[$1].count }
                let longest = order[0], next = order.count > 1 ? parts[order[1]].count : 0
                let cut = min(excess, max(1, parts[longest].count - next))
                parts[longest].removeLast(cut)
                excess -= cut
            }
            return [start] + parts[0] + (parts.count > 1 ? [delimiter] + parts[1] : []) + [extract]
        }
        let rows: [[Int32]]
        switch task {
        case .classification: rows = [row(segments[0], nil)]
        case .entailment: rows = [row(segments[0], segments[1])]
        case .similarity: rows = [row(segments[0], segments[1]), row(segments[1], segments[0])]
        case .multipleChoice: rows = segments.dropFirst().map { row(segments[0], $0) }
        }
        return Sequences(rows: rows, lostFraction: lostFraction)
    }
}
