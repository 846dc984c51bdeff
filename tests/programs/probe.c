// A multi-call test program that runs inside the sandbox and pokes at its walls.
// Usage: sbx-probe COMMAND [ARGS...]. It prints facts; the tests judge them.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void print_file(const char* path) {
    FILE* f = fopen(path, "r");
    if (!f) {
        printf("%s: %s\n", path, strerrorname_np(errno));
        return;
    }
    char line[512];
    while (fgets(line, sizeof line, f)) fputs(line, stdout);
    fclose(f);
}

static double thread_cpu_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static long spin_ms;
static void* spin(void* arg) {
    (void)arg;
    volatile unsigned long x = 0;
    while (spin_ms == 0 || thread_cpu_ms() < spin_ms) x++;
    return NULL;
}

static void* sleeper(void* arg) {
    (void)arg;
    for (;;) pause();
    return NULL;
}

struct named_syscall {
    const char* name;
    long number;
};

static const struct named_syscall syscalls[] = {
    {"mount", SYS_mount},
    {"umount2", SYS_umount2},
    {"pivot_root", SYS_pivot_root},
    {"chroot", SYS_chroot},
    {"unshare", SYS_unshare},
    {"setns", SYS_setns},
    {"clone3", SYS_clone3},
    {"keyctl", SYS_keyctl},
    {"add_key", SYS_add_key},
    {"request_key", SYS_request_key},
    {"bpf", SYS_bpf},
    {"perf_event_open", SYS_perf_event_open},
    {"userfaultfd", SYS_userfaultfd},
    {"io_uring_setup", SYS_io_uring_setup},
    {"io_uring_enter", SYS_io_uring_enter},
    {"io_uring_register", SYS_io_uring_register},
    {"kexec_load", SYS_kexec_load},
    {"kexec_file_load", SYS_kexec_file_load},
    {"init_module", SYS_init_module},
    {"finit_module", SYS_finit_module},
    {"delete_module", SYS_delete_module},
    {"reboot", SYS_reboot},
    {"swapon", SYS_swapon},
    {"swapoff", SYS_swapoff},
    {"acct", SYS_acct},
    {"quotactl", SYS_quotactl},
    {"syslog", SYS_syslog},
    {"settimeofday", SYS_settimeofday},
    {"clock_settime", SYS_clock_settime},
    {"adjtimex", SYS_adjtimex},
    {"clock_adjtime", SYS_clock_adjtime},
    {"open_by_handle_at", SYS_open_by_handle_at},
    {"name_to_handle_at", SYS_name_to_handle_at},
    {"ptrace", SYS_ptrace},
    {"getpid", SYS_getpid},
    {"setsid", SYS_setsid},
    {"wait4", SYS_wait4},
};

static int run_syscall(const char* name) {
    for (size_t i = 0; i < sizeof syscalls / sizeof syscalls[0]; ++i) {
        if (strcmp(syscalls[i].name, name) == 0) {
            errno = 0;
            long r = syscall(syscalls[i].number, 0, 0, 0, 0, 0, 0);
            printf("%s returned %ld errno %s\n", name, r, r < 0 ? strerrorname_np(errno) : "0");
            return 0;
        }
    }
    printf("unknown syscall %s\n", name);
    return 2;
}

static long count_lines(const char* path) {
    FILE* f = fopen(path, "r");
    if (!f) return -1;
    long lines = 0;
    for (int c; (c = fgetc(f)) != EOF;)
        if (c == '\n') ++lines;
    fclose(f);
    return lines;
}

// lo's received plus sent packets, from /proc/net/dev.
static unsigned long long lo_packet_count(void) {
    unsigned long long packets = 0;
    char line[1024];
    FILE* f = fopen("/proc/net/dev", "r");
    while (f && fgets(line, sizeof line, f)) {
        unsigned long long rx_bytes, rx_packets, skip[6], tx_bytes, tx_packets;
        char* lo = strstr(line, "lo:");
        if (lo && sscanf(lo + 3, "%llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &rx_bytes,
                         &rx_packets, &skip[0], &skip[1], &skip[2], &skip[3], &skip[4], &skip[5],
                         &tx_bytes, &tx_packets) == 10)
            packets = rx_packets + tx_packets;
    }
    if (f) fclose(f);
    return packets;
}

