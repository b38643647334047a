import ArgumentParser
import Foundation
import SwiftGPT
import Tokenizers

struct PrepareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prepare",
        abstract: "Tokenize text files into train.bin and val.bin for `gpt train`.",
        discussion: """
        Writes into --out: train.bin and val.bin (token files: uint16 when the vocabulary fits, else uint32), \
        meta.json (tokenizer, counts, sources) and the tokenizer's files. With --tokenizer char the vocabulary is \
        every character of the input. Documents are separated by the end-of-text token when the tokenizer has one. \
        The last --val-fraction of the tokens is the validation split.
        """
    )

    @Option(help: "char, gpt2, or a directory with tokenizer files.") var tokenizer: String
    @Option(help: "Output directory.") var out: String
    @Option(help: "Fraction of tokens (at the end) kept for validation.") var valFraction = 0.1
    @Argument(help: "UTF-8 text files.") var files: [String]

    func run() throws {
        guard !files.isEmpty else { throw ValidationError("give at least one text file") }
        let urls = files.map { URL(fileURLWithPath: $0) }
        let chosen: any Tokenizer
        if tokenizer == "char" {
            chosen = try CharacterTokenizer(corpus: try urls.map { String(decoding: try DataPreparation.readText($0), as: UTF8.self) })
        } else {
            chosen = try TokenizerLoading.load(tokenizer)
        }
        let bar = ProgressBar(total: 100, label: "tokenizing")
        let meta = try DataPreparation.prepare(files: urls, tokenizer: chosen, valFraction: valFraction,
                                               output: URL(fileURLWithPath: out)) { done, total in
            bar.update(done * 100 / max(total, 1))
        }
        bar.finish()
        print("\(out): \(meta.trainTokens) train tokens, \(meta.valTokens) val tokens, vocabulary \(meta.vocabularySize) (\(meta.tokenizer)), from \(meta.bytes) bytes")
    }
}
