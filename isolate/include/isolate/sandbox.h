#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "isolate/cgroup.h"
#include "isolate/run_spec.h"

namespace isolate {

struct SandboxConfig {
    // Slot n runs as host uid/gid uid_base + n. Never 0; must not belong to anyone else.
    uid_t uid_base = 1'000'000;
    unsigned slots = 64;
    // The uid and gid the program sees inside.
    uid_t inside_uid = 1000;
    // How long namespace/mount setup may take before the run fails as internal_error.
    unsigned setup_timeout_ms = 10'000;
    // New network namespaces kept ready by a background thread for the slots to take (see
    // netns_pool.h); 0 makes every run create its own on its request path.
    unsigned prepared_netns = 4;
    // A slot's sandboxes join the network namespace its last run used, for as long as runs
    // leave it exactly as it was new (netns_pool.h); false gives every run a new one. Needs
    // prepared_netns.
    bool keep_clean_netns = true;
    // pid 1 shares the supervisor's memory instead of being a copy-on-write clone of it
    // (see init_spawner.h). Ignored where unsupported (not x86_64), where the copy remains.
    bool init_shares_memory = true;
    // Build each slot's next sandbox ahead, between runs (prepare_slot): cgroup, namespaces,
    // mounts, pid 1 and its seccomp filter, all but the program, in the shape of the first
    // run after the last prepare_slot(). A run whose shape (rootfs, binds, working directory,
    // memory, process and tmpfs limits, CPU cap, seccomp filter) matches uses it; each is used
    // once. Also leaves a run's last teardown (pid 1's exit, removing its cgroup) to prepare_slot()
    // or the slot's next run. Needs init_shares_memory.
    bool prepare_ahead = false;
    // Slot n's supervisor thread (see pin_current_thread) and its sandboxes' pid 1 run on the
    // n-th CPU of the set this process may use at construction, round robin: a hand-off
    // between the two then wakes no other CPU, which on a VM costs a host round trip. The
    // program gets that whole set back before its execve, so it sees the CPUs it always did.
    bool pin_slots = false;
};

struct SandboxState;

// Runs programs under full isolation. Thread-safe for concurrent runs in distinct slots.
class Sandbox {
  public:
    Sandbox(SandboxConfig config, std::unique_ptr<cgroup::Backend> cgroups);
    ~Sandbox();
    Sandbox(const Sandbox&) = delete;
    Sandbox& operator=(const Sandbox&) = delete;

    RunResult run(const RunSpec& spec);

    // What prepare_slot() did. A failed build costs nothing but speed (the next run builds
    // its own sandbox, and reports any error itself), so it is reported, not thrown.
    struct PrepareOutcome {
        enum class Kind { nothing_to_do, built, failed } kind = Kind::nothing_to_do;
        std::string error;  // why, when failed
    };
    // Call between a slot's jobs (a job being one or more runs), off any request's path:
    // finishes tearing down the slot's last run, then (with prepare_ahead) builds its next
    // sandbox in the shape of the last job's first run. Does nothing if the slot is running.
    PrepareOutcome prepare_slot(unsigned slot);

    struct PreparedStats {
        std::uint64_t used = 0;       // runs that found their sandbox built ahead
        std::uint64_t discarded = 0;  // sandboxes built ahead for a shape that did not come
        std::uint64_t failed = 0;     // builds ahead that failed
    };
    PreparedStats prepared_stats() const;

    struct NetnsStats {
        std::uint64_t kept = 0;      // sandboxes that joined their slot's namespace again
        std::uint64_t replaced = 0;  // namespaces dropped because a run left a trace in them
        std::uint64_t ready = 0;     // made ahead and waiting in the pool (prepared_netns at most)
        // Of `kept`, those after runs that made no socket but unix ones, where only lo's counters
        // and the unix sockets were read (netns_pool.h).
        std::uint64_t kept_unix_only = 0;
    };
    NetnsStats netns_stats() const;

    // How finished runs' mount namespaces were freed (src/namespace_releaser.h).
    struct MountNamespaceStats {
        std::uint64_t released = 0;        // by the releaser's threads, off the slot's path
        std::uint64_t closed_by_slot = 0;  // by the slot, with the releaser's backlog full
        std::uint64_t freed_by_pid1 = 0;   // by pid 1's exit: the kernel gave no descriptor
        std::size_t pending = 0;           // handed to the releaser, not yet closed
    };
    MountNamespaceStats mount_namespace_stats() const;

    // Moves the calling thread, which makes slot `slot`'s calls, onto the slot's CPU (with
    // pin_slots). False if the kernel refused; the slot then works as before, only slower.
    bool pin_current_thread(unsigned slot) const;

    const SandboxConfig& config() const { return config_; }
    const cgroup::Backend& cgroups() const { return *cgroups_; }

  private:
    SandboxConfig config_;
    std::unique_ptr<cgroup::Backend> cgroups_;
    std::unique_ptr<SandboxState> state_;
};

}  // namespace isolate
