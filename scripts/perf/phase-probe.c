// phase-probe: times the kernel steps of one sandboxd run in isolation, on this machine.
// Used for docs/performance.md; it is a measuring tool, not part of sandboxd.
//
//   cc -O2 -o phase-probe phase-probe.c && ./phase-probe [-n ITER] [-g GAP_MS] [TEST...]
//   -g: idle milliseconds between iterations of the cgroup tests (a daemon does other work
//   between attaches; back to back, the kernel skips an RCU grace period it would pay)
//
// Tests (default: all): fork ns cgv1 cgv2 mounts netpool
// Every figure is the median (and p90) over ITER iterations, in microseconds.
// cgroups are created only below this process's own cgroup, in bench-probe-<pid>, and
// removed at the end. Needs root.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int iters = 200;
static const char* rootfs = "/var/lib/sandboxd/rootfs/bash/root";
static unsigned uid_base = 7600000;
static int gap_ms = 0;  // idle time between iterations of the cgroup tests (-g)

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp64(const void* a, const void* b) {
    int64_t x = *(const int64_t*)a, y = *(const int64_t*)b;
    return x < y ? -1 : x > y;
}

// Prints "label  median  p90" in microseconds.
static void report(const char* label, int64_t* v, int n) {
    if (n <= 0) {
        printf("  %-52s  (no samples)\n", label);
        return;
    }
    qsort(v, n, sizeof *v, cmp64);
    printf("  %-52s %9.1f %9.1f   (n=%d)\n", label, v[n / 2] / 1e3, v[(n * 9) / 10] / 1e3, n);
    fflush(stdout);
}

static void die(const char* what) {
    perror(what);
    exit(1);
}

static long clone3_raw(uint64_t flags, int cgroup_fd) {
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = flags;
    args.exit_signal = SIGCHLD;
    if (cgroup_fd >= 0) {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = (uint64_t)cgroup_fd;
    }
    return syscall(SYS_clone3, &args, sizeof args);
}

static void write_str(const char* path, const char* s) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) die(path);
    if (write(fd, s, strlen(s)) != (ssize_t)strlen(s)) die(path);
    close(fd);
}

static void map_ids(pid_t pid) {
    char path[64], map[64];
    // inside 0 (sandboxd maps 1000 and switches to it between its mount steps; the
    // probe stays root inside so it can skip that step: same mounts, same costs)
    snprintf(map, sizeof map, "0 %u 1\n", uid_base);
    snprintf(path, sizeof path, "/proc/%d/uid_map", pid);
    write_str(path, map);
    snprintf(path, sizeof path, "/proc/%d/gid_map", pid);
    write_str(path, map);
}

// CPU (ns, from schedstat) of the kworker and rcu threads: where asynchronous namespace
// teardown (cleanup_net, free_user_ns, ...) is charged. Threads that exit in between lose
// their share, so only threads present at both snapshots count: an underestimate.
#define MAXK 4096
static struct {
    int pid;
    int64_t ns;
} kw_snap[MAXK];
static int kw_n;

static int64_t kworker_scan(int snapshot) {
    DIR* d = opendir("/proc");
    struct dirent* e;
    int64_t delta = 0;
    if (snapshot) kw_n = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        char path[300], comm[64] = "";
        snprintf(path, sizeof path, "/proc/%s/comm", e->d_name);
        FILE* f = fopen(path, "r");
        if (!f) continue;
        if (!fgets(comm, sizeof comm, f)) comm[0] = 0;
        fclose(f);
        if (strncmp(comm, "kworker", 7) != 0 && strncmp(comm, "rcu", 3) != 0) continue;
        snprintf(path, sizeof path, "/proc/%s/schedstat", e->d_name);
        f = fopen(path, "r");
        if (!f) continue;
        long long run = 0;
        int ok = fscanf(f, "%lld", &run) == 1;
        fclose(f);
        if (!ok) continue;
        int pid = atoi(e->d_name);
        if (snapshot) {
            if (kw_n < MAXK) kw_snap[kw_n].pid = pid, kw_snap[kw_n++].ns = run;
        } else {
            for (int i = 0; i < kw_n; ++i)
                if (kw_snap[i].pid == pid) delta += run - kw_snap[i].ns;
        }
    }
    closedir(d);
    return delta;
}

