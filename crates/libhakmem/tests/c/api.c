/* Every exported function with its edge cases and errno, as glibc behaves (run preloaded and
 * statically linked by tests/preload.rs). Prints "api: ok" and exits 0 when all checks pass. */
#include <malloc.h>
#include <stdalign.h>
#include <unistd.h>

#include "hakmem.h"
#include "check.h"

/* Sizes the compiler cannot see, so it keeps every call. */
static volatile size_t huge = SIZE_MAX, over = (size_t)PTRDIFF_MAX + 1;

static const size_t sizes[] = {0,          1,         15,        16,        17,
                               100,        1024,      2048,      4000,      48 << 10,
                               (48 << 10) + 1, 100 << 10, 1 << 20, (1 << 20) + 1, 3 << 20};
#define NSIZES (sizeof sizes / sizeof sizes[0])

static void test_malloc_free(void) {
    for (size_t i = 0; i < NSIZES; i++) {
        size_t n = sizes[i];
        char *p = malloc(n);
        CHECK(p != NULL);
        CHECK(((uintptr_t)p & 15) == 0);
        size_t u = malloc_usable_size(p);
        CHECK(u >= (n ? n : 1));
        fill(p, u, (unsigned)i);
        CHECK(holds(p, u, (unsigned)i));
        free(p);
    }
    void *a = malloc(0), *b = malloc(0);
    CHECK(a && b && a != b);
    free(a);
    free(b);
    free(NULL);
    CHECK(malloc_usable_size(NULL) == 0);
}

