#pragma once

// A sandbox built up to the point where only the program is missing: its cgroup with limits,
// its stdio pipes and control socket, and pid 1 in fresh namespaces with the filesystem
// mounted, pivoted into, every capability dropped and the seccomp filter installed, and the
// program's process made (by pid 1, without the program), waiting for `start`.
//
// Nothing here depends on the program (files, argv, environment), so a slot can
// build its next sandbox between requests, off the request's path, when it expects the same
// shape again. Each one is used by exactly one run and then destroyed: a sandbox prepared
// ahead has run none of anyone's code, only ours.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "child_plan.h"
#include "isolate/cgroup.h"
#include "isolate/run_spec.h"
#include "isolate/sandbox.h"
#include "isolate/unique_fd.h"

namespace isolate {

class InitSpawner;
class MountTemplates;
class NamespaceReleaser;

struct Pipe {
    UniqueFd read_end, write_end;
};

// Linux 6.6+: a task that reports a call to `listener` hands its CPU straight to the thread
// that answers, which saves a wake-up per reported call; older kernels refuse, which is fine.
void prefer_synchronous_wakeups(int listener) noexcept;

// The sandbox's pid 1, as seen from the host. Killed and reaped on every path out.
class SandboxProcess {
  public:
    // With a `releaser`, also holds pid 1's mount namespace and hands it there once pid 1 is
    // reaped, so that pid 1's exit does not wait to free its mounts (namespace_releaser.h).
    SandboxProcess(pid_t pid, int pidfd, NamespaceReleaser* releaser = nullptr);
    SandboxProcess(const SandboxProcess&) = delete;
    SandboxProcess& operator=(const SandboxProcess&) = delete;
    ~SandboxProcess();

    pid_t pid() const { return pid_; }
    int pidfd() const { return pidfd_.get(); }
    void kill() noexcept;
    // Call when pidfd is readable.
    void reap();

  private:
    void release_mount_namespace() noexcept;

    pid_t pid_;
    UniqueFd pidfd_;
    NamespaceReleaser* releaser_;
    UniqueFd mount_ns_;
    bool reaped_ = false;
};

// What building a sandbox needs from the Sandbox that owns the slot.
struct SandboxParts {
    const SandboxConfig& config;
    cgroup::Backend& cgroups;
    // The network namespace to join and the one to return to; -1: pid 1 gets a new one.
    int netns;
    int netns_home;
    InitSpawner* init_spawner;  // null: pid 1 is a copy-on-write clone
    // Where pid 1 starts, with an init_spawner (a copy-on-write clone mounts the rootfs itself).
    MountTemplates& mount_templates;
    // Where finished runs' mount namespaces go; null: pid 1's exit frees its own.
    NamespaceReleaser* namespace_releaser;
    int last_capability;
    const cpu_set_t* program_cpus;  // null: the program keeps pid 1's CPUs
};

class PreparedSandbox {
  public:
    // Builds a sandbox of `shape` for `slot` and tells pid 1 to set it up. With a `program`
    // (a spec of that shape), its part of the plan is filled in too and pid 1 is told to go
    // straight on (the request's own path); without, pid 1 stops at `ready` (see
    // wait_until_ready) and needs fill_in_program() and start(). Throws SetupError.
    PreparedSandbox(const SandboxParts& parts, const SandboxShape& shape, unsigned slot,
                    const RunSpec* program, std::string run_name);
    // Kills pid 1 (if it is still there), reaps it, then removes the cgroup.
    ~PreparedSandbox();
    PreparedSandbox(const PreparedSandbox&) = delete;
    PreparedSandbox& operator=(const PreparedSandbox&) = delete;

    // True once pid 1 reports the sandbox built; false if it failed, died or took longer
    // than `timeout` (the sandbox is then useless and should be destroyed), with the reason
    // in *why.
    bool wait_until_ready(std::chrono::milliseconds timeout, std::string* why);
    // After wait_until_ready: true while the sandbox still waits, silent, for start().
    bool still_waiting() const;

    // The program's part of the plan, for a run whose shape matches. pid 1 reads it (the
    // same memory) only after start(); `spec` must outlive the run.
    void fill_in_program(const RunSpec& spec);
    void start();

    const SandboxShape& shape() const { return shape_; }
    bool started() const { return started_; }

    // Destruction order matters: the process goes before its cgroup (members are destroyed
    // bottom up), and pid 1 reads `plan` until it is reaped.
    ExecAnnouncement exec_announcement;
    ChildPlan plan;
    std::unique_ptr<cgroup::RunCgroup> cgroup;
    Pipe stdin_pipe, stdout_pipe, stderr_pipe;
    UniqueFd control;
    // The seccomp listener pid 1 sends with `ready`, once wait_until_ready saw it; the
    // supervisor takes it.
    UniqueFd listener;
    std::unique_ptr<SandboxProcess> process;

  private:
    SandboxShape shape_;
    bool program_filled_in_ = false;
    bool started_ = false;
};

}  // namespace isolate
