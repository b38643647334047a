import Foundation
import GPTHub
import LocalHub
import SwiftGPT
import XCTest

/// Models by name from a server that answers as the Hugging Face Hub does (LocalHub, on 127.0.0.1): downloaded into
/// Hugging Face's cache layout, checked, resumed, refused with errors that name the repository and the file.
final class HubDownloadTests: XCTestCase {
    private var hub: LocalHub!
    private var cache: URL!
    private var source: URL!
    private var model: GPTModel!

    override func setUpWithError() throws {
        hub = LocalHub(largeFileBytes: 4096)
        cache = try temporaryDirectory(self)
        source = try temporaryDirectory(self)
        model = try GPTModel(config: tinyConfig(), seed: 5)
        try HuggingFaceCheckpoint.save(model, to: source)
        try CharacterTokenizer(corpus: ["abcdefghij klmnop\n"]).save(to: source)
        hub.add("test-org/tiny", LocalHub.Repository(files: try files(of: source)))
        try hub.start()
    }

    override func tearDown() {
        hub.stop()
    }

    private func files(of folder: URL) throws -> [String: Data] {
        var files: [String: Data] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: folder.path) {
            files[name] = try Data(contentsOf: folder.appendingPathComponent(name))
        }
        return files
    }

    private func settings(_ extra: [String: String] = [:]) throws -> HubSettings {
        var environment = ["HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": cache.path, "HF_HOME": cache.path, "HF_HUB_ETAG_TIMEOUT": "1"]
        environment.merge(extra) { _, new in new }
        return try HubSettings(environment: environment, showsProgress: false)
    }

    private func snapshot(_ name: String, _ extra: [String: String] = [:]) throws -> URL {
        try HubDownload(settings: settings(extra)).modelSnapshot(HubCache.Reference(name)!) { _ = try HuggingFaceCheckpoint.readConfig($0) }
    }

    private func hubError(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> HubError? {
        do { try body() } catch let error as HubError { return error } catch {
            XCTFail("\(error)", file: file, line: line)
            return nil
        }
        XCTFail("no error", file: file, line: line)
        return nil
    }

    /// The first download lays the files out as huggingface_hub does (blobs named by SHA-256 or git blob id,
    /// relative links, refs/main) with the same bytes; the model loads from it. The next call asks the Hub only for
    /// the revision's commit; offline, with the Hub gone, the cache alone serves.
    func testFirstDownloadCacheHitAndOffline() throws {
        let snapshot = try snapshot("test-org/tiny")
        let repository = cache.appendingPathComponent("models--test-org--tiny")
        let commit = try String(contentsOf: repository.appendingPathComponent("refs/main"), encoding: .utf8)
        XCTAssertEqual(snapshot.path, repository.appendingPathComponent("snapshots/\(commit)").path)
        for (name, content) in try files(of: source) {
            XCTAssertEqual(try Data(contentsOf: snapshot.appendingPathComponent(name)), content, name)
            let link = try FileManager.default.destinationOfSymbolicLink(atPath: snapshot.appendingPathComponent(name).path)
            XCTAssertTrue(link.hasPrefix("../../blobs/"), link)
            let blob = repository.appendingPathComponent("blobs").appendingPathComponent(URL(fileURLWithPath: link).lastPathComponent)
            let expected = content.count > hub.largeFileBytes
                ? try ContentDigest.ofFile(blob, algorithm: .sha256) : try ContentDigest.gitBlobID(ofFile: blob)
            XCTAssertEqual(blob.lastPathComponent, expected, name)
        }
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: repository.appendingPathComponent("blobs").path)
                        .contains { $0.hasSuffix(".incomplete") })
        XCTAssertTrue(hub.requests.contains { $0.hasPrefix("GET /storage/") }, "the weights came from storage: \(hub.requests)")
        XCTAssertTrue(hub.requests.contains { $0.hasPrefix("GET /test-org/tiny/resolve/") && $0.hasSuffix("config.json (gzip)") },
                      "text files came gzip-encoded without a length: \(hub.requests)")
        let loaded = try HuggingFaceCheckpoint.load(from: snapshot)
        XCTAssertEqual(loaded.parameters.values.scalars, model.parameters.values.scalars)

        let before = hub.requests.count
        XCTAssertEqual(try self.snapshot("test-org/tiny").path, snapshot.path)
        XCTAssertEqual(Array(hub.requests[before...]), ["GET /api/models/test-org/tiny/revision/main"])
        XCTAssertEqual(try self.snapshot("test-org/tiny@\(commit)").path, snapshot.path)

        hub.stop()
        let offline = hub.requests.count
        XCTAssertEqual(try self.snapshot("test-org/tiny", ["HF_HUB_OFFLINE": "1"]).path, snapshot.path)
        XCTAssertEqual(hub.requests.count, offline)
        let error = hubError { _ = try self.snapshot("test-org/other", ["HF_HUB_OFFLINE": "1"]) }
        XCTAssertEqual(error?.reason, .notCached)
        XCTAssertTrue(error?.message.contains("test-org/other") == true && error?.message.contains("HF_HUB_OFFLINE") == true, "\(String(describing: error))")
    }

    /// A connection dropped partway is resumed with a Range request; a partial file left by an earlier run is
    /// continued; a corrupted transfer is refused and deleted.
    func testDroppedPartialAndCorruptedDownloads() throws {
        let weights = try Data(contentsOf: source.appendingPathComponent("model.safetensors"))
        var digest = ContentDigest(.sha256)
        digest.update(weights)
        let blob = digest.finish()
        hub.dropConnection(of: blob, after: weights.count / 3)
        let snapshot = try snapshot("test-org/tiny")
        XCTAssertEqual(try Data(contentsOf: snapshot.appendingPathComponent("model.safetensors")), weights)
        let storage = hub.requests.filter { $0.hasPrefix("GET /storage/") }
        XCTAssertEqual(storage.count, 2, "\(storage)")
        XCTAssertEqual(storage.last, "GET /storage/\(blob) bytes=\(weights.count / 3)-")

        // A partial blob from an interrupted run: only the rest is fetched.
        let blobs = cache.appendingPathComponent("models--test-org--tiny/blobs")
        try FileManager.default.removeItem(at: blobs.appendingPathComponent(blob))
        try FileManager.default.removeItem(at: snapshot.appendingPathComponent("model.safetensors"))
        try weights.prefix(1000).write(to: blobs.appendingPathComponent(blob + ".incomplete"))
        _ = try self.snapshot("test-org/tiny")
        XCTAssertEqual(hub.requests.last, "GET /storage/\(blob) bytes=1000-")
        XCTAssertEqual(try Data(contentsOf: snapshot.appendingPathComponent("model.safetensors")), weights)

        // A corrupted partial file is caught by the hash too.
        try FileManager.default.removeItem(at: blobs.appendingPathComponent(blob))
        try FileManager.default.removeItem(at: snapshot.appendingPathComponent("model.safetensors"))
        var bad = weights.prefix(1000)
        bad[bad.startIndex + 10] ^= 0xFF
        try bad.write(to: blobs.appendingPathComponent(blob + ".incomplete"))
        XCTAssertEqual(hubError { _ = try self.snapshot("test-org/tiny") }?.reason, .integrity)

        hub.corrupt(blob)
        let error = hubError { _ = try self.snapshot("test-org/tiny") }
        XCTAssertEqual(error?.reason, .integrity)
        XCTAssertTrue(error?.message.contains("test-org/tiny: model.safetensors") == true && error?.message.contains("SHA-256") == true,
                      "\(String(describing: error))")
        let left = try FileManager.default.contentsOfDirectory(atPath: blobs.path)
        XCTAssertFalse(left.contains(blob) || left.contains(blob + ".incomplete"), "\(left)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: snapshot.appendingPathComponent("model.safetensors").path))
    }

    /// The Hub's errors, told apart by X-Error-Code, each naming the repository; private and gated repositories open
    /// with the token, which never reaches the storage host; a renamed repository is followed; pickled weights and
    /// an unsupported model type are refused before any weight is downloaded.
    func testHubErrorsTokensAndRefusals() throws {
        let files = try files(of: source)
        var secret = LocalHub.Repository(files: files)
        secret.isPrivate = true
        hub.add("test-org/secret", secret)
        var gated = LocalHub.Repository(files: files)
        gated.isGated = true
        hub.add("test-org/gated", gated)
        var pickled = files
        pickled["pytorch_model.bin"] = pickled.removeValue(forKey: "model.safetensors")
        hub.add("test-org/pickled", LocalHub.Repository(files: pickled))
        var llama = files
        llama["config.json"] = Data(#"{"model_type": "llama", "hidden_size": 64}"#.utf8)
        hub.add("test-org/llama", LocalHub.Repository(files: llama))
        hub.add("new-org/tiny", LocalHub.Repository(files: files))
        hub.rename("old-org/tiny", to: "new-org/tiny")

        let missing = hubError { _ = try self.snapshot("test-org/absent") }
        XCTAssertEqual(missing?.reason, .repositoryNotFound)
        XCTAssertTrue(missing?.message.contains("test-org/absent") == true && missing?.message.contains("HF_TOKEN") == true, "\(String(describing: missing))")
        XCTAssertEqual(hubError { _ = try self.snapshot("test-org/secret") }?.reason, .repositoryNotFound)
        XCTAssertEqual(hubError { _ = try self.snapshot("test-org/secret", ["HF_TOKEN": "hf_wrong"]) }?.reason, .repositoryNotFound)
        let gate = hubError { _ = try self.snapshot("test-org/gated") }
        XCTAssertEqual(gate?.reason, .gated)
        XCTAssertTrue(gate?.message.contains("test-org/gated is gated") == true, "\(String(describing: gate))")
        XCTAssertEqual(hubError { _ = try self.snapshot("test-org/tiny@no-such-branch") }?.reason, .revisionNotFound)

        // The token opens them; the storage host never sees it.
        for name in ["test-org/secret", "test-org/gated"] {
            let snapshot = try snapshot(name, ["HF_TOKEN": LocalHub.token])
            XCTAssertTrue(FileManager.default.fileExists(atPath: snapshot.appendingPathComponent("model.safetensors").path))
        }
        let tokenFile = cache.appendingPathComponent("token")
        try Data((LocalHub.token + "\n").utf8).write(to: tokenFile)
        XCTAssertEqual(try settings().token, LocalHub.token, "the token file under HF_HOME")
        XCTAssertTrue(hub.requests.contains { $0.hasPrefix("GET /storage/") })
        XCTAssertEqual(hub.tokenLeaks, 0)

        let renamed = try snapshot("old-org/tiny")
        XCTAssertTrue(renamed.path.contains("models--old-org--tiny"), renamed.path)
        XCTAssertTrue(hub.requests.contains { $0.hasPrefix("HEAD /new-org/tiny/resolve/") }, "\(hub.requests)")

        let before = hub.requests.count
        let pickle = hubError { _ = try self.snapshot("test-org/pickled") }
        XCTAssertEqual(pickle?.reason, .unsupported)
        XCTAssertTrue(pickle?.message.contains("pytorch_model.bin") == true && pickle?.message.contains("runs the code") == true, "\(String(describing: pickle))")
        XCTAssertEqual(Array(hub.requests[before...]), ["GET /api/models/test-org/pickled/revision/main"])

        do {
            _ = try snapshot("test-org/llama")
            XCTFail("a llama config was accepted")
        } catch {
            XCTAssertEqual((error as? FileError)?.reason, .unsupported, "\(error)")
            XCTAssertEqual((error as? FileError)?.url.lastPathComponent, "config.json", "\(error)")
            XCTAssertTrue("\(error)".contains("gpt_neox"), "\(error) does not list the supported model types")
        }
        XCTAssertFalse(hub.requests.contains { $0.contains("test-org/llama") && $0.contains("model.safetensors") }, "\(hub.requests)")

        XCTAssertThrowsError(try HubSettings(environment: ["HF_ENDPOINT": "ftp://example.org"])) {
            XCTAssertEqual(($0 as? HubError)?.reason, .invalidSetting, "\($0)")
            XCTAssertTrue("\($0)".contains("HF_ENDPOINT"), "\($0) does not name the variable")
        }
        XCTAssertThrowsError(try HubSettings(environment: ["HF_TOKEN": "hf_a\r\nX-Injected: 1"])) {
            XCTAssertEqual(($0 as? HubError)?.reason, .invalidSetting, "\($0)")
            XCTAssertTrue("\($0)".contains("HF_TOKEN"), "\($0) does not name the variable")
        }
    }

    /// A model in shards (a GPT-NeoX one here) comes with every shard its index names and nothing else (not the
    /// pickled copy beside it); an index naming a file the repository lacks is refused.
    func testShardedWeightsAreFetchedByTheirIndex() throws {
        let neox = try GPTModel(config: tinyFamilyConfigs()[0], seed: 9)
        let folder = try temporaryDirectory(self)
        try HuggingFaceCheckpoint.save(neox, to: folder)
        let single = try SafeTensors(contentsOf: folder.appendingPathComponent("model.safetensors"))
        let names = single.names, half = names.count / 2
        var files = try files(of: folder)
        files["model.safetensors"] = nil
        var map: [String: String] = [:]
        for (k, shard) in [Array(names[..<half]), Array(names[half...])].enumerated() {
            let name = "model-0000\(k + 1)-of-00002.safetensors"
            let url = folder.appendingPathComponent(name)
            try SafeTensors.write(try shard.map { ($0, try single.tensor($0)) }, to: url)
            files[name] = try Data(contentsOf: url)
            for tensor in shard { map[tensor] = name }
        }
        files["model.safetensors.index.json"] = try JSONSerialization.data(withJSONObject: ["metadata": ["total_size": 0], "weight_map": map])
        files["pytorch_model.bin"] = Data(repeating: 0x80, count: 10_000)
        hub.add("test-org/sharded", LocalHub.Repository(files: files))
        let snapshot = try snapshot("test-org/sharded")
        XCTAssertEqual(try HuggingFaceCheckpoint.load(from: snapshot).parameters.values.scalars, neox.parameters.values.scalars)
        XCTAssertFalse(hub.requests.contains { $0.contains("pytorch_model.bin") }, "\(hub.requests)")

        map[names[0]] = "model-00003-of-00002.safetensors"
        files["model.safetensors.index.json"] = try JSONSerialization.data(withJSONObject: ["weight_map": map])
        hub.add("test-org/bad-index", LocalHub.Repository(files: files))
        let error = hubError { _ = try self.snapshot("test-org/bad-index") }
        XCTAssertEqual(error?.reason, .invalidResponse)
        XCTAssertTrue(error?.message.contains("model-00003-of-00002.safetensors") == true, "\(String(describing: error))")
    }

    /// When the Hub cannot be reached: what is cached is used (with a warning), what is not is an error that says so.
    func testUnreachableHub() throws {
        let snapshot = try snapshot("test-org/tiny")
        hub.stop()
        Thread.sleep(forTimeInterval: 0.5)
        XCTAssertEqual(try self.snapshot("test-org/tiny").path, snapshot.path)
        XCTAssertEqual(hubError { _ = try self.snapshot("test-org/never") }?.reason, .network)
    }

    /// `gpt generate --model ORG/NAME` in a fresh HF_HOME downloads, then runs again offline with the Hub gone;
    /// `gpt pull`, `gpt models` and `gpt models --remove` work on the same cache.
    func testTheCommandLineDownloadsThenRunsOffline() throws {
        let gpt = packageRoot.appendingPathComponent(".build/release/gpt")
        let home = try temporaryDirectory(self)
        var environment = ProcessInfo.processInfo.environment
        environment["HF_HOME"] = home.path
        environment["HF_ENDPOINT"] = hub.endpoint
        environment["HF_HUB_CACHE"] = nil
        let arguments = ["generate", "--model", "test-org/tiny", "--prompt", "abc", "--max-tokens", "4", "--seed", "1"]
        let (status, output) = try runCapturingOutput(gpt, arguments, environment: environment)
        XCTAssertEqual(status, 0, output)
        hub.stop()
        environment["HF_HUB_OFFLINE"] = "1"
        let (offline, again) = try runCapturingOutput(gpt, arguments, environment: environment)
        XCTAssertEqual(offline, 0, again)
        XCTAssertEqual(again.split(separator: "\n").first, output.split(separator: "\n").first, "the same text from the cache")
        let (pulled, path) = try runCapturingOutput(gpt, ["pull", "test-org/tiny"], environment: environment)
        XCTAssertEqual(pulled, 0, path)
        XCTAssertTrue(path.hasPrefix(home.appendingPathComponent("hub/models--test-org--tiny/snapshots/").path), path)
        let (listed, table) = try runCapturingOutput(gpt, ["models"], environment: environment)
        XCTAssertEqual(listed, 0, table)
        XCTAssertTrue(table.contains("test-org/tiny") && table.contains("main="), table)
        let (removed, message) = try runCapturingOutput(gpt, ["models", "--remove", "test-org/tiny"], environment: environment)
        XCTAssertEqual(removed, 0, message)
        XCTAssertFalse(FileManager.default.fileExists(atPath: home.appendingPathComponent("hub/models--test-org--tiny").path))
        let (gone, error) = try runCapturingOutput(gpt, arguments, environment: environment)
        XCTAssertNotEqual(gone, 0)
        XCTAssertTrue(error.contains("test-org/tiny") && error.contains("HF_HUB_OFFLINE"), error)
    }

    /// huggingface_hub and SwiftGPT share the cache both ways: a file `gpt` fetched is found by
    /// `hf_hub_download(..., local_files_only=True)`, and a model `snapshot_download` fetched from the same server
    /// loads in SwiftGPT offline.
    func testHuggingFaceHubInterop() throws {
        try requirePython("huggingface_hub", install: "pip install huggingface_hub")
        let snapshot = try snapshot("test-org/tiny")
        let (found, path) = try runCapturingOutput(URL(fileURLWithPath: "/usr/bin/env"), [
            "python3", "-c", "import huggingface_hub, sys; print(huggingface_hub.hf_hub_download('test-org/tiny', 'model.safetensors', "
                + "cache_dir=sys.argv[1], local_files_only=True))", cache.path])
        XCTAssertEqual(found, 0, path)
        XCTAssertEqual(path.trimmingCharacters(in: .whitespacesAndNewlines), snapshot.appendingPathComponent("model.safetensors").path)

        let pythonCache = try temporaryDirectory(self)
        var environment = ProcessInfo.processInfo.environment
        environment["HF_ENDPOINT"] = hub.endpoint
        let (fetched, output) = try runCapturingOutput(URL(fileURLWithPath: "/usr/bin/env"), [
            "python3", "-c", "import huggingface_hub, sys; print(huggingface_hub.snapshot_download('test-org/tiny', cache_dir=sys.argv[1]))",
            pythonCache.path], environment: environment)
        XCTAssertEqual(fetched, 0, output)
        hub.stop()
        let offline = try HubDownload(settings: HubSettings(environment: ["HF_HUB_CACHE": pythonCache.path, "HF_HUB_OFFLINE": "1"], showsProgress: false))
            .modelSnapshot(HubCache.Reference("test-org/tiny")!) { _ = try HuggingFaceCheckpoint.readConfig($0) }
        XCTAssertEqual(try HuggingFaceCheckpoint.load(from: offline).parameters.values.scalars, model.parameters.values.scalars)
    }
}
