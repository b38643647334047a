import Foundation
import GPTUtilities
import Tokenizers
import XCTest

/// `tokenizer.json` read as the `tokenizers` library reads it: GPT-2's vocabulary through SwiftGPT's own file, a
/// GPT-NeoX-style tokenizer that `tokenizers` trained (NFC, special and added tokens), and refusals by field.
final class HuggingFaceTokenizerFileTests: XCTestCase {
    private func temporaryFolder() throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("swiftgpt-tokenizer-json-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
        return folder
    }

    /// GPT-2's tokenizer written as tokenizer.json alone and read back gives tiktoken's ids on every golden case.
    func testGPT2ThroughItsTokenizerFileGivesTheGoldenIds() throws {
        let folder = try temporaryFolder()
        try TokenizerLoading.gpt2().save(to: folder)
        for name in ["vocab.json", "merges.txt"] { try FileManager.default.removeItem(at: folder.appendingPathComponent(name)) }
        let tokenizer = try TokenizerLoading.load(directory: folder)
        XCTAssertEqual(tokenizer.vocabularySize, 50257)
        XCTAssertEqual(tokenizer.endOfText, 50256)
        for (line, item) in try Fixtures.cases("cases.jsonl").enumerated() {
            XCTAssertEqual(try tokenizer.encode(item.text), item.ids, "cases.jsonl line \(line + 1)")
        }
        XCTAssertEqual(try tokenizer.encode("a<|endoftext|>b", allowedSpecial: ["<|endoftext|>"]), [64, 50256, 65])
    }

    /// A byte-level BPE trained by `tokenizers` as GPT-NeoX's is set up (NFC normalizer, special tokens at ids 0 and
    /// 1, runs of spaces as non-special added tokens past the vocabulary) encodes every golden case's text as
    /// `tokenizers` does, with merges stored as pairs and as strings, and decodes it back. (`tokenizers` recognises
    /// special tokens in any text; SwiftGPT where they are allowed, as tiktoken does: here all are.)
    func testTokenizerTrainedByTheTokenizersLibraryEncodesAsItDoes() throws {
        try checkAgainstTheTokenizersLibrary(starCoderStyle: false)
    }

    /// The same for StarCoder's set-up: each digit a piece of its own (the Digits pre-tokenizer) before ByteLevel.
    func testDigitsSplitOffAsStarCodersTokenizerDoes() throws {
        try checkAgainstTheTokenizersLibrary(starCoderStyle: true)
    }

    private func checkAgainstTheTokenizersLibrary(starCoderStyle: Bool) throws {
        try XCTSkipIf(!pythonHas("tokenizers"), "python3 with tokenizers is not installed (pip install tokenizers)")
        let folder = try temporaryFolder()
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let run = Process()
        run.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        run.arguments = ["python3", root.appendingPathComponent("scripts/tokenizer_json_reference.py").path,
                         root.appendingPathComponent("data/tinyshakespeare/input.txt").path,
                         Fixtures.resources.appendingPathComponent("cases.jsonl").path, folder.path] + (starCoderStyle ? ["--digits"] : [])
        try run.run()
        run.waitUntilExit()
        XCTAssertEqual(run.terminationStatus, 0)
        let expected = try String(contentsOf: folder.appendingPathComponent("expected.jsonl"), encoding: .utf8)
            .split(separator: "\n").map { try JSONDecoder().decode(Fixtures.Case.self, from: Data($0.utf8)) }
        XCTAssertEqual(expected.count, 293)
        let stringMerges = folder.appendingPathComponent("strings")
        try FileManager.default.createDirectory(at: stringMerges, withIntermediateDirectories: true)
        try FileManager.default.moveItem(at: folder.appendingPathComponent("tokenizer-string-merges.json"),
                                        to: stringMerges.appendingPathComponent("tokenizer.json"))
        for directory in [folder, stringMerges] {
            let tokenizer = try TokenizerLoading.load(directory: directory)
            XCTAssertEqual(tokenizer.vocabularySize, starCoderStyle ? 700 : 707)
            XCTAssertEqual(tokenizer.endOfText, 0)
            let specials: Set = ["<|endoftext|>", "<|padding|>"]
            for (line, item) in expected.enumerated() {
                let ids = try tokenizer.encode(item.text, allowedSpecial: specials)
                XCTAssertEqual(ids, item.ids, "line \(line + 1): \(item.text.debugDescription)")
                XCTAssertEqual(try tokenizer.decode(ids), item.text.precomposedStringWithCanonicalMapping, "line \(line + 1)")
            }
            if starCoderStyle {
                XCTAssertEqual(try tokenizer.encode("x 2026").count, 6, "x, the space, and each digit alone")
            } else {
                // Runs of spaces take the added tokens, longest first, wherever they are.
                XCTAssertEqual(Array(try tokenizer.encode("a          b")[1...2]), [700, 706])
            }
            // Saved again, it is the same tokenizer.
            let copy = directory.appendingPathComponent("copy")
            try tokenizer.save(to: copy)
            try FileManager.default.removeItem(at: copy.appendingPathComponent("vocab.json"))
            let reloaded = try TokenizerLoading.load(directory: copy)
            for item in expected { XCTAssertEqual(try reloaded.encode(item.text, allowedSpecial: specials), item.ids) }
        }
    }

