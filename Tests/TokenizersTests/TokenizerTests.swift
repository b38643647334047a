import Foundation
import GPTUtilities
import Tokenizers
import XCTest

/// Test data shipped with this target, or from ../shared/golden when present.
enum Fixtures {
    static let resources = Bundle.module.url(forResource: "Resources", withExtension: nil)!

    /// A text with its expected token ids and (for random cases) pre-tokenized pieces.
    struct Case: Decodable {
        var text: String
        var ids: [Int32]
        var pieces: [String]?
    }

    /// One case per line. (JSONDecoder, not JSONSerialization: the latter drops a U+FEFF that opens a string.)
    static func cases(_ name: String) throws -> [Case] {
        let text = try String(contentsOf: resources.appendingPathComponent(name), encoding: .utf8)
        return try text.split(separator: "\n").map { try JSONDecoder().decode(Case.self, from: Data($0.utf8)) }
    }
}

final class GPT2TokenizerTests: XCTestCase {
    func testGoldenCasesFromTiktoken() throws {
        let tokenizer = try TokenizerLoading.gpt2()
        XCTAssertEqual(tokenizer.vocabularySize, 50257)
        XCTAssertEqual(tokenizer.endOfText, 50256)
        let cases = try Fixtures.cases("cases.jsonl")
        XCTAssertEqual(cases.count, 293)
        for (line, item) in cases.enumerated() {
            let text = item.text
            let ids = try tokenizer.encode(text)
            XCTAssertEqual(ids, item.ids, "cases.jsonl line \(line + 1): \(text.debugDescription)")
            XCTAssertEqual(try tokenizer.decode(ids), text, "round trip, line \(line + 1)")
        }
    }

    func testRandomStringsAgreeWithTiktokenAndHuggingFacePieces() throws {
        let tokenizer = try TokenizerLoading.gpt2()
        let cases = try Fixtures.cases("random_cases.jsonl")
        XCTAssertGreaterThan(cases.count, 1000)
        for (line, item) in cases.enumerated() {
            let text = item.text
            let bytes = Array(text.utf8)
            var pieces: [String] = []
            bytes.withUnsafeBufferPointer { buffer in
                PreTokenizer.forEachPiece(buffer) { pieces.append(String(decoding: buffer[$0], as: UTF8.self)) }
            }
            XCTAssertEqual(pieces, item.pieces, "random_cases.jsonl line \(line + 1)")
            XCTAssertEqual(try tokenizer.encode(text), item.ids, "random_cases.jsonl line \(line + 1)")
        }
    }

    func testRandomUnicodeRoundTrips() throws {
        let tokenizer = try TokenizerLoading.gpt2()
        var random = SeededRandom(seed: 11)
        for _ in 0..<500 {
            var scalars = String.UnicodeScalarView()
            for _ in 0..<random.nextInt(below: 60) {
                let plane = random.nextInt(below: 4)
                let value = plane == 0 ? random.nextInt(below: 0x80) : plane == 1 ? random.nextInt(below: 0x800)
                    : plane == 2 ? random.nextInt(below: 0x10000) : random.nextInt(below: 0x110000)
                if let scalar = Unicode.Scalar(UInt32(value)) { scalars.append(scalar) }
            }
            let text = String(scalars)
            XCTAssertEqual(try tokenizer.decode(try tokenizer.encode(text)), text)
        }
    }

    func testBytesThatAreNotUTF8RoundTrip() throws {
        let tokenizer = try TokenizerLoading.gpt2()
        let bytes: [UInt8] = [0xFF, 0x41, 0xC3, 0x28, 0xE2, 0x82, 0x20, 0xF0, 0x9F, 0x98, 0x80, 0xED, 0xA0, 0x80, 0xC0, 0xAF]
        XCTAssertEqual(try tokenizer.decodeBytes(try tokenizer.encode(bytes: bytes)), bytes)
    }

