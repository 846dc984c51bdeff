#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace isolate::cgroup {

struct CgroupLimits {
    std::uint64_t memory_bytes = 0;  // 0 = no limit
    std::uint64_t max_tasks = 0;     // processes and threads; 0 = no limit
    double cpus = 0;                 // 0 = no rate cap
};

struct Usage {
    std::uint64_t cpu_ns = 0;
    std::uint64_t memory_peak_bytes = 0;
    std::uint64_t oom_kills = 0;
    // 0 when the kernel does not report it, and for a run on a handed-on v2 cgroup (pids.peak
    // cannot be reset).
    std::uint64_t tasks_peak = 0;
};

// One run's cgroup (one directory per hierarchy on v1). The destructor hands the directories
// on to a later run if the run left them empty and the backend can reset them (Backend::
// reuse_stats), or kills whatever is still inside and removes them.
class RunCgroup {
  public:
    virtual ~RunCgroup() = default;
    // The directory's name below the backend's subtree (on v1, in every hierarchy): "box-<n>",
    // named after the set of directories, which later runs may use again, not after the run.
    virtual const std::string& name() const = 0;
    // v2: a directory fd for clone3(CLONE_INTO_CGROUP); v1: -1 (use attach()).
    virtual int clone_into_fd() const = 0;
    // Moves a process that this library started (and that has not run anything yet) in.
    virtual void attach(pid_t pid) = 0;
    // v1: this cgroup's `tasks` files, opened for writing, freezer first. A single-threaded
    // process that writes "0" to each moves itself in without the global lock that moving
    // another pid takes (an RCU grace period: ~15 ms per run). v2: empty (use clone_into_fd).
    virtual std::vector<int> self_join_fds() const { return {}; }
    virtual std::uint64_t cpu_usage_ns() const = 0;
    virtual Usage usage() const = 0;
    // Kills every task inside; safe to call repeatedly.
    virtual void kill_all() noexcept = 0;
};

class Backend {
  public:
    virtual ~Backend() = default;
    virtual std::string name() const = 0;  // "v1" or "v2"
    // Creates the run's cgroup below this backend's own subtree, with the limits applied.
    // Throws SetupError if any limit cannot be applied.
    virtual std::unique_ptr<RunCgroup> create(const std::string& run_name,
                                              const CgroupLimits& limits) = 0;

    // How often runs made directories and took ones an earlier run handed on (v2 hands
    // nothing on before Linux 6.12: reused stays 0).
    struct ReuseStats {
        std::uint64_t made = 0;    // runs that made new directories
        std::uint64_t reused = 0;  // runs that took an earlier run's
    };
    virtual ReuseStats reuse_stats() const { return {}; }
};

struct BackendOptions {
    // The subtree created below the process's own cgroup; one per daemon instance.
    std::string subtree = "sandboxd";
    std::filesystem::path cgroup_root = "/sys/fs/cgroup";
    // "" chooses automatically; "v1" or "v2" insists on one (tests) and fails without it.
    std::string force = "";
};

// Chooses v2 when cgroup_root is cgroup2 with memory and pids available to our cgroup (cpu
// too if a run asks for a rate cap), else v1 if the memory, pids, cpuacct and freezer
// hierarchies are mounted; throws SetupError saying what is missing otherwise.
// Removes the leftovers of a crashed earlier process using the same subtree.
std::unique_ptr<Backend> detect_backend(const BackendOptions& options);

}  // namespace isolate::cgroup