// What a network namespace remembers of its past: sockets (TIME_WAIT ones outlive their
// process), lo's packet counters, and TCP's connection counter. All 0 in a fresh one.
static void print_net_traces(void) {
    long tcp = count_lines("/proc/net/tcp") - 1 + count_lines("/proc/net/tcp6") - 1;
    long unix_sockets = count_lines("/proc/net/unix") - 1;
    unsigned long long lo_packets = lo_packet_count(), active_opens = 0;
    char line[1024];
    FILE* f = fopen("/proc/net/snmp", "r");
    char header[1024];
    while (f && fgets(header, sizeof header, f) && fgets(line, sizeof line, f)) {
        if (strncmp(header, "Tcp:", 4) != 0) continue;
        // The column named ActiveOpens, in the values line below the names line.
        int column = 0;
        for (char* name = strtok(header, " \n"); name; name = strtok(NULL, " \n"), ++column)
            if (!strcmp(name, "ActiveOpens")) break;
        char* value = strtok(line, " \n");
        for (int i = 0; value && i < column; ++i) value = strtok(NULL, " \n");
        if (value) active_opens = strtoull(value, NULL, 10);
    }
    if (f) fclose(f);
    printf("tcp=%ld unix=%ld lo_packets=%llu active_opens=%llu\n", tcp, unix_sockets, lo_packets,
           active_opens);
}

// A TCP listener on 127.0.0.1 at a free port, written to *addr; -1 (reported) if none.
static int listen_on_loopback(struct sockaddr_in* addr) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    *addr = (struct sockaddr_in){.sin_family = AF_INET};
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof *addr;
    if (bind(l, (struct sockaddr*)addr, sizeof *addr) || listen(l, 1) ||
        getsockname(l, (struct sockaddr*)addr, &len)) {
        printf("listen: %s\n", strerrorname_np(errno));
        return -1;
    }
    return l;
}

// Leaves every kind of trace print_net_traces() looks for: a TCP connection closed by the
// client (TIME_WAIT), traffic on lo, a bound abstract unix socket.
static int net_litter(void) {
    struct sockaddr_in addr;
    int l = listen_on_loopback(&addr);
    if (l < 0) return 1;
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr*)&addr, sizeof addr)) {
        printf("connect: %s\n", strerrorname_np(errno));
        return 1;
    }
    int a = accept(l, NULL, NULL);
    static char data[65536];
    ssize_t sent = write(c, data, sizeof data), got = 0;
    for (ssize_t n; got < sent && (n = read(a, data, sizeof data)) > 0;) got += n;
    close(c);
    usleep(10000);
    close(a);
    close(l);
    int u = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un name = {.sun_family = AF_UNIX};
    memcpy(name.sun_path, "\0sbx-litter", 11);
    if (bind(u, (struct sockaddr*)&name, offsetof(struct sockaddr_un, sun_path) + 11)) {
        printf("bind unix: %s\n", strerrorname_np(errno));
        return 1;
    }
    print_net_traces();
    return 0;
}

// What a network namespace shows of itself that a fresh one would not: sockets alive in it
// (sockstat's first line), unix and inet sockets listed, IPv6 flow labels, lo's packets, and
// whether an abstract unix name another run bound still answers. Read before this probe
// opens a socket of its own.
static void print_net_state(int settle) {
    long unix_sockets = count_lines("/proc/net/unix") - 1;
    long inet = count_lines("/proc/net/tcp") + count_lines("/proc/net/tcp6") +
                count_lines("/proc/net/udp") + count_lines("/proc/net/udp6") - 4;
    long flowlabels = count_lines("/proc/net/ip6_flowlabel") - 1;
    // A closed netlink socket leaves sockstat's count only an RCU grace period later, so a
    // nonzero count gets up to 2 s to settle if asked; a socket that is really alive never does.
    char used[64] = "?";
    for (int tries = 0; tries < (settle ? 200 : 1); ++tries) {
        FILE* f = fopen("/proc/net/sockstat", "r");
        if (!f || fscanf(f, "sockets: used %63s", used) != 1) strcpy(used, "?");
        if (f) fclose(f);
        if (strcmp(used, "0") == 0) break;
        usleep(10000);
    }
    unsigned long long lo_packets = lo_packet_count();
    int probe = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un name = {.sun_family = AF_UNIX};
    memcpy(name.sun_path, "\0sbx-quiet", 10);
    int answered =
        connect(probe, (struct sockaddr*)&name, offsetof(struct sockaddr_un, sun_path) + 10);
    // ECONNREFUSED: nobody holds the name. Anything else (success, EPERM from a socket
    // connected elsewhere, EAGAIN from a full one) means somebody does.
    const char* holder = answered != 0 && errno == ECONNREFUSED ? "free" : "held";
    printf("unix=%ld inet=%ld flowlabels=%ld sockets=%s lo_packets=%llu abstract=%s\n",
           unix_sockets, inet, flowlabels, used, lo_packets, holder);
    close(probe);
}