    func testLongRunsAndParallelEncodingMatchSequential() throws {
        let tokenizer = try TokenizerLoading.gpt2()
        var parts: [String] = []
        var random = SeededRandom(seed: 5)
        let words = ["the", " king", "'s", " 中文字符", "\n\n", "  ", " 1234", "!?", " naïve", " 👍🏽", String(repeating: "a", count: 300)]
        for _ in 0..<120_000 { parts.append(words[random.nextInt(below: words.count)]) }
        let text = parts.joined()
        XCTAssertGreaterThan(text.utf8.count, 1 << 20)
        let saved = Parallel.threadCount
        defer { Parallel.threadCount = saved }
        Parallel.threadCount = 1
        let sequential = try tokenizer.encode(text)
        Parallel.threadCount = 4
        let parallel = try tokenizer.encode(text)
        XCTAssertEqual(parallel, sequential)
        XCTAssertEqual(try tokenizer.decode(parallel), text)
    }

    func testSpecialTokensOnlyWhenAllowed() throws {
        let tokenizer = try TokenizerLoading.gpt2()
        let text = "Hi<|endoftext|>there"
        XCTAssertFalse(try tokenizer.encode(text).contains(50256))
        XCTAssertEqual(try tokenizer.encode(text, allowedSpecial: ["<|endoftext|>"]),
                       try tokenizer.encode("Hi") + [50256] + (try tokenizer.encode("there")))
        XCTAssertThrowsError(try tokenizer.encode(text, allowedSpecial: ["<|nope|>"]))
        XCTAssertEqual(try tokenizer.decode([50256]), "<|endoftext|>")
    }

