// Streams a completion, holds a short chat, fine-tunes a sentiment classifier on the bundled reviews, and predicts
// with it: everything through SwiftGPT's public API.
//
//     swift run -c release SwiftGPTExample [MODEL_FOLDER]
//
// MODEL_FOLDER is a GPT-2-vocabulary model (a `gpt train` run, or a Hugging Face GPT-2 folder); without one, a small
// random model is made, so the text is gibberish and the classifier learns little: the calls are the same.
import Foundation
import SwiftGPT

let work = FileManager.default.temporaryDirectory.appendingPathComponent("swiftgpt-example-\(ProcessInfo.processInfo.processIdentifier)")
try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(at: work) }

let base: URL
if CommandLine.arguments.count > 1 {
    base = URL(fileURLWithPath: CommandLine.arguments[1])
} else {
    base = work.appendingPathComponent("base")
    let config = GPTConfig(vocabularySize: 50257, contextLength: 64, layerCount: 2, headCount: 2, embeddingWidth: 64)
    try HuggingFaceCheckpoint.save(try GPTModel(config: config, seed: 1), to: base)
    print("made a random 2-layer model with GPT-2's vocabulary in \(base.path)")
}

// 1. Generate: text arrives as it is decoded; cancelling the task would stop it.
let model = try LanguageModel(directory: base)
var options = SamplingOptions()
options.maxNewTokens = 16
options.temperature = 0.8
options.seed = 7
print("completion: To be or not to be", terminator: "")
for try await event in model.generate("To be or not to be", options: options) {
    if case .text(_, _, let piece) = event { print(piece, terminator: "") }
    if case .finished(let completion) = event { print("  [\(completion.tokens.count) tokens, \(completion.finishReason)]") }
}

// 2. Chat: the session keeps the conversation and renders it with the model's template.
var chatOptions = ChatSession.defaultOptions
chatOptions.maxNewTokens = 24
let chat = model.chat(system: "You are terse.", options: chatOptions)
print("reply: \(try await chat.reply(to: "Say hello."))")
print("the conversation holds \(chat.messages.count) messages")

// 3. Score and embed.
let score = try model.logLikelihood(of: " not to be", after: "To be or")
print(String(format: "log-likelihood of \" not to be\" after \"To be or\": %.3f over %d tokens", score.logLikelihood, score.tokenCount))
print("embedding width: \(try model.embedding(of: "To be or not to be").count)")

// 4. Fine-tune a sentiment classifier (GPT-1's recipe) on the bundled reviews, reporting evaluations as they come.
guard let train = Bundle.module.url(forResource: "reviews-train", withExtension: "jsonl", subdirectory: "Resources"),
      let dev = Bundle.module.url(forResource: "reviews-dev", withExtension: "jsonl", subdirectory: "Resources") else {
    fatalError("the bundled reviews are missing")
}
var configuration = TrainingConfiguration()
configuration.initFrom = base.path
configuration.out = work.appendingPathComponent("sentiment").path
var fineTuning = FineTuningSettings(task: .classification, train: train.path, dev: dev.path)
fineTuning.epochs = 2
fineTuning.labelNames = ["negative", "positive"]
configuration.objective = .fineTuning(fineTuning)
configuration.batchSize = 16
configuration.learningRate = 1e-3
configuration.minLearningRate = 0
configuration.context = 64
let trainer = try Trainer(configuration: configuration)
for try await event in trainer.events() {
    if case .evaluation(let step, let evaluation) = event { print("step \(step): \(evaluation.summary)") }
}

// 5. Predict with the fine-tuned model (its best checkpoint by dev accuracy).
let classifier = try TaskModel(directory: URL(fileURLWithPath: configuration.out))
let reviews = ["a gripping , funny and moving film", "dull , tiresome and far too long"]
for (review, prediction) in zip(reviews, try classifier.predict(reviews.map { [$0] })) {
    let probabilities = prediction.probabilities!.map { String(format: "%.3f", $0) }.joined(separator: ", ")
    print("\"\(review)\": \(classifier.labels[prediction.index!]) (probabilities \(probabilities))")
}
