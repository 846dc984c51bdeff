// The sandboxed program's own process, forked by init: last setup, then execve.

#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "child.h"
#include "control.h"

namespace isolate {
namespace {

// The dispositions are pid 1's, all default since before "ready" (reset_signal_dispositions),
// so no handler of the supervisor's can run here once signals are unblocked.
bool unblock_signals(ChildFailure& failure) noexcept {
    sigset_t none;
    sigemptyset(&none);
    if (::sigprocmask(SIG_SETMASK, &none, nullptr) != 0)
        return fail(failure, ChildStep::program_signals);
    return true;
}

bool connect_stdio(const ChildPlan& plan, ChildFailure& failure) noexcept {
    // The supervisor guarantees 0, 1 and 2 are taken in its own process, so the pipe ends
    // are all >= 3 and dup2 cannot clobber one of them.
    if (::dup2(plan.stdin_fd, 0) != 0 || ::dup2(plan.stdout_fd, 1) != 1 ||
        ::dup2(plan.stderr_fd, 2) != 2)
        return fail(failure, ChildStep::program_stdio);
    // Everything else, the control socket included, closes on execve.
    if (::syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) != 0)
        return fail(failure, ChildStep::program_stdio);
    return true;
}

bool apply_rlimits(const ChildPlan& plan, ChildFailure& failure) noexcept {
    for (std::size_t i = 0; i < plan.rlimits.size(); ++i) {
        if (::setrlimit(static_cast<__rlimit_resource>(plan.rlimits[i].resource),
                        &plan.rlimits[i].value) != 0)
            return fail(failure, ChildStep::program_rlimit, static_cast<int>(i));
    }
    return true;
}

// The seccomp filter and no_new_privs came from pid 1 (init.cpp). Told last before execve,
// so the supervisor knows it before any call of the program's reaches it.
bool announce_exec(const ChildPlan& plan, std::uint64_t init_cpu_ns,
                   ChildFailure& failure) noexcept {
    const std::uint64_t cpu_ns =
        init_cpu_ns + static_cast<std::uint64_t>(clock_ns(CLOCK_PROCESS_CPUTIME_ID));
    const std::int64_t monotonic_ns = clock_ns(CLOCK_MONOTONIC);
    if (ExecAnnouncement* announcement = plan.exec_announcement) {
        announcement->cpu_ns.store(cpu_ns, std::memory_order_relaxed);
        announcement->monotonic_ns.store(monotonic_ns, std::memory_order_relaxed);
        announcement->made.store(true, std::memory_order_release);
        return true;
    }
    ControlMessage message{ControlType::exec, ChildStep::program_exec, 0, 0, 0};
    message.cpu_ns = cpu_ns;
    message.monotonic_ns = monotonic_ns;
    if (!send_control(plan.control_fd, message)) return fail(failure, ChildStep::announce_exec);
    return true;
}

}  // namespace

bool reset_signal_dispositions(ChildFailure& failure) noexcept {
    struct sigaction action {};
    action.sa_handler = SIG_DFL;
    for (int signal = 1; signal < NSIG; ++signal) {
        if (signal == SIGKILL || signal == SIGSTOP) continue;
        // glibc keeps 32 up to SIGRTMIN for itself and refuses them; they hold its handlers,
        // which execve resets, never "ignore".
        if (signal >= 32 && signal < SIGRTMIN) continue;
        if (::sigaction(signal, &action, nullptr) != 0)
            return fail(failure, ChildStep::reset_signals, signal);
    }
    return true;
}

std::int64_t clock_ns(clockid_t clock) noexcept {
    timespec now{};
    if (::clock_gettime(clock, &now) != 0) return 0;
    return static_cast<std::int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
}

void exec_program(const ChildPlan& plan, int workdir_fd, std::uint64_t init_cpu_ns) noexcept {
    ChildFailure failure;
    // What does not depend on the program, before `start`.
    ::prctl(PR_SET_NAME, kWaitingProgramName, 0, 0, 0);
    if (::setsid() < 0) {
        fail(failure, ChildStep::program_setsid);
        die_reporting(plan, failure);
    }
    if (!connect_stdio(plan, failure)) die_reporting(plan, failure);
    if (::fchdir(workdir_fd) != 0) {
        fail(failure, ChildStep::program_chdir);
        die_reporting(plan, failure);
    }
    // pid 1 is pinned to its slot's CPU (SandboxConfig::pin_slots); the program is not.
    if (plan.program_cpus && ::sched_setaffinity(0, sizeof(cpu_set_t), plan.program_cpus) != 0) {
        fail(failure, ChildStep::program_affinity);
        die_reporting(plan, failure);
    }
    // EOF here means the supervisor gave up (or died) before the request came.
    if (!wait_for_control(plan.control_fd, ControlType::start)) ::_exit(125);

    // The program's part of the plan is filled in now. The working directory is owned by our
    // (inside) uid, so no capability is needed to write into it.
    if (!write_input_files(plan, workdir_fd, failure) || !unblock_signals(failure) ||
        !apply_rlimits(plan, failure) || !announce_exec(plan, init_cpu_ns, failure))
        die_reporting(plan, failure);

    // execvp's rules: skip PATH entries where the file is missing; report EACCES if some
    // entry had the file but not the permission; stop at any other failure.
    int error = ENOENT;
    int index = 0;
    for (std::size_t i = 0; i < plan.exec_candidates.size(); ++i) {
        ::execve(plan.exec_candidates[i].c_str(), plan.argv.data(), plan.envp.data());
        if (errno == ENOENT || errno == ENOTDIR) continue;
        if (errno == EACCES) {
            if (error != EACCES) index = static_cast<int>(i);
            error = EACCES;
            continue;
        }
        error = errno;
        index = static_cast<int>(i);
        break;
    }
    errno = error;
    fail(failure, ChildStep::program_exec, index);
    die_reporting(plan, failure);
}

}  // namespace isolate