// Active objects of a slab cache (net_namespace has its own): how many namespaces exist,
// including those whose teardown is still queued.
static long slab_active(const char* cache) {
    FILE* f = fopen("/proc/slabinfo", "r");
    char line[512];
    long n = -1;
    size_t len = strlen(cache);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, cache, len) && line[len] == ' ') n = atol(line + len);
    if (f) fclose(f);
    return n;
}

static double loadavg1(void) {
    double l = 0;
    FILE* f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) l = 0;
        fclose(f);
    }
    return l;
}

// ------------------------------------------------------------------------------ fork / ns

// clone3 with `flags`, child exits at once. Times clone3 itself and clone-return to reap.
static void time_clone(const char* label, uint64_t flags, int with_kworkers) {
    int64_t* c = calloc(iters, sizeof *c);
    int64_t* r = calloc(iters, sizeof *r);
    if (with_kworkers) kworker_scan(1);
    long net0 = slab_active("net_namespace");
    int64_t wall0 = now_ns();
    for (int i = 0; i < iters; ++i) {
        int64_t t0 = now_ns();
        long pid = clone3_raw(flags, -1);
        if (pid < 0) die(label);
        if (pid == 0) _exit(0);
        int64_t t1 = now_ns();
        if (waitpid((pid_t)pid, NULL, 0) < 0) die("waitpid");
        int64_t t2 = now_ns();
        c[i] = t1 - t0;
        r[i] = t2 - t1;
    }
    int64_t wall = now_ns() - wall0;
    char buf[160];
    snprintf(buf, sizeof buf, "%s: clone3", label);
    report(buf, c, iters);
    snprintf(buf, sizeof buf, "%s: child exit + reap", label);
    report(buf, r, iters);
    printf("  %-52s %9.1f us/iter (%.0f iter/s back to back)\n", "  loop wall", wall / 1e3 / iters,
           iters / (wall / 1e9));
    if (flags & CLONE_NEWNET) {
        // How long until the namespaces this loop made are really gone (others' netns
        // come and go too on a shared machine: approximate).
        long peak = slab_active("net_namespace") - net0;
        int64_t d0 = now_ns();
        while (slab_active("net_namespace") > net0 && now_ns() - d0 < 20000000000LL) usleep(5000);
        printf("  %-52s %9.1f ms after the loop (%ld netns still queued at its end)\n",
               "  netns teardown backlog drained", (now_ns() - d0) / 1e6, peak);
    }
    if (with_kworkers) {
        usleep(500 * 1000);
        printf("  %-52s %9.1f us/iter (kworker+rcu threads; underestimate, noisy)\n",
               "  async kernel CPU", kworker_scan(0) / 1e3 / iters);
    }
    free(c);
    free(r);
}

static void test_fork(void) {
    printf("fork: plain clone3, child _exit(0)\n");
    time_clone("no namespaces", 0, 0);
}

static void test_ns(void) {
    printf("ns: clone3 with one namespace flag at a time (+ CLONE_NEWUSER, as sandboxd does)\n");
    struct {
        const char* name;
        uint64_t flags;
    } sets[] = {
        {"USER", CLONE_NEWUSER},
        {"USER|PID", CLONE_NEWUSER | CLONE_NEWPID},
        {"USER|NS", CLONE_NEWUSER | CLONE_NEWNS},
        {"USER|IPC", CLONE_NEWUSER | CLONE_NEWIPC},
        {"USER|UTS", CLONE_NEWUSER | CLONE_NEWUTS},
        {"USER|CGROUP", CLONE_NEWUSER | CLONE_NEWCGROUP},
        {"USER|NET", CLONE_NEWUSER | CLONE_NEWNET},
        {"USER|PID|NS", CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS},
        {"PID|NS (root, no userns)", CLONE_NEWPID | CLONE_NEWNS},
        {"USER|PID|IPC", CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWIPC},
        {"USER|NS|IPC", CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWIPC},
        {"sandboxd's set without NET",
         CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS},
        {"sandboxd's set (USER|PID|NS|NET|IPC|UTS)",
         CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS},
        {"NET alone (root, no userns)", CLONE_NEWNET},
    };
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; ++i) {
        int net = (sets[i].flags & CLONE_NEWNET) != 0;
        time_clone(sets[i].name, sets[i].flags, net || i == 0);
    }
}

