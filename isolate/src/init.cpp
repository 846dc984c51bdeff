// The sandbox's pid 1. It builds the sandbox (namespaces are already there), forks the
// program, reports its exit, then takes every other process in the sandbox down with it.

#include <fcntl.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "child.h"
#include "control.h"
#include "isolate/seccomp.h"

namespace isolate {
namespace {

constexpr char kHostname[] = "sandbox";
// Our name for `ps` on the host; the program's process waiting for `start` has its own.
constexpr char kInitName[] = "sandbox-init";

// close_range cannot skip descriptors, so close the gaps between the ones we keep.
void close_all_except(int a, int b, int c, int d, int e) noexcept {
    int keep[5] = {a, b, c, d, e};
    std::sort(keep, keep + 5);
    unsigned next = 0;
    for (int fd : keep) {
        if (fd < 0) continue;
        if (static_cast<unsigned>(fd) > next && static_cast<unsigned>(fd) >= 3)
            ::syscall(SYS_close_range, std::max(next, 3U), static_cast<unsigned>(fd) - 1, 0U);
        next = static_cast<unsigned>(fd) + 1;
    }
    ::syscall(SYS_close_range, std::max(next, 3U), ~0U, 0U);
}

void send_or_die(const ChildPlan& plan, const ControlMessage& message, int fd = -1) noexcept {
    if (!send_control(plan.control_fd, message, fd)) ::_exit(125);
}

// Runs the program and returns its wait status. Our copies of its stdio stay open until we
// exit: the supervisor does not wait for EOF (it drains the pipes once we say every other
// process is gone), and closing them here would wake it while the program's exit still
// has our CPU.
int supervise_program(pid_t program) noexcept {
    for (;;) {
        int status = 0;
        pid_t reaped = ::waitpid(-1, &status, __WALL);
        if (reaped == program) return status;
        if (reaped < 0 && errno != EINTR) return W_EXITCODE(125, 0);
        // Anything else is an orphan that was reparented to us: reaped, nothing more.
    }
}

// Every other process of the namespace is our child: the program's descendants are
// reparented to us. With none (the usual end of a run) there is nothing to kill, and kill(-1)
// would walk every process of the host to find that out.
bool nothing_else_left() noexcept {
    for (;;) {
        const pid_t reaped = ::waitpid(-1, nullptr, WNOHANG | __WALL);
        if (reaped < 0 && errno == ECHILD) return true;
        if (reaped < 0 && errno == EINTR) continue;
        return false;
    }
}

void kill_everything_else() noexcept {
    if (nothing_else_left()) return;
    // pid 1 is exempt from kill(-1), so this ends every other process in the namespace.
    ::kill(-1, SIGKILL);
    for (;;) {
        pid_t reaped = ::waitpid(-1, nullptr, __WALL);
        if (reaped < 0 && errno != EINTR) break;
    }
}

void send_collected_files(const ChildPlan& plan, int workdir_fd) noexcept {
    for (std::size_t i = 0; i < plan.collect.size(); ++i) {
        open_how how{};
        // O_NONBLOCK: a FIFO planted under the name must not hang us; the supervisor
        // accepts only regular files.
        how.flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK;
        how.resolve =
            RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
        int fd = static_cast<int>(
            ::syscall(SYS_openat2, workdir_fd, plan.collect[i].c_str(), &how, sizeof how));
        ControlMessage message{ControlType::file, ChildStep::collect_file, static_cast<int>(i),
                               fd < 0 ? errno : 0, 0};
        send_or_die(plan, message, fd);
        if (fd >= 0) ::close(fd);
    }
}

}  // namespace

bool fail(ChildFailure& failure, ChildStep step, int index) noexcept {
    failure.step = step;
    failure.index = index;
    failure.error = errno;
    return false;
}

void die_reporting(const ChildPlan& plan, const ChildFailure& failure) noexcept {
    ControlMessage message{ControlType::error, failure.step, failure.index, failure.error, 0};
    send_control(plan.control_fd, message);
    ::_exit(126);
}

namespace {

// The supervisor's end of the control socket closes when its process dies.
bool supervisor_gone(int control_fd) noexcept {
    pollfd fd{control_fd, 0, 0};
    return ::poll(&fd, 1, 0) != 0 && (fd.revents & (POLLHUP | POLLERR | POLLNVAL)) != 0;
}

// The program's process shares our memory until its execve (CLONE_VM | CLONE_VFORK, like
// posix_spawn), and we sleep until then. A copy-on-write fork of this process, itself a copy
// of the multithreaded supervisor, cost a page-table copy, copy-on-write faults with TLB
// shootdowns, and the copy's teardown at execve: about a third of a run's own CPU. The
// child runs only exec_program(), which writes nothing of ours but its own stack; on
// its own stack, since sharing ours would let its calls overwrite our frames. It may sleep
// there for long (a sandbox built ahead waits for its request), and so do we.
struct ProgramStart {
    const ChildPlan* plan;
    int workdir_fd;
    std::uint64_t cpu_at_fork;
};

int program_main(void* arg) {
    const auto* start = static_cast<const ProgramStart*>(arg);
    exec_program(*start->plan, start->workdir_fd, start->cpu_at_fork);
}

// Returns the program's pid (it has exec'd or died by then), or -1 with errno.
long spawn_program(const ChildPlan& plan, int workdir_fd, std::uint64_t cpu_at_fork) noexcept {
    constexpr std::size_t kGuard = 4096, kStack = 256 * 1024;
    char* stack = static_cast<char*>(plan.program_stack);
    std::size_t stack_size = plan.program_stack_size;
    void* mapped = nullptr;
    if (!stack) {
        mapped = ::mmap(nullptr, kGuard + kStack, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (mapped == MAP_FAILED) return -1;
        if (::mprotect(mapped, kGuard, PROT_NONE) != 0) {
            const int saved = errno;
            ::munmap(mapped, kGuard + kStack);
            errno = saved;
            return -1;
        }
        stack = static_cast<char*>(mapped) + kGuard;
        stack_size = kStack;
    }
    // No handler of ours may run in the child on shared memory before it resets them all;
    // exec_program() unblocks signals after that.
    sigset_t all, previous;
    sigfillset(&all);
    if (::sigprocmask(SIG_SETMASK, &all, &previous) != 0) return -1;
    ProgramStart start{&plan, workdir_fd, cpu_at_fork};
    int pid = ::clone(program_main, stack + stack_size, CLONE_VM | CLONE_VFORK | SIGCHLD, &start);
    int saved = errno;
    ::sigprocmask(SIG_SETMASK, &previous, nullptr);
    if (mapped) ::munmap(mapped, kGuard + kStack);
    errno = saved;
    return pid;
}

}  // namespace

void run_init(const ChildPlan& plan) noexcept {
    ::prctl(PR_SET_NAME, kInitName, 0, 0, 0);
    // Ours are a copy of the supervisor's; the program inherits them (program.cpp). Not
    // resetting them is fatal: the program would start with signals ignored.
    {
        ChildFailure failure;
        if (!reset_signal_dispositions(failure)) die_reporting(plan, failure);
    }
    // If the supervisor's thread dies, so does the whole sandbox (pid 1 takes it down).
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) ::_exit(125);
    // v1: join the run's cgroup before anything else runs here. Not joining is fatal: nothing
    // may run outside its limits.
    for (int fd : plan.cgroup_join_fds) {
        if (::write(fd, "0", 1) != 1) {
            ChildFailure failure;
            fail(failure, ChildStep::join_cgroup);
            die_reporting(plan, failure);
        }
    }
    close_all_except(plan.control_fd, plan.stdin_fd, plan.stdout_fd, plan.stderr_fd,
                     plan.started_fd);
    // Only now that it holds none of the supervisor's other descriptors: until then the
    // namespace releaser holds back (NamespaceReleaser::SpawnInFlight), lest a namespace's
    // last reference be this copy, whose close would wait for the grace period here.
    if (plan.started_fd >= 0) {
        const std::uint64_t one = 1;
        if (::write(plan.started_fd, &one, sizeof one) != sizeof one) ::_exit(125);
        ::close(plan.started_fd);
    }
    // EOF here means the supervisor gave up (or died) before the sandbox was ready.
    if (!wait_for_control(plan.control_fd, ControlType::go)) ::_exit(125);

