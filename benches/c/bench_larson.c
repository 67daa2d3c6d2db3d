/* bench_larson THREADS ROUNDS BATCH SEED (defaults 2 10000 100 7): hak-bench's `larson`.
 * THREADS threads in a ring; each round a thread allocates BATCH blocks of 16..1039 bytes
 * (xorshift32 seeded SEED + 7919 t), sends them to the next thread through a queue of two
 * batches, and checks and frees the batch it receives from the previous one: every block is
 * freed by a thread that did not allocate it. Ops: THREADS x ROUNDS x BATCH x 2. */
#include "common.h"
#include "queue.h"

static uint64_t rounds;
static size_t batch;
static uint32_t seed;
static int threads;
static queue_t *links;
static uint64_t *sums;

static void *worker(void *arg) {
    int t = (int)(intptr_t)arg;
    uint32_t rng = xs_seed(seed + (uint32_t)t * 7919u);
    uint64_t sum = 0;
    for (uint64_t r = 0; r < rounds; r++) {
        batch_t *b = alloc_batch(&rng, batch, &sum);
        queue_send(&links[t], b);
        free_batch(queue_recv(&links[(t + threads - 1) % threads]));
    }
    sums[t] = sum;
    return NULL;
}

int main(int argc, char **argv) {
    threads = (int)arg_u64(argc, argv, 1, 2);
    rounds = arg_u64(argc, argv, 2, 10000);
    batch = (size_t)arg_u64(argc, argv, 3, 100);
    seed = (uint32_t)arg_u64(argc, argv, 4, 7);
    if (threads < 2) threads = 2;
    links = calloc((size_t)threads, sizeof *links);
    sums = calloc((size_t)threads, sizeof *sums);
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    for (int t = 0; t < threads; t++) queue_init(&links[t], 2);
    double t0 = now_secs();
    for (int t = 0; t < threads; t++) pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t);
    for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
    double secs = now_secs() - t0;
    uint64_t sum = 0;
    for (int t = 0; t < threads; t++) sum += sums[t];
    print_result("c/larson", (uint64_t)threads * rounds * batch * 2, secs, sum);
    return 0;
}
