import Foundation
import SwiftGPT
import TensorCore
import XCTest

final class SupervisedFineTuningTests: XCTestCase {
    /// Only the replies (from after the generation prompt, end-of-turn token included) are trained, and what comes
    /// before each reply is tokenized exactly as the prompt is at generation time.
    func testOnlyTheRepliesAreTrained() throws {
        let tokenizer = try TokenizerLoading.gpt2(), template = ChatTemplate.default
        let messages = [ChatMessage(role: .user, content: "Hi"), ChatMessage(role: .assistant, content: "Hello there"),
                        ChatMessage(role: .user, content: "Bye"), ChatMessage(role: .assistant, content: "Ok")]
        let (ids, trained) = try template.trainingTokens(messages, tokenizer: tokenizer)
        XCTAssertEqual(ids.count, trained.count)
        let firstPrompt = try template.tokens(Array(messages.prefix(1)), addGenerationPrompt: true, tokenizer: tokenizer)
        XCTAssertEqual(Array(ids.prefix(firstPrompt.count)), firstPrompt)
        XCTAssertFalse(trained.prefix(firstPrompt.count).contains(true))
        // The runs of trained and untrained tokens, decoded.
        var runs: [(Bool, String)] = [], start = 0
        for t in 1...ids.count where t == ids.count || trained[t] != trained[start] {
            runs.append((trained[start], try tokenizer.decode(Array(ids[start..<t]))))
            start = t
        }
        XCTAssertEqual(runs.map(\.0), [false, true, false, true])
        XCTAssertEqual(runs.map(\.1), ["\n\nHuman: Hi\n\nAssistant:", " Hello there<|endoftext|>", "\n\nHuman: Bye\n\nAssistant:", " Ok<|endoftext|>"])
        XCTAssertEqual(ids.last, tokenizer.endOfText)
        // Targets: each position predicts the next id only where that id is trained.
        let example = EncodedDemonstration(ids: ids, trained: trained)
        for (t, target) in example.targets.enumerated() {
            XCTAssertEqual(target, t + 1 < ids.count && trained[t + 1] ? ids[t + 1] : -1)
        }
    }