// ------------------------------------------------------------------------------ cgroup v1

static const char* v1_controllers[] = {"memory", "pids", "cpuacct", "cpu", "freezer"};
#define NV1 5
static char v1_base[NV1][512];  // <mount>/<own>/bench-probe-<pid>

static int own_cgroup(const char* controller, char* out, size_t size) {
    FILE* f = fopen("/proc/self/cgroup", "r");
    char line[512];
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        char* a = strchr(line, ':');
        char* b = a ? strchr(a + 1, ':') : NULL;
        if (!b) continue;
        *a = 0;
        *b = 0;
        line[strcspn(line, "\n")] = 0;
        char* path = b + 1;
        path[strcspn(path, "\n")] = 0;
        const char* list = a + 1;
        if (controller[0] == 0) {
            if (strcmp(line, "0") == 0 && *list == 0) {
                snprintf(out, size, "%s", path);
                found = 1;
            }
            snprintf(out, size, "%s", path);
            found = 1;
        } else if (controller[0]) {
            char copy[256];
            snprintf(copy, sizeof copy, "%s", list);
            for (char* t = strtok(copy, ","); t; t = strtok(NULL, ","))
                if (strcmp(t, controller) == 0) {
                    snprintf(out, size, "%s", path);
                    found = 1;
                }
        }
    }
    fclose(f);
    return found;
}

static int rmdir_retry(const char* path) {
    for (int i = 0; i < 1000; ++i) {
        if (rmdir(path) == 0) return 0;
        if (errno != EBUSY) return -1;
        usleep(100);
    }
    return -1;
}

// variant 0: supervisor writes the pid to cgroup.procs of each hierarchy (sandboxd today)
// variant 1: supervisor writes the pid to `tasks` (moves one thread; the child has one)
// variant 2: the child writes "0" to `tasks` fds the supervisor opened (no threadgroup lock)
static void cgv1_variant(int variant, uint64_t flags) {
    static const char* names[] = {"pid -> cgroup.procs (sandboxd today)", "pid -> tasks",
                                  "child writes 0 -> tasks (inherited fds)"};
    int64_t *mk = calloc(iters, 8), *att = calloc(iters, 8), *rm = calloc(iters, 8),
            *one = calloc(iters * NV1, 8), *lim = calloc(iters, 8);
    int64_t* shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int n_one = 0;
    for (int i = 0; i < iters; ++i) {
        if (gap_ms) usleep(gap_ms * 1000);
        char dir[NV1][600], file[700];
        int fds[NV1];
        int64_t t0 = now_ns();
        for (int h = 0; h < NV1; ++h) {
            snprintf(dir[h], sizeof dir[h], "%s/run-%d", v1_base[h], i);
            if (mkdir(dir[h], 0755) != 0) die(dir[h]);
        }
        int64_t t1 = now_ns();
        // The limits sandboxd writes (memory, memsw, swappiness, pids).
        snprintf(file, sizeof file, "%s/memory.limit_in_bytes", dir[0]);
        write_str(file, "268435456");
        snprintf(file, sizeof file, "%s/memory.memsw.limit_in_bytes", dir[0]);
        if (access(file, F_OK) == 0) write_str(file, "268435456");
        snprintf(file, sizeof file, "%s/pids.max", dir[1]);
        write_str(file, "65");
        lim[i] = now_ns() - t1;
        mk[i] = t1 - t0;
        for (int h = 0; h < NV1; ++h) {
            snprintf(file, sizeof file, "%s/%s", dir[h], variant == 0 ? "cgroup.procs" : "tasks");
            fds[h] = open(file, O_WRONLY);
            if (fds[h] < 0) die(file);
        }
        int go[2];
        if (pipe(go)) die("pipe");
        long pid = clone3_raw(flags, -1);
        if (pid < 0) die("clone3");
        if (pid == 0) {
            char c;
            if (read(go[0], &c, 1) != 1) _exit(1);
            if (variant == 2) {
                int64_t s = now_ns();
                for (int h = 0; h < NV1; ++h)
                    if (write(fds[h], "0", 1) != 1) _exit(2);
                shared[0] = now_ns() - s;
            }
            _exit(0);
        }
        if (flags & CLONE_NEWUSER) map_ids((pid_t)pid);
        if (variant != 2) {
            char num[32];
            int len = snprintf(num, sizeof num, "%ld", pid);
            int64_t s = now_ns();
            for (int h = 0; h < NV1; ++h) {
                int64_t a = now_ns();
                if (write(fds[h], num, len) != len) die("attach write");
                one[n_one++] = now_ns() - a;
            }
            att[i] = now_ns() - s;
        }
        if (write(go[1], "x", 1) != 1) die("go");
        int status;
        waitpid((pid_t)pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "child failed: status %#x\n", status);
            exit(1);
        }
        if (variant == 2) att[i] = shared[0];
        for (int h = 0; h < NV1; ++h) close(fds[h]);
        close(go[0]);
        close(go[1]);
        int64_t r0 = now_ns();
        for (int h = 0; h < NV1; ++h)
            if (rmdir_retry(dir[h]) != 0) die(dir[h]);
        rm[i] = now_ns() - r0;
    }
    printf(" variant: %s\n", names[variant]);
    report("mkdir in 5 hierarchies", mk, iters);
    report("write memory/memsw/pids limits", lim, iters);
    report("attach, all 5 hierarchies", att, iters);
    if (n_one) report("attach, one hierarchy (each write)", one, n_one);
    report("rmdir in 5 hierarchies (after reap)", rm, iters);
    free(mk), free(att), free(rm), free(one), free(lim);
    munmap(shared, 4096);
}

