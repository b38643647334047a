// Cache hints Swift cannot spell: clang's prefetch builtin, behind a function Swift imports.
#pragma once

/// Asks the CPU to bring the 64-byte line holding `address` into the second-level cache (x86: prefetcht1), without
/// waiting for it and without faulting when the address is not mapped.
static inline void prefetchIntoSecondLevelCache(const void *address) { __builtin_prefetch(address, 0, 2); }
