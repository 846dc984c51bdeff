#include "verdict.h"

#include <signal.h>
#include <sys/wait.h>

namespace isolate {

void decide_verdict(const RunFacts& facts, const Limits& limits, RunResult& result) {
    if (facts.wait_status) {
        int status = *facts.wait_status;
        if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
        if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
    } else if (facts.killed_by_supervisor) {
        // The program died with the sandbox's pid namespace, which the kernel ends by SIGKILL.
        result.signal = SIGKILL;
    }

    auto set = [&](Status status, std::string message) {
        result.status = status;
        result.message = std::move(message);
    };
    if (facts.setup_error) return set(Status::internal_error, *facts.setup_error);
    if (facts.cancelled) return set(Status::cancelled, "the run was cancelled");
    if (facts.oom_killed)
        return set(Status::memory_limit,
                   "memory limit of " + std::to_string(limits.memory_bytes) + " bytes exceeded");
    if (facts.cpu_exceeded)
        return set(Status::time_limit,
                   "CPU time limit of " + std::to_string(limits.cpu_time_ms) + " ms exceeded");
    if (facts.wall_exceeded)
        return set(Status::wall_time_limit,
                   "wall time limit of " + std::to_string(limits.wall_time_ms) + " ms exceeded");
    if (facts.output_exceeded)
        return set(
            Status::output_limit,
            "output limit of " + std::to_string(limits.max_output_bytes) + " bytes exceeded");
    if (result.signal == SIGXFSZ)
        return set(
            Status::file_size_limit,
            "file size limit of " + std::to_string(limits.max_file_bytes) + " bytes exceeded");
    if (facts.blocked_syscall)
        return set(Status::syscall_blocked, "blocked syscall: " + *facts.blocked_syscall);
    if (result.signal == SIGSYS)
        return set(Status::syscall_blocked, "killed by SIGSYS (a non-native syscall ABI)");
    if (!facts.wait_status)
        return set(Status::internal_error,
                   "the sandbox ended without reporting the program's exit");
    if (result.signal) return set(Status::signaled, "killed by " + signal_name(*result.signal));
    if (result.exit_code && *result.exit_code != 0)
        return set(Status::runtime_error, "exited with code " + std::to_string(*result.exit_code));
    set(Status::ok, "");
}

}  // namespace isolate