static void test_cgv1(void) {
    printf("cgv1: per-run cgroup in memory,pids,cpuacct,cpu,freezer below our own cgroup\n");
    for (int h = 0; h < NV1; ++h) {
        char own[256];
        if (!own_cgroup(v1_controllers[h], own, sizeof own)) {
            printf("  no v1 %s hierarchy: skipped\n", v1_controllers[h]);
            return;
        }
        snprintf(v1_base[h], sizeof v1_base[h], "/sys/fs/cgroup/%s%s/bench-probe-%d",
                 v1_controllers[h], strcmp(own, "/") ? own : "", getpid());
        if (mkdir(v1_base[h], 0755) != 0) die(v1_base[h]);
    }
    uint64_t flags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS;
    for (int v = 0; v < 3; ++v) cgv1_variant(v, flags);
    for (int h = 0; h < NV1; ++h) rmdir_retry(v1_base[h]);
}

// ------------------------------------------------------------------------------ cgroup v2

static void test_cgv2(void) {
    char own[256], base[600];
    if (!own_cgroup("", own, sizeof own) || access("/sys/fs/cgroup/unified/cgroup.procs", F_OK)) {
        printf("cgv2: no cgroup2 at /sys/fs/cgroup/unified: skipped\n");
        return;
    }
    printf("cgv2: the hybrid host's cgroup2 (/sys/fs/cgroup/unified, no controllers enabled)\n");
    snprintf(base, sizeof base, "/sys/fs/cgroup/unified%s/bench-probe-%d",
             strcmp(own, "/") ? own : "", getpid());
    if (mkdir(base, 0755) != 0) die(base);
    uint64_t flags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS;
    for (int variant = 0; variant < 2; ++variant) {
        int64_t *mk = calloc(iters, 8), *att = calloc(iters, 8), *cl = calloc(iters, 8),
                *rm = calloc(iters, 8);
        for (int i = 0; i < iters; ++i) {
            if (gap_ms) usleep(gap_ms * 1000);
            char dir[700], file[800];
            snprintf(dir, sizeof dir, "%s/run-%d", base, i);
            int64_t t0 = now_ns();
            if (mkdir(dir, 0755) != 0) die(dir);
            int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            mk[i] = now_ns() - t0;
            int64_t c0 = now_ns();
            long pid = clone3_raw(flags, variant == 1 ? dfd : -1);
            if (pid < 0) die("clone3");
            if (pid == 0) _exit(0);
            cl[i] = now_ns() - c0;
            if (variant == 0) {
                snprintf(file, sizeof file, "%s/cgroup.procs", dir);
                int fd = open(file, O_WRONLY | O_CLOEXEC);
                char num[32];
                int len = snprintf(num, sizeof num, "%ld", pid);
                int64_t a = now_ns();
                // The child may already be a zombie; ESRCH is fine for timing purposes.
                if (write(fd, num, len) != len && errno != ESRCH) die("cgroup.procs");
                att[i] = now_ns() - a;
                close(fd);
            }
            waitpid((pid_t)pid, NULL, 0);
            close(dfd);
            int64_t r0 = now_ns();
            if (rmdir_retry(dir) != 0) die(dir);
            rm[i] = now_ns() - r0;
        }
        printf(" variant: %s\n",
               variant == 0 ? "clone3, then pid -> cgroup.procs" : "clone3(CLONE_INTO_CGROUP)");
        report("mkdir + open", mk, iters);
        report("clone3", cl, iters);
        if (variant == 0) report("write cgroup.procs", att, iters);
        report("rmdir (after reap)", rm, iters);
        free(mk), free(att), free(cl), free(rm);
    }
    rmdir(base);
}

