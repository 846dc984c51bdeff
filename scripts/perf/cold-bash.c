// How long a bare `bash -c :` takes when the CPU has been idle for a few milliseconds, as in
// a request loop, with or without a fresh memory cgroup (docs/performance.md).
//   cc -O2 -o /tmp/cold-bash scripts/perf/cold-bash.c
//   mkdir /sys/fs/cgroup/memory/<own cgroup>/probe   (cgroup v1; any memory cgroup dir works)
//   /tmp/cold-bash /sys/fs/cgroup/memory/<own cgroup>/probe 200 1   (1: fresh memcg per run)
// Creates and removes only <dir>/t<i>. Prints the median, p10 and p90 in ms.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int by_value(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char** argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MEMCG_DIR RUNS FRESH(0|1)\n", argv[0]);
        return 2;
    }
    const char* base = argv[1];
    int runs = atoi(argv[2]), fresh = atoi(argv[3]);
    if (runs < 1 || runs > 100000) return 2;
    double* took = calloc((size_t)runs, sizeof *took);
    char* env[] = {"PATH=/usr/bin:/bin", NULL};
    char* args[] = {"/bin/bash", "-c", ":", NULL};
    for (int i = 0; i < runs; i++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/t%d", base, i);
        if (fresh && mkdir(dir, 0755) != 0) return perror(dir), 1;
        int result[2];
        if (pipe(result) != 0) return perror("pipe"), 1;
        pid_t child = fork();
        if (child == 0) {
            if (fresh) {
                char tasks[600];
                snprintf(tasks, sizeof tasks, "%s/tasks", dir);
                int fd = open(tasks, O_WRONLY);
                if (fd < 0 || write(fd, "0", 1) != 1) _exit(1);
                close(fd);
            }
            double start = now_ms();
            pid_t bash = vfork();
            if (bash == 0) {
                execve(args[0], args, env);
                _exit(127);
            }
            waitpid(bash, NULL, 0);
            double elapsed = now_ms() - start;
            _exit(write(result[1], &elapsed, sizeof elapsed) == sizeof elapsed ? 0 : 1);
        }
        if (read(result[0], &took[i], sizeof took[i]) != sizeof took[i]) return 1;
        close(result[0]);
        close(result[1]);
        waitpid(child, NULL, 0);
        if (fresh) rmdir(dir);
        usleep(3000);
    }
    qsort(took, (size_t)runs, sizeof *took, by_value);
    printf("fresh=%d p50=%.3f p10=%.3f p90=%.3f ms\n", fresh, took[runs / 2], took[runs / 10],
           took[runs * 9 / 10]);
    free(took);
    return 0;
}
