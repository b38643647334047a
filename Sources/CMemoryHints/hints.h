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
/// Has glibc serve every allocation of `bytes` or more with its own mapping, returned to the system when freed,
/// instead of raising that threshold as large blocks are freed (its default) and carving them from the heap.
static inline void fixMappingThreshold(int bytes) { mallopt(M_MMAP_THRESHOLD, bytes); }
#else
static inline int returnFreedMemoryToSystem(void) { return 0; }
static inline void limitAllocatorArenas(int count) { (void)count; }
static inline void fixMappingThreshold(int bytes) { (void)bytes; }
#endif