// ------------------------------------------------------------------------------ mounts

enum {
    S_PRIVATE,
    S_BIND_ROOT,
    S_REMOUNT_ROOT,
    S_PROC,
    S_PROC_SYS,
    S_DEV_TMPFS,
    S_DEV_NODES,
    S_DEV_LINKS_SHM,
    S_DEV_RO,
    S_TMP,
    S_BOX,
    S_PIVOT,
    S_DETACH,
    S_HOSTNAME,
    S_SECCOMP,
    S_FORK_EXEC_WAIT,
    S_COUNT
};
static const char* step_names[S_COUNT] = {"make / private (MS_REC)",
                                          "bind rootfs",
                                          "remount rootfs ro (+statfs)",
                                          "mount proc",
                                          "bind+remount /proc/sys ro",
                                          "mount /dev tmpfs",
                                          "5 device nodes (create+bind)",
                                          "dev symlinks + /dev/shm tmpfs",
                                          "remount /dev ro",
                                          "mount /tmp tmpfs",
                                          "mount /box tmpfs",
                                          "chdir + pivot_root",
                                          "umount2(old root, MNT_DETACH)",
                                          "sethostname+setdomainname",
                                          "seccomp filter (194 insns, NEW_LISTENER)",
                                          "fork + exec bash -c : + wait"};

static int remount_ro(const char* target) {
    struct statfs st;
    unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV;
    if (statfs(target, &st) == 0) {
        if (st.f_flags & ST_NOEXEC) flags |= MS_NOEXEC;
        if (st.f_flags & ST_NOATIME) flags |= MS_NOATIME;
        if (st.f_flags & ST_RELATIME) flags |= MS_RELATIME;
    }
    return mount(NULL, target, NULL, flags, NULL);
}