// The IPv6 flow label request of <linux/in6.h>, which clashes with glibc's headers.
struct flowlabel_request {
    struct in6_addr dst;
    uint32_t label;
    uint8_t action, share;
    uint16_t flags, expires, linger;
    uint32_t pad;
};

// Asks the kernel for its links over a netlink socket, which stays open; -1 on failure.
static int netlink_link_dump(void) {
    int nl = socket(AF_NETLINK, SOCK_RAW, 0);  // NETLINK_ROUTE
    struct {
        struct nlmsghdr header;
        struct rtgenmsg body;
    } dump = {{sizeof dump, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 1, 0}, {AF_UNSPEC}};
    char reply[8192];
    if (nl < 0 || send(nl, &dump, sizeof dump, 0) < 0 || recv(nl, reply, sizeof reply, 0) <= 0)
        return -1;
    return nl;
}

// Leaves one kind of trace in the network namespace without sending a packet to lo:
//   sockets      listening TCP, bound UDP, a netlink query, an abstract unix name: all die
//                with the process, so nothing is left
//   netlink      a netlink query alone: no inet socket, yet a socket the filter reports
//   unix-cycle   an abstract unix socket holding its own descriptor in flight: it outlives
//                the process until the kernel's garbage collector finds it
//   flowlabel    an IPv6 flow label that lingers 60 s after its socket
//   unreachable  a UDP send with no route: only a counter moves
static int net_quiet_litter(const char* kind) {
    struct sockaddr_un name = {.sun_family = AF_UNIX};
    memcpy(name.sun_path, "\0sbx-quiet", 10);
    socklen_t name_len = offsetof(struct sockaddr_un, sun_path) + 10;
    if (!strcmp(kind, "sockets")) {
        struct sockaddr_in addr;
        if (listen_on_loopback(&addr) < 0) return 1;
        int udp = socket(AF_INET, SOCK_DGRAM, 0);
        addr.sin_port = 0;
        int u = socket(AF_UNIX, SOCK_DGRAM, 0);
        if (bind(udp, (struct sockaddr*)&addr, sizeof addr) || netlink_link_dump() < 0 ||
            bind(u, (struct sockaddr*)&name, name_len)) {
            printf("sockets: %s\n", strerrorname_np(errno));
            return 1;
        }
    } else if (!strcmp(kind, "netlink")) {
        if (netlink_link_dump() < 0) {
            printf("netlink: %s\n", strerrorname_np(errno));
            return 1;
        }
    } else if (!strcmp(kind, "unix-cycle")) {
        int u = socket(AF_UNIX, SOCK_DGRAM, 0);
        char byte = 0;
        struct iovec iov = {&byte, 1};
        union {
            char buffer[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } control;
        struct msghdr message = {.msg_iov = &iov,
                                 .msg_iovlen = 1,
                                 .msg_control = control.buffer,
                                 .msg_controllen = sizeof control.buffer};
        struct cmsghdr* cmsg = CMSG_FIRSTHDR(&message);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cmsg), &u, sizeof u);
        if (bind(u, (struct sockaddr*)&name, name_len) ||
            connect(u, (struct sockaddr*)&name, name_len) || sendmsg(u, &message, 0) != 1) {
            printf("unix-cycle: %s\n", strerrorname_np(errno));
            return 1;
        }
    } else if (!strcmp(kind, "flowlabel")) {
        int s = socket(AF_INET6, SOCK_DGRAM, 0);
        struct flowlabel_request request = {.dst = IN6ADDR_LOOPBACK_INIT,
                                            .label = htonl(0x5b0c5),
                                            .action = 0,  // IPV6_FL_A_GET
                                            .share = 1,   // IPV6_FL_S_EXCL
                                            .flags = 3,   // IPV6_FL_F_CREATE | IPV6_FL_F_EXCL
                                            .linger = 60};
        if (setsockopt(s, IPPROTO_IPV6, 32 /* IPV6_FLOWLABEL_MGR */, &request, sizeof request)) {
            printf("flowlabel: %s\n", strerrorname_np(errno));
            return 1;
        }
    } else if (!strcmp(kind, "unreachable")) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in far = {.sin_family = AF_INET, .sin_port = htons(9)};
        far.sin_addr.s_addr = htonl(0x0a000001);  // 10.0.0.1: no route in the namespace
        if (sendto(s, "x", 1, 0, (struct sockaddr*)&far, sizeof far) == 1 || errno != ENETUNREACH) {
            printf("unreachable: %s\n", strerrorname_np(errno));
            return 1;
        }
    } else {
        fprintf(stderr, "unknown litter %s\n", kind);
        return 2;
    }
    print_net_state(0);
    return 0;
}

