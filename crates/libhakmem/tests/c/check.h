/* Test helpers for the C programs run by tests/preload.rs: CHECK counts failures and names
 * them on stderr; main returns `finish()`, nonzero if anything failed. */
#ifndef HAK_TEST_CHECK_H
#define HAK_TEST_CHECK_H

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* hakmem's own functions and C23's are weak here: a program run with LD_PRELOAD links without
 * them and the dynamic loader binds them to the preloaded library at start-up. */
#pragma weak free_sized
#pragma weak free_aligned_sized
#pragma weak hakmem_stat
#pragma weak hakmem_trim
#pragma weak hakmem_flush_thread_cache
#pragma weak hakmem_stats_print

static int failures;

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "CHECK failed at %s:%d: %s (errno %d)\n", __FILE__, __LINE__, \
                    #cond, errno);                                                         \
            failures++;                                                                    \
        }                                                                                  \
    } while (0)

static int finish(const char *name) {
    if (failures) {
        fprintf(stderr, "%s: %d checks failed\n", name, failures);
        return 1;
    }
    printf("%s: ok\n", name);
    return 0;
}

uint64_t hakmem_stat(const char *name);

/* True when hakmem (not glibc) serves malloc in this process: its functions are there and a
 * malloc made it map memory. */
static int hakmem_active(void) {
    if (!hakmem_stat) return 0;
    void *p = malloc(16);
    int mapped = hakmem_stat("mapped_bytes") > 0;
    free(p);
    return mapped;
}

static void fill(void *p, size_t n, unsigned seed) {
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++) b[i] = (unsigned char)(seed + i * 7);
}

static int holds(const void *p, size_t n, unsigned seed) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != (unsigned char)(seed + i * 7)) return 0;
    return 1;
}

#endif
