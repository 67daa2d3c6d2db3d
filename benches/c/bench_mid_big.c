/* bench_mid_big ITER WS SEED (defaults 400000 64 5): the random slot loop of random_mixed (no
 * prefault) over WS slots with mid and big sizes: one draw in eight asks for 1..4 MiB, the
 * rest for 2 KiB..1 MiB (uniform). Each block gets the pattern at its first and last byte,
 * checked before the free. Ops: ITER. */
#include "common.h"

typedef struct {
    unsigned char *p;
    size_t size;
} slot_t;

static size_t size_of(uint32_t r) {
    if ((r & 7) == 0) return ((size_t)1 << 20) + 1 + (r >> 3) % ((size_t)3 << 20);
    return 2048 + (r >> 3) % (((size_t)1 << 20) - 2048 + 1);
}

int main(int argc, char **argv) {
    uint64_t iters = arg_u64(argc, argv, 1, 400000);
    size_t ws = (size_t)arg_u64(argc, argv, 2, 64);
    uint32_t x = xs_seed((uint32_t)arg_u64(argc, argv, 3, 5));
    if (ws == 0) ws = 1;
    slot_t *slots = calloc(ws, sizeof *slots);
    uint64_t sum = 0;
    double t0 = now_secs();
    for (uint64_t i = 0; i < iters; i++) {
        uint32_t r = xs_next(&x);
        slot_t *s = &slots[r % ws];
        if (!s->p) {
            s->size = size_of(r);
            s->p = alloc_filled(s->size);
            sum += s->size;
        } else {
            free_checked(s->p, s->size);
            s->p = NULL;
            sum += (uint64_t)1 << 32;
        }
    }
    for (size_t i = 0; i < ws; i++)
        if (slots[i].p) {
            free_checked(slots[i].p, slots[i].size);
            sum += (uint64_t)1 << 32;
        }
    double secs = now_secs() - t0;
    free(slots);
    print_result("c/mid_big", iters, secs, sum);
    return 0;
}
