// File-system calls that Swift's Glibc module does not declare (they need _GNU_SOURCE): atomic exchange of two paths, early writeback.
#pragma once
#include <errno.h>
#include <stdio.h>
#if defined(__linux__)
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

/// Swaps the files or folders at `a` and `b` (both must exist) in one step: any reader sees either both old names or
/// both new ones. Returns 0, or -1 with errno set; errno is ENOSYS or EINVAL where the kernel or file system cannot.
static inline int swiftgpt_exchange_paths(const char *a, const char *b) {
#if defined(__linux__) && defined(SYS_renameat2)
    return (int)syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, 2 /* RENAME_EXCHANGE */);
#elif defined(__APPLE__)
    return renamex_np(a, b, 0x00000002 /* RENAME_SWAP */);
#else
    errno = ENOSYS;
    return -1;
#endif
}

/// Starts writing a file's range back to the disk without waiting (Linux's sync_file_range, also behind
/// _GNU_SOURCE), so that a later fsync has less to wait for; does nothing elsewhere.
static inline void swiftgpt_start_writeback(int descriptor, long long offset, long long count) {
#if defined(__linux__) && defined(SYS_sync_file_range)
    syscall(SYS_sync_file_range, descriptor, offset, count, 2 /* SYNC_FILE_RANGE_WRITE */);
#else
    (void)descriptor; (void)offset; (void)count;
#endif
}
