/* What an attacker's loader does inside a container, built static for the suite's busybox image:
 *   memexec memfd FLAGS FILE [ARGS]   copy FILE into a memfd (memfd_create FLAGS) and fexecve it
 *   memexec e2big FILE LOADER PROGRAM  execve FILE with arguments too big (E2BIG, after the kernel
 *                                     opened FILE), then, from the same thread, LOADER PROGRAM
 *   memexec map|mprotect FILE         map FILE executable (mmap PROT_EXEC, or mmap then mprotect)
 *   memexec poke FILE                 write FILE's first byte back through a shared writable mapping
 *                                     (no write(): the in-place rewrite a modify event never reports) */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

static int memfd_exec(unsigned flags, const char *file, char **argv) {
    int m = memfd_create("payload", flags);
    if (m < 0) { printf("memfd_create: %s\n", strerror(errno)); return 3; }
    int f = open(file, O_RDONLY);
    char buf[65536];
    ssize_t n;
    while ((n = read(f, buf, sizeof buf)) > 0)
        if (write(m, buf, (size_t)n) != n) return 5;
    if (fchmod(m, 0755) < 0) printf("fchmod: %s\n", strerror(errno));
    fexecve(m, argv, environ);
    printf("fexecve: %s\n", strerror(errno));
    return 4;
}

static int e2big(char *file, char *loader, char *program) {
    size_t count = 40000, len = 100;
    char **big = calloc(count + 1, sizeof *big);
    char *arg = malloc(len);
    memset(arg, 'a', len - 1);
    arg[len - 1] = 0;
    big[0] = file;
    for (size_t i = 1; i < count; i++) big[i] = arg;
    execve(file, big, environ);
    printf("first execve: %s\n", strerror(errno));
    char *argv[] = {loader, program, NULL};
    execve(loader, argv, environ);
    printf("loader execve: %s\n", strerror(errno));
    return 4;
}

static int map_exec(const char *file, int later) {
    int f = open(file, later == 2 ? O_RDWR : O_RDONLY);
    if (f < 0) { printf("open: %s\n", strerror(errno)); return 3; }
    if (later == 2) {
        unsigned char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
        if (p == MAP_FAILED) { printf("mmap: %s\n", strerror(errno)); return 4; }
        volatile unsigned char *v = p;  /* a real store: the page is written, the data "changed" */
        v[0] = v[0];
        munmap(p, 4096);
        close(f);
        printf("poked\n");
        return 0;
    }
    void *p = mmap(NULL, 4096, later ? PROT_READ : PROT_READ | PROT_EXEC, MAP_PRIVATE, f, 0);
    if (p == MAP_FAILED) { printf("mmap: %s\n", strerror(errno)); return 4; }
    if (later && mprotect(p, 4096, PROT_READ | PROT_EXEC) < 0) { printf("mprotect: %s\n", strerror(errno)); return 5; }
    printf("mapped\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "memfd") == 0) return memfd_exec(strtoul(argv[2], 0, 0), argv[3], argv + 3);
    if (argc == 5 && strcmp(argv[1], "e2big") == 0) return e2big(argv[2], argv[3], argv[4]);
    if (argc == 3 && strcmp(argv[1], "map") == 0) return map_exec(argv[2], 0);
    if (argc == 3 && strcmp(argv[1], "mprotect") == 0) return map_exec(argv[2], 1);
    if (argc == 3 && strcmp(argv[1], "poke") == 0) return map_exec(argv[2], 2);
    fprintf(stderr, "usage: memexec memfd FLAGS FILE [ARGS] | e2big FILE LOADER PROGRAM | map|mprotect|poke FILE\n");
    return 2;
}
