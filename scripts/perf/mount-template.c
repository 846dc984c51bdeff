// What a sandbox's mounts cost per run, made from the host's mount table or from a mount
// namespace whose root already is the rootfs (isolate's mount templates), outside the daemon
// (docs/performance.md, session 16).
//   cc -O2 -o /tmp/mount-template scripts/perf/mount-template.c
//   taskset -c 1 /tmp/mount-template 0 3000   # per clone: bind the rootfs, proc, 2 tmpfs, pivot
//   taskset -c 1 /tmp/mount-template 1 3000   # per clone: proc and 2 tmpfs, in a template's copy
// Each clone gets new user, mount, pid, ipc and uts namespaces, mounts, checks that bash is
// there, and exits. Needs root and ROOTFS (default the bash language's) with /proc, /tmp, /box.
// Mounts only inside namespaces of its own. Prints wall and CPU time per clone.
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHECK(x)        \
    do {                \
        if ((x) != 0) { \
            perror(#x); \
            _exit(9);   \
        }               \
    } while (0)

static char stack[1 << 20];
static const char* rootfs;
static char proc_dir[4096], tmp_dir[4096], box_dir[4096];
static int ready_pipe[2];

static void enter_rootfs(void) {
    CHECK(chdir(rootfs));
    CHECK(syscall(SYS_pivot_root, ".", "."));
    CHECK(umount2(".", MNT_DETACH));
    CHECK(chdir("/"));
}

static void bind_rootfs(void) {
    CHECK(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL));
    CHECK(mount(rootfs, rootfs, NULL, MS_BIND | MS_REC, NULL));
    CHECK(mount(NULL, rootfs, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL));
}

static int from_host(void* arg) {
    (void)arg;
    bind_rootfs();
    CHECK(mount("proc", proc_dir, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL));
    CHECK(mount("tmpfs", tmp_dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m"));
    CHECK(mount("tmpfs", box_dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m"));
    enter_rootfs();
    _exit(access("/usr/bin/bash", X_OK) == 0 ? 0 : 8);
}

static int from_template(void* arg) {
    (void)arg;
    CHECK(mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL));
    CHECK(mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m"));
    CHECK(mount("tmpfs", "/box", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m"));
    _exit(access("/usr/bin/bash", X_OK) == 0 ? 0 : 8);
}

// The template: the rootfs and a placeholder proc (so that a user namespace may mount its
// own), pivoted into once. Its namespace is kept by the caller's descriptor.
static int build_template(void* arg) {
    (void)arg;
    bind_rootfs();
    CHECK(mount("proc", proc_dir, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL));
    enter_rootfs();
    if (write(ready_pipe[1], "r", 1) != 1) _exit(9);
    pause();
    _exit(0);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu_seconds(int who) {
    struct rusage u;
    getrusage(who, &u);
    return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec +
           u.ru_stime.tv_usec / 1e6;
}

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s 0|1 CLONES\n", argv[0]);
        return 2;
    }
    const int use_template = atoi(argv[1]);
    const int n = atoi(argv[2]);
    rootfs = getenv("ROOTFS") ? getenv("ROOTFS") : "/var/lib/sandboxd/rootfs/bash/root";
    snprintf(proc_dir, sizeof proc_dir, "%s/proc", rootfs);
    snprintf(tmp_dir, sizeof tmp_dir, "%s/tmp", rootfs);
    snprintf(box_dir, sizeof box_dir, "%s/box", rootfs);
    // Like the daemon: a mount namespace of our own, a slave of the host's.
    CHECK(unshare(CLONE_NEWNS));
    CHECK(mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL));
    if (use_template) {
        CHECK(pipe(ready_pipe));
        pid_t builder =
            clone(build_template, stack + sizeof stack, CLONE_NEWNS | CLONE_NEWPID | SIGCHLD, NULL);
        char c;
        if (builder < 0 || read(ready_pipe[0], &c, 1) != 1) return 1;
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/ns/mnt", builder);
        int ns = open(path, O_RDONLY | O_CLOEXEC);
        kill(builder, SIGKILL);
        waitpid(builder, NULL, 0);
        if (ns < 0) return 1;
        CHECK(setns(ns, CLONE_NEWNS));
    }
    const double t0 = now(), cpu0 = cpu_seconds(RUSAGE_SELF) + cpu_seconds(RUSAGE_CHILDREN);
    int failed = 0;
    for (int i = 0; i < n; i++) {
        pid_t child = clone(
            use_template ? from_template : from_host, stack + sizeof stack,
            CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | SIGCHLD,
            NULL);
        int status = 1;
        if (child < 0 || waitpid(child, &status, 0) != child || status != 0) failed++;
    }
    const double t1 = now(), cpu1 = cpu_seconds(RUSAGE_SELF) + cpu_seconds(RUSAGE_CHILDREN);
    printf("%s: %.1f us wall, %.1f us CPU per clone, %d failed\n",
           use_template ? "from a template" : "from the host's table", (t1 - t0) / n * 1e6,
           (cpu1 - cpu0) / n * 1e6, failed);
    return failed != 0;
}