    func testAddedSpecialTokensTakeTheNextIdsAndAreSaved() throws {
        let gpt2 = try TokenizerLoading.gpt2()
        let extended = try gpt2.addingSpecialTokens(["<|start|>", "<|extract|>"])
        XCTAssertEqual(extended.vocabularySize, 50259)
        XCTAssertEqual(try extended.encode("hi<|extract|>", allowedSpecial: ["<|extract|>"]), [5303, 50258])
        XCTAssertEqual(try extended.encode("hi<|extract|>"), try gpt2.encode("hi<|extract|>"))
        XCTAssertEqual(try extended.decode([50257, 5303]), "<|start|>hi")
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("special-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        try extended.save(to: folder)
        let reloaded = try TokenizerLoading.load(directory: folder)
        XCTAssertEqual(try reloaded.encode("a<|start|>b", allowedSpecial: ["<|start|>"]), try extended.encode("a<|start|>b", allowedSpecial: ["<|start|>"]))
        XCTAssertThrowsError(try extended.addingSpecialTokens(["<|start|>"]))

        let characters = try CharacterTokenizer(characters: Array("ab".unicodeScalars)).addingSpecialTokens(["<|x|>"])
        XCTAssertEqual(characters.vocabularySize, 3)
        XCTAssertEqual(try characters.encode("a<|x|>b", allowedSpecial: ["<|x|>"]), [0, 2, 1])
        XCTAssertEqual(try characters.decode([1, 2]), "b<|x|>")
        XCTAssertThrowsError(try characters.encode("a<|x|>b"))  // "<", "|" and "x" are not in the vocabulary
        try characters.save(to: folder)
        XCTAssertEqual(try TokenizerLoading.load(directory: folder).encode("b<|x|>", allowedSpecial: ["<|x|>"]), [1, 2])
    }

    func testIdsOutsideTheVocabularyAreErrors() throws {
        let tokenizer = try TokenizerLoading.gpt2()
        XCTAssertThrowsError(try tokenizer.decode([50257])) { XCTAssertEqual(($0 as? TokenizerError)?.reason, .idOutsideVocabulary, "\($0)") }
        XCTAssertThrowsError(try tokenizer.decode([-1]))
    }

    func testStreamingDecoderNeverSplitsACharacter() throws {
        let tokenizer = try TokenizerLoading.gpt2()
        let text = "naïve 中文 👍🏽 emoji 🇫🇷 done"
        var decoder = StreamingDecoder(tokenizer: tokenizer)
        var pieces: [String] = []
        for id in try tokenizer.encode(text) { pieces.append(try decoder.append(id)) }
        pieces.append(decoder.finish())
        XCTAssertEqual(pieces.joined(), text)
        XCTAssertFalse(pieces.joined().contains("\u{FFFD}"))
        XCTAssertGreaterThan(pieces.filter(\.isEmpty).count, 0, "some tokens end inside a character")
    }

    func testOpenAIFileNamesAndSavedFilesGiveTheSameTokenizer() throws {
        let original = try TokenizerLoading.gpt2()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("swiftgpt-bpe-\(getpid())")
        defer { try? FileManager.default.removeItem(at: folder) }
        try original.save(to: folder.appendingPathComponent("saved"))
        let openAI = folder.appendingPathComponent("openai")
        try FileManager.default.createDirectory(at: openAI, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: folder.appendingPathComponent("saved/vocab.json"), to: openAI.appendingPathComponent("encoder.json"))
        try FileManager.default.copyItem(at: folder.appendingPathComponent("saved/merges.txt"), to: openAI.appendingPathComponent("vocab.bpe"))
        let text = "Hello world, it's 2026! 中文 and émoji 👍"
        for directory in [folder.appendingPathComponent("saved"), openAI] {
            let loaded = try TokenizerLoading.load(directory.path)
            XCTAssertEqual(try loaded.encode(text), try original.encode(text))
            XCTAssertEqual(loaded.endOfText, 50256)
        }
    }

    func testCorruptFilesNameTheFileAndLine() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("swiftgpt-bad-\(getpid())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let vocabulary = folder.appendingPathComponent("vocab.json"), merges = folder.appendingPathComponent("merges.txt")
        let bytes = (0..<256).map { "\"\(ByteLevel.encode([UInt8($0)]).replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\""))\": \($0)" }
        try Data(("{" + bytes.joined(separator: ", ") + ", \"ab\": 256}").utf8).write(to: vocabulary)
        try Data("#version: 0.2\na b\nab\n".utf8).write(to: merges)
        XCTAssertThrowsError(try TokenizerLoading.load(folder.path)) {
            XCTAssertEqual(($0 as? FileError)?.reason, .malformed(line: 3), "\($0)")
            XCTAssertEqual(($0 as? FileError)?.url.lastPathComponent, "merges.txt", "\($0)")
        }
        try Data("#version: 0.2\na c\n".utf8).write(to: merges)
        XCTAssertThrowsError(try TokenizerLoading.load(folder.path)) {
            XCTAssertEqual(($0 as? FileError)?.reason, .malformed(line: 2), "\($0)")
        }
        try Data("{\"a\": ".utf8).write(to: vocabulary)
        XCTAssertThrowsError(try TokenizerLoading.load(folder.path)) {
            XCTAssertEqual(($0 as? FileError)?.reason, .malformed(line: nil), "\($0)")
            XCTAssertEqual(($0 as? FileError)?.url.lastPathComponent, "vocab.json", "\($0)")
        }
        // An id far beyond the number of tokens (it once sized a gigabyte table), or not an integer.
        for id in ["1073741823", "2.5", "true"] {
            try Data(("{" + bytes.joined(separator: ", ") + ", \"ab\": \(id)}").utf8).write(to: vocabulary)
            XCTAssertThrowsError(try TokenizerLoading.load(folder.path)) {
                XCTAssertEqual(($0 as? FileError)?.reason, .malformed(line: nil), "\($0)")
                XCTAssertEqual(($0 as? FileError)?.url.lastPathComponent, "vocab.json", "\($0)")
            }
        }
        try FileManager.default.removeItem(at: vocabulary)
        XCTAssertThrowsError(try TokenizerLoading.load(folder.path))
    }
}

final class CharacterTokenizerTests: XCTestCase {
    func testVocabularyFromCorpusRoundTripsAndSaves() throws {
        let tokenizer = try CharacterTokenizer(corpus: ["hello world\n", "Zebra é"])
        XCTAssertEqual(tokenizer.characters.first, "\n")
        XCTAssertEqual(tokenizer.vocabularySize, Set("hello world\nZebra é".unicodeScalars).count)
        let ids = try tokenizer.encode("hello é")
        XCTAssertEqual(try tokenizer.decode(ids), "hello é")
        XCTAssertThrowsError(try tokenizer.encode("hello!")) { XCTAssertEqual(($0 as? TokenizerError)?.reason, .unencodableText, "\($0)") }
        XCTAssertThrowsError(try tokenizer.decode([99]))
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("swiftgpt-char-\(getpid())")
        defer { try? FileManager.default.removeItem(at: folder) }
        try tokenizer.save(to: folder)
        let loaded = try TokenizerLoading.load(folder.path)
        XCTAssertEqual(loaded.kind, "char")
        XCTAssertEqual(try loaded.encode("hello é"), ids)
    }
}