int main(int argc, char** argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: sbx-probe COMMAND [ARGS...]\n");
        return 2;
    }
    const char* cmd = argv[1];
    const char* arg = argc > 2 ? argv[2] : "";
    setvbuf(stdout, NULL, _IOLBF, 0);

    if (!strcmp(cmd, "hello")) {
        puts("hello");
    } else if (!strcmp(cmd, "exit")) {
        return atoi(arg);
    } else if (!strcmp(cmd, "segv")) {
        volatile int* p = NULL;
        *p = 1;
    } else if (!strcmp(cmd, "abort")) {
        abort();
    } else if (!strcmp(cmd, "stdin-count")) {
        char buf[65536];
        unsigned long long total = 0, sum = 0;
        ssize_t n;
        while ((n = read(0, buf, sizeof buf)) > 0) {
            for (ssize_t i = 0; i < n; ++i) sum = sum * 31 + (unsigned char)buf[i];
            total += (unsigned long long)n;
        }
        printf("%llu %llu\n", total, sum);
    } else if (!strcmp(cmd, "binary")) {
        fwrite("\xff\xfe\x00\x80ok", 1, 6, stdout);
    } else if (!strcmp(cmd, "spin")) {
        spin_ms = atol(arg);
        int threads = argc > 3 ? atoi(argv[3]) : 1;
        pthread_t t[64];
        for (int i = 1; i < threads && i < 64; ++i) pthread_create(&t[i], NULL, spin, NULL);
        spin(NULL);
        for (int i = 1; i < threads && i < 64; ++i) pthread_join(t[i], NULL);
    } else if (!strcmp(cmd, "sleep")) {
        usleep((useconds_t)atol(arg) * 1000);
    } else if (!strcmp(cmd, "hog")) {
        size_t mb = (size_t)atol(arg);
        for (size_t i = 0; i < mb; ++i) {
            char* p = malloc(1 << 20);
            if (!p) {
                printf("malloc failed after %zu MiB\n", i);
                return 3;
            }
            memset(p, 1, 1 << 20);
        }
        printf("touched %zu MiB\n", mb);
    } else if (!strcmp(cmd, "forkbomb")) {
        for (;;) fork();
    } else if (!strcmp(cmd, "forkcount")) {
        int count = 0;
        for (;;) {
            pid_t pid = fork();
            if (pid == 0) {
                pause();
                _exit(0);
            }
            if (pid < 0) break;
            count++;
        }
        printf("forked %d\n", count);
    } else if (!strcmp(cmd, "threadbomb")) {
        int count = 0;
        pthread_t t;
        while (pthread_create(&t, NULL, sleeper, NULL) == 0) count++;
        printf("threads %d\n", count);
        fflush(stdout);
        _exit(0);
    } else if (!strcmp(cmd, "flood")) {
        static char buf[65536];
        memset(buf, 'x', sizeof buf);
        for (;;)
            if (write(1, buf, sizeof buf) < 0) return 4;
    } else if (!strcmp(cmd, "bigfile")) {
        long bytes = atol(arg);
        int fd = open("big", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        static char buf[65536];
        long done = 0;
        while (done < bytes) {
            ssize_t n = write(fd, buf, sizeof buf);
            if (n < 0) {
                printf("write failed: %s\n", strerrorname_np(errno));
                return 5;
            }
            done += n;
        }
        printf("wrote %ld\n", done);
    } else if (!strcmp(cmd, "filltmp")) {
        int fd = open("/tmp/fill", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        static char buf[65536];
        long long done = 0;
        for (;;) {
            ssize_t n = write(fd, buf, sizeof buf);
            if (n <= 0) {
                printf("filled %lld %s\n", done, strerrorname_np(errno));
                break;
            }
            done += n;
        }
    } else if (!strcmp(cmd, "status")) {
        FILE* f = fopen("/proc/self/status", "r");
        char line[512];
        while (f && fgets(line, sizeof line, f))
            if (!strncmp(line, "Cap", 3) || !strncmp(line, "NoNewPrivs", 10) ||
                !strncmp(line, "Seccomp", 7) || !strncmp(line, "Uid", 3) ||
                !strncmp(line, "Gid", 3) || !strncmp(line, "Groups", 6))
                fputs(line, stdout);
    } else if (!strcmp(cmd, "cat")) {
        print_file(arg);
    } else if (!strcmp(cmd, "connect")) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(arg))};
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(s, (struct sockaddr*)&addr, sizeof addr) == 0)
            puts("connected");
        else
            printf("connect: %s\n", strerrorname_np(errno));
    } else if (!strcmp(cmd, "loopback")) {
        // Talk to ourselves over lo: proves lo is up inside.
        struct sockaddr_in addr;
        if (listen_on_loopback(&addr) < 0) return 1;
        int c = socket(AF_INET, SOCK_STREAM, 0);
        puts(connect(c, (struct sockaddr*)&addr, sizeof addr) == 0 ? "self-connect ok"
                                                                   : "self-connect failed");
    } else if (!strcmp(cmd, "net-litter")) {
        return net_litter();
    } else if (!strcmp(cmd, "net-traces")) {
        print_net_traces();
    } else if (!strcmp(cmd, "net-quiet-litter")) {
        return net_quiet_litter(arg);
    } else if (!strcmp(cmd, "net-state")) {
        print_net_state(1);
    } else if (!strcmp(cmd, "netns")) {
        char link[64] = "";
        if (readlink("/proc/self/ns/net", link, sizeof link - 1) < 0) strcpy(link, "?");
        puts(link);
    } else if (!strcmp(cmd, "stat")) {
        struct stat st;
        puts(stat(arg, &st) == 0 ? "exists" : strerrorname_np(errno));
    } else if (!strcmp(cmd, "touch")) {
        puts(utimensat(AT_FDCWD, arg, NULL, 0) == 0 ? "touched" : strerrorname_np(errno));
    } else if (!strcmp(cmd, "create")) {
        int fd = open(arg, O_WRONLY | O_CREAT, 0644);
        puts(fd >= 0 ? "created" : strerrorname_np(errno));
    } else if (!strcmp(cmd, "ls")) {
        DIR* d = opendir(arg);
        if (!d) {
            printf("opendir: %s\n", strerrorname_np(errno));
            return 1;
        }
        struct dirent* e;
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) puts(e->d_name);
        closedir(d);
    } else if (!strcmp(cmd, "shmget")) {
        int id = shmget((key_t)atoi(arg), 0, 0);
        puts(id >= 0 ? "found" : strerrorname_np(errno));
    } else if (!strcmp(cmd, "syscall")) {
        return run_syscall(arg);
    } else if (!strcmp(cmd, "x32")) {
        errno = 0;
        long r = syscall(0x40000000L | SYS_getpid);
        printf("x32 returned %ld errno %s\n", r, r < 0 ? strerrorname_np(errno) : "0");
    } else if (!strcmp(cmd, "i386")) {
        long r;
        __asm__ volatile("int $0x80" : "=a"(r) : "a"(20L) : "memory");
        printf("i386 returned %ld\n", r);
    } else if (!strcmp(cmd, "socket") && argc > 2) {
        int fd = socket(atoi(argv[2]), SOCK_DGRAM, 0);
        printf("socket %s %s\n", argv[2], fd >= 0 ? "made" : strerrorname_np(errno));
    } else if (!strcmp(cmd, "vsock")) {
        int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
        printf("vsock %s\n", fd >= 0 ? "made" : strerrorname_np(errno));
    } else if (!strcmp(cmd, "tiocsti")) {
        char c = 'x';
        long request = TIOCSTI;
        if (!strcmp(arg, "high")) request |= 0x100000000L;
        long r = syscall(SYS_ioctl, 0, request, &c);
        printf("ioctl returned %ld errno %s\n", r, r < 0 ? strerrorname_np(errno) : "0");
    } else if (!strcmp(cmd, "personality")) {
        errno = 0;
        long r = syscall(SYS_personality, strtoul(arg, NULL, 0));
        printf("personality returned %ld errno %s\n", r, r < 0 ? strerrorname_np(errno) : "0");
    } else if (!strcmp(cmd, "clone-newuser")) {
        long r = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
        if (r == 0) _exit(0);
        printf("clone returned %ld errno %s\n", r, r < 0 ? strerrorname_np(errno) : "0");
    } else if (!strcmp(cmd, "fork")) {
        pid_t pid = fork();
        if (pid == 0) _exit(7);
        int status = 0;
        waitpid(pid, &status, 0);
        printf("child exited %d\n", WEXITSTATUS(status));
    } else if (!strcmp(cmd, "kill-minus-one")) {
        pid_t child = fork();
        if (child == 0) {
            pause();
            _exit(0);
        }
        int r = kill(-1, SIGKILL);
        int status = 0;
        waitpid(child, &status, 0);
        printf("kill(-1) returned %d, child %s, still alive\n", r,
               WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL ? "killed" : "survived");
    } else if (!strcmp(cmd, "daemon")) {
        // Double fork and setsid: the classic escape from a parent's process group.
        if (fork() == 0) {
            setsid();
            if (fork() == 0) {
                execl("/usr/bin/sleep", "sleep", arg[0] ? arg : "1000", (char*)NULL);
                _exit(1);
            }
            _exit(0);
        }
        wait(NULL);
        puts("daemonized");
    } else if (!strcmp(cmd, "hostname")) {
        struct utsname u;
        uname(&u);
        puts(u.nodename);
    } else if (!strcmp(cmd, "pid")) {
        printf("pid %d ppid %d\n", getpid(), getppid());
    } else if (!strcmp(cmd, "env")) {
        extern char** environ;
        for (char** e = environ; *e; ++e) puts(*e);
    } else if (!strcmp(cmd, "args")) {
        for (int i = 2; i < argc; ++i) puts(argv[i]);
    } else if (!strcmp(cmd, "sigpipe")) {
        struct sigaction sa;
        sigaction(SIGPIPE, NULL, &sa);
        puts(sa.sa_handler == SIG_DFL ? "SIGPIPE default" : "SIGPIPE not default");
    } else if (!strcmp(cmd, "sigstate")) {
        /* The blocked and ignored sets, as the kernel reports them. */
        FILE* status = fopen("/proc/self/status", "r");
        char line[256];
        while (status && fgets(line, sizeof line, status))
            if (!strncmp(line, "SigBlk:", 7) || !strncmp(line, "SigIgn:", 7)) fputs(line, stdout);
        if (status) fclose(status);
    } else if (!strcmp(cmd, "fds")) {
        DIR* d = opendir("/proc/self/fd");
        struct dirent* e;
        while (d && (e = readdir(d)))
            if (e->d_name[0] != '.') puts(e->d_name);
    } else {
        fprintf(stderr, "unknown command %s\n", cmd);
        return 2;
    }
    return 0;
}
