/* bench_random_mixed ITER WS SEED (defaults 20000000 400 1234567): the C original's headline
 * benchmark with exactly the semantics of hak-bench's `random_mixed` (docs/bench.md): WS
 * slots; each step draws r from xorshift32, slot r % WS is freed (after checking its first
 * and last byte) if occupied, else gets 16 + (r & 0x3FF) bytes with the pattern written at
 * both ends. An untimed prefault of ITER/10 steps seeded SEED + 0xDEADBEEF is left in place;
 * the timed region is ITER steps seeded SEED plus the final drain. The checksum is the Rust
 * workload's, so the two report the same number for the same arguments. */
#include "common.h"

typedef struct {
    unsigned char *p;
    size_t size;
} slot_t;

static inline uint64_t step(slot_t *slots, size_t ws, uint32_t r) {
    slot_t *s = &slots[r % ws];
    if (!s->p) {
        size_t size = 16 + (r & 0x3FF);
        s->p = alloc_filled(size);
        s->size = size;
        return size;
    }
    free_checked(s->p, s->size);
    s->p = NULL;
    s->size = 0;
    return (uint64_t)1 << 32;
}

int main(int argc, char **argv) {
    uint64_t iters = arg_u64(argc, argv, 1, 20000000);
    size_t ws = (size_t)arg_u64(argc, argv, 2, 400);
    uint32_t seed = (uint32_t)arg_u64(argc, argv, 3, 1234567);
    if (ws == 0) ws = 1;
    slot_t *slots = calloc(ws, sizeof *slots);
    if (!slots) return 1;
    uint64_t sum = 0;
    uint32_t x = xs_seed(seed + 0xDEADBEEFu);
    for (uint64_t i = 0; i < iters / 10; i++) sum += step(slots, ws, xs_next(&x));

    double t0 = now_secs();
    x = xs_seed(seed);
    for (uint64_t i = 0; i < iters; i++) sum += step(slots, ws, xs_next(&x));
    for (size_t i = 0; i < ws; i++) {
        if (slots[i].p) {
            free_checked(slots[i].p, slots[i].size);
            slots[i].p = NULL;
            sum += (uint64_t)1 << 32;
        }
    }
    double secs = now_secs() - t0;
    free(slots);
    char name[64];
    snprintf(name, sizeof name, "c/random_mixed/%zu", ws);
    print_result(name, iters, secs, sum);
    return 0;
}