static void test_errno(void) {
    errno = 1234;
    for (size_t i = 0; i < NSIZES; i++) {
        void *p = malloc(sizes[i]);
        p = realloc(p, sizes[i] * 2 + 1);
        free(p);
        p = calloc(3, sizes[i]);
        free(p);
    }
    CHECK(errno == 1234); /* success leaves errno alone */
    errno = 0;
    CHECK(malloc(huge) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(malloc(over) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(calloc(huge / 2, 3) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(calloc((size_t)1 << 33, (size_t)1 << 33) == NULL && errno == ENOMEM);
}

static void test_calloc(void) {
    for (size_t i = 0; i < NSIZES; i++) {
        size_t n = sizes[i];
        /* Dirty a block first so a reused one must be cleared. */
        char *d = malloc(n ? n : 1);
        memset(d, 0xAB, n ? n : 1);
        free(d);
        unsigned char *p = calloc(1, n);
        CHECK(p != NULL);
        for (size_t k = 0; k < n; k++)
            if (p[k]) {
                CHECK(!"calloc block not zero");
                break;
            }
        free(p);
    }
    void *z = calloc(0, 0);
    CHECK(z != NULL);
    free(z);
}

static void test_realloc(void) {
    char *p = realloc(NULL, 10);
    CHECK(p != NULL);
    fill(p, 10, 3);
    size_t have = 10;
    const size_t steps[] = {20, 1000, 40 << 10, 200 << 10, 2 << 20, 5 << 20, 300 << 10, 30, 5};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        char *q = realloc(p, steps[i]);
        CHECK(q != NULL);
        CHECK(holds(q, have < steps[i] ? have : steps[i], 3));
        fill(q, steps[i], 3);
        p = q;
        have = steps[i];
    }
    errno = 0;
    CHECK(realloc(p, 0) == NULL); /* frees, as glibc */
    CHECK(errno == 0);
    p = malloc(100);
    fill(p, 100, 9);
    errno = 0;
    CHECK(realloc(p, huge) == NULL && errno == ENOMEM);
    CHECK(holds(p, 100, 9)); /* a failed realloc keeps the old block */
    errno = 0;
    CHECK(reallocarray(p, huge / 2, 3) == NULL && errno == ENOMEM);
    CHECK(holds(p, 100, 9));
    char *q = reallocarray(p, 50, 4);
    CHECK(q != NULL && holds(q, 100, 9) && malloc_usable_size(q) >= 200);
    free(q);
}

static void test_aligned(void) {
    for (size_t a = 1; a <= ((size_t)4 << 20); a *= 2) {
        const size_t ns[] = {0, 1, 100, 5000, 70 << 10, 2 << 20};
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
            size_t n = ns[k];
            void *p = aligned_alloc(a, n);
            CHECK(p && ((uintptr_t)p % a) == 0);
            CHECK(malloc_usable_size(p) >= n);
            fill(p, n, 1);
            free(p);
            p = memalign(a, n);
            CHECK(p && ((uintptr_t)p % a) == 0);
            free(p);
            if (a >= sizeof(void *)) {
                void *q = (void *)1;
                CHECK(posix_memalign(&q, a, n) == 0 && q && ((uintptr_t)q % a) == 0);
                free(q);
            }
        }
    }
    /* posix_memalign: EINVAL for 0, non powers of two and non multiples of sizeof(void *);
     * the output is untouched. */
    const size_t bad[] = {0, 1, 2, 4, 3, 24, 48, 100};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        void *q = (void *)0x1234;
        errno = 77;
        CHECK(posix_memalign(&q, bad[k], 16) == EINVAL);
        CHECK(q == (void *)0x1234 && errno == 77);
    }
    void *q = (void *)0x1234;
    CHECK(posix_memalign(&q, 64, huge) == ENOMEM && q == (void *)0x1234);
    /* aligned_alloc: a power of two or NULL/EINVAL (glibc 2.38 and C17). */
    errno = 0;
    CHECK(aligned_alloc(24, 100) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(aligned_alloc(0, 100) == NULL && errno == EINVAL);
    /* memalign: a non power of two rounds up; beyond SIZE_MAX/2+1 is EINVAL. */
    void *m = memalign(24, 100);
    CHECK(m && ((uintptr_t)m % 32) == 0);
    free(m);
    errno = 0;
    CHECK(memalign(SIZE_MAX / 2 + 2, 10) == NULL && errno == EINVAL);
    long page = sysconf(_SC_PAGESIZE);
    void *v = valloc(10);
    CHECK(v && ((uintptr_t)v % page) == 0);
    free(v);
    v = pvalloc(10);
    CHECK(v && ((uintptr_t)v % page) == 0 && malloc_usable_size(v) >= (size_t)page);
    free(v);
    v = pvalloc(0);
    CHECK(v && malloc_usable_size(v) >= (size_t)page);
    free(v);
    errno = 0;
    CHECK(pvalloc(huge - 10) == NULL && errno == ENOMEM);
}

static void test_aliases_and_sized(void) {
    void *p = __libc_malloc(40);
    CHECK(p && malloc_usable_size(p) >= 40);
    p = __libc_realloc(p, 4000);
    CHECK(p != NULL);
    __libc_free(p);
    unsigned char *c = __libc_calloc(10, 10);
    CHECK(c && c[0] == 0 && c[99] == 0);
    free_sized(c, 100);
    p = __libc_memalign(256, 10);
    CHECK(p && ((uintptr_t)p % 256) == 0);
    free_aligned_sized(p, 256, 10);
    free_sized(NULL, 0);
}

static void test_glibc_extras(void) {
    CHECK(mallopt(M_ARENA_MAX, 1) == 1);
    CHECK(mallopt(M_MMAP_THRESHOLD, 1 << 20) == 1);
    struct mallinfo2 before = mallinfo2();
    void *big = malloc(8 << 20);
    memset(big, 1, 8 << 20);
    struct mallinfo2 during = mallinfo2();
    CHECK(during.hblks >= before.hblks + 1);
    CHECK(during.hblkhd >= before.hblkhd + (8 << 20));
    CHECK(during.uordblks >= before.uordblks + (8 << 20));
    CHECK(during.arena >= during.uordblks);
    CHECK(during.arena == during.uordblks + during.fordblks);
    struct mallinfo old = mallinfo();
    CHECK(old.hblks == (int)during.hblks);
    free(big);
    hakmem_flush_thread_cache();
    int r = malloc_trim(0);
    CHECK(r == 0 || r == 1);
    hakmem_trim();
    malloc_stats(); /* the test driver finds "hakmem stats" on stderr */
    CHECK(hakmem_stat("mmap_calls") > 0);
    CHECK(hakmem_stat("mapped_bytes") > 0);
    CHECK(hakmem_stat("os.mmap_calls") == hakmem_stat("mmap_calls"));
    CHECK(hakmem_stat("os.mapped.peak") >= hakmem_stat("mapped_bytes"));
    CHECK(hakmem_stat("pool.cache.hits") != UINT64_MAX);
    CHECK(hakmem_stat("no_such_counter") == UINT64_MAX);
    CHECK(hakmem_stat(NULL) == UINT64_MAX);
}

/* libc's own allocations (strdup, getline, stdio buffers) come from hakmem too, so the
 * program can free them. */
static void test_libc_internal(void) {
    char *s = strdup("hakmem");
    CHECK(s && malloc_usable_size(s) >= 7);
    free(s);
    FILE *f = fopen("/proc/self/maps", "r");
    CHECK(f != NULL);
    char *line = NULL;
    size_t cap = 0;
    CHECK(getline(&line, &cap, f) > 0);
    CHECK(line && malloc_usable_size(line) >= cap);
    free(line);
    fclose(f);
}

int main(void) {
    CHECK(hakmem_active());
    if (!hakmem_stat) return finish("api"); /* nothing else means anything without hakmem */
    test_malloc_free();
    test_errno();
    test_calloc();
    test_realloc();
    test_aligned();
    test_aliases_and_sized();
    test_glibc_extras();
    test_libc_internal();
    return finish("api");
}
