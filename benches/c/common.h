/* Shared pieces of the C benchmarks (see docs/bench.md, "C rows"): the C original's
 * xorshift32, the byte pattern every block carries, the clock, which allocator is active
 * (found with dlsym, so a preload that did not take shows up), and the RESULT line that
 * `cargo xtask bench` parses. Header-only; every benchmark is one C file plus this. */
#ifndef HAK_BENCH_COMMON_H
#define HAK_BENCH_COMMON_H

#define _GNU_SOURCE
#include <dlfcn.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* xorshift32 with shifts 13, 17, 5; a zero seed (a fixed point) becomes 1. */
static inline uint32_t xs_seed(uint32_t s) { return s ? s : 1; }
static inline uint32_t xs_next(uint32_t *x) {
    uint32_t v = *x;
    v ^= v << 13;
    v ^= v >> 17;
    v ^= v << 5;
    *x = v;
    return v;
}

/* The pattern byte of a block of `size` bytes (as benches/src/lib.rs). */
static inline unsigned char tag_of(size_t size) {
    return (unsigned char)((unsigned char)size ^ (unsigned char)(size >> 8) ^ 0x5A);
}

static inline double now_secs(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Dies with a message naming the block (exit code 1, as hak-bench). */
static inline void corrupt(const void *p, size_t size, size_t off, unsigned got, unsigned want) {
    fprintf(stderr, "content check failed: block %p of %zu bytes has 0x%02x at offset %zu, "
                    "expected 0x%02x\n", p, size, got, off, want);
    exit(1);
}

static inline void *alloc_filled(size_t size) {
    unsigned char *p = malloc(size);
    if (!p) {
        fprintf(stderr, "allocation of %zu bytes failed\n", size);
        exit(1);
    }
    unsigned char t = tag_of(size);
    p[0] = t;
    p[size - 1] = t;
    return p;
}

static inline void free_checked(void *v, size_t size) {
    unsigned char *p = v, t = tag_of(size);
    if (p[0] != t) corrupt(p, size, 0, p[0], t);
    if (p[size - 1] != t) corrupt(p, size, size - 1, p[size - 1], t);
    free(p);
}

/* The allocator serving malloc in this process: each candidate exports a symbol the others
 * do not. */
static const char *active_allocator(void) {
    if (dlsym(RTLD_DEFAULT, "hakmem_stat")) return "hakmem";
    if (dlsym(RTLD_DEFAULT, "mi_version")) return "mimalloc";
    if (dlsym(RTLD_DEFAULT, "mallctl")) return "jemalloc";
    if (dlsym(RTLD_DEFAULT, "tc_version")) return "tcmalloc";
    return "system";
}

/* The RESULT line, and hakmem's OS calls when hakmem is the allocator and `syscalls`. */
static void print_result_of(const char *workload, uint64_t ops, double secs, uint64_t checksum,
                            int syscalls) {
    printf("RESULT workload=%s alloc=%s ops=%" PRIu64 " secs=%.6f ops_per_sec=%.1f "
           "checksum=%" PRIu64 "\n",
           workload, active_allocator(), ops, secs, secs > 0 ? (double)ops / secs : 0.0,
           checksum);
    uint64_t (*stat)(const char *) = (uint64_t(*)(const char *))dlsym(RTLD_DEFAULT, "hakmem_stat");
    if (stat && syscalls)
        printf("HAKMEM_SYSCALLS mmap=%" PRIu64 " munmap=%" PRIu64 " madvise=%" PRIu64
               " mremap=%" PRIu64 "\n",
               stat("mmap_calls"), stat("munmap_calls"), stat("madvise_calls"),
               stat("mremap_calls"));
    fflush(stdout);
}

static inline void print_result(const char *workload, uint64_t ops, double secs,
                                uint64_t checksum) {
    print_result_of(workload, ops, secs, checksum, 1);
}

/* Positional numeric argument `i` (1-based) or the default. */
static uint64_t arg_u64(int argc, char **argv, int i, uint64_t dflt) {
    if (i >= argc) return dflt;
    char *end;
    unsigned long long v = strtoull(argv[i], &end, 10);
    if (*argv[i] == 0 || *end != 0) {
        fprintf(stderr, "%s: argument %d must be a number, got `%s`\n", argv[0], i, argv[i]);
        exit(2);
    }
    return v;
}

#endif
