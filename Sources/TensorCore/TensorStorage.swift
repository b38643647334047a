import Foundation

/// Owns one float buffer. Buffers are recycled through a size-keyed pool, so a training step that allocates the
/// same activations every iteration reuses warm memory instead of faulting fresh pages from the OS.
public final class TensorStorage: @unchecked Sendable {
    /// The first element of the buffer.
    public let base: UnsafeMutablePointer<Float>
    /// Number of floats in the buffer.
    public let count: Int

    /// A buffer of `count` floats with unspecified contents.
    public init(uninitializedCount count: Int) {
        self.count = count
        self.base = BufferPool.shared.take(count)
    }

    deinit { BufferPool.shared.give(base, count: count) }
}

/// Keeps released buffers by size for reuse. Thread-safe.
final class BufferPool: @unchecked Sendable {
    static let shared = BufferPool()
    private var free: [Int: [UnsafeMutablePointer<Float>]] = [:]
    private var pooledFloats = 0
    private let lock = NSLock()
    /// Buffers smaller than this are not worth pooling.
    private let minimumPooledCount = 4096
    /// Pooled memory above this bound is released to the system.
    private let maximumPooledFloats = 1 << 31

    func take(_ count: Int) -> UnsafeMutablePointer<Float> {
        let n = max(count, 1)
        if n >= minimumPooledCount {
            lock.lock()
            if let p = free[n]?.popLast() {
                pooledFloats -= n
                lock.unlock()
                return p
            }
            lock.unlock()
        }
        // Cache-line aligned, so that whole-line vector loads and streaming stores can start at the base.
        return UnsafeMutableRawPointer.allocate(byteCount: n * MemoryLayout<Float>.stride, alignment: 64)
            .bindMemory(to: Float.self, capacity: n)
    }

    func give(_ pointer: UnsafeMutablePointer<Float>, count: Int) {
        let n = max(count, 1)
        if n >= minimumPooledCount {
            lock.lock()
            if pooledFloats + n <= maximumPooledFloats {
                free[n, default: []].append(pointer)
                pooledFloats += n
                lock.unlock()
                return
            }
            lock.unlock()
        }
        UnsafeMutableRawPointer(pointer).deallocate()
    }

    /// Returns every pooled buffer to the system.
    func drain() {
        lock.lock()
        for (_, list) in free { for p in list { UnsafeMutableRawPointer(p).deallocate() } }
        free = [:]
        pooledFloats = 0
        lock.unlock()
    }
}
