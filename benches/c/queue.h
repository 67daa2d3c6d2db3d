/* A bounded blocking queue of pointers (mutex + two condition variables) for the
 * cross-thread benchmarks: what std::sync::mpsc::sync_channel(cap) is to hak-bench. */
#ifndef HAK_BENCH_QUEUE_H
#define HAK_BENCH_QUEUE_H

#include <pthread.h>

#define QUEUE_MAX 8

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    void *items[QUEUE_MAX];
    int head, len, cap, closed;
} queue_t;

static void queue_init(queue_t *q, int cap) {
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->not_empty, NULL);
    pthread_cond_init(&q->not_full, NULL);
    q->head = q->len = q->closed = 0;
    q->cap = cap < 1 ? 1 : cap > QUEUE_MAX ? QUEUE_MAX : cap;
}

static void queue_send(queue_t *q, void *item) {
    pthread_mutex_lock(&q->mu);
    while (q->len == q->cap) pthread_cond_wait(&q->not_full, &q->mu);
    q->items[(q->head + q->len) % QUEUE_MAX] = item;
    q->len++;
    pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->mu);
}

/* The next item, or NULL once the queue is closed and empty. */
static void *queue_recv(queue_t *q) {
    pthread_mutex_lock(&q->mu);
    while (q->len == 0 && !q->closed) pthread_cond_wait(&q->not_empty, &q->mu);
    void *item = NULL;
    if (q->len > 0) {
        item = q->items[q->head];
        q->head = (q->head + 1) % QUEUE_MAX;
        q->len--;
        pthread_cond_signal(&q->not_full);
    }
    pthread_mutex_unlock(&q->mu);
    return item;
}

static inline void queue_close(queue_t *q) {
    pthread_mutex_lock(&q->mu);
    q->closed = 1;
    pthread_cond_broadcast(&q->not_empty);
    pthread_mutex_unlock(&q->mu);
}

/* A batch of blocks handed between threads (itself allocated, as hak-bench's Vec is). */
typedef struct {
    size_t n;
    void **p;
    size_t *size;
} batch_t;

static batch_t *alloc_batch(uint32_t *rng, size_t n, uint64_t *bytes) {
    batch_t *b = malloc(sizeof *b);
    if (!b) exit(1);
    b->n = n;
    b->p = malloc(n * sizeof *b->p);
    b->size = malloc(n * sizeof *b->size);
    if (!b->p || !b->size) exit(1);
    for (size_t i = 0; i < n; i++) {
        size_t size = 16 + (xs_next(rng) & 0x3FF);
        b->p[i] = alloc_filled(size);
        b->size[i] = size;
        *bytes += size;
    }
    return b;
}

static void free_batch(batch_t *b) {
    for (size_t i = 0; i < b->n; i++) free_checked(b->p[i], b->size[i]);
    free(b->p);
    free(b->size);
    free(b);
}

#endif
