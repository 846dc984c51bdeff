#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <memory>
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

class V1RunCgroup final : public RunCgroup {
  public:
    V1RunCgroup(std::shared_ptr<const V1Layout> layout, std::string name);
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
    bool remove_empty() noexcept;

    std::shared_ptr<const V1Layout> layout_;
    std::string name_;
    std::vector<fs::Dir> dirs_;  // parallel to layout_->hierarchies; invalid until made
    UniqueFd cpuacct_usage_;
    UniqueFd memory_max_usage_;
    UniqueFd oom_control_;
    std::vector<UniqueFd> tasks_;  // parallel to dirs_
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
    std::vector<fs::Dir> own_dirs_;  // parents of the subtrees, to remove them at the end
    std::string subtree_;
    UniqueFd subtree_lock_;  // held for our lifetime (fs::lock_subtree)
};

}  // namespace isolate::cgroup
