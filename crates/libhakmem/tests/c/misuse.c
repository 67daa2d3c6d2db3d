/* Misuse with a defined outcome: every bad free or realloc below is refused with one line on
 * stderr and leaves the heap working. With HAKMEM_CHECK=1 (argument "check") also the tiny
 * double free, the tiny interior pointer and the mid double free, which are undefined
 * behaviour without check mode and so only run with it. The driver counts the stderr lines. */
#include <sys/mman.h>

#include "hakmem.h"
#include "check.h"

static char static_buf[64];

/* Allocates and frees a mix of sizes and checks the contents, so a damaged heap shows. */
static void heap_still_works(void) {
    void *p[64];
    for (int i = 0; i < 64; i++) {
        size_t n = 16 + (size_t)i * 997;
        p[i] = malloc(n);
        CHECK(p[i] != NULL);
        fill(p[i], n, (unsigned)i);
    }
    for (int i = 0; i < 64; i++) {
        CHECK(holds(p[i], 16 + (size_t)i * 997, (unsigned)i));
        free(p[i]);
    }
}

int main(int argc, char **argv) {
    int check_mode = argc > 1 && strcmp(argv[1], "check") == 0;
    CHECK(hakmem_active());

    /* Pointers hakmem never returned: stack, static, an mmap, glibc's own heap would be here
     * too but glibc's malloc is not reachable under the preload. Each: one line. */
    char local[32];
    free(local);                                            /* line 1 */
    free(static_buf);                                       /* line 2 */
    void *m = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    free(m);                                                /* line 3 */
    errno = 0;
    CHECK(realloc(static_buf, 100) == NULL && errno == EINVAL); /* line 4 */
    CHECK(malloc_usable_size(m) == 0);
    munmap(m, 1 << 20);

    /* Interior pointers of mid and big blocks. */
    char *mid = malloc(100 << 10), *big = malloc(3 << 20);
    fill(mid, 100 << 10, 1);
    fill(big, 3 << 20, 2);
    free(mid + 4096);                                       /* line 5 */
    free(big + 4096);                                       /* line 6 */
    errno = 0;
    CHECK(realloc(mid + 64, 200 << 10) == NULL && errno == EINVAL); /* line 7 */
    errno = 0;
    CHECK(realloc(big + 64, 5 << 20) == NULL && errno == EINVAL);   /* line 8 */
    CHECK(holds(mid, 100 << 10, 1) && holds(big, 3 << 20, 2));
    free(mid);
    /* Big double free: refused by the big tier's header check. */
    free(big);
    free(big);                                              /* line 9 */
    heap_still_works();

    if (check_mode) {
        char *t = malloc(100);
        fill(t, 100, 3);
        free(t + 16);                                       /* line 10: tiny interior */
        CHECK(holds(t, 100, 3));
        free(t);
        free(t);                                            /* line 11: tiny double free */
        errno = 0;
        CHECK(realloc(t, 200) == NULL && errno == EINVAL);  /* line 12: realloc of freed */
        char *md = malloc(200 << 10);
        free(md);
        free(md);                                           /* line 13: mid double free */
        heap_still_works();
    }
    printf("refusals expected: %d\n", check_mode ? 13 : 9);
    return finish("misuse");
}
