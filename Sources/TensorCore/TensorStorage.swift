import CMemoryHints
import Foundation

/// Owns one float buffer. Buffers are recycled through a pool keyed by size class, so a training step reuses warm
/// memory instead of faulting fresh pages from the OS, even when its shapes change from step to step (batches
/// padded to their longest row).
package final class TensorStorage: @unchecked Sendable {
    /// The first element of the buffer.
    package let base: UnsafeMutablePointer<Float>
    /// Number of floats asked for (the buffer may hold more).
    package let count: Int
    /// Number of floats the buffer holds.
    private let capacity: Int
    /// Whether the buffer is a mapping of its own (not the pool's), unmapped when released.
    private let isMapping: Bool

    /// A buffer of `count` floats with unspecified contents.
    package init(uninitializedCount count: Int) {
        self.count = count
        (base, capacity) = BufferPool.shared.take(count)
        isMapping = false
    }

    /// A buffer of `count` zeros in fresh pages of its own, which take memory only once written: a model's gradient
    /// arena, which inference never touches.
    package init(zeroedCount count: Int) {
        self.count = count
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        guard let mapping = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), mapping != MAP_FAILED else {
            // No mapping to be had: pooled memory, zeroed by hand.
            (base, capacity) = BufferPool.shared.take(count)
            base.update(repeating: 0, count: count)
            isMapping = false
            return
        }
        base = mapping.bindMemory(to: Float.self, capacity: max(count, 1))
        capacity = max(count, 1)
        isMapping = true
    }

    deinit {
        if isMapping { munmap(base, capacity * MemoryLayout<Float>.stride) } else { BufferPool.shared.give(base, capacity: capacity) }
    }
}

/// Keeps released buffers by size class for reuse. Thread-safe.
final class BufferPool: @unchecked Sendable {
    static let shared = BufferPool()
    private var free: [Int: [UnsafeMutablePointer<Float>]] = [:]
    private var pooledFloats = 0
    private let lock = NSLock()
    /// Buffers smaller than this are not worth pooling (nor rounding up).
    private static let minimumPooledCount = 4096
    /// Pooled memory above this bound is released to the system.
    private var maximumPooledFloats = 1 << 31
    /// Floats of the poolable buffers in use now, and the most in use since the last reset.
    private(set) var liveFloats = 0, peakLiveFloats = 0

    /// The capacity a buffer of `count` floats gets: poolable sizes are rounded up to one of eight classes per
    /// power of two (at most 12.5% more), so that buffers of nearby sizes are interchangeable.
    static func capacity(_ count: Int) -> Int {
        let n = max(count, 1)
        guard n >= minimumPooledCount else { return n }
        let step = 1 << (Int.bitWidth - n.leadingZeroBitCount - 4)  // 2^(⌊log2 n⌋ − 3)
        return (n + step - 1) / step * step
    }

    /// A buffer of at least `count` floats and its capacity: a pooled one of the same class, else the smallest
    /// pooled one of at most twice that (so that a pool filled by larger batches serves smaller ones instead of
    /// growing), else a new one.
    func take(_ count: Int) -> (UnsafeMutablePointer<Float>, capacity: Int) {
        let n = BufferPool.capacity(count)
        if n >= BufferPool.minimumPooledCount {
            lock.lock()
            var size = n
            if free[n]?.isEmpty ?? true, let larger = free.keys.filter({ $0 > n && $0 <= 2 * n && !free[$0]!.isEmpty }).min() {
                size = larger
            }
            let pooled = free[size]?.popLast()
            if pooled != nil { pooledFloats -= size }
            liveFloats += size
            peakLiveFloats = max(peakLiveFloats, liveFloats)
            lock.unlock()
            if let pooled { return (pooled, size) }
        }
        // Cache-line aligned, so that whole-line vector loads and streaming stores can start at the base.
        let p = UnsafeMutableRawPointer.allocate(byteCount: n * MemoryLayout<Float>.stride, alignment: 64)
        return (p.bindMemory(to: Float.self, capacity: n), n)
    }