// The shape of sandboxd's default filter as libseccomp emits it (194 instructions, measured
// with strace): an arch check, then a list of syscall comparisons ending in ALLOW.
static int install_filter(void) {
    struct sock_filter insns[194];
    int n = 0;
    insns[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 4);  // arch
    insns[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0xc000003e, 1, 0);
    insns[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    insns[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0);  // nr
    while (n < 192)
        insns[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 10000 + n, 1, 0);
    insns[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    insns[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF);
    struct sock_fprog prog = {(unsigned short)n, insns};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) return -1;
    int fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
    if (fd < 0) return -1;
    close(fd);
    return 0;
}

static int child_mounts(int64_t* t) {
    int64_t s = now_ns();
#define STEP(i, expr)                    \
    do {                                 \
        if ((expr) != 0) return 100 + i; \
        int64_t e = now_ns();            \
        t[i] = e - s;                    \
        s = e;                           \
    } while (0)
    char p[600];
    STEP(S_PRIVATE, mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL));
    STEP(S_BIND_ROOT, mount(rootfs, rootfs, NULL, MS_BIND | MS_REC, NULL));
    STEP(S_REMOUNT_ROOT, remount_ro(rootfs));
    snprintf(p, sizeof p, "%s/proc", rootfs);
    STEP(S_PROC, mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL));
    snprintf(p, sizeof p, "%s/proc/sys", rootfs);
    STEP(S_PROC_SYS, mount(p, p, NULL, MS_BIND | MS_REC, NULL) || remount_ro(p));
    snprintf(p, sizeof p, "%s/dev", rootfs);
    STEP(S_DEV_TMPFS, mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755"));
    {
        static const char* devs[] = {"null", "zero", "full", "random", "urandom"};
        int rc = 0;
        for (int i = 0; i < 5 && !rc; ++i) {
            char src[64], dst[700];
            snprintf(src, sizeof src, "/dev/%s", devs[i]);
            snprintf(dst, sizeof dst, "%s/dev/%s", rootfs, devs[i]);
            int fd = open(dst, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0666);
            if (fd < 0)
                rc = 1;
            else
                close(fd);
            if (!rc && mount(src, dst, NULL, MS_BIND, NULL)) rc = 1;
        }
        STEP(S_DEV_NODES, rc);
    }
    {
        char d[700];
        snprintf(d, sizeof d, "%s/dev", rootfs);
        int fd = open(d, O_PATH | O_DIRECTORY);
        int rc = fd < 0 || symlinkat("/proc/self/fd", fd, "fd") ||
                 symlinkat("/proc/self/fd/0", fd, "stdin") ||
                 symlinkat("/proc/self/fd/1", fd, "stdout") ||
                 symlinkat("/proc/self/fd/2", fd, "stderr") || mkdirat(fd, "shm", 0755);
        close(fd);
        snprintf(d, sizeof d, "%s/dev/shm", rootfs);
        STEP(S_DEV_LINKS_SHM, rc || mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m"));
    }
    snprintf(p, sizeof p, "%s/dev", rootfs);
    STEP(S_DEV_RO,
         mount(NULL, p, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC, NULL));
    snprintf(p, sizeof p, "%s/tmp", rootfs);
    STEP(S_TMP, mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=1777"));
    snprintf(p, sizeof p, "%s/box", rootfs);
    STEP(S_BOX, mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=755"));
    STEP(S_PIVOT, chdir(rootfs) || syscall(SYS_pivot_root, ".", "."));
    STEP(S_DETACH, umount2(".", MNT_DETACH) || chdir("/"));
    STEP(S_HOSTNAME, sethostname("sandbox", 7) || setdomainname("sandbox", 7));
    STEP(S_SECCOMP, install_filter());
    {
        long pid = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
        if (pid == 0) {
            char* argv[] = {"/bin/bash", "-c", ":", NULL};
            char* envp[] = {"PATH=/usr/bin:/bin", NULL};
            execve(argv[0], argv, envp);
            _exit(127);
        }
        int status = 0;
        waitpid((pid_t)pid, &status, 0);
        STEP(S_FORK_EXEC_WAIT, !(WIFEXITED(status) && WEXITSTATUS(status) == 0));
    }
    return 0;
}

static void test_mounts(void) {
    printf("mounts: pid 1's steps as init.cpp/mounts.cpp do them, rootfs %s\n", rootfs);
    uint64_t flags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS;
    int64_t* shared =
        mmap(NULL, 4096 * 4, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int64_t* steps[S_COUNT];
    for (int s = 0; s < S_COUNT; ++s) steps[s] = calloc(iters, 8);
    int64_t *exitr = calloc(iters, 8), *total = calloc(iters, 8);
    for (int i = 0; i < iters; ++i) {
        int go[2];
        if (pipe(go)) die("pipe");
        int64_t t0 = now_ns();
        long pid = clone3_raw(flags, -1);
        if (pid < 0) die("clone3");
        if (pid == 0) {
            char c;
            close(go[1]);
            if (read(go[0], &c, 1) != 1) _exit(1);
            if (setresgid(0, 0, 0) || setresuid(0, 0, 0)) _exit(99);
            int rc = child_mounts(shared);
            shared[S_COUNT] = now_ns();
            _exit(rc);
        }
        map_ids((pid_t)pid);
        if (write(go[1], "x", 1) != 1) die("go");
        int status;
        waitpid((pid_t)pid, &status, 0);
        int64_t t1 = now_ns();
        close(go[0]);
        close(go[1]);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "mount child failed at step %d (status %#x)\n",
                    WIFEXITED(status) ? WEXITSTATUS(status) - 100 : -1, status);
            exit(1);
        }
        for (int s = 0; s < S_COUNT; ++s) steps[s][i] = shared[s];
        exitr[i] = t1 - shared[S_COUNT];
        total[i] = t1 - t0;
    }
    for (int s = 0; s < S_COUNT; ++s) report(step_names[s], steps[s], iters);
    report("pid 1 _exit -> reaped (pid+mount ns teardown)", exitr, iters);
    report("whole: clone3 .. reaped (no cgroup, no NET)", total, iters);
}

// ------------------------------------------------------------------------------ netns pool

// A pool of pre-created network namespaces, joined with setns by the cloning thread (which
// is still in the host's user namespace), then clone3 without CLONE_NEWNET.
static void test_netpool(void) {
    printf(
        "netpool: fresh netns per run via clone3(NEWNET) vs. a pre-created one joined by setns\n");
    uint64_t base = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS;
    int host = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    int64_t *mk = calloc(iters, 8), *cl = calloc(iters, 8), *lo = calloc(iters, 8);
    int* pool = calloc(iters, sizeof(int));
    // Pre-create (what a background thread would do), timing unshare + lo up.
    for (int i = 0; i < iters; ++i) {
        int64_t t0 = now_ns();
        if (unshare(CLONE_NEWNET)) die("unshare NEWNET");
        int64_t t1 = now_ns();
        int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct ifreq ifr;
        memset(&ifr, 0, sizeof ifr);
        strcpy(ifr.ifr_name, "lo");
        if (ioctl(s, SIOCGIFFLAGS, &ifr) || (ifr.ifr_flags |= IFF_UP, ioctl(s, SIOCSIFFLAGS, &ifr)))
            die("lo up");
        close(s);
        lo[i] = now_ns() - t1;
        pool[i] = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
        if (setns(host, CLONE_NEWNET)) die("setns host");
        mk[i] = t1 - t0;
    }
    report("pool fill: unshare(CLONE_NEWNET) as root", mk, iters);
    report("pool fill: bring lo up (ioctl)", lo, iters);
    int64_t* sw = calloc(iters, 8);
    for (int i = 0; i < iters; ++i) {
        int64_t t0 = now_ns();
        if (setns(pool[i], CLONE_NEWNET)) die("setns pool");
        int64_t t1 = now_ns();
        long pid = clone3_raw(base, -1);
        if (pid < 0) die("clone3");
        if (pid == 0) _exit(0);
        int64_t t2 = now_ns();
        if (setns(host, CLONE_NEWNET)) die("setns back");
        sw[i] = (t1 - t0) + (now_ns() - t2);
        cl[i] = t2 - t1;
        close(pool[i]);  // the run holds the last reference now
        waitpid((pid_t)pid, NULL, 0);
    }
    report("hot path: setns(pool netns) + setns(host) back", sw, iters);
    report("hot path: clone3 USER|PID|NS|IPC|UTS in the pool ns", cl, iters);
    close(host);
}

int main(int argc, char** argv) {
    int opt;
    while ((opt = getopt(argc, argv, "n:r:u:g:")) != -1) {
        if (opt == 'n')
            iters = atoi(optarg);
        else if (opt == 'r')
            rootfs = optarg;
        else if (opt == 'g')
            gap_ms = atoi(optarg);
        else if (opt == 'u')
            uid_base = (unsigned)strtoul(optarg, NULL, 10);
        else {
            fprintf(stderr,
                    "usage: %s [-n ITER] [-g GAP_MS] [-r ROOTFS] [-u UID] [fork ns cgv1 cgv2 "
                    "mounts netpool]\n",
                    argv[0]);
            return 2;
        }
    }
    if (iters < 1 || iters > 100000) return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf(
        "phase-probe: %d iterations each, %d ms apart in the cgroup tests; median and p90 in us; "
        "load avg %.2f at start\n",
        iters, gap_ms, loadavg1());
    printf("  %-52s %9s %9s\n", "", "median", "p90");
    const char* all[] = {"fork", "ns", "cgv1", "cgv2", "mounts", "netpool"};
    int n = optind < argc ? argc - optind : 6;
    for (int i = 0; i < n; ++i) {
        const char* t = optind < argc ? argv[optind + i] : all[i];
        if (!strcmp(t, "fork"))
            test_fork();
        else if (!strcmp(t, "ns"))
            test_ns();
        else if (!strcmp(t, "cgv1"))
            test_cgv1();
        else if (!strcmp(t, "cgv2"))
            test_cgv2();
        else if (!strcmp(t, "mounts"))
            test_mounts();
        else if (!strcmp(t, "netpool"))
            test_netpool();
        else {
            fprintf(stderr, "unknown test %s\n", t);
            return 2;
        }
    }
    printf("load avg %.2f at end\n", loadavg1());
    return 0;
}
