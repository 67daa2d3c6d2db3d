/* hakmem.h: hakmem as the C library's malloc (libhakmem.so / libhakmem.a).
 *
 * Use it without any code change: LD_PRELOAD=/path/to/libhakmem.so program
 * or link it:                    cc prog.c -I include -L target/release -lhakmem
 *
 * The standard functions keep their declarations from <stdlib.h> and <malloc.h> and behave as
 * glibc's do (README, "Use it from C"; docs/c.md has the details):
 *   malloc calloc realloc reallocarray free posix_memalign aligned_alloc memalign valloc
 *   pvalloc malloc_usable_size    - errno ENOMEM on failure, untouched on success;
 *                                   malloc(0) gives a unique block; realloc(p, 0) frees p and
 *                                   returns NULL; calloc overflow gives NULL/ENOMEM;
 *                                   posix_memalign returns EINVAL for a bad alignment;
 *                                   aligned_alloc wants a power of two (else NULL/EINVAL);
 *                                   memalign rounds a non-power of two up.
 *   free of a pointer hakmem never returned, or into the middle of a mid (48 KiB..1 MiB) or
 *   big block: refused with one line on stderr, nothing changes. Tiny double frees and
 *   interior pointers are caught with HAKMEM_CHECK=1 (off by default).
 *   malloc_trim  returns unused memory (hakmem_trim); 1 if any was released
 *   mallopt      accepts and ignores every parameter (returns 1); settings are HAKMEM_*
 *                environment variables read at start-up
 *   mallinfo2, mallinfo  hakmem's counters in glibc's structure (see docs/c.md)
 *   malloc_stats prints hakmem's statistics to stderr
 * This header adds what glibc may not declare, and hakmem's own functions. */
#ifndef HAKMEM_H
#define HAKMEM_H

#include <malloc.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#ifndef __THROW
#define __THROW
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* C23: free with the size (and alignment) the block was allocated with. hakmem finds the
 * block's size itself and does not rely on these arguments: both behave as free(ptr). */
void free_sized(void *ptr, size_t size) __THROW;
void free_aligned_sized(void *ptr, size_t alignment, size_t size) __THROW;

/* glibc's internal names of the same functions; some programs call them directly. */
void *__libc_malloc(size_t size) __THROW;
void __libc_free(void *ptr) __THROW;
void *__libc_calloc(size_t n, size_t size) __THROW;
void *__libc_realloc(void *ptr, size_t size) __THROW;
void *__libc_memalign(size_t alignment, size_t size) __THROW;

/* Prints hakmem's statistics to stderr (the report HAKMEM_STATS=1 prints at exit). */
void hakmem_stats_print(void) __THROW;

/* Returns memory hakmem holds but does not use to the OS (the calling thread's cache is
 * flushed first). */
void hakmem_trim(void) __THROW;

/* Returns every block cached by the calling thread and gives up its slabs, as thread exit
 * does; the thread keeps working. */
void hakmem_flush_thread_cache(void) __THROW;

/* One of hakmem's counters by name, UINT64_MAX for an unknown name: any dotted name the
 * HAKMEM_STATS=1 report prints ("pool.cache.hits", "os.mapped.peak", ...), or one of:
 *   mmap_calls munmap_calls madvise_calls mremap_calls   system calls made so far
 *   mapped_bytes mapped_bytes_peak                        bytes mapped now / at most
 *   tiny_bytes_held     tiny blocks out of their slabs (in use or in thread caches)
 *   tiny_remote_frees   tiny blocks freed by a thread other than their slab's owner
 *   superslabs_live     2 MiB SuperSlabs of the tiny tier in use
 *   mid_bytes_in_use    bytes of mid blocks (48 KiB..1 MiB) in use
 *   big_bytes_live big_blocks_live   big blocks (> 1 MiB) in use
 *   big_invalid_frees   frees the big tier refused */
uint64_t hakmem_stat(const char *name) __THROW;

#ifdef __cplusplus
}
#endif

#endif
