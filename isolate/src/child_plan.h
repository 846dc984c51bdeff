#pragma once

// Everything the sandbox's first process needs, computed by the supervisor before clone3.
// The child is a raw clone of a multithreaded process: it must not allocate, lock or throw,
// so it only reads this plan and makes syscalls.

#include <sched.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "directory_identity.h"
#include "isolate/run_spec.h"

namespace isolate {

class SeccompFilter;

struct PlannedBind {
    std::string source;  // host path
    std::string target;  // host path of the mountpoint below the rootfs
    std::string inside;  // the mountpoint's path inside
    // The source directory, which a pid 1 started in a mount template must find at `inside`.
    DirectoryIdentity source_identity;
    // The mountpoint, which a mount template holds the bind on.
    DirectoryIdentity target_identity;
};

struct PlannedFile {
    std::string path;  // relative to the working directory, validated
    const std::string* content;
    bool executable;
};

struct PlannedRlimit {
    int resource;
    rlimit value;
};

// The program's "exec", told through memory where its process shares the supervisor's: the
// supervisor reads it when it has to know (a notification, a timer, the end) instead of
// waking for a message. Written once, just before execve; `made` last.
struct ExecAnnouncement {
    std::atomic<std::uint64_t> cpu_ns{0};       // as ControlMessage::cpu_ns of "exec"
    std::atomic<std::int64_t> monotonic_ns{0};  // as ControlMessage::monotonic_ns
    std::atomic<bool> made{false};
};
// The child must not take a lock.
static_assert(std::atomic<std::uint64_t>::is_always_lock_free &&
              std::atomic<std::int64_t>::is_always_lock_free &&
              std::atomic<bool>::is_always_lock_free);

struct ChildPlan {
    // Descriptors, inherited through clone3.
    int control_fd = -1;
    int stdin_fd = -1;
    int stdout_fd = -1;
    int stderr_fd = -1;
    // v1: `tasks` files pid 1 writes "0" to, to join its cgroup (RunCgroup::self_join_fds).
    std::vector<int> cgroup_join_fds;

    uid_t inside_id = 1000;

    // Filesystem, as host paths of the new root's parts; inside paths once pid 1 is to start
    // in a mount template (use_mount_template).
    bool in_mount_template = false;
    std::string rootfs;
    // The rootfs directory, which a pid 1 started in a mount template must find at "/".
    DirectoryIdentity rootfs_identity;
    std::string proc_dir, proc_sys_dir, dev_dir, dev_shm_dir, tmp_dir, work_dir;
    // The rootfs's /proc, which a mount template holds its placeholder proc on.
    DirectoryIdentity proc_identity;
    std::vector<PlannedBind> binds;
    // What dev_dir must show: the /dev this process mounted there (dev_mounts.h), which the
    // rootfs's recursive bind carries along.
    DirectoryIdentity dev_identity;
    std::string shm_options, tmp_options, work_options;

    // Inside the new root.
    std::string workdir_inside;
    std::vector<std::string> dirs_to_create;  // relative to the working directory, parents first
    std::vector<PlannedFile> files;
    std::vector<std::string> collect;