    ChildFailure failure;
    // Joined now that the supervisor placed us in our cgroup, so it becomes our cgroup root.
    if (::unshare(CLONE_NEWCGROUP) != 0) {
        fail(failure, ChildStep::cgroup_namespace);
        die_reporting(plan, failure);
    }
    if (!mount_host_parts(plan, failure) || !switch_user(plan, failure))
        die_reporting(plan, failure);
    // Changing credentials cleared the parent-death signal (prctl(2)): arm it again, then make
    // sure the supervisor did not die in the gap, when nothing would have told us.
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || supervisor_gone(plan.control_fd))
        ::_exit(125);
    if (!mount_sandbox_parts(plan, failure)) die_reporting(plan, failure);

    int workdir_fd =
        ::open(plan.workdir_inside.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (workdir_fd < 0) {
        fail(failure, ChildStep::open_workdir);
        die_reporting(plan, failure);
    }
    if (::sethostname(kHostname, sizeof kHostname - 1) != 0 ||
        ::setdomainname(kHostname, sizeof kHostname - 1) != 0) {
        fail(failure, ChildStep::set_hostname);
        die_reporting(plan, failure);
    }
    if (plan.bring_up_loopback && !bring_up_loopback(failure)) die_reporting(plan, failure);
    // Keeps the program (same uid) out of our /proc entries and memory.
    if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        fail(failure, ChildStep::drop_capabilities);
        die_reporting(plan, failure);
    }
    if (!drop_capabilities(plan, failure)) die_reporting(plan, failure);
    // Now, not in the program's process: compiling the filter into the kernel (checks, JIT,
    // the always-allowed cache) is ~0.13 ms, off the request's path for a sandbox built
    // ahead. Everything from here on, ours and the program's, runs under it; the supervisor
    // tells a call it blocks for us or for the program's setup from one of the program's.
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        fail(failure, ChildStep::no_new_privs);
        die_reporting(plan, failure);
    }
    const long listener = ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                                    SECCOMP_FILTER_FLAG_NEW_LISTENER, plan.seccomp->program());
    if (listener < 0) {
        fail(failure, ChildStep::install_seccomp);
        die_reporting(plan, failure);
    }

    // Everything above depends only on the sandbox's shape (rootfs, mounts, limits, filter),
    // not on the program. A sandbox prepared ahead of its request idles from here until the
    // supervisor has filled in the program's part of the plan (files, argv, environment).
    // Without its listener the supervisor could not name a blocked syscall; fail closed.
    if (!send_control(plan.control_fd, {ControlType::ready, ChildStep::wait_for_go, 0, 0, 0},
                      static_cast<int>(listener))) {
        fail(failure, ChildStep::send_listener);
        die_reporting(plan, failure);
    }
    ::close(static_cast<int>(listener));
    // The program's process is made now, ahead of the request: it waits for `start`
    // (exec_program), and we sleep until its execve. So the clone and the program's own setup
    // that does not depend on the program are off the request's path too.
    const auto cpu_at_fork = static_cast<std::uint64_t>(clock_ns(CLOCK_PROCESS_CPUTIME_ID));
    long program = spawn_program(plan, workdir_fd, cpu_at_fork);
    if (program < 0) {
        fail(failure, ChildStep::fork_program);
        die_reporting(plan, failure);
    }

    int status = supervise_program(static_cast<pid_t>(program));
    const std::int64_t exited_at = clock_ns(CLOCK_MONOTONIC);
    auto own_cpu_since_fork = [&] {
        return static_cast<std::uint64_t>(clock_ns(CLOCK_PROCESS_CPUTIME_ID)) - cpu_at_fork;
    };
    // The usual end: one message, so the supervisor, which shares our CPU, wakes once.
    if (plan.collect.empty() && nothing_else_left()) {
        ControlMessage finished{ControlType::finished, ChildStep::program_exec, 0, 0, status};
        finished.monotonic_ns = exited_at;
        finished.cpu_ns = own_cpu_since_fork();
        send_or_die(plan, finished);
        ::_exit(0);
    }
    ControlMessage exited{ControlType::exited, ChildStep::program_exec, 0, 0, status};
    exited.monotonic_ns = exited_at;
    send_or_die(plan, exited);
    kill_everything_else();
    send_collected_files(plan, workdir_fd);
    ControlMessage done{ControlType::done, ChildStep::program_exec, 0, 0, 0};
    done.cpu_ns = own_cpu_since_fork();
    send_or_die(plan, done);
    ::_exit(0);
}

}  // namespace isolate
