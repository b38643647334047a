import Foundation
import GPTBenchmarks
import SwiftGPT
import XCTest

/// SwiftGPT reproduces Hugging Face transformers' logits, losses, hidden states, gradients, AdamW step and greedy
/// generation on the golden folders.
final class ParityTests: XCTestCase {
    func testBundledGoldenFolders() throws {
        for name in Golden.names { try assertParity(Golden.bundled(name), name) }
    }

    func testSharedGoldenFolders() throws {
        let folders = Golden.names.compactMap { name in Golden.shared(name).map { (name, $0) } }
        try XCTSkipIf(folders.isEmpty, "../shared/golden is absent; the bundled copy is tested by testBundledGoldenFolders")
        for (name, url) in folders { try assertParity(url, name) }
    }

    private func assertParity(_ folder: URL, _ name: String) throws {
        let items = try Parity.run(folder: folder)
        XCTAssertGreaterThan(items.count, 50, "\(name): too few quantities compared")
        XCTAssertTrue(items.contains { $0.name.hasPrefix("grad.") } && items.contains { $0.name.hasPrefix("step1.") }
                      && items.contains { $0.name.hasSuffix("loss_after_step1") }, "\(name): a section is missing")
        if name.contains("seqcls") || name.contains("regression") {
            XCTAssertTrue(items.contains { $0.name == "last_non_pad_index" && $0.passed }, "\(name): pooled positions not compared")
        } else if !name.contains("doubleheads") {
            XCTAssertTrue(items.contains { $0.name.hasPrefix("generate.output") }, "\(name): generation not compared")
        }
        for item in items where !item.passed {
            XCTFail("\(name): \(item.name) max abs \(item.maxAbsoluteError), max rel \(item.maxRelativeError)")
        }
    }

    func testToleranceRule() {
        XCTAssertTrue(Parity.withinTolerance(1.00009, reference: 1))
        XCTAssertTrue(Parity.withinTolerance(100.09, reference: 100))
        XCTAssertFalse(Parity.withinTolerance(100.2, reference: 100))
        XCTAssertFalse(Parity.withinTolerance(0.0502, reference: 0.05))
        XCTAssertFalse(Parity.withinTolerance(.nan, reference: 0))
    }
}
