#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cgroup/cgroup_fs.h"
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

class V2RunCgroup final : public RunCgroup {
  public:
    V2RunCgroup(std::shared_ptr<const V2Layout> layout, std::string name);
    ~V2RunCgroup() override;
    V2RunCgroup(const V2RunCgroup&) = delete;
    V2RunCgroup& operator=(const V2RunCgroup&) = delete;

    // Makes the directory and applies the limits. On a throw the destructor removes what
    // was made, so callers build through a unique_ptr.
    void build(const CgroupLimits& limits);

    const std::string& name() const override { return name_; }
    int clone_into_fd() const override { return dir_.fd.get(); }
    void attach(pid_t pid) override;
    std::uint64_t cpu_usage_ns() const override;
    Usage usage() const override;
    void kill_all() noexcept override;

  private:
    std::uint64_t read_u64(const UniqueFd& fd, const char* file, const char* key) const;

    std::shared_ptr<const V2Layout> layout_;
    std::string name_;
    fs::Dir dir_;
    UniqueFd cpu_stat_;
    UniqueFd memory_peak_;  // memory.peak, or memory.current before kernel 5.19
    bool peak_is_sampled_ = false;
    mutable std::atomic<std::uint64_t> sampled_peak_{0};
    UniqueFd memory_events_;
    UniqueFd pids_peak_;  // absent on older kernels
};

class V2Backend final : public Backend {
  public:
    // Sets up delegation (see v2.cpp), creates <own>/<subtree> and removes what a crashed
    // earlier instance left inside. Throws SetupError.
    V2Backend(const std::string& subtree, const V2Location& location);
    ~V2Backend() override;

    std::string name() const override { return "v2"; }
    // Thread-safe: it only reads the layout.
    std::unique_ptr<RunCgroup> create(const std::string& run_name,
                                      const CgroupLimits& limits) override;

  private:
    std::shared_ptr<V2Layout> layout_;
    fs::Dir parent_;  // where the subtree lives, to remove it at the end
    std::string subtree_;
    UniqueFd subtree_lock_;  // held for our lifetime (fs::lock_subtree)
};

}  // namespace isolate::cgroup