    /// Takes back a buffer of `capacity` floats (as `take` gave it).
    func give(_ pointer: UnsafeMutablePointer<Float>, capacity n: Int) {
        if n >= BufferPool.minimumPooledCount {
            lock.lock()
            liveFloats -= n
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

    /// Starts a new peak from the memory in use now.
    func resetPeak() {
        lock.lock()
        peakLiveFloats = liveFloats
        lock.unlock()
    }

    /// Returns every pooled buffer to the system.
    func drain() { trim(toFloats: 0) }

    /// Returns pooled buffers to the system, the largest first, until at most `limit` floats stay pooled.
    func trim(toFloats limit: Int) {
        lock.lock()
        for size in free.keys.sorted(by: >) where pooledFloats > limit {
            while pooledFloats > limit, let p = free[size]?.popLast() {
                UnsafeMutableRawPointer(p).deallocate()
                pooledFloats -= size
            }
            if free[size]?.isEmpty ?? false { free[size] = nil }
        }
        lock.unlock()
    }

    /// The most floats kept pooled; lowering it releases what is above.
    var poolLimit: Int {
        get { lock.lock(); defer { lock.unlock() }; return maximumPooledFloats }
        set {
            lock.lock()
            maximumPooledFloats = max(newValue, 0)
            lock.unlock()
            trim(toFloats: newValue)
        }
    }
}

/// Memory held by tensors (buffers of 16 KiB and more, which is where the memory is), for benchmarks: unlike the
/// process's resident size, it falls when tensors are released even though their buffers stay pooled.
package enum TensorMemory {
    /// Bytes held by live tensors now.
    package static var liveBytes: Int { BufferPool.shared.liveFloats * MemoryLayout<Float>.stride }
    /// The most bytes held at once since the last `resetPeak()`.
    package static var peakBytes: Int { BufferPool.shared.peakLiveFloats * MemoryLayout<Float>.stride }
    package static func resetPeak() { BufferPool.shared.resetPeak() }
    /// Returns the released buffers kept for reuse to the system. Until the pool fills again, every buffer taken has
    /// exactly its size class, so a measurement of held memory started after this does not depend on what ran before
    /// (a pooled buffer up to twice the size asked for may otherwise serve a request).
    /// On Linux, glibc's free memory is handed back too (malloc_trim), which it otherwise keeps for later allocations.
    package static func releasePooledBuffers() {
        BufferPool.shared.drain()
        _ = returnFreedMemoryToSystem()
    }
    /// Hands the memory the C allocator keeps after frees (glibc's, on Linux) back to the system, leaving the pool
    /// as it is: a long-running process calls this now and then, so that its resident size follows what it holds
    /// rather than the most it ever held. Takes about a millisecond per hundred megabytes of heap.
    package static func returnFreedMemory() {
        _ = returnFreedMemoryToSystem()
    }
    /// Has the C allocator (glibc's, on Linux) keep at most `count` arenas, the heaps it spreads threads over: fewer
    /// arenas fragment less, for a long-running process whose threads allocate little in hot loops (tensors come
    /// from the pool). Call it before the threads start.
    package static func limitAllocatorArenas(_ count: Int) {
        CMemoryHints.limitAllocatorArenas(Int32(count))
    }
    /// Has the C allocator (glibc's, on Linux) give every allocation of `bytes` or more a mapping of its own, unmapped
    /// when freed: large blocks then never stay behind in a fragmented heap. Call it before the threads start.
    package static func fixMappingThreshold(_ bytes: Int) {
        CMemoryHints.fixMappingThreshold(Int32(bytes))
    }
    /// Hands the whole pages within `count` floats at `pointer` back to the system: they read as zeros from now on and
    /// take no memory until written again (the floats on pages shared with memory outside the range keep their
    /// values). For memory of mappings of its own (`TensorStorage(zeroedCount:)`).
    package static func releasePages(_ pointer: UnsafeMutablePointer<Float>, count: Int) {
        releasePages(UnsafeMutableRawPointer(pointer), bytes: count * MemoryLayout<Float>.stride)
    }

    /// `releasePages` over `bytes` bytes at `pointer`.
    package static func releasePages(_ pointer: UnsafeMutableRawPointer, bytes: Int) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (Int(bitPattern: pointer) + page - 1) / page * page
        let end = (Int(bitPattern: pointer + bytes)) / page * page
        if end > start { _ = madvise(UnsafeMutableRawPointer(bitPattern: start), end - start, Int32(MADV_DONTNEED)) }
    }

    /// The most bytes of released buffers kept for reuse (8 GiB unless set; a server that stays up sets less).
    package static var poolLimitBytes: Int {
        get { BufferPool.shared.poolLimit * MemoryLayout<Float>.stride }
        set { BufferPool.shared.poolLimit = newValue / MemoryLayout<Float>.stride }
    }
}
