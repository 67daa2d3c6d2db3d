/* fork while other threads allocate: each child allocates, checks and frees a mix of sizes and
 * exits 0. A child that deadlocks on a lock another thread held at fork time is killed after
 * a few seconds and counted as a failure (so this test fails rather than hangs). */
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

#define WORKERS 3
#define FORKS 100

static volatile int stop;

static void *churn(void *arg) {
    unsigned x = 99u + (unsigned)(intptr_t)arg;
    void *slots[256] = {0};
    while (!stop) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        int i = x % 256;
        if (slots[i]) { free(slots[i]); slots[i] = NULL; }
        else slots[i] = malloc(x % 8 == 0 ? (64 << 10) + x % (400 << 10) : 16 + x % 3000);
        if (x % 64 == 0) { void *b = malloc((2 << 20) + x % (1 << 20)); free(b); }
    }
    for (int i = 0; i < 256; i++) free(slots[i]);
    return NULL;
}

static int child_work(void) {
    for (int r = 0; r < 200; r++) {
        size_t n = r % 10 == 0 ? (100 << 10) : r % 50 == 0 ? (3 << 20) : 16 + (size_t)r * 13;
        char *p = malloc(n);
        if (!p) return 2;
        fill(p, n, (unsigned)r);
        if (!holds(p, n, (unsigned)r)) return 3;
        free(p);
    }
    return 0;
}

int main(void) {
    CHECK(hakmem_active());
    pthread_t th[WORKERS];
    for (int i = 0; i < WORKERS; i++) pthread_create(&th[i], NULL, churn, (void *)(intptr_t)i);
    int hung = 0, failed = 0;
    for (int f = 0; f < FORKS; f++) {
        struct timespec d = {0, 500 * 1000};
        nanosleep(&d, NULL);
        pid_t pid = fork();
        if (pid == 0) _exit(child_work());
        int status = 0, waited = 0;
        for (;;) {
            pid_t r = waitpid(pid, &status, WNOHANG);
            if (r == pid) break;
            if (++waited > 3000) { /* 3 s */
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                hung++;
                break;
            }
            struct timespec ms = {0, 1000 * 1000};
            nanosleep(&ms, NULL);
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed++;
    }
    stop = 1;
    for (int i = 0; i < WORKERS; i++) pthread_join(th[i], NULL);
    if (hung) fprintf(stderr, "%d of %d children hung after fork\n", hung, FORKS);
    CHECK(hung == 0);
    CHECK(failed == 0);
    return finish("fork");
}
