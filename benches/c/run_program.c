/* run_program NAME OPS PROGRAM [ARGS...]: runs a real program as a benchmark row. Forks and
 * execs PROGRAM (inheriting the environment, so an LD_PRELOAD applies to it too), hashes its
 * stdout (FNV-1a, the row's checksum: every allocator must produce the same output), times
 * it from fork to exit, and prints the RESULT line with OPS operations (what the program's
 * arguments ask it to do) over that time. A program that fails makes this exit 1. */
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: run_program NAME OPS PROGRAM [ARGS...]\n");
        return 2;
    }
    uint64_t ops = arg_u64(argc, argv, 2, 1);
    int fds[2];
    if (pipe(fds) != 0) return 1;
    double t0 = now_secs();
    pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execvp(argv[3], argv + 3);
        fprintf(stderr, "run_program: cannot run %s\n", argv[3]);
        _exit(127);
    }
    close(fds[1]);
    uint64_t h = 1469598103934665603ull;
    unsigned char buf[65536];
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++) h = (h ^ buf[i]) * 1099511628211ull;
    int status = 0;
    waitpid(pid, &status, 0);
    double secs = now_secs() - t0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "run_program: %s failed (status 0x%x)\n", argv[3], status);
        return 1;
    }
    /* No HAKMEM_SYSCALLS line: this process's counters are not the program's. */
    print_result_of(argv[1], ops, secs, h, 0);
    return 0;
}