    /// What is not a byte-level BPE, or needs a step this reader does not do, is refused naming the field.
    func testUnsupportedTokenizersAreRefusedByField() throws {
        let folder = try temporaryFolder()
        try TokenizerLoading.gpt2().save(to: folder)
        let url = folder.appendingPathComponent("tokenizer.json")
        let original = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        func refused(_ change: (inout [String: Any]) -> Void, _ expected: String, _ reason: FileError.Reason = .unsupported,
                     file: StaticString = #filePath, line: UInt = #line) throws {
            var document = original
            change(&document)
            try JSONSerialization.data(withJSONObject: document).write(to: url)
            // Refused as what it is, naming tokenizer.json and the field.
            XCTAssertThrowsError(try TokenizerLoading.load(directory: folder), file: file, line: line) {
                let error = $0 as? FileError
                XCTAssertEqual(error?.reason, reason, "\($0)", file: file, line: line)
                XCTAssertEqual(error?.url.lastPathComponent, "tokenizer.json", "\($0)", file: file, line: line)
                XCTAssertTrue(error?.message.contains(expected) ?? false, "\($0) does not name '\(expected)'", file: file, line: line)
            }
        }
        try refused({ var model = $0["model"] as! [String: Any]; model["type"] = "WordPiece"; $0["model"] = model }, "'model.type' is WordPiece")
        try refused({ $0["pre_tokenizer"] = ["type": "Sequence", "pretokenizers": [["type": "Whitespace"],
                                                                                  ["type": "ByteLevel", "add_prefix_space": false]]] },
                    "Sequence of Whitespace, ByteLevel")
        try refused({ $0["pre_tokenizer"] = ["type": "ByteLevel", "add_prefix_space": true] }, "'pre_tokenizer.add_prefix_space' is true")
        try refused({ $0["normalizer"] = ["type": "Lowercase"] }, "'normalizer' Lowercase")
        try refused({ $0["post_processor"] = ["type": "TemplateProcessing", "single": [["SpecialToken": ["id": "<|endoftext|>"]], ["Sequence": ["id": "A"]]]] },
                    "'post_processor' adds tokens")
        try refused({ var model = $0["model"] as! [String: Any]; model["merges"] = ["Ġ t", "q"]; $0["model"] = model }, "'model.merges' entry 1", .malformed(line: nil))
        try refused({ var model = $0["model"] as! [String: Any]; var vocab = model["vocab"] as! [String: Any]; vocab["!"] = 70000; model["vocab"] = vocab; $0["model"] = model },
                    "'model.vocab'", .malformed(line: nil))
        try refused({ $0["added_tokens"] = [["id": 50257, "content": "  ", "special": false, "lstrip": true]] }, "'added_tokens[0].lstrip'")
    }

    private func pythonHas(_ module: String) -> Bool {
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        probe.arguments = ["python3", "-c", "import \(module)"]
        probe.standardError = FileHandle.nullDevice
        do { try probe.run() } catch { return false }
        probe.waitUntilExit()
        return probe.terminationStatus == 0
    }
}
