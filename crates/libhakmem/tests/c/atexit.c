/* Initialisation that allocates: glibc's atexit keeps 32 handlers in a static block and
 * calls calloc, holding its exit-handler lock, for the 33rd. Here that calloc is the process's
 * first allocation (from a .preinit_array function, before libc's own start-up code), so
 * hakmem initialises inside it; with HAKMEM_STATS=1 an initialisation that registered its
 * printer with atexit would wait for that lock forever. The program must finish and the
 * statistics must print at exit. */
#include <unistd.h>

#include "check.h"

static int ran;
static void handler(void) { ran++; }

static void early(int argc, char **argv, char **envp) {
    (void)argc; (void)argv; (void)envp;
    for (int i = 0; i < 40; i++) atexit(handler);
}

__attribute__((used, section(".preinit_array"))) static void (*preinit)(int, char **, char **) = early;

int main(void) {
    CHECK(hakmem_active());
    void *p = malloc(100);
    free(p);
    return finish("atexit");
}
