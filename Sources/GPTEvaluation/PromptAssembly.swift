import Foundation
import Tokenizers

/// A query's prompt, as text and as tokens, with what had to be cut to fit the model's context.
package struct AssembledPrompt: Sendable {
    /// The prompt as rendered (description, demonstrations, query), before any cut.
    package var text: String
    /// The context tokens the model reads.
    package var context: [Int32]
    /// Tokens of each continuation (multiple choice: one per choice; loglikelihood: the target; else none).
    package var continuations: [[Int32]]
    /// Demonstrations kept, and dropped because the prompt did not fit.
    package var demonstrations: Int
    package var droppedDemonstrations: Int
    /// Whether the context was also cut from the left.
    package var truncatedLeft: Bool

    /// Whether anything was cut.
    package var wasTruncated: Bool { droppedDemonstrations > 0 || truncatedLeft }
}

/// Builds prompts as lm-evaluation-harness does and makes them fit the model: whole demonstrations are dropped
/// first (the ones farthest from the query), then the context is cut from the left.
package struct PromptAssembly {
    package let task: EvaluationTask
    package let tokenizer: any Tokenizer
    package let contextLength: Int

    package init(task: EvaluationTask, tokenizer: any Tokenizer, contextLength: Int) {
        self.task = task
        self.tokenizer = tokenizer
        self.contextLength = contextLength
    }

    /// The prompt text for `query` after `demonstrations` (in order).
    package func text(query: EvaluationExample, demonstrations: [EvaluationExample]) -> String {
        var text = task.description
        for demonstration in demonstrations {
            text += demonstration.demonstration(targetDelimiter: task.targetDelimiter) + task.fewShotDelimiter
        }
        return text + query.query
    }

    /// The continuations scored after the prompt: the delimiter then each choice, or the target.
    package func continuationTexts(_ example: EvaluationExample) -> [String] {
        switch task.outputType {
        case .multipleChoice: example.choices.map { task.targetDelimiter + $0 }
        case .loglikelihood: [task.targetDelimiter + example.target]
        case .generateUntil, .rollingPerplexity: []
        }
    }

    /// The prompt for `query` with as many of `demonstrations` as fit, as tokens.
    package func assemble(query: EvaluationExample, demonstrations: [EvaluationExample]) throws -> AssembledPrompt {
        let continuations = continuationTexts(query)
        var kept = demonstrations[...]
        while true {
            let text = text(query: query, demonstrations: Array(kept))
            var context: [Int32], encoded: [[Int32]] = []
            let room: Int
            if task.outputType == .generateUntil {
                // Generation reads the prompt as it is, trailing whitespace included.
                context = try tokenizer.encode(text)
                if context.isEmpty, let endOfText = tokenizer.endOfText { context = [endOfText] }
                room = max(1, contextLength - task.maxNewTokens)
            } else {
                (context, encoded) = try encode(context: text, continuations: continuations)
                let longest = encoded.map(\.count).max() ?? 1
                guard longest <= contextLength else {
                    throw TaskDefinitionError(.doesNotFitModel, "a continuation of \(longest) tokens does not fit the model's context of \(contextLength)")
                }
                room = contextLength + 1 - longest
            }
            if context.count <= room || kept.isEmpty {
                let truncated = context.count > room
                if truncated { context = Array(context.suffix(room)) }
                return AssembledPrompt(text: text, context: context, continuations: encoded, demonstrations: kept.count,
                                       droppedDemonstrations: demonstrations.count - kept.count, truncatedLeft: truncated)
            }
            kept = kept.dropFirst()
        }
    }

    /// Context and continuation tokens as lm-evaluation-harness splits them: whitespace at the end of the context
    /// moves to the continuations, the context is encoded alone, and each continuation is what encoding the whole
    /// text adds after it. An empty context is the end-of-text token.
    package func encode(context: String, continuations: [String]) throws -> (context: [Int32], continuations: [[Int32]]) {
        let scalars = context.unicodeScalars
        var end = scalars.endIndex
        while end > scalars.startIndex, scalars[scalars.index(before: end)].properties.isWhitespace { end = scalars.index(before: end) }
        let trimmed = String(scalars[..<end]), moved = String(scalars[end...])
        var contextTokens = try tokenizer.encode(trimmed)
        let continuationTokens = try continuations.map { continuation -> [Int32] in
            guard !trimmed.isEmpty else { return try tokenizer.encode(moved + continuation) }
            return Array(try tokenizer.encode(trimmed + moved + continuation).dropFirst(contextTokens.count))
        }
        if contextTokens.isEmpty {
            guard let endOfText = tokenizer.endOfText else {
                throw TaskDefinitionError(.doesNotFitModel, "an empty prompt, and the tokenizer has no end-of-text token to stand for it")
            }
            contextTokens = [endOfText]
        }
        for (index, tokens) in continuationTokens.enumerated() where tokens.isEmpty {
            throw TaskDefinitionError(.invalidExample, "continuation \(PromptTemplate.quoted(continuations[index])) encodes to no tokens")
        }
        return (contextTokens, continuationTokens)
    }
}
