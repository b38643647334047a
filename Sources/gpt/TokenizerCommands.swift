import ArgumentParser
import SwiftGPT
import Foundation
import Tokenizers

/// Where text comes from: a file, or standard input.
enum Input {
    static func bytes(file: String?) throws -> [UInt8] {
        if let file {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw CommandError("cannot read \(file)")
            }
            return Array(data)
        }
        return Array(FileHandle.standardInput.readDataToEndOfFile())
    }

    /// The lines of a JSONL input, each decoded as `T`; an invalid line is an error naming its number.
    static func jsonLines<T: Decodable>(_ bytes: [UInt8], as type: T.Type, expecting: String) throws -> [T] {
        var result: [T] = []
        let decoder = JSONDecoder()
        for (index, line) in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
            if line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\t") }) { continue }
            do {
                result.append(try decoder.decode(T.self, from: Data(line)))
            } catch {
                throw CommandError("input line \(index + 1): expected \(expecting)")
            }
        }
        return result
    }
}

func writeOutput(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}

func jsonArray(_ ids: [Int32]) -> String {
    "[" + ids.map(String.init).joined(separator: ", ") + "]"
}

/// `--tokenizer` as used by every command that reads or writes text.
struct TokenizerOption: ParsableArguments {
    @Option(help: "Tokenizer: gpt2 (shipped) or a directory with tokenizer.json, vocab.json + merges.txt, encoder.json + vocab.bpe, or char_tokenizer.json.")
    var tokenizer = "gpt2"

    func load() throws -> any Tokenizer { try TokenizerLoading.load(tokenizer) }
}

struct EncodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encode",
        abstract: "Text to token ids.",
        discussion: """
        Reads text from --file or standard input and prints its ids as one JSON array. With --jsonl, reads lines \
        {"text": ...} and prints lines {"ids": [...]} in the same order; nothing is printed if any line is invalid. \
        Input that is not valid UTF-8 is encoded byte by byte (byte-level tokenizers).
        """
    )

    @OptionGroup var tokenizerOption: TokenizerOption
    @Option(help: "Read text from this file instead of standard input.") var file: String?
    @Flag(help: "Read JSON lines {\"text\": ...} and write JSON lines {\"ids\": [...]}.") var jsonl = false
    @Flag(help: "Recognise the tokenizer's special tokens (such as <|endoftext|>) in the text.") var allowSpecial = false

    struct Line: Decodable { var text: String }

    func run() throws {
        let tokenizer = try tokenizerOption.load()
        let input = try Input.bytes(file: file)
        let special: Set<String> = allowSpecial ? Set((tokenizer as? BPETokenizer)?.specialTokens.keys.map { $0 } ?? []) : []
        if jsonl {
            let lines = try Input.jsonLines(input, as: Line.self, expecting: "a JSON object {\"text\": string}")
            var output = ""
            for line in lines { output += "{\"ids\": " + jsonArray(try tokenizer.encode(line.text, allowedSpecial: special)) + "}\n" }
            writeOutput(output)
        } else if special.isEmpty {
            writeOutput(jsonArray(try tokenizer.encode(bytes: input)) + "\n")
        } else {
            writeOutput(jsonArray(try tokenizer.encode(String(decoding: input, as: UTF8.self), allowedSpecial: special)) + "\n")
        }
    }
}

struct DecodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decode",
        abstract: "Token ids to text.",
        discussion: """
        Reads a JSON array of ids from --file or standard input and writes the text. With --jsonl, reads lines \
        {"ids": [...]} and writes lines {"text": ...}. Ids outside the vocabulary are an error.
        """
    )

    @OptionGroup var tokenizerOption: TokenizerOption
    @Option(help: "Read ids from this file instead of standard input.") var file: String?
    @Flag(help: "Read JSON lines {\"ids\": [...]} and write JSON lines {\"text\": ...}.") var jsonl = false

    struct Line: Codable { var ids: [Int32] }
    struct Text: Encodable { var text: String }

    func run() throws {
        let tokenizer = try tokenizerOption.load()
        let input = try Input.bytes(file: file)
        if jsonl {
            let lines = try Input.jsonLines(input, as: Line.self, expecting: "a JSON object {\"ids\": [integer]}")
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.withoutEscapingSlashes]
            var output = Data()
            for (index, line) in lines.enumerated() {
                do {
                    output += try encoder.encode(Text(text: try tokenizer.decode(line.ids)))
                } catch let error as TokenizerError {
                    throw CommandError("input line \(index + 1): \(error.message)")
                }
                output += Data("\n".utf8)
            }
            FileHandle.standardOutput.write(output)
        } else {
            guard let ids = try? JSONDecoder().decode([Int32].self, from: Data(input)) else {
                throw CommandError("expected a JSON array of integer token ids")
            }
            FileHandle.standardOutput.write(Data(try tokenizer.decodeBytes(ids)))
        }
    }
}

struct TokenizerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenizer", abstract: "Make tokenizers.", subcommands: [TrainTokenizer.self])
}

struct TrainTokenizer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Learn a byte-level BPE from text files; writes vocab.json and merges.txt.",
        discussion: "The files load in Hugging Face tokenizers (ByteLevelBPETokenizer) and in tiktoken with GPT-2's pattern."
    )

    @Option(help: "Vocabulary size, special tokens included.") var vocabSize: Int
    @Option(help: "Output directory.") var out: String
    @Option(help: "A special token (repeatable).") var special: [String] = ["<|endoftext|>"]
    @Option(help: "For .jsonl inputs: the comma-separated fields whose text each line contributes.") var fields: String?
    @Argument(help: "Text files to learn from (or .jsonl files with --fields).") var files: [String]

    func run() throws {
        guard !files.isEmpty else { throw ValidationError("give at least one text file") }
        let start = Date()
        var words = BPETrainer.WordCounts()
        var bytes = 0
        for file in files {
            let documents = fields == nil || !file.hasSuffix(".jsonl")
                ? [try Input.bytes(file: file)]
                : try DataPreparation.readDocuments(URL(fileURLWithPath: file), fields: fields!.split(separator: ",").map(String.init))
            for data in documents {
                bytes += data.count
                words.add(data, specialTokens: special)
            }
        }
        let trainer = BPETrainer(vocabularySize: vocabSize, specialTokens: special)
        let bar = ProgressBar(total: max(vocabSize - 256 - special.count, 1), label: "merges")
        let tokenizer = try trainer.train(words) { done, _ in bar.update(done) }
        bar.finish()
        try tokenizer.save(to: URL(fileURLWithPath: out))
        print(String(format: "learned %d merges from %d bytes in %.2f s; ", tokenizer.merges.count, bytes, Date().timeIntervalSince(start))
              + "wrote \(out)/vocab.json and merges.txt (\(tokenizer.vocabularySize) tokens)")
    }
}
