/* Many threads with cross-thread frees and content checks: THREADS threads in a ring pass
 * batches of filled blocks (tiny, mid and a few big) to the next thread, which checks every
 * byte pattern and frees them; threads also exit with blocks still live, freed later by main;
 * then waves of short-lived threads allocate and exit. At the end every thread cache has been
 * flushed by thread exit (the pthread key), so the tiny bytes out of their slabs are back to
 * what they were before. */
#include <pthread.h>

#include "hakmem.h"
#include "check.h"

#define THREADS 6
#define ROUNDS 100
#define BATCH 64

typedef struct {
    void *p[BATCH];
    size_t n[BATCH];
    unsigned seed;
} batch_t;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    batch_t *slot; /* one batch in flight per link */
} link_t;

static link_t links[THREADS];
static void *leftover[THREADS];
static int bad;

static void send(link_t *l, batch_t *b) {
    pthread_mutex_lock(&l->mu);
    while (l->slot) pthread_cond_wait(&l->cv, &l->mu);
    l->slot = b;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

static batch_t *recv(link_t *l) {
    pthread_mutex_lock(&l->mu);
    while (!l->slot) pthread_cond_wait(&l->cv, &l->mu);
    batch_t *b = l->slot;
    l->slot = NULL;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return b;
}

static size_t size_for(unsigned r) {
    switch (r % 16) {
    case 0: return (48 << 10) + (r % (200 << 10)); /* mid */
    case 1: return r % 7 == 0 ? (1 << 20) + (r % (1 << 20)) : 2000 + r % 30000;
    default: return 1 + r % 1100;
    }
}

static void *worker(void *arg) {
    int t = (int)(intptr_t)arg;
    unsigned x = 12345u + (unsigned)t * 7919u;
    for (int r = 0; r < ROUNDS; r++) {
        batch_t *b = malloc(sizeof *b);
        b->seed = (unsigned)(t * 100000 + r);
        for (int i = 0; i < BATCH; i++) {
            x ^= x << 13; x ^= x >> 17; x ^= x << 5;
            b->n[i] = size_for(x);
            b->p[i] = malloc(b->n[i]);
            if (!b->p[i]) { __atomic_fetch_add(&bad, 1, __ATOMIC_RELAXED); b->n[i] = 0; continue; }
            fill(b->p[i], b->n[i], b->seed + (unsigned)i);
        }
        send(&links[(t + 1) % THREADS], b);
        batch_t *in = recv(&links[t]);
        for (int i = 0; i < BATCH; i++) {
            if (!holds(in->p[i], in->n[i], in->seed + (unsigned)i))
                __atomic_fetch_add(&bad, 1, __ATOMIC_RELAXED);
            free(in->p[i]);
        }
        free(in);
    }
    leftover[t] = malloc(100 + (size_t)t); /* live at thread exit; main frees it */
    fill(leftover[t], 100 + (size_t)t, (unsigned)t);
    return NULL;
}

static void *short_lived(void *arg) {
    void *p[100];
    for (int i = 0; i < 100; i++) p[i] = malloc(16 + (size_t)((i * 37 + (int)(intptr_t)arg) % 900));
    for (int i = 0; i < 100; i++) free(p[i]);
    return NULL;
}

static void *idle(void *arg) { return arg; }

int main(void) {
    CHECK(hakmem_active());
    /* glibc caches thread stacks, each with a small calloc'ed TLS vector that stays live: let
     * it set up the stacks this test will use before taking the baseline. */
    pthread_t warm[THREADS];
    for (int i = 0; i < THREADS; i++) pthread_create(&warm[i], NULL, idle, NULL);
    for (int i = 0; i < THREADS; i++) pthread_join(warm[i], NULL);
    hakmem_flush_thread_cache();
    uint64_t held_before = hakmem_stat("tiny_bytes_held");
    for (int i = 0; i < THREADS; i++) {
        pthread_mutex_init(&links[i].mu, NULL);
        pthread_cond_init(&links[i].cv, NULL);
    }
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i);
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    CHECK(bad == 0);
    for (int i = 0; i < THREADS; i++) {
        CHECK(holds(leftover[i], 100 + (size_t)i, (unsigned)i));
        free(leftover[i]);
    }
    for (int wave = 0; wave < 50; wave++) {
        pthread_t s[4];
        for (int i = 0; i < 4; i++) pthread_create(&s[i], NULL, short_lived, (void *)(intptr_t)(wave * 4 + i));
        for (int i = 0; i < 4; i++) pthread_join(s[i], NULL);
    }
    CHECK(hakmem_stat("tiny_remote_frees") > 0);
    hakmem_flush_thread_cache();
    uint64_t held_after = hakmem_stat("tiny_bytes_held");
    if (held_after != held_before)
        fprintf(stderr, "tiny bytes held: %llu before, %llu after\n",
                (unsigned long long)held_before, (unsigned long long)held_after);
    CHECK(held_after == held_before);
    return finish("threads");
}
