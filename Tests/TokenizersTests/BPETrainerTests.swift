import Foundation
import Tokenizers
import XCTest

final class BPETrainerTests: XCTestCase {
    /// A corpus with repeated words, digits, punctuation, non-Latin text and a special token.
    static let corpus = String(repeating: "the cat sat on the mat; the cats' hats, 12 34 1234! 中文 中文字 naïve naïve<|endoftext|>\n", count: 30)
        + "Hello hello HELLO it's we're they'll I'd 😀😀 tabs\tand  spaces\n"

    func testTrainingIsDeterministicAndRoundTrips() throws {
        var words = BPETrainer.WordCounts()
        words.add(Array(Self.corpus.utf8), specialTokens: ["<|endoftext|>"])
        let trainer = BPETrainer(vocabularySize: 300)
        let a = try trainer.train(words), b = try trainer.train(words)
        XCTAssertEqual(a.vocabularySize, 300)
        XCTAssertEqual(a.merges.map { [$0.0, $0.1] }, b.merges.map { [$0.0, $0.1] })
        XCTAssertEqual(a.endOfText, 299)
        let ids = try a.encode(Self.corpus, allowedSpecial: ["<|endoftext|>"])
        XCTAssertEqual(try a.decode(ids), Self.corpus)
        XCTAssertLessThan(ids.count, Self.corpus.utf8.count / 3, "merges compress the training text")
        // The most frequent pair in the corpus is merged first.
        XCTAssertEqual(try a.decode([a.merges[0].0, a.merges[0].1]), "at")
    }

    func testTooSmallAVocabularyIsAnError() {
        XCTAssertThrowsError(try BPETrainer(vocabularySize: 200).train(BPETrainer.WordCounts()))
    }

    func testSavedFilesAgreeWithTiktokenAndHuggingFace() throws {
        var words = BPETrainer.WordCounts()
        words.add(Array(Self.corpus.utf8), specialTokens: ["<|endoftext|>"])
        let tokenizer = try BPETrainer(vocabularySize: 400).train(words)
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("swiftgpt-trained-\(getpid())")
        defer { try? FileManager.default.removeItem(at: folder) }
        try tokenizer.save(to: folder)
        let reloaded = try TokenizerLoading.load(folder.path)
        var cases = ""
        let texts = Self.corpus.split(separator: "\n").map(String.init)
            + ["unseen words: zebra, 9876, ÄÖÜ, 中文字符, 'tis", "  leading spaces", "trailing \n\n"]
        for text in texts {
            let ids = try tokenizer.encode(text)
            XCTAssertEqual(try reloaded.encode(text), ids)
            cases += String(decoding: try JSONEncoder().encode(["text": text]), as: UTF8.self).dropLast() + ", \"ids\": \(ids)}\n"
        }
        let casesFile = folder.appendingPathComponent("cases.jsonl")
        try Data(cases.utf8).write(to: casesFile)
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../scripts/check_tokenizer.py").standardized
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script.path, folder.path, casesFile.path]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        do { try process.run() } catch { throw XCTSkip("python3 is not available") }
        process.waitUntilExit()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        if process.terminationStatus == 2 || output.contains("No such file") {
            throw XCTSkip("tiktoken and tokenizers are not installed (pip install tiktoken tokenizers): \(output)")
        }
        XCTAssertEqual(process.terminationStatus, 0, output)
    }
}
