import Foundation

/// An open-addressing hash map from byte strings to token ids, built once and then only read.
struct ByteStringTable: Sendable {
    private var arena: [UInt8] = []
    private var offsets: [Int32] = []
    private var lengths: [Int32] = []
    private var values: [Int32] = []
    private var slots: [Int32]
    private let mask: Int

    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        slots = [Int32](repeating: -1, count: size)
        mask = size - 1
    }

    var count: Int { values.count }

    @inline(__always)
    static func hash(_ p: UnsafePointer<UInt8>, _ n: Int) -> Int {
        var h: UInt64 = 0x9E37_79B9_7F4A_7C15 ^ UInt64(n)
        var i = 0
        while i + 8 <= n {
            h = (h ^ UnsafeRawPointer(p + i).loadUnaligned(as: UInt64.self)) &* 0xFF51_AFD7_ED55_8CCD
            h ^= h >> 29
            i += 8
        }
        if i < n {
            var tail: UInt64 = 0
            for k in i..<n { tail |= UInt64(p[k]) << (8 * UInt64(k - i)) }
            h = (h ^ tail) &* 0xFF51_AFD7_ED55_8CCD
        }
        h ^= h >> 32
        return Int(truncatingIfNeeded: h)
    }

    /// Adds `bytes` with `value`; an existing key keeps its first value.
    mutating func insert(_ bytes: [UInt8], value: Int32) {
        if bytes.withUnsafeBufferPointer({ find($0.baseAddress!, $0.count) }) != nil { return }
        var slot = bytes.withUnsafeBufferPointer { ByteStringTable.hash($0.baseAddress!, $0.count) } & mask
        while slots[slot] >= 0 { slot = (slot + 1) & mask }
        slots[slot] = Int32(values.count)
        offsets.append(Int32(arena.count))
        lengths.append(Int32(bytes.count))
        values.append(value)
        arena += bytes
    }

    /// The value stored for the `n` bytes at `p`.
    @inline(__always)
    func find(_ p: UnsafePointer<UInt8>, _ n: Int) -> Int32? {
        guard n > 0 else { return nil }
        var slot = ByteStringTable.hash(p, n) & mask
        return slots.withUnsafeBufferPointer { slots in
            arena.withUnsafeBufferPointer { arena in
                while true {
                    let entry = Int(slots[slot])
                    if entry < 0 { return nil }
                    if Int(lengths[entry]) == n, memcmp(arena.baseAddress! + Int(offsets[entry]), p, n) == 0 {
                        return values[entry]
                    }
                    slot = (slot + 1) & mask
                }
            }
        }
    }
}

/// An open-addressing hash map from a pair of token ids to the rank of their merge and the id it creates.
struct MergeTable: Sendable {
    private var keys: [UInt64]
    private var entries: [UInt64]
    private let shift: UInt64
    private let mask: Int

    init(capacity: Int) {
        var bits: UInt64 = 4
        while (1 << bits) < capacity * 2 { bits += 1 }
        keys = [UInt64](repeating: .max, count: 1 << bits)
        entries = [UInt64](repeating: 0, count: 1 << bits)
        shift = 64 - bits
        mask = (1 << bits) - 1
    }

    @inline(__always)
    private func slot(_ key: UInt64) -> Int { Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> shift) }

    mutating func insert(_ left: Int32, _ right: Int32, rank: Int32, merged: Int32) {
        let key = UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
        var s = slot(key)
        while keys[s] != .max && keys[s] != key { s = (s + 1) & mask }
        if keys[s] == key { return }  // the first (lowest-rank) merge of a pair wins
        keys[s] = key
        entries[s] = UInt64(UInt32(bitPattern: rank)) << 32 | UInt64(UInt32(bitPattern: merged))
    }

    /// (rank, merged id) packed as rank << 32 | id, or `UInt64.max` when the pair does not merge.
    @inline(__always)
    func lookup(_ left: Int32, _ right: Int32) -> UInt64 {
        let key = UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
        var s = slot(key)
        return keys.withUnsafeBufferPointer { keys in
            while true {
                let k = keys[s]
                if k == key { return entries[s] }
                if k == .max { return .max }
                s = (s + 1) & mask
            }
        }
    }
}