    func testDemonstrationFilesAndTheirErrors() throws {
        let folder = try temporaryDirectory(self)
        let url = try writeLines([#"{"instruction": "Add.", "input": "1 2", "response": "3"}"#, #"{"instruction": "Hi.", "response": "Hello"}"#,
                             #"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}"#],
                            "demos.jsonl", in: folder)
        let demonstrations = try DemonstrationDataset.load(url)
        XCTAssertEqual(demonstrations.map(\.messages), [
            [ChatMessage(role: .user, content: "Add.\n\n1 2"), ChatMessage(role: .assistant, content: "3")],
            [ChatMessage(role: .user, content: "Hi."), ChatMessage(role: .assistant, content: "Hello")],
            [ChatMessage(role: .system, content: "Be brief."), ChatMessage(role: .user, content: "Q"), ChatMessage(role: .assistant, content: "A")],
        ])
        let good = #"{"instruction": "a", "response": "b"}"#
        for (line, message) in [(#"{"instruction": "a"}"#, "line 2: missing field 'response'"),
                                (#"{"instruction": "a", "input": 3, "response": "b"}"#, "line 2: field 'input' must be a string"),
                                (#"{"messages": [{"role": "robot", "content": "x"}]}"#, "line 2: messages[0].role must be one of"),
                                (#"{"messages": [{"role": "user", "content": "x"}]}"#, "line 2: 'messages' has no assistant turn"),
                                ("not json", "line 2: not a JSON object")] {
            let error = assertFileError(.malformed(line: 2), "bad.jsonl", try DemonstrationDataset.load(try writeLines([good, line], "bad.jsonl", in: folder)))
            XCTAssertTrue(error?.message.hasPrefix(message) ?? false, "\(String(describing: error)) does not name the field as '\(message)'")
        }
    }

    /// A character-level setup: replies repeat the prompt's letter, which only reading the prompt reveals.
    private let template = ChatTemplate(system: "{content}", user: "U{content}", assistant: "A{content}", generationPrompt: "A", endOfTurn: ";")

    private func demonstrations(_ count: Int, seed: UInt64, in folder: URL, name: String) throws -> URL {
        var random = SeededRandom(seed: seed)
        let lines = (0..<count).map { _ -> String in
            let letter = "abc".randomElement(using: &random)!
            let filler = String((0..<(1 + random.nextInt(below: 3))).map { _ in "abc".randomElement(using: &random)! })
            return #"{"instruction": "\#(filler)\#(letter)", "response": "\#(String(repeating: letter, count: 3))"}"#
        }
        return try writeLines(lines, name, in: folder)
    }

    private func configuration(in folder: URL) throws -> TrainingConfiguration {
        var settings = SupervisedFineTuningSettings(train: try demonstrations(300, seed: 1, in: folder, name: "train.jsonl").path,
                                                    dev: try demonstrations(60, seed: 2, in: folder, name: "dev.jsonl").path,
                                                    chatTemplate: template)
        settings.epochs = 8
        return .exampleRun(.supervisedFineTuning(settings), from: try savedBase(alphabet: "abcUA;\n", in: folder),
                           into: folder.appendingPathComponent("run"))
    }

    /// The dev loss is the mean cross-entropy over the reply tokens alone (checked against a full forward pass of
    /// each demonstration), and training brings it down to what reading the prompt allows.
    func testTheReplyLossIsMaskedAndFalls() throws {
        let folder = try temporaryDirectory(self)
        let c = try configuration(in: folder)
        let trainer = try Trainer(configuration: c)
        let objective = try XCTUnwrap(trainer.objective as? SupervisedFineTuningObjective)
        var total = 0.0, count = 0
        for example in objective.dev {
            let logits = logits(trainer.model, example.ids, batch: 1)
            for (t, target) in example.targets.enumerated() where target >= 0 {
                let row = Array(logits.scalars[(t * 7)..<((t + 1) * 7)])
                let logSum = log(row.map { exp(Double($0)) }.reduce(0, +))
                total -= Double(row[Int(target)]) - logSum
                count += 1
            }
        }
        XCTAssertEqual(count, objective.dev.count * 4)  // "aaa" and ";"
        let before = try objective.evaluate(step: 0, precision: .float32)
        XCTAssertEqual(before.metrics["val_loss"]!, total / Double(count), accuracy: 1e-5)
        var last: Evaluation?
        XCTAssertEqual(try trainer.run(events: { if case .evaluation(_, let e) = $0 { last = e } }), .finished)
        // Knowing the letter, the reply and its end are certain.
        XCTAssertLessThan(last!.metrics["val_loss"]!, 0.1, last!.summary)
        let saved = try ChatTemplate.load(modelDirectory: URL(fileURLWithPath: c.out).appendingPathComponent("best"))
        XCTAssertEqual(saved, template)
        // The trained model answers a new prompt.
        let (model, tokenizer) = try ModelLoading.load(c.out)
        var options = SamplingOptions()
        options.maxNewTokens = 4
        options.temperature = 0
        let prompt = try template.tokens([ChatMessage(role: .user, content: "cab")], addGenerationPrompt: true, tokenizer: tokenizer)
        XCTAssertEqual(try Generator(model: model, tokenizer: tokenizer).generate(prompts: [prompt], options: options)[0].text, "bbb;")
        // gpt generate --chat renders the prompt with the saved template and stops at its end-of-turn marker.
        let (status, output) = try runGPT(["generate", "--model", c.out, "--chat", "--prompt", "cab", "--max-tokens", "6", "--temperature", "0"])
        XCTAssertEqual(status, 0, output)
        XCTAssertEqual(output.split(separator: "\n").first, "bbb")
        // gpt chat keeps the conversation: each piped line is a user's turn, /reset starts over, /exit leaves; a
        // message the tokenizer cannot read is refused and the conversation goes on.
        let chat = try runCapturingOutput(packageRoot.appendingPathComponent(".build/release/gpt"),
                                          ["chat", "--model", c.out, "--max-tokens", "6", "--temperature", "0"],
                                          input: Data("cab\n/reset\nQ?\ncab\n/exit\nnever read\n".utf8))
        XCTAssertEqual(chat.status, 0, chat.output)
        let lines = chat.output.split(separator: "\n")
        XCTAssertEqual(lines.filter { !$0.hasPrefix("(") || $0 == "(a new conversation)" }, ["bbb", "(a new conversation)", "bbb"], chat.output)
        XCTAssertEqual(lines.filter { $0.hasPrefix("(") && $0 != "(a new conversation)" }.count, 1, "the unreadable message is refused: \(chat.output)")
        // A conversation longer than the context (16 tokens, 6 of them for the reply) leaves its oldest turns out.
        let long = try runCapturingOutput(packageRoot.appendingPathComponent(".build/release/gpt"),
                                          ["chat", "--model", c.out, "--max-tokens", "6", "--temperature", "0"], input: Data("cab\ncab\n".utf8))
        XCTAssertEqual(long.status, 0, long.output)
        XCTAssertTrue(long.output.contains("(1 earliest message left out to fit the context of 16 tokens)"), long.output)
        // gpt export keeps the chat template.
        let exported = folder.appendingPathComponent("exported")
        let export = try runGPT(["export", "--model", c.out, "--out", exported.path])
        XCTAssertEqual(export.0, 0, export.1)
        XCTAssertEqual(try ChatTemplate.load(modelDirectory: exported), template)
    }

    /// The chat template written into tokenizer_config.json as Jinja renders, in Jinja (what transformers'
    /// apply_chat_template runs), the text SwiftGPT renders. Skips without python3's jinja2.
    func testJinjaChatTemplateRendersAsTheTemplate() throws {
        try requirePython("jinja2", install: "pip install jinja2")
        let tricky = ChatTemplate(system: "<<SYS>>\n{content}\n'sys'", user: "\\user\t{content}\r\n", assistant: "\n\nAssistant: {content}",
                                  generationPrompt: "\n\nAssistant:", endOfTurn: "<|endoftext|>")
        let messages = [ChatMessage(role: .system, content: "Be brief."), ChatMessage(role: .user, content: "Hi {content} 'q' \\ é"),
                        ChatMessage(role: .assistant, content: "Hello."), ChatMessage(role: .user, content: "Again?")]
        for chatTemplate in [ChatTemplate.default, tricky, template] {
            let expected = chatTemplate.render(messages, addGenerationPrompt: true).map { piece -> String in
                if case .text(let text) = piece { return text }
                return chatTemplate.endOfTurn
            }.joined()
            let input = try JSONSerialization.data(withJSONObject: [
                "template": chatTemplate.jinja, "messages": messages.map { ["role": $0.role.rawValue, "content": $0.content] }])
            let script = "import json, sys, jinja2; d = json.load(sys.stdin); "
                + "sys.stdout.write(json.dumps(jinja2.Environment().from_string(d['template']).render(messages=d['messages'], add_generation_prompt=True)))"
            let (status, output) = try runCapturingOutput(URL(fileURLWithPath: "/usr/bin/env"), ["python3", "-c", script], input: input)
            XCTAssertEqual(status, 0, output)
            XCTAssertEqual(try JSONSerialization.jsonObject(with: Data(output.utf8), options: .fragmentsAllowed) as? String, expected, chatTemplate.jinja)
        }
    }

    /// A bad line stops `gpt sft` before anything is written, with a message naming the file, line and field.
    func testABadDemonstrationFileStopsTheCommand() throws {
        let folder = try temporaryDirectory(self)
        let c = try configuration(in: folder)
        guard case .supervisedFineTuning(let settings) = c.objective else { return XCTFail("not an SFT configuration") }
        let bad = try writeLines([#"{"instruction": "a", "response": "b"}"#, #"{"instruction": "a", "response": 7}"#], "bad.jsonl", in: folder)
        let out = folder.appendingPathComponent("out")
        let (status, output) = try runGPT(["sft", "--model", c.initFrom, "--train", bad.path, "--dev", settings.dev,
                                           "--out", out.path, "--chat-template", try templateFile(in: folder).path])
        XCTAssertNotEqual(status, 0)
        XCTAssertTrue(output.contains("bad.jsonl: line 2: field 'response' must be a string"), output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent("last").path))
    }

    private func templateFile(in folder: URL) throws -> URL {
        let url = folder.appendingPathComponent("template.json")
        try template.save(to: folder)
        try FileManager.default.moveItem(at: folder.appendingPathComponent(ChatTemplate.fileName), to: url)
        return url
    }

    /// Runs the release build of gpt: its exit status and its output (standard output, then standard error).
    private func runGPT(_ arguments: [String]) throws -> (Int32, String) {
        let gpt = packageRoot.appendingPathComponent(".build/release/gpt")
        try XCTSkipIf(!FileManager.default.fileExists(atPath: gpt.path), "no release build of gpt (make build)")
        let process = Process()
        process.executableURL = gpt
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile(), stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: stdout + stderr, as: UTF8.self))
    }
}
