#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cgroup/cgroup_fs.h"
#include "cgroup/kept_pool.h"
#include "isolate/cgroup.h"

namespace isolate::cgroup {

// This process's place in a cgroup2 hierarchy.
struct V2Location {
    std::filesystem::path root;            // the cgroup2 mount
    std::string own_path;                  // from "0::<path>" in /proc/self/cgroup
    std::filesystem::path own_dir;         // root + own_path
    std::vector<std::string> controllers;  // own cgroup.controllers
};

// Returns nullopt, with the reason in *why_not, unless cgroup_root is a cgroup2 mount whose
// controllers available to our cgroup include memory and pids.
std::optional<V2Location> locate_v2(const std::filesystem::path& cgroup_root, std::string* why_not);

struct V2Layout {
    fs::Dir subtree;
    std::string enable;  // "+memory +pids [+cpu]": what runs need in cgroup.subtree_control
    bool has_cpu = false;
};

// A run's cgroup, named box-<n>, with the control files a run uses held open. On kernels
// where memory.peak can be reset through an open file (6.12 and later) a run that leaves it
// clean hands it on to the next run (KeptPool), as v1 does: its mkdir, rmdir and the
// memcg's asynchronous offlining are most of what a cgroup costs a run. Earlier kernels
// keep the peak since the cgroup was made, so there every run makes its own. Nothing a run
// leaves in a kept one reaches the next:
// - no task: it is kept only if cgroup.events reads "populated 0" and "frozen 0" and
//   cgroup.stat no descendant, once pid 1 is reaped; nothing inside a sandbox can move a task
//   or make a child cgroup (it has no cgroupfs);
// - little memory: the pool hands out only one whose memory.current reads at most
//   kKeptMemoryLeftover (kept_pool.h). memory.swap.max is 0 where swap is accounted, so no
//   run's memory is in swap; where it is not, swap is not charged to a cgroup at all;
// - no figure or limit: memory.peak is reset to the usage at the start through the fd that is
//   read at the end; CPU time and OOM kills are counted from what cpu.stat and memory.events
//   read at the start; memory.max, pids.max and cpu.max are written for the new run (a
//   cpu.max write also refills the bandwidth and lifts any throttling). pids.peak cannot be
//   reset, so a run in a kept cgroup reports no tasks_peak.
// What stays is what no run can read and the daemon never reports: memory.events' counters
// other than oom_kill, pids.events, cpu.stat's throttling totals, memory.stat, and the
// pressure (PSI) averages.
struct V2Dir {
    // Set while it waits in the pool, not in use: it is removed from the layout's subtree
    // when it is destroyed there.
    std::shared_ptr<const V2Layout> layout;
    std::chrono::steady_clock::time_point kept_since;
    std::string name;
    fs::Dir dir;
    UniqueFd cgroup_events;
    UniqueFd cgroup_stat;
    UniqueFd cpu_stat;
    // memory.peak, read-write where a write resets it (then the cgroup can be handed on);
    // memory.current before kernel 5.19, which has no memory.peak.
    UniqueFd memory_peak;
    bool peak_resettable = false;
    bool peak_is_sampled = false;
    UniqueFd memory_current;  // only where the peak is resettable: the pool's memory check
    UniqueFd memory_events;
    UniqueFd pids_peak;  // absent on older kernels
    // The limits written now; 0 is none, as in CgroupLimits. cpu_max is cpu.max's value.
    std::uint64_t max_tasks = 0;
    std::uint64_t memory_bytes = 0;
    std::string cpu_max = "max 100000";
    // What cpu.stat's usage_usec and memory.events' oom_kill read when the run began.
    std::uint64_t cpu_usec_before = 0;
    std::uint64_t oom_kills_before = 0;
    bool handed_on = false;  // an earlier run used it

    V2Dir() = default;
    V2Dir(const V2Dir&) = delete;
    V2Dir& operator=(const V2Dir&) = delete;
    ~V2Dir();

    // True when no task is in it or below it, it is not frozen, and it has no child; false
    // too if that cannot be read.
    bool surely_empty() const noexcept;
    // True when memory.current reads at most kKeptMemoryLeftover.
    bool little_memory_charged() const noexcept;
};

using V2KeptPool = KeptPool<V2Dir>;

class V2RunCgroup final : public RunCgroup {
  public:
    V2RunCgroup(std::shared_ptr<const V2Layout> layout, std::shared_ptr<V2KeptPool> pool);
    ~V2RunCgroup() override;
    V2RunCgroup(const V2RunCgroup&) = delete;
    V2RunCgroup& operator=(const V2RunCgroup&) = delete;

    // Takes a kept cgroup or makes one, and applies the limits. On a throw the destructor
    // removes what was made, so callers build through a unique_ptr.
    void build(const CgroupLimits& limits);

    const std::string& name() const override { return dir_->name; }
    int clone_into_fd() const override { return dir_->dir.fd.get(); }
    void attach(pid_t pid) override;
    std::uint64_t cpu_usage_ns() const override;
    Usage usage() const override;
    void kill_all() noexcept override;

  private:
    // Takes a kept cgroup and readies it for this run; false when none is ready to be taken,
    // or the one taken could not be readied (then it is removed).
    bool reuse_kept(const CgroupLimits& limits);
    void make_dir();
    void apply_limits(const CgroupLimits& limits);
    std::uint64_t read_u64(const UniqueFd& fd, const char* file, const char* key) const;
    // Hands the cgroup to the pool; false (and nothing done) unless it can be reset and is
    // surely empty.
    bool keep_for_reuse() noexcept;

    std::shared_ptr<const V2Layout> layout_;
    std::shared_ptr<V2KeptPool> pool_;
    bool built_ = false;
    std::unique_ptr<V2Dir> dir_;
    mutable std::atomic<std::uint64_t> sampled_peak_{0};
};

class V2Backend final : public Backend {
  public:
    // Sets up delegation (see v2.cpp), creates <own>/<subtree> and removes what a crashed
    // earlier instance left inside. Throws SetupError.
    V2Backend(const std::string& subtree, const V2Location& location);
    ~V2Backend() override;

    std::string name() const override { return "v2"; }
    ReuseStats reuse_stats() const override {
        return {kept_pool_->made.load(), kept_pool_->reused.load()};
    }
    // Thread-safe: it reads the layout, and the pool locks itself.
    std::unique_ptr<RunCgroup> create(const std::string& run_name,
                                      const CgroupLimits& limits) override;

  private:
    std::shared_ptr<V2Layout> layout_;
    std::shared_ptr<V2KeptPool> kept_pool_;
    fs::Dir parent_;  // where the subtree lives, to remove it at the end
    std::string subtree_;
    UniqueFd subtree_lock_;  // held for our lifetime (fs::lock_subtree)
};

}  // namespace isolate::cgroup
