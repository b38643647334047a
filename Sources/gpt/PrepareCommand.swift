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
        The last --val-fraction of the tokens is the validation split. With --fields, each line of a .jsonl input \
        is a document made of those fields' texts (e.g. --fields text,premise,hypothesis).
        """
    )

    @Option(help: "char, gpt2, or a directory with tokenizer files.") var tokenizer: String
    @Option(help: "Output directory.") var out: String
    @Option(help: "Fraction of tokens (at the end) kept for validation.") var valFraction = 0.1
    @Option(help: "For .jsonl inputs: the comma-separated fields whose text each line contributes.") var fields: String?
    @Argument(help: "UTF-8 text files (or .jsonl files with --fields).") var files: [String]

    var fieldList: [String]? { fields?.split(separator: ",").map(String.init) }

    func run() throws {
        guard !files.isEmpty else { throw ValidationError("give at least one text file") }
        let urls = files.map { URL(fileURLWithPath: $0) }
        let chosen: any Tokenizer
        if tokenizer == "char" {
            // The newline that separates documents is a character of the vocabulary, even when no file holds one.
            chosen = try CharacterTokenizer(corpus: try urls.flatMap { url in
                try DataPreparation.readDocuments(url, fields: fieldList).map { String(decoding: $0, as: UTF8.self) }
            } + ["\n"])
        } else {
            chosen = try TokenizerLoading.load(tokenizer)
        }
        let bar = ProgressBar(total: 100, label: "tokenizing")
        let meta = try DataPreparation.prepare(files: urls, fields: fieldList, tokenizer: chosen, valFraction: valFraction,
                                               output: URL(fileURLWithPath: out)) { done, total in
            bar.update(done * 100 / max(total, 1))
        }
        bar.finish()
        print("\(out): \(meta.trainTokens) train tokens, \(meta.valTokens) val tokens, vocabulary \(meta.vocabularySize) (\(meta.tokenizer)), from \(meta.bytes) bytes")
    }
}
