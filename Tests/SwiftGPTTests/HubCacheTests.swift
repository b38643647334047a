import Foundation
import GPTHub
import SwiftGPT
import TensorCore
import XCTest

/// Models named as on the Hugging Face Hub are found in Hugging Face's local cache, in its layout.
final class HubCacheTests: XCTestCase {
    func testNamesAndRevisionsAreReadStrictly() {
        XCTAssertEqual(HubCache.Reference("EleutherAI/pythia-160m")?.revision, "main")
        XCTAssertEqual(HubCache.Reference("openai-community/gpt2@v1.0")?.revision, "v1.0")
        XCTAssertEqual(HubCache.Reference("org/name@refs/pr/1")?.revision, "refs/pr/1")
        for text in ["gpt2", "a/b/c", "org/", "/org/name", "../name", "org/..", "org/name@", "org/name@../../x", "org/na me", "-org/name"] {
            XCTAssertNil(HubCache.Reference(text), text)
        }
        XCTAssertEqual(HubCache.folder(environment: ["HF_HOME": "/h"]).path, "/h/hub")
        XCTAssertEqual(HubCache.folder(environment: ["HF_HUB_CACHE": "/c", "HF_HOME": "/h"]).path, "/c")
    }

    /// A cache laid out as huggingface_hub lays it out (blobs, a snapshot of links to them, refs/main): the model
    /// loads by name, in the library and in `gpt generate`, at the commit refs/main names; a name not cached is an
    /// error that says where it was looked for. huggingface_hub, when installed, finds the same file.
    func testACachedModelLoadsByName() throws {
        let cache = try temporaryDirectory(self)
        let model = try GPTModel(config: tinyConfig(), seed: 2)
        let source = try temporaryDirectory(self)
        try HuggingFaceCheckpoint.save(model, to: source)
        try CharacterTokenizer(corpus: ["abcdefghij klmnop\n"]).save(to: source)
        let commit = String(repeating: "3f", count: 20)
        let repository = cache.appendingPathComponent("models--test-org--tiny")
        let snapshot = repository.appendingPathComponent("snapshots/\(commit)")
        try FileManager.default.createDirectory(at: snapshot, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: repository.appendingPathComponent("blobs"), withIntermediateDirectories: true)
        for (k, name) in try FileManager.default.contentsOfDirectory(atPath: source.path).enumerated() {
            try FileManager.default.copyItem(at: source.appendingPathComponent(name), to: repository.appendingPathComponent("blobs/blob\(k)"))
            try FileManager.default.createSymbolicLink(atPath: snapshot.appendingPathComponent(name).path, withDestinationPath: "../../blobs/blob\(k)")
        }
        try FileManager.default.createDirectory(at: repository.appendingPathComponent("refs"), withIntermediateDirectories: true)
        try Data(commit.utf8).write(to: repository.appendingPathComponent("refs/main"))

        let environment = ["HF_HUB_CACHE": cache.path]
        XCTAssertEqual(try HubCache.snapshot(HubCache.Reference("test-org/tiny")!, environment: environment).path, snapshot.path)
        XCTAssertEqual(try HubCache.snapshot(HubCache.Reference("test-org/tiny@\(commit)")!, environment: environment).path, snapshot.path)
        let loaded = try HuggingFaceCheckpoint.load(from: try HubCache.snapshot(HubCache.Reference("test-org/tiny")!, environment: environment))
        XCTAssertEqual(loaded.parameters.values.scalars, model.parameters.values.scalars)
        let uncached = assertThrows(FileError.self, .missing, try HubCache.snapshot(HubCache.Reference("test-org/tiny@dev")!, environment: environment))
        XCTAssertTrue(uncached?.message.contains("refs/dev") ?? false, "\(String(describing: uncached)) does not say where it looked")

        // The library's entry point reads the same environment (offline here: the cache alone).
        setenv("HF_HUB_CACHE", cache.path, 1)
        setenv("HF_HUB_OFFLINE", "1", 1)
        defer { unsetenv("HF_HUB_CACHE"); unsetenv("HF_HUB_OFFLINE") }
        XCTAssertEqual(try LanguageModel(hubName: "test-org/tiny").configuration, model.config)
        assertThrows(GenerationError.self, .invalidArgument, try LanguageModel(hubName: "tiny"))

        let gpt = packageRoot.appendingPathComponent(".build/release/gpt")
        var processEnvironment = ProcessInfo.processInfo.environment
        processEnvironment["HF_HUB_CACHE"] = cache.path
        processEnvironment["HF_HUB_OFFLINE"] = "1"
        let (status, output) = try runCapturingOutput(gpt, ["generate", "--model", "test-org/tiny", "--prompt", "abc", "--max-tokens", "4", "--seed", "1"],
                                                      environment: processEnvironment)
        XCTAssertEqual(status, 0, output)
        let (missing, message) = try runCapturingOutput(gpt, ["generate", "--model", "test-org/absent", "--prompt", "abc"], environment: processEnvironment)
        XCTAssertNotEqual(missing, 0)
        XCTAssertTrue(message.contains("test-org/absent") && message.contains("not in the Hugging Face cache"), message)

        try requirePython("huggingface_hub", install: "pip install huggingface_hub")
        let (found, path) = try runCapturingOutput(URL(fileURLWithPath: "/usr/bin/env"), [
            "python3", "-c", "import huggingface_hub, sys; print(huggingface_hub.try_to_load_from_cache('test-org/tiny', 'config.json', cache_dir=sys.argv[1]))",
            cache.path])
        XCTAssertEqual(found, 0, path)
        XCTAssertEqual(path.trimmingCharacters(in: .whitespacesAndNewlines), snapshot.appendingPathComponent("config.json").path)
    }
}
