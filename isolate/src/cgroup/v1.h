#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cgroup/cgroup_fs.h"
#include "cgroup/kept_pool.h"
#include "isolate/cgroup.h"

namespace isolate::cgroup {

// Where one mounted v1 hierarchy keeps this process: <mount point>/<own path>.
struct V1Location {
    std::vector<std::string> controllers;  // the ones of ours it carries ("cpu", "cpuacct", ...)
    std::filesystem::path own_dir;
    bool has_cpuset = false;  // co-mounted cpuset needs cpus/mems copied into new children
};

struct V1Locations {
    std::vector<V1Location> hierarchies;
    std::vector<std::string> missing;  // required controllers with no hierarchy
};

// Reads /proc/self/mountinfo and /proc/self/cgroup. Mounts below cgroup_root are preferred
// when a controller is mounted more than once. Throws SetupError if /proc is unreadable.
V1Locations locate_v1(const std::filesystem::path& cgroup_root);

// The per-instance subtree in every hierarchy, shared by the backend and its runs so a
// run's directories stay reachable even if it outlives the backend.
struct V1Layout {
    struct Hierarchy {
        std::vector<std::string> controllers;
        bool has_cpuset = false;
        fs::Dir subtree;  // <own dir>/<subtree name>
    };
    std::vector<Hierarchy> hierarchies;
    // Indexes into hierarchies; cpu is -1 when not mounted (then no cpus cap is possible).
    int memory = -1;
    int pids = -1;
    int cpuacct = -1;
    int cpu = -1;
    bool has_memsw = false;  // swap accounting is on: memory.memsw.* exist
};

// A run's directories, one in each hierarchy and all named box-<n>, with the control files
// a run uses held open. When a run leaves them clean the next run takes them (KeptPool),
// instead of making and removing a directory in every hierarchy: a mkdir and rmdir there
// cost ~50 µs of kernel work each (~120 µs for memory, whose asynchronous offlining costs as
// much again). They are never renamed (that took the global cgroup lock twice per run).
// Nothing a run leaves in them reaches the next one:
// - no task: they are kept only if pids.current reads 0 and every cgroup.procs is empty once
//   pid 1 is reaped, and nothing inside a sandbox can move a task or make a child cgroup
//   (it has no cgroupfs);
// - little memory: the pool hands out only a set whose memory (and swap) usage reads at most
//   kKeptMemoryLeftover (kept_pool.h says what that leaves);
// - no figure or limit: cpuacct.usage is reset to 0, memory.max_usage_in_bytes to the usage
//   at the start, the OOM kills are counted from that start; pids.max, the memory limits and
//   the CPU quota are written for the new run (a quota write also refills the bandwidth and
//   lifts any throttling).
// The sandbox cannot see any of these files. What stays is what no run can read and the daemon
// never reports: pids.events' count of refused forks, cpu.stat's throttling totals, memory.failcnt
// and memory.stat's event counters, and the scheduler's decaying load figures for the group.
struct V1DirSet {
    // Set while the set waits in the pool, not in use: its directories are removed from
    // the layout's subtrees when it is destroyed there.
    std::shared_ptr<const V1Layout> layout;
    std::chrono::steady_clock::time_point kept_since;
    std::string name;
    std::vector<fs::Dir> dirs;    // parallel to the hierarchies
    std::vector<UniqueFd> tasks;  // likewise; `tasks`, opened for writing
    std::vector<UniqueFd> procs;  // likewise; cgroup.procs, read before the set is kept
    UniqueFd cpuacct_usage;       // read-write: writing 0 resets it
    UniqueFd pids_current;
    UniqueFd pids_max;          // write-only
    UniqueFd memory_usage;      // memory.memsw.usage_in_bytes if it exists (swap too), else
                                // memory.usage_in_bytes
    UniqueFd memory_max_usage;  // read-write: writing 0 resets the peak to the usage now
    UniqueFd memory_limit;      // write-only, like memsw_limit
    UniqueFd memsw_limit;       // invalid without swap accounting
    UniqueFd oom_control;
    // The limits written now; 0 is none, as in CgroupLimits.
    std::uint64_t max_tasks = 0;
    std::uint64_t memory_bytes = 0;
    bool quota_set = false;              // cpu.cfs_quota_us is not -1
    std::uint64_t oom_kills_before = 0;  // memory.oom_control's oom_kill when the run began

    V1DirSet() = default;
    V1DirSet(const V1DirSet&) = delete;
    V1DirSet& operator=(const V1DirSet&) = delete;
    ~V1DirSet();

    // True when no task is in any of them; false too if that cannot be read.
    bool surely_empty() const noexcept;
    // True when memory_usage reads at most kKeptMemoryLeftover.
    bool little_memory_charged() const noexcept;
};

using V1KeptPool = KeptPool<V1DirSet>;

class V1RunCgroup final : public RunCgroup {
  public:
    V1RunCgroup(std::shared_ptr<const V1Layout> layout, std::shared_ptr<V1KeptPool> pool);
    ~V1RunCgroup() override;
    V1RunCgroup(const V1RunCgroup&) = delete;
    V1RunCgroup& operator=(const V1RunCgroup&) = delete;

    // Takes a kept set or makes one, and applies the limits. On a throw the destructor
    // removes whatever was made, so callers build through a unique_ptr.
    void build(const CgroupLimits& limits);

    const std::string& name() const override { return set_->name; }
    int clone_into_fd() const override { return -1; }
    void attach(pid_t pid) override;
    std::vector<int> self_join_fds() const override;
    std::uint64_t cpu_usage_ns() const override;
    Usage usage() const override;
    void kill_all() noexcept override;

  private:
    // Takes a kept set and readies it for this run; false when none is ready to be taken,
    // or the one taken could not be readied (then it is removed).
    bool reuse_kept(const CgroupLimits& limits);
    void make_dirs();
    void apply_limits(const CgroupLimits& limits);
    std::string read_oom_control() const;  // throws SetupError naming the file
    const fs::Dir& dir(int hierarchy) const;
    std::vector<const fs::Dir*> node() const;  // every hierarchy's directory
    // Hands the set to the pool; false (and nothing done) unless it is surely empty.
    bool keep_for_reuse() noexcept;
    bool remove_empty() noexcept;

    std::shared_ptr<const V1Layout> layout_;
    std::shared_ptr<V1KeptPool> pool_;
    bool built_ = false;
    std::unique_ptr<V1DirSet> set_;
};

class V1Backend final : public Backend {
  public:
    // Creates <own dir>/<subtree> in every hierarchy and removes what a crashed earlier
    // instance left inside. Throws SetupError.
    V1Backend(const std::string& subtree, const V1Locations& locations);
    ~V1Backend() override;

    std::string name() const override { return "v1"; }
    ReuseStats reuse_stats() const override {
        return {kept_pool_->made.load(), kept_pool_->reused.load()};
    }
    // Thread-safe: it reads the layout, and the pool locks itself.
    std::unique_ptr<RunCgroup> create(const std::string& run_name,
                                      const CgroupLimits& limits) override;

  private:
    std::shared_ptr<V1Layout> layout_;
    std::shared_ptr<V1KeptPool> kept_pool_;
    std::vector<fs::Dir> own_dirs_;  // parents of the subtrees, to remove them at the end
    std::string subtree_;
    UniqueFd subtree_lock_;  // held for our lifetime (fs::lock_subtree)
};

}  // namespace isolate::cgroup
