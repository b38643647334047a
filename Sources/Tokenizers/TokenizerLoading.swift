import Foundation

/// Finding and loading tokenizers by name or directory.
public enum TokenizerLoading {
    /// Loads `gpt2` (GPT-2's vocabulary, shipped with SwiftGPT) or the tokenizer files in a directory:
    /// `tokenizer.json` (a byte-level BPE), `vocab.json` + `merges.txt`, `encoder.json` + `vocab.bpe`, or
    /// `char_tokenizer.json`.
    public static func load(_ specification: String) throws -> any Tokenizer {
        if specification == "gpt2" { return try gpt2() }
        let directory = URL(fileURLWithPath: specification)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw TokenizerError(.notFound, "\(specification): not a tokenizer name (gpt2) or a directory")
        }
        return try load(directory: directory)
    }

    /// Loads the tokenizer files in `directory`: `char_tokenizer.json`, else `tokenizer.json` (Hugging Face
    /// tokenizers' file, which transformers also prefers: it holds the normalizer and added tokens the others lack),
    /// else `vocab.json` + `merges.txt` or `encoder.json` + `vocab.bpe`.
    public static func load(directory: URL) throws -> any Tokenizer {
        let exists = { (name: String) in FileManager.default.fileExists(atPath: directory.appendingPathComponent(name).path) }
        if exists(CharacterTokenizer.fileName) {
            return try CharacterTokenizer.load(from: directory.appendingPathComponent(CharacterTokenizer.fileName))
        }
        if exists("tokenizer.json") { return try BPETokenizer.load(huggingFaceFile: directory.appendingPathComponent("tokenizer.json")) }
        for (vocabulary, merges) in [("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")]
        where exists(vocabulary) && exists(merges) {
            return try BPETokenizer.load(
                vocabulary: directory.appendingPathComponent(vocabulary),
                merges: directory.appendingPathComponent(merges), kind: "bpe")
        }
        throw TokenizerError(.notFound, "\(directory.path): no tokenizer files (tokenizer.json, vocab.json + merges.txt, encoder.json + vocab.bpe, or \(CharacterTokenizer.fileName))")
    }

    nonisolated(unsafe) private static var cachedGPT2: BPETokenizer?
    private static let lock = NSLock()

    /// GPT-2's tokenizer, from the vocabulary files shipped with SwiftGPT (loaded once).
    package static func gpt2() throws -> BPETokenizer {
        lock.lock()
        defer { lock.unlock() }
        if let cachedGPT2 { return cachedGPT2 }
        let directory = try gpt2Directory()
        let tokenizer = try BPETokenizer.load(
            vocabulary: directory.appendingPathComponent("vocab.json"),
            merges: directory.appendingPathComponent("merges.txt"), kind: "gpt2")
        cachedGPT2 = tokenizer
        return tokenizer
    }

    /// The shipped GPT-2 files: next to the executable (SwiftPM's resource bundle) or in the source tree.
    static func gpt2Directory() throws -> URL {
        let bundleName = "SwiftGPT_Tokenizers.resources"
        var candidates: [URL] = []
        if let environment = ProcessInfo.processInfo.environment["SWIFTGPT_RESOURCES"] {
            candidates.append(URL(fileURLWithPath: environment))
        }
        if let executable = Bundle.main.executableURL?.resolvingSymlinksInPath() {
            candidates.append(executable.deletingLastPathComponent().appendingPathComponent(bundleName))
            candidates.append(executable.deletingLastPathComponent().appendingPathComponent("\(bundleName.replacingOccurrences(of: ".resources", with: ".bundle"))/Contents/Resources"))
        }
        candidates.append(Bundle.main.bundleURL.appendingPathComponent(bundleName))
        candidates.append(URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Resources"))
        for candidate in candidates {
            let directory = candidate.appendingPathComponent("gpt2")
            if FileManager.default.fileExists(atPath: directory.appendingPathComponent("vocab.json").path) { return directory }
        }
        throw TokenizerError(.notFound, "GPT-2's vocabulary files were not found (looked in: \(candidates.map(\.path).joined(separator: ", "))); set SWIFTGPT_RESOURCES to the folder holding gpt2/vocab.json")
    }
}
