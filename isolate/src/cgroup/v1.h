#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cgroup/cgroup_fs.h"
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

// A run's directories in the hierarchies that do not carry memory (pids, cpuacct, and cpu
// where it is mounted apart from memory), emptied by its end and kept for a later run
// instead of being removed and made again: a mkdir and rmdir there cost ~50 µs of kernel
// work per hierarchy, against ~5 µs for a rename. Nothing a run leaves in them reaches the
// next one:
// - no task: they are kept only if pids.current reads 0 and every cgroup.procs is empty once
//   pid 1 is reaped, and nothing inside a sandbox can move a task or make a child cgroup
//   (it has no cgroupfs);
// - no figure or limit: cpuacct.usage is reset to 0, pids.max and the CPU quota are written
//   for the new run (a quota write also refills the bandwidth and lifts any throttling).
// What stays is what no run can read and the daemon never reports: pids.events' count of
// refused forks, cpu.stat's throttling totals, and the scheduler's decaying load figures for
// the group. The memory cgroup is always made anew: page cache and kernel memory stay
// charged to the memcg that first touched them, so a reused one would not start at zero.
struct V1KeptDirs {
    // Set while the directories are kept, not in use: they are removed with this.
    std::shared_ptr<const V1Layout> layout;
    std::vector<fs::Dir> dirs;    // parallel to the hierarchies; invalid for memory's
    std::vector<UniqueFd> tasks;  // likewise; `tasks`, opened for writing
    UniqueFd cpuacct_usage;       // read-write: writing 0 resets it
    UniqueFd pids_current;
    UniqueFd pids_max;       // write-only
    bool quota_set = false;  // cpu.cfs_quota_us is not -1

    V1KeptDirs() = default;
    V1KeptDirs(const V1KeptDirs&) = delete;
    V1KeptDirs& operator=(const V1KeptDirs&) = delete;
    ~V1KeptDirs();

    // Renames every directory to `name`, all or none. Returns 0 or the errno.
    int rename_to(const std::string& name, const V1Layout& layout) noexcept;
    // True when no task is left in any of them; false too if that cannot be read.
    bool surely_empty() const noexcept;
};

// The kept directories waiting for a run; shared by the backend and its runs.
class V1KeptPool {
  public:
    explicit V1KeptPool(std::size_t capacity) : capacity_(capacity) { kept_.reserve(capacity); }
    std::unique_ptr<V1KeptDirs> take();
    // Keeps `kept` under a name of its own (kept-<n>), or removes it when the pool is full
    // or closed, or the rename fails.
    void put(std::unique_ptr<V1KeptDirs> kept);
    // Removes every kept directory and every later one handed in (the backend is going).
    void close();

  private:
    const std::size_t capacity_;
    std::mutex mutex_;
    std::vector<std::unique_ptr<V1KeptDirs>> kept_;
    bool closed_ = false;
    std::uint64_t serial_ = 0;
};

class V1RunCgroup final : public RunCgroup {
  public:
    V1RunCgroup(std::shared_ptr<const V1Layout> layout, std::shared_ptr<V1KeptPool> pool,
                std::string name);
    ~V1RunCgroup() override;
    V1RunCgroup(const V1RunCgroup&) = delete;
    V1RunCgroup& operator=(const V1RunCgroup&) = delete;

    // Makes the directories and applies the limits. On a throw the destructor removes
    // whatever was made, so callers build through a unique_ptr.
    void build(const CgroupLimits& limits);

    int clone_into_fd() const override { return -1; }
    void attach(pid_t pid) override;
    std::vector<int> self_join_fds() const override;
    std::uint64_t cpu_usage_ns() const override;
    Usage usage() const override;
    void kill_all() noexcept override;

  private:
    // Takes kept directories for the hierarchies without memory, under this run's name;
    // false when there are none (or they could not be renamed), so build() makes them.
    bool reuse_kept();
    void make_dir(std::size_t hierarchy);
    const fs::Dir& dir(int hierarchy) const;
    std::vector<const fs::Dir*> node() const;  // every hierarchy's directory
    // Hands the directories outside memory to the pool after removing memory's; false (and
    // nothing done) unless the run left no task behind.
    bool keep_for_reuse() noexcept;
    bool remove_empty() noexcept;

    std::shared_ptr<const V1Layout> layout_;
    std::shared_ptr<V1KeptPool> pool_;
    std::string name_;
    bool built_ = false;
    // The directories outside memory, their `tasks` and counters, whether kept or made.
    std::unique_ptr<V1KeptDirs> own_;
    fs::Dir memory_dir_;
    UniqueFd memory_tasks_;
    UniqueFd memory_max_usage_;
    UniqueFd oom_control_;
};

class V1Backend final : public Backend {
  public:
    // Creates <own dir>/<subtree> in every hierarchy and removes what a crashed earlier
    // instance left inside. Throws SetupError.
    V1Backend(const std::string& subtree, const V1Locations& locations);
    ~V1Backend() override;

    std::string name() const override { return "v1"; }
    // Thread-safe: it only reads the layout.
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
