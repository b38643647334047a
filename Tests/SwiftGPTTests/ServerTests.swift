import Foundation
import SwiftGPT
import TensorCore
import Tokenizers
import XCTest
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// `gpt serve` as users run it: the release binary on a free loopback port, serving a small random GPT-2 (GPT-2's
/// vocabulary and tokenizer), driven over HTTP.
final class ServerTests: XCTestCase {
    static let apiKey = "sk-test"

    /// A random GPT-2 with GPT-2's vocabulary, small enough to decode in a couple of milliseconds a step.
    func modelDirectory() throws -> URL {
        var config = tinyConfig()
        config.vocabularySize = 50257
        config.contextLength = 1024
        config.embeddingWidth = 128
        config.mlpWidth = 512
        config.layerCount = 4
        config.headCount = 4
        let directory = try temporaryDirectory(self).appendingPathComponent("tiny-gpt2")
        try HuggingFaceCheckpoint.save(try GPTModel(config: config, seed: 21), to: directory)
        return directory
    }

    func testServesHTTPAndShutsDownCleanly() async throws {
        let server = try ServerProcess(model: try modelDirectory(), arguments: ["--max-batch", "4", "--max-queue", "2", "--max-body-bytes", "65536",
                                                                               "--api-key", Self.apiKey])
        defer { server.kill() }
        let health = try await server.request("GET", "/health", key: nil)
        XCTAssertEqual(health.status, 200)
        XCTAssertTrue(health.text.contains("\"version\":\"\(swiftGPTVersion)\""), health.text)
        let unauthorized = try await server.request("GET", "/v1/models", key: nil)
        XCTAssertEqual(unauthorized.status, 401, "the API needs the key")
        let page = try await server.request("GET", "/", key: nil)
        XCTAssertEqual(page.status, 200)
        XCTAssertTrue(page.text.contains("<textarea"), "the chat page")

        let completion = try await server.request("POST", "/v1/completions", json: #"{"model": "tiny-gpt2", "prompt": "Hello", "max_tokens": 5, "temperature": 0}"#)
        XCTAssertEqual(completion.status, 200, completion.text)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(completion.text.utf8)) as? [String: Any])
        XCTAssertEqual((object["usage"] as? [String: Any])?["completion_tokens"] as? Int, 5)
        // The same greedy completion as `Generator` in this process on the same weights.
        let model = try HuggingFaceCheckpoint.load(from: server.model)
        let tokenizer = try TokenizerLoading.gpt2()
        var options = SamplingOptions()
        options.temperature = 0
        options.maxNewTokens = 5
        let expected = try Generator(model: model, tokenizer: tokenizer).generate(prompts: [try tokenizer.encode("Hello")], options: options)[0]
        XCTAssertEqual(((object["choices"] as? [[String: Any]])?.first)?["text"] as? String, expected.text)
        // The next turn begins with that prompt and reply: its keys and values come from the prompt cache, and its
        // greedy text is still the one `Generator` gives cold.
        let nextPrompt = "Hello" + expected.text + " and"
        let next = try await server.request("POST", "/v1/completions", json: #"{"model": "tiny-gpt2", "prompt": "\#(nextPrompt)", "max_tokens": 5, "temperature": 0}"#)
        let nextExpected = try Generator(model: model, tokenizer: tokenizer).generate(prompts: [try tokenizer.encode(nextPrompt)], options: options)[0]
        let nextObject = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(next.text.utf8)) as? [String: Any])
        XCTAssertEqual(((nextObject["choices"] as? [[String: Any]])?.first)?["text"] as? String, nextExpected.text)

        // Bad input: 4xx with OpenAI's error body naming the problem; the server keeps serving.
        for (body, status, needle) in [(#"{"model": "tiny-gpt2", "prompt": "x", "max_tokens": 2, "temperatur": 1}"#, 400, "temperatur"),
                                       (#"{"model": "tiny-gpt2", "prompt": "x", "max_tokens": "two"}"#, 400, "max_tokens"),
                                       (#"{"model": "other", "prompt": "x"}"#, 404, "other"),
                                       (#"{"model": "tiny-gpt2", "prompt": [\#(Array(repeating: "15496", count: 100).joined(separator: ","))], "max_tokens": 1000}"#, 400, "context"),
                                       (#"{"model": "tiny-gpt2", "prompt": "#, 400, "JSON"),
                                       (#"{"model": "tiny-gpt2", "prompt": "\#(String(repeating: "a", count: 70000))"}"#, 413, "65536")] {
            let response = try await server.request("POST", "/v1/completions", json: body)
            XCTAssertEqual(response.status, status, response.text)
            XCTAssertTrue(response.text.contains("\"error\"") && response.text.contains(needle), response.text)
        }
        let invalidUTF8 = try await server.request("POST", "/v1/completions", body: Data([0x7B, 0x22, 0xFF, 0x22, 0x7D]))
        XCTAssertEqual(invalidUTF8.status, 400, invalidUTF8.text)
        XCTAssertTrue(invalidUTF8.text.contains("UTF-8"), invalidUTF8.text)
        let unknownPath = try await server.request("GET", "/v2/nothing")
        XCTAssertEqual(unknownPath.status, 404)

        let metrics = try await server.request("GET", "/metrics")
        for name in ["gpt_prompt_tokens_total", "gpt_generated_tokens_total", "gpt_queue_depth", "gpt_batch_size",
                     "gpt_time_to_first_token_seconds_bucket", "gpt_time_per_output_token_seconds_bucket", "gpt_requests_total",
                     "gpt_prompt_cache_bytes", "gpt_prompt_cache_entries"] {
            XCTAssertTrue(metrics.text.contains(name), "\(name) in /metrics")
        }
        let cachedLine = metrics.text.split(separator: "\n").first { $0.hasPrefix("gpt_prompt_cached_tokens_total ") }
        XCTAssertGreaterThan(cachedLine.flatMap { Double($0.split(separator: " ").last!) } ?? 0, 0, "the second turn's prompt tokens from the cache")

        // SIGTERM: stop accepting, let the stream in flight finish, exit 0.
        let stream = Task { try await server.request("POST", "/v1/completions", json: #"{"model": "tiny-gpt2", "prompt": "Hi", "max_tokens": 300, "stream": true, "temperature": 0}"#) }
        try await Task.sleep(for: .milliseconds(100))
        server.terminate()
        let streamed = try await stream.value
        XCTAssertEqual(streamed.status, 200)
        XCTAssertTrue(streamed.text.hasSuffix("data: [DONE]\n\n"), String(streamed.text.suffix(200)))
        XCTAssertEqual(server.waitForExit(), 0)
    }

    /// Adapters served over one model (`--lora-module NAME=DIR`): a request naming one decodes with it, in the same
    /// batch as requests for the model and for the other adapter, and gets the greedy tokens of that adapter merged
    /// into the weights (`gpt generate --adapter`).
    func testServesSeveralAdaptersOverOneModel() async throws {
        let directory = try modelDirectory()
        var adapters: [String: URL] = [:]
        for (name, targets, seed) in [("a", LowRankAdapter.Target.allCases, UInt64(1)), ("b", [.attention], 2)] {
            let model = try HuggingFaceCheckpoint.load(from: directory)
            model.attach(LowRankAdapter(model: model, baseModel: directory.path, rank: 4, alpha: 8, dropout: 0,
                                        layers: LowRankAdapter.layers(targets, layerCount: 4), savedParameters: [], seed: seed))
            var random = SeededRandom(seed: seed)
            for layer in model.adapter!.layers { random.fillNormal(model.adapter!.matrices(of: layer)!.b.value.buffer, mean: 0, std: 0.5) }
            adapters[name] = directory.deletingLastPathComponent().appendingPathComponent("adapter-\(name)")
            try LowRankAdapterFiles.save(model, to: adapters[name]!)
        }
        let server = try ServerProcess(model: directory, arguments: ["--max-batch", "8", "--api-key", Self.apiKey,
                                                                     "--lora-module", "a=\(adapters["a"]!.path)", "--lora-module", "b=\(adapters["b"]!.path)"])
        defer { server.kill() }
        let tokenizer = try TokenizerLoading.gpt2()
        var options = SamplingOptions()
        options.temperature = 0
        options.maxNewTokens = 8
        var expected: [String: String] = [:]
        for name in ["tiny-gpt2", "a", "b"] {
            let (model, _) = try ModelLoading.load(directory.path, adapter: adapters[name]?.path)
            expected[name] = try Generator(model: model, tokenizer: tokenizer).generate(prompts: [try tokenizer.encode("Hello there")], options: options)[0].text
        }
        XCTAssertEqual(Set(expected.values).count, 3, "each adapter changes what the model says: \(expected)")
        @Sendable func complete(_ name: String) async throws -> [String: Any] {
            let response = try await server.request("POST", "/v1/completions", json: #"{"model": "\#(name)", "prompt": "Hello there", "max_tokens": 8, "temperature": 0}"#)
            XCTAssertEqual(response.status, 200, response.text)
            return try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(response.text.utf8)) as? [String: Any])
        }
        for _ in 0..<2 {
            async let base = complete("tiny-gpt2"), a = complete("a"), b = complete("b")
            for (name, object) in try await [("tiny-gpt2", base), ("a", a), ("b", b)] {
                XCTAssertEqual(object["model"] as? String, name)
                XCTAssertEqual(((object["choices"] as? [[String: Any]])?.first)?["text"] as? String, expected[name], name)
            }
        }
        let models = try await server.request("GET", "/v1/models")
        let listed = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(models.text.utf8)) as? [String: Any])?["data"] as? [[String: Any]])
        XCTAssertEqual(listed.map { $0["id"] as? String }, ["tiny-gpt2", "a", "b"])
        XCTAssertEqual(listed.map { $0["parent"] as? String }, [nil, "tiny-gpt2", "tiny-gpt2"])
        let missing = try await server.request("POST", "/v1/completions", json: #"{"model": "c", "prompt": "x"}"#)
        XCTAssertEqual(missing.status, 404, missing.text)
    }

    /// What an attacker or a broken client can send: numbers of any magnitude in every range-checked field (they
    /// once trapped while the error was formatted), bodies that are not JSON, requests that never finish, idle
    /// sockets and more connections than allowed. Each gets a 4xx or 503 or is closed, and the server keeps serving.
    func testHostileRequestsAreAnsweredOrClosedAndTheServerKeepsServing() async throws {
        let server = try ServerProcess(model: try modelDirectory(), arguments: ["--max-batch", "2", "--receive-timeout", "2",
                                                                               "--max-connections", "8", "--api-key", Self.apiKey])
        defer { server.kill() }
        for field in ["temperature", "top_p", "presence_penalty", "frequency_penalty", "min_p", "repetition_penalty", "max_tokens", "n",
                      "logprobs", "top_k", "seed"] {
            for value in ["1e30", "-1e30", "9.3e18", "1.8446744073709552e19", "1e308", "-1e308", "0.5e-320"] {
                for (path, prompt) in [("/v1/completions", #""prompt": "hi""#), ("/v1/chat/completions", #""messages": [{"role": "user", "content": "hi"}]"#)] {
                    let maxTokens = field == "max_tokens" ? "" : #", "max_tokens": 1"#
                    let response = try await server.request("POST", path, json: "{\(prompt)\(maxTokens), \"\(field)\": \(value)}")
                    XCTAssertTrue([200, 400].contains(response.status), "\(path) \(field)=\(value): \(response.status) \(response.text)")
                    if response.status == 400 { XCTAssertTrue(response.text.contains(field), response.text) }
                }
            }
        }
        let form = try await server.request("POST", "/v1/completions", body: Data(#"{"prompt": "hi"}"#.utf8), contentType: "application/x-www-form-urlencoded")
        XCTAssertEqual(form.status, 415, form.text)
        XCTAssertTrue(form.text.contains("application/json"), form.text)

        // A body shorter than its Content-Length, a truncated chunked body, headers that never end, an idle socket:
        // each closed within the receive timeout (2 s here), without an answer.
        for partial in ["POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"prompt\"",
                        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"pro",
                        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\n{",
                        "GET /health HTTP/1.1\r\nHost: x\r\n", ""] {
            let start = Date()
            let reply = try RawConnection(port: server.port).exchange(partial, waitingAtMost: 10)
            let seconds = Date().timeIntervalSince(start)
            XCTAssertTrue(reply.isEmpty || reply.hasPrefix("HTTP/1.1 4"), "\(partial.debugDescription): \(reply)")
            XCTAssertLessThan(seconds, 6, "\(partial.debugDescription) was held open \(seconds) s")
        }

        // Beyond 8 open connections, a request is answered 503; once they close, requests are served again.
        let held = try (0..<8).map { _ in try RawConnection(port: server.port) }
        try await Task.sleep(for: .milliseconds(200))
        let refused = try RawConnection(port: server.port).exchange("GET /health HTTP/1.1\r\nHost: x\r\n\r\n", waitingAtMost: 10)
        XCTAssertTrue(refused.hasPrefix("HTTP/1.1 503"), refused)
        XCTAssertTrue(refused.contains("too_many_connections"), refused)
        for connection in held { connection.close() }
        try await Task.sleep(for: .milliseconds(200))
        let health = try await server.request("GET", "/health", key: nil)
        XCTAssertEqual(health.status, 200)
        let completion = try await server.request("POST", "/v1/completions", json: #"{"prompt": "Hello", "max_tokens": 3}"#)
        XCTAssertEqual(completion.status, 200, completion.text)
    }

    /// scripts/openai_client_check.py: the official `openai` package, unchanged, against the server (models,
    /// completions, chat, streaming, seeds, logprobs, echo, errors, the queue limit, disconnects). Skips without it.
    func testTheOfficialOpenAIClientWorksAgainstIt() throws {
        try requirePython("openai, httpx", install: "pip install openai httpx")
        let server = try ServerProcess(model: try modelDirectory(), arguments: ["--max-batch", "4", "--max-queue", "2", "--api-key", Self.apiKey])
        defer { server.kill() }
        let (status, output) = try runPythonScript("openai_client_check.py", ["--base-url", "http://127.0.0.1:\(server.port)",
                                                                              "--api-key", Self.apiKey, "--model", "tiny-gpt2"])
        print(output)
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(output.contains("OK"), output)
    }

    /// scripts/chat_page_check.py: the chat page in headless Chromium sends a message and shows a streamed reply.
    /// Skips without Debian's chromium and chromium-driver or without selenium.
    func testTheChatPageStreamsRepliesInAHeadlessBrowser() throws {
        try requirePython("selenium", install: "pip install selenium")
        try XCTSkipIf(!FileManager.default.fileExists(atPath: "/usr/bin/chromedriver"), "chromium-driver is not installed (apt-get install chromium chromium-driver)")
        let server = try ServerProcess(model: try modelDirectory(), arguments: ["--api-key", Self.apiKey])
        defer { server.kill() }
        let (status, output) = try runPythonScript("chat_page_check.py", ["--base-url", "http://127.0.0.1:\(server.port)", "--api-key", Self.apiKey])
        print(output)
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(output.contains("OK"), output)
    }
}

/// A `gpt serve` child process on a free port.
final class ServerProcess: @unchecked Sendable {
    let process = Process()
    let model: URL
    private(set) var port = 0
    private var log = ""

    init(model: URL, arguments: [String]) throws {
        let gpt = packageRoot.appendingPathComponent(".build/release/gpt")
        try XCTSkipIf(!FileManager.default.fileExists(atPath: gpt.path), "no release build of gpt (make build)")
        self.model = model
        process.executableURL = gpt
        process.arguments = ["serve", "--model", model.path, "--port", "0"] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        // The port from the line "Serving NAME on http://127.0.0.1:PORT …".
        let deadline = Date().addingTimeInterval(60)
        while port == 0 {
            let data = pipe.fileHandleForReading.availableData
            guard !data.isEmpty, Date() < deadline else { throw ServerStartError(description: "gpt serve did not start: \(log)") }
            log += String(decoding: data, as: UTF8.self)
            if let range = log.range(of: #"http://127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                port = Int(log[range].split(separator: ":").last!)!
            }
        }
        // Keep draining the output so that the server never blocks on a full pipe.
        pipe.fileHandleForReading.readabilityHandler = { handle in _ = handle.availableData }
    }

    /// An HTTP request with the API key: status and body text.
    func request(_ method: String, _ path: String, json: String? = nil, body: Data? = nil, key: String? = ServerTests.apiKey,
                 contentType: String = "application/json") async throws -> (status: Int, text: String) {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.httpMethod = method
        request.timeoutInterval = 60
        if let key { request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization") }
        if let data = body ?? json.map({ Data($0.utf8) }) {
            request.httpBody = data
            request.setValue(contentType, forHTTPHeaderField: "Content-Type")
        }
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as! HTTPURLResponse).statusCode, String(decoding: data, as: UTF8.self))
    }

    func terminate() { process.terminate() }

    func waitForExit() -> Int32 {
        process.waitUntilExit()
        return process.terminationStatus
    }

    func kill() {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }
}

/// A plain TCP connection to the server on loopback, for requests no HTTP client would send.
final class RawConnection {
    private var socket: Int32

    init(port: Int) throws {
        #if os(Linux)
        socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        socket = Darwin.socket(AF_INET, SOCK_STREAM, 0)
        #endif
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard socket >= 0, connected == 0 else { throw ServerStartError(description: "cannot connect to 127.0.0.1:\(port) (errno \(errno))") }
    }

    deinit { close() }

    func close() {
        guard socket >= 0 else { return }
        #if os(Linux)
        _ = Glibc.close(socket)
        #else
        _ = Darwin.close(socket)
        #endif
        socket = -1
    }

    /// Sends `text`, then reads until the server closes the connection, a complete response has come (one with a
    /// Content-Length), or `seconds` pass; returns what was read.
    func exchange(_ text: String, waitingAtMost seconds: Double) throws -> String {
        if !text.isEmpty { _ = text.utf8CString.withUnsafeBufferPointer { send(socket, $0.baseAddress, $0.count - 1, 0) } }
        var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var received: [UInt8] = []
        let deadline = Date().addingTimeInterval(seconds)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            let n = recv(socket, &buffer, buffer.count, 0)
            if n == 0 { break }
            if n > 0 {
                received += buffer[..<n]
                let reply = String(decoding: received, as: UTF8.self)
                if let headerEnd = reply.range(of: "\r\n\r\n"),
                   let lengthLine = reply[..<headerEnd.lowerBound].split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("content-length:") }),
                   let length = Int(lengthLine.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)),
                   reply.utf8.count - reply[..<headerEnd.upperBound].utf8.count >= length {
                    break
                }
            }
        }
        return String(decoding: received, as: UTF8.self)
    }
}

/// A server the tests start that does not answer.
struct ServerStartError: Error, CustomStringConvertible {
    let description: String
}
