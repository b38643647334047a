import TensorCore
import XCTest

/// The buffer pool: sizes round up to a few classes per power of two, and a released buffer serves a later tensor
/// of a nearby size (batches padded to different lengths reuse warm memory).
final class TensorStorageTests: XCTestCase {
    func testNearbySizesShareAPooledBuffer() {
        for count in [4097, 5000, 65_537, 1_000_003, 3_045_728] {
            let before = TensorMemory.liveBytes
            var first: Tensor? = Tensor(uninitializedShape: [count])
            let held = TensorMemory.liveBytes - before
            XCTAssertGreaterThanOrEqual(held, count * 4)
            XCTAssertLessThanOrEqual(Double(held), Double(count * 4) * 1.125, "\(count) floats hold \(held) bytes")
            let address = first!.pointer
            first = nil
            XCTAssertEqual(TensorMemory.liveBytes, before)
            let nearby = Tensor(uninitializedShape: [count + 7 * count / 1000])
            XCTAssertEqual(TensorMemory.liveBytes - before, held, "\(count + 7 * count / 1000) floats take the same class")
            XCTAssertEqual(nearby.pointer, address, "the released buffer is reused")
        }
    }
}
