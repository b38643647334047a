import TensorCore
import XCTest

/// The buffer pool: sizes round up to a few classes per power of two, a released buffer serves a later tensor of a
/// nearby size (batches padded to different lengths reuse warm memory), and a smaller one up to half its size.
/// Sizes are large and odd so that no other test's pooled buffer answers (buffers are never touched, so they cost
/// no memory).
final class TensorStorageTests: XCTestCase {
    func testNearbySizesShareAPooledBuffer() {
        for count in [70_000_001, 90_000_000] {
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

    func testASmallerTensorTakesAPooledBufferOfAtMostTwiceItsSize() {
        let before = TensorMemory.liveBytes
        var big: Tensor? = Tensor(uninitializedShape: [33_333_333])
        let held = TensorMemory.liveBytes - before, address = big!.pointer
        big = nil
        var smaller: Tensor? = Tensor(uninitializedShape: [20_000_000])
        XCTAssertEqual(smaller!.pointer, address, "0.6 of the size: the pooled buffer serves")
        XCTAssertEqual(TensorMemory.liveBytes - before, held, "it holds the whole buffer")
        smaller = nil
        let small = Tensor(uninitializedShape: [15_000_000])
        XCTAssertNotEqual(small.pointer, address, "under half the size: a new buffer")
    }
}