    // The program.
    std::vector<std::string> exec_candidates;  // absolute paths tried in order
    std::vector<char*> argv;                   // null-terminated, pointing into the RunSpec
    std::vector<char*> envp;
    std::vector<PlannedRlimit> rlimits;
    // The CPUs the program may use, set before its execve; null: pid 1's, inherited.
    const cpu_set_t* program_cpus = nullptr;
    const SeccompFilter* seccomp = nullptr;
    // An eventfd pid 1 writes to once it has joined its cgroups and closed what it inherited,
    // when it shares the supervisor's memory (InitSpawner); -1 otherwise.
    int started_fd = -1;
    // Where the program's process runs between its clone and execve (InitSpawner); null: pid 1
    // maps one itself.
    void* program_stack = nullptr;
    std::size_t program_stack_size = 0;
    // Set with program_stack: the program's process announces its execve here, not with a
    // message on the control socket.
    ExecAnnouncement* exec_announcement = nullptr;
    // False when the network namespace came prepared, with lo already up.
    bool bring_up_loopback = true;
    int last_capability = 40;
};

// The steps the child reports when one fails; names live in child_steps.cpp.
enum class ChildStep : std::uint32_t {
    wait_for_go,
    reset_signals,
    join_cgroup,
    cgroup_namespace,
    make_mounts_private,
    bind_rootfs,
    remount_rootfs_readonly,
    bind_extra,
    remount_extra_readonly,
    set_groups,
    set_gid,
    set_uid,
    keep_capabilities,
    mount_proc,
    protect_proc_sys,
    check_dev,
    mount_dev_shm,
    mount_tmp,
    mount_workdir,
    pivot_root,
    detach_old_root,
    open_mount_template,
    check_mount_template,
    open_workdir,
    create_input_dir,
    write_input_file,
    set_hostname,
    loopback_up,
    drop_capabilities,
    no_new_privs,
    fork_program,
    program_setsid,
    program_stdio,
    program_chdir,
    program_rlimit,
    program_affinity,
    program_signals,
    install_seccomp,
    send_listener,
    announce_exec,
    program_exec,
    collect_file,
};

const char* to_string(ChildStep step);

// The messages on the SOCK_SEQPACKET control socket between supervisor and sandbox.
enum class ControlType : std::uint32_t {
    go = 1,    // supervisor -> init: maps written, cgroup joined
    error,     // init or program -> supervisor: a setup step failed
    exec,      // program -> supervisor: about to execve
    exited,    // init -> supervisor: the program's wait status
    file,      // init -> supervisor: a collected file; carries its fd (or an errno)
    done,      // init -> supervisor: everything sent
    ready,     // init -> supervisor: the sandbox is built and filtered; waiting for the program's
               // part of the plan; carries the seccomp listener fd
    start,     // supervisor -> init: the program's part of the plan is filled in; run it
    finished,  // init -> supervisor: exited and done in one; nothing else was left to kill
               // and no file is collected
};

struct ControlMessage {
    ControlType type;
    ChildStep step;
    std::int32_t index;  // which bind, file, ... the step was about
    std::int32_t error;  // errno
    std::int32_t wait_status;
    // Measured inside, because the supervisor may be scheduled late: exec carries the CPU that
    // setup cost (pid 1 up to the fork plus the program's process up to execve); done and
    // finished carry pid 1's own CPU after the fork; both are charged to the cgroup but are
    // not the program's.
    std::uint64_t cpu_ns = 0;
    // CLOCK_MONOTONIC: exec, just before execve; exited and finished, when the program was
    // reaped.
    std::int64_t monotonic_ns = 0;
};

// What of a RunSpec the sandbox itself depends on, as opposed to its program. A sandbox
// built ahead serves only a run of the same shape.
struct SandboxShape {
    std::filesystem::path rootfs;
    std::vector<BindMount> binds;
    std::string workdir;
    std::uint64_t tmpfs_bytes = 0;
    std::uint64_t memory_bytes = 0;
    std::uint64_t max_processes = 0;
    double cpus = 0;
    // Installed in pid 1 before it is ready, so that no filter is compiled into the kernel
    // on the request's path; pid 1 and the program's process before its execve run under it.
    std::shared_ptr<const SeccompFilter> seccomp;

    static SandboxShape of(const RunSpec& spec);
    bool operator==(const SandboxShape&) const = default;
};

// The plan's sandbox part (rootfs, mountpoints, tmpfs options, the seccomp filter); throws
// SetupError on anything it cannot represent safely.
ChildPlan make_sandbox_plan(const SandboxShape& shape, uid_t inside_id, int last_capability);
// Turns the plan's mountpoints into paths inside the rootfs, for a pid 1 that starts with a
// mount template's copy of the rootfs as its root.
void use_mount_template(ChildPlan& plan);
// Fills in (or replaces) the program's part: input files, collected files, argv, environment,
// rlimits. Pointers into `spec` are kept. Throws SetupError like make_sandbox_plan, also for
// a spec whose filter is not the sandbox's.
void plan_program(const RunSpec& spec, ChildPlan& plan);

// The sandbox's pid 1. Never returns.
[[noreturn]] void run_init(const ChildPlan& plan) noexcept;

}  // namespace isolate
