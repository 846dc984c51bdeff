#pragma once

// Child-side setup steps. They run in the sandbox's first process, a raw clone of a
// multithreaded supervisor: no allocation, no locks, no exceptions; syscalls only.
// Each returns false after filling `failure` (errno captured at the failing call).

#include <time.h>

#include <cstdint>

#include "child_plan.h"

namespace isolate {

// The name `ps` shows on the host for the program's process of a sandbox built ahead, which
// waits for its request; its execve gives it the program's name.
inline constexpr char kWaitingProgramName[] = "sandbox-ready";

struct ChildFailure {
    ChildStep step = ChildStep::wait_for_go;
    int index = 0;
    int error = 0;
};

// Records errno for `step` and returns false, so steps read `return fail(...)`.
bool fail(ChildFailure& failure, ChildStep step, int index = 0) noexcept;

// Mounts that need the host's credentials (the rootfs and operator binds): before switch_user.
// In a mount template's copy they are there already; only the copy is made private.
bool mount_host_parts(const ChildPlan& plan, ChildFailure& failure) noexcept;
// Everything else, then pivot_root into the new root (unless the template's root is the new
// root already): after switch_user.
bool mount_sandbox_parts(const ChildPlan& plan, ChildFailure& failure) noexcept;
// A mount template's tree (mount_template.h), built as the host's root in a new mount and pid
// namespace: the host parts, a placeholder proc, then pivot_root.
bool build_mount_template(const ChildPlan& plan, ChildFailure& failure) noexcept;
// Writes the input files into the (fresh, empty) working directory.
bool write_input_files(const ChildPlan& plan, int workdir_fd, ChildFailure& failure) noexcept;

// Becomes the inside uid/gid with no supplementary groups, keeping capabilities.
bool switch_user(const ChildPlan& plan, ChildFailure& failure) noexcept;
// Empties all five capability sets and locks them empty.
bool drop_capabilities(const ChildPlan& plan, ChildFailure& failure) noexcept;

bool bring_up_loopback(ChildFailure& failure) noexcept;

// Sets every signal's disposition to the default. pid 1 does it while it builds the sandbox,
// before "ready": the program's process gets a copy of pid 1's, and "ignore" would survive
// its execve (the supervisor ignores SIGPIPE). Per run, since dispositions are per process:
// CLONE_CLEAR_SIGHAND would leave "ignore" in place.
bool reset_signal_dispositions(ChildFailure& failure) noexcept;

// The program's process, under pid 1's seccomp filter: its session, stdio and CPUs, then it
// waits for `start` (named kWaitingProgramName meanwhile), writes the input files, sets the
// limits and execs. Never returns. `init_cpu_ns` is pid 1's CPU time at the fork, reported
// with the exec message as part of the setup cost.
[[noreturn]] void exec_program(const ChildPlan& plan, int workdir_fd,
                               std::uint64_t init_cpu_ns) noexcept;

// A clock's reading in nanoseconds (0 if it cannot be read); async-signal-safe.
std::int64_t clock_ns(clockid_t clock) noexcept;

// Reports a failure on the control socket and exits.
[[noreturn]] void die_reporting(const ChildPlan& plan, const ChildFailure& failure) noexcept;

}  // namespace isolate
