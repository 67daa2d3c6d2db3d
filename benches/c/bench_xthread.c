/* bench_xthread ROUNDS BATCH SEED (defaults 40000 100 11): hak-bench's `xthread`, a
 * producer/consumer. One thread allocates ROUNDS batches of BATCH blocks of 16..1039 bytes and
 * hands each through a queue of four batches to a second thread, which checks and frees them.
 * Ops: ROUNDS x BATCH x 2; the checksum is the bytes allocated. */
#include "common.h"
#include "queue.h"

static uint64_t rounds;
static size_t batch;
static uint32_t seed;
static queue_t q;
static uint64_t sent, freed;

static void *producer(void *arg) {
    (void)arg;
    uint32_t rng = xs_seed(seed);
    for (uint64_t r = 0; r < rounds; r++) queue_send(&q, alloc_batch(&rng, batch, &sent));
    queue_close(&q);
    return NULL;
}

static void *consumer(void *arg) {
    (void)arg;
    batch_t *b;
    while ((b = queue_recv(&q)) != NULL) {
        freed += b->n;
        free_batch(b);
    }
    return NULL;
}

int main(int argc, char **argv) {
    rounds = arg_u64(argc, argv, 1, 40000);
    batch = (size_t)arg_u64(argc, argv, 2, 100);
    seed = (uint32_t)arg_u64(argc, argv, 3, 11);
    queue_init(&q, 4);
    pthread_t p, c;
    double t0 = now_secs();
    pthread_create(&p, NULL, producer, NULL);
    pthread_create(&c, NULL, consumer, NULL);
    pthread_join(p, NULL);
    pthread_join(c, NULL);
    double secs = now_secs() - t0;
    if (freed != rounds * batch) {
        fprintf(stderr, "xthread: freed %llu blocks, expected %llu\n", (unsigned long long)freed,
                (unsigned long long)(rounds * batch));
        return 1;
    }
    print_result("c/xthread", freed * 2, secs, sent);
    return 0;
}
