/* The first allocation comes before libc has set up `environ` (a .preinit_array function of
 * the executable runs before libc's own initialisation). hakmem must work there and still
 * read its options: run with HAKMEM_CHECK=1, a tiny double free afterwards is refused (one
 * "HAKMEM_CHECK" line on stderr), which only happens if the option was read. */
#include <unistd.h>

#include "check.h"

extern char **environ;
static void *early_block;
static int environ_was_null;

static void early(int argc, char **argv, char **envp) {
    (void)argc; (void)argv; (void)envp;
    environ_was_null = environ == NULL;
    early_block = malloc(100);
    if (early_block) fill(early_block, 100, 5);
}

__attribute__((used, section(".preinit_array"))) static void (*preinit)(int, char **, char **) = early;

int main(void) {
    CHECK(hakmem_active());
    CHECK(environ_was_null); /* otherwise this test proves nothing */
    CHECK(early_block != NULL && holds(early_block, 100, 5));
    free(early_block);
    char *t = malloc(40);
    free(t);
    free(t); /* refused in check mode */
    char *u = malloc(40);
    fill(u, 40, 1);
    CHECK(holds(u, 40, 1));
    free(u);
    return finish("early");
}
