// Memory hints Swift cannot spell: clang's prefetch builtin and glibc's malloc_trim, behind functions Swift imports.
#pragma once

/// Asks the CPU to bring the 64-byte line holding `address` into the second-level cache (x86: prefetcht1), without
/// waiting for it and without faulting when the address is not mapped.
static inline void prefetchIntoSecondLevelCache(const void *address) { __builtin_prefetch(address, 0, 2); }

#if defined(__linux__)
#include <malloc.h>
/// Hands memory that glibc's allocator keeps after frees back to the system (malloc_trim, which Swift's Glibc module
/// does not declare). Returns whether any was.
static inline int returnFreedMemoryToSystem(void) { return malloc_trim(0); }
/// Caps the number of glibc malloc arenas (by default 8 per core, each a heap of its own that fragments on its own).
static inline void limitAllocatorArenas(int count) { mallopt(M_ARENA_MAX, count); }
#else
static inline int returnFreedMemoryToSystem(void) { return 0; }
static inline void limitAllocatorArenas(int count) { (void)count; }
#endif
