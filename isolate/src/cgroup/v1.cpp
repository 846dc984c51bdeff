#include "cgroup/v1.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>
#include <utility>

#include "isolate/error.h"

namespace isolate::cgroup {

namespace {

using namespace std::chrono_literals;

struct ControllerSpec {
    const char* name;
    bool required;
};
// cpu only enforces a rate cap; without it runs that ask for none still work.
constexpr ControllerSpec kControllers[] = {
    {"memory", true}, {"pids", true}, {"cpuacct", true}, {"cpu", false}};

constexpr auto kTeardownBudget = 2000ms;
constexpr auto kKillBudget = 100ms;

bool contains(const std::vector<std::string>& v, std::string_view s) {
    return std::find(v.begin(), v.end(), s) != v.end();
}

bool is_under(const std::filesystem::path& p, const std::filesystem::path& root) {
    const auto rel = p.lexically_relative(root);
    return !rel.empty() && *rel.begin() != "..";
}

// The own cgroup's path inside the mounted filesystem. A mount whose root is not "/" (a
// container bind-mounting its part of the hierarchy without a cgroup namespace) shows the
// full path in /proc/self/cgroup, so that root is stripped; inside a cgroup namespace the
// path is already relative to it.
std::filesystem::path own_dir_in(const fs::MountEntry& m, const std::string& own) {
    std::string rel = own;
    if (m.root != "/" && own.compare(0, m.root.size(), m.root) == 0 &&
        (own.size() == m.root.size() || own[m.root.size()] == '/'))
        rel = own.substr(m.root.size());
    return m.mount_point / std::filesystem::path(rel).relative_path();
}

// Pointers to the same relative directory in every hierarchy (invalid where missing).
using Node = std::vector<const fs::Dir*>;

bool node_empty(const Node& dirs) noexcept {
    return std::all_of(dirs.begin(), dirs.end(), [](const fs::Dir* d) {
        return !d->valid() || fs::procs_empty(d->fd.get());
    });
}

// Unlike node_empty(), a file that cannot be read counts as not empty.
bool node_surely_empty(const Node& dirs) noexcept {
    try {
        std::string content;
        return std::all_of(dirs.begin(), dirs.end(), [&](const fs::Dir* d) {
            return !d->valid() ||
                   (fs::try_read_file_at(d->fd.get(), "cgroup.procs", content) == 0 &&
                    fs::parse_pids(content).empty());
        });
    } catch (...) {
        return false;
    }
}

// Kills every task listed in any hierarchy until none is left. No freezer is needed to
// outrun a fork bomb: a task that has been sent SIGKILL can no longer fork (copy_process
// fails with a fatal signal pending), so each round leaves at most the children born during
// it, pids.max bounds those, and the next round gets them. A sandbox's tasks all die with
// its pid 1 anyway (the kernel kills a pid namespace whose init exits); this is for what
// is left when that cannot be relied on (a crashed daemon's cgroups, a test's children).
// An empty cgroup is recognised first and left alone, which is the usual case: pid 1's exit
// has already emptied it. Returns whether the cgroup is empty, giving up when the backoff
// expires (a task stuck in an uninterruptible sleep).
bool kill_until_empty(const Node& dirs, fs::Backoff& backoff) noexcept {
    if (node_surely_empty(dirs)) return true;
    do {
        for (const fs::Dir* d : dirs)
            if (d->valid()) fs::kill_listed(d->fd.get());
    } while (!node_empty(dirs) && backoff.sleep());
    return node_empty(dirs);
}

// Kills and removes <parent>/<name> in every hierarchy, children first. Returns 0 or the
// errno of the first directory that could not be removed.
int destroy_node(const Node& parents, const std::string& name, fs::Backoff& backoff) noexcept {
    try {
        std::vector<fs::Dir> dirs;
        dirs.reserve(parents.size());
        std::set<std::string> children;
        for (const fs::Dir* p : parents) {
            dirs.push_back(fs::open_subdir(*p, name, nullptr));
            for (auto& c : fs::list_subdirs(dirs.back())) children.insert(std::move(c));
        }
        Node node;
        for (const auto& d : dirs) node.push_back(&d);

        int result = 0;
        for (const auto& child : children)
            if (const int e = destroy_node(node, child, backoff); e != 0 && result == 0) result = e;
        kill_until_empty(node, backoff);
        for (const fs::Dir* p : parents)
            if (const int e = fs::rmdir_retry(*p, name, backoff); e != 0 && result == 0) result = e;
        return result;
    } catch (...) {
        return ENOMEM;
    }
}

std::string limit_string(std::uint64_t value) {
    return value ? std::to_string(value) : "max";
}

}  // namespace

V1Locations locate_v1(const std::filesystem::path& cgroup_root) {
    const fs::Dir proc = fs::open_dir("/proc/self");
    const auto mounts = fs::parse_mountinfo(fs::read_file_at(proc, "mountinfo"));
    const auto own = fs::parse_proc_cgroup(fs::read_file_at(proc, "cgroup"));

    V1Locations out;
    for (const auto& spec : kControllers) {
        const auto entry = std::find_if(own.begin(), own.end(), [&](const auto& e) {
            return e.hierarchy_id != 0 && contains(e.controllers, spec.name);
        });
        const fs::MountEntry* mount = nullptr;
        if (entry != own.end()) {
            for (const auto& m : mounts) {
                if (m.fstype != "cgroup" || !contains(m.super_options, spec.name)) continue;
                if (!mount || (is_under(m.mount_point, cgroup_root) &&
                               !is_under(mount->mount_point, cgroup_root)))
                    mount = &m;
            }
        }
        if (!mount) {
            if (spec.required) out.missing.emplace_back(spec.name);
            continue;
        }
        const auto dir = own_dir_in(*mount, entry->path);
        const auto same = std::find_if(out.hierarchies.begin(), out.hierarchies.end(),
                                       [&](const auto& h) { return h.own_dir == dir; });
        if (same != out.hierarchies.end()) {
            same->controllers.emplace_back(spec.name);
        } else {
            out.hierarchies.push_back({{spec.name}, dir, contains(mount->super_options, "cpuset")});
        }
    }
    return out;
}

V1DirSet::~V1DirSet() {
    if (!layout) return;
    try {
        for (std::size_t i = 0; i < dirs.size(); ++i) {
            if (!dirs[i].valid()) continue;
            // Empty by the time they were kept, so a plain rmdir is all there is to do.
            const int parent = layout->hierarchies[i].subtree.fd.get();
            if (::unlinkat(parent, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT)
                std::fprintf(stderr, "sandboxd: cannot remove kept cgroup %s (v1): %s\n",
                             dirs[i].path.c_str(), std::strerror(errno));
        }
    } catch (...) {
        // Out of memory for a message: what is left is removed as stale at the next start.
    }
}

bool V1DirSet::surely_empty() const noexcept {
    std::string content;
    if (!pids_current || fs::try_pread_value(pids_current.get(), content) != 0 ||
        fs::parse_u64(content) != 0)
        return false;
    for (const auto& list : procs) {
        bool empty = false;
        if (!list || fs::try_task_list_empty(list.get(), &empty) != 0 || !empty) return false;
    }
    return true;
}

bool V1DirSet::little_memory_charged() const noexcept {
    std::string content;
    return memory_usage && fs::try_pread_value(memory_usage.get(), content) == 0 &&
           fs::parse_u64(content).value_or(kKeptMemoryLeftover + 1) <= kKeptMemoryLeftover;
}

V1RunCgroup::V1RunCgroup(std::shared_ptr<const V1Layout> layout, std::shared_ptr<V1KeptPool> pool)
    : layout_(std::move(layout)), pool_(std::move(pool)), set_(std::make_unique<V1DirSet>()) {
    set_->dirs.resize(layout_->hierarchies.size());
    set_->tasks.resize(layout_->hierarchies.size());
    set_->procs.resize(layout_->hierarchies.size());
}

V1RunCgroup::~V1RunCgroup() {
    if (keep_for_reuse() || remove_empty()) return;
    Node parents;
    for (const auto& h : layout_->hierarchies) parents.push_back(&h.subtree);
    fs::Backoff backoff(kTeardownBudget);
    if (const int err = destroy_node(parents, set_->name, backoff); err != 0) {
        std::fprintf(stderr, "sandboxd: cannot remove cgroup %s (v1): %s\n",
                     (layout_->hierarchies.front().subtree.path / set_->name).c_str(),
                     std::strerror(err));
    }
}

bool V1RunCgroup::keep_for_reuse() noexcept {
    if (!built_ || !set_->surely_empty()) return false;
    set_->layout = layout_;
    try {
        pool_->put(std::move(set_));
    } catch (...) {
        // put() gave it up on the way out (removed with its V1DirSet).
    }
    return true;
}

// The usual end of a run that is not kept: pid 1 has been reaped, so its pid namespace and
// every task of the run are gone, and nothing inside could have made a child cgroup (the
// sandbox has no cgroupfs). Removing the directories is then all there is to do; the kernel
// refuses (EBUSY) to remove one that still holds a task or a child cgroup, and the general
// path, which lists, kills and removes, takes over from there.
bool V1RunCgroup::remove_empty() noexcept {
    const auto& hs = layout_->hierarchies;
    for (std::size_t i = 0; i < hs.size(); ++i) {
        if (::unlinkat(hs[i].subtree.fd.get(), set_->name.c_str(), AT_REMOVEDIR) != 0 &&
            errno != ENOENT)
            return false;
    }
    return true;
}

void V1RunCgroup::make_dirs() {
    set_->name = pool_->new_set_name();
    const std::string& name = set_->name;
    for (std::size_t i = 0; i < layout_->hierarchies.size(); ++i) {
        const auto& h = layout_->hierarchies[i];
        int made = fs::make_subdir(h.subtree, name);
        if (made == EEXIST) {
            // Sets have unique names and the backend removed what earlier instances left,
            // so only something from outside made it; it goes like a crashed run's.
            fs::Backoff backoff(kTeardownBudget);
            if (const int err = destroy_node({&h.subtree}, name, backoff); err != 0)
                throw_errno("cannot remove stale cgroup " + (h.subtree.path / name).string(), err);
            made = fs::make_subdir(h.subtree, name);
        }
        if (made != 0) throw_errno("mkdir " + (h.subtree.path / name).string(), made);
        int err = 0;
        fs::Dir dir = fs::open_subdir(h.subtree, name, &err);
        if (!dir.valid()) throw_errno("open " + dir.path.string(), err);
        if (h.has_cpuset) {
            // A v1 cpuset cgroup with empty cpus/mems refuses tasks (ENOSPC).
            for (const char* file : {"cpuset.cpus", "cpuset.mems"})
                fs::write_file_at(dir, file, fs::read_file_at(h.subtree, file));
        }
        // Opened here, as root, for the sandbox's pid 1 to join with; the kernel checks the
        // credentials of the opener.
        set_->tasks[i] = fs::open_file(dir, "tasks", O_WRONLY);
        set_->procs[i] = fs::open_file(dir, "cgroup.procs", O_RDONLY);
        set_->dirs[i] = std::move(dir);
    }

    const fs::Dir& pids = dir(layout_->pids);
    const fs::Dir& memory = dir(layout_->memory);
    set_->cpuacct_usage = fs::open_file(dir(layout_->cpuacct), "cpuacct.usage", O_RDWR);
    set_->pids_current = fs::open_file(pids, "pids.current", O_RDONLY);
    set_->pids_max = fs::open_file(pids, "pids.max", O_WRONLY);
    // With swap accounting, memsw counts memory and swap: swap a run left charged would
    // shrink the next run's memsw limit too.
    set_->memory_usage = fs::open_file(
        memory, layout_->has_memsw ? "memory.memsw.usage_in_bytes" : "memory.usage_in_bytes",
        O_RDONLY);
    set_->memory_max_usage = fs::open_file(memory, "memory.max_usage_in_bytes", O_RDWR);
    set_->memory_limit = fs::open_file(memory, "memory.limit_in_bytes", O_WRONLY);
    // It exists only with swap accounting, and without it there is no way to keep a run
    // off swap.
    if (layout_->has_memsw)
        set_->memsw_limit = fs::open_file(memory, "memory.memsw.limit_in_bytes", O_WRONLY);
    set_->oom_control = fs::open_file(memory, "memory.oom_control", O_RDONLY);
    // oom_kill_disable and swappiness are inherited from the subtree, where the backend set
    // them, and nothing else writes them. Checked anyway: with oom_kill_disable set, a run
    // over its limit would hang instead of being killed.
    if (fs::find_key_u64(read_oom_control(), "oom_kill_disable").value_or(0) != 0)
        fs::write_file_at(memory, "memory.oom_control", "0");
}

// Writes what differs from the limits the set has now (a new one has none), except the CPU
// quota, which is written whenever there is one: the write also refills the bandwidth and
// lifts a throttle the last run left.
void V1RunCgroup::apply_limits(const CgroupLimits& limits) {
    V1DirSet& set = *set_;
    if (limits.max_tasks != set.max_tasks) {
        fs::write_open_file(set.pids_max.get(), dir(layout_->pids), "pids.max",
                            limit_string(limits.max_tasks));
        set.max_tasks = limits.max_tasks;
    }

    if (limits.memory_bytes != set.memory_bytes) {
        const fs::Dir& memory = dir(layout_->memory);
        // "-1" is v1's "no limit"; memsw may never be below memory, so it goes first when
        // the limit rises and second when it falls.
        const std::string bytes = limits.memory_bytes ? std::to_string(limits.memory_bytes) : "-1";
        const bool rises = limits.memory_bytes == 0 ||
                           (set.memory_bytes != 0 && limits.memory_bytes > set.memory_bytes);
        auto write_memsw = [&] {
            if (set.memsw_limit)
                fs::write_open_file(set.memsw_limit.get(), memory, "memory.memsw.limit_in_bytes",
                                    bytes);
        };
        if (rises) write_memsw();
        fs::write_open_file(set.memory_limit.get(), memory, "memory.limit_in_bytes", bytes);
        if (!rises) write_memsw();
        set.memory_bytes = limits.memory_bytes;
    }

    if (limits.cpus > 0) {
        const double cpus = std::min(limits.cpus, 1e6);
        const long long quota = std::max(1000LL, std::llround(cpus * 100000));
        const fs::Dir& cpu = dir(layout_->cpu);
        // The period stays what it was set to; a new directory has the kernel's default.
        if (!set.quota_set) fs::write_file_at(cpu, "cpu.cfs_period_us", "100000");
        set.quota_set = true;
        fs::write_file_at(cpu, "cpu.cfs_quota_us", std::to_string(quota));
    } else if (set.quota_set) {
        fs::write_file_at(dir(layout_->cpu), "cpu.cfs_quota_us", "-1");
        set.quota_set = false;
    }
}

bool V1RunCgroup::reuse_kept(const CgroupLimits& limits) {
    std::unique_ptr<V1DirSet> kept = pool_->take();
    if (!kept) return false;
    kept->layout.reset();
    std::unique_ptr<V1DirSet> made = std::exchange(set_, std::move(kept));
    try {
        apply_limits(limits);
        fs::write_open_file(set_->cpuacct_usage.get(), dir(layout_->cpuacct), "cpuacct.usage", "0");
        fs::write_open_file(set_->memory_max_usage.get(), dir(layout_->memory),
                            "memory.max_usage_in_bytes", "0");
        set_->oom_kills_before = fs::find_key_u64(read_oom_control(), "oom_kill").value_or(0);
        return true;
    } catch (const std::exception& e) {
        // A limit it cannot take (a memory limit below what it still has charged, EBUSY):
        // it goes, and this run gets a new set. Its recorded limits may no longer be what
        // the files hold, so it is not kept either way.
        std::fprintf(stderr, "sandboxd: a kept cgroup (v1) is not used again: %s\n", e.what());
        set_->layout = layout_;
        set_ = std::move(made);
        return false;
    }
}

std::string V1RunCgroup::read_oom_control() const {
    std::string content;
    if (const int err = fs::try_pread_value(set_->oom_control.get(), content); err != 0)
        throw_errno("read " + (dir(layout_->memory).path / "memory.oom_control").string(), err);
    return content;
}

const fs::Dir& V1RunCgroup::dir(int hierarchy) const {
    return set_->dirs[static_cast<std::size_t>(hierarchy)];
}

void V1RunCgroup::build(const CgroupLimits& limits) {
    // Before a kept set is taken: a request no set could meet must not cost one.
    if (limits.cpus > 0 && layout_->cpu < 0)
        throw SetupError(
            "a CPU rate cap was requested but the cgroup v1 cpu controller is not mounted");
    if (limits.max_tasks > kPidMaxLimit)
        throw SetupError("pids.max cannot be above " + std::to_string(kPidMaxLimit) + ": " +
                         std::to_string(limits.max_tasks) + " was asked for");
    if (reuse_kept(limits)) {
        ++pool_->reused;
    } else {
        make_dirs();
        apply_limits(limits);
        ++pool_->made;
    }
    built_ = true;
}

Node V1RunCgroup::node() const {
    Node n;
    for (std::size_t i = 0; i < layout_->hierarchies.size(); ++i)
        n.push_back(&dir(static_cast<int>(i)));
    return n;
}

void V1RunCgroup::attach(pid_t pid) {
    const auto value = std::to_string(pid);
    for (const fs::Dir* d : node()) fs::write_file_at(*d, "cgroup.procs", value);
}

std::vector<int> V1RunCgroup::self_join_fds() const {
    // Memory first, so that pid 1's own allocations after the join are the run's.
    std::vector<int> fds{set_->tasks[static_cast<std::size_t>(layout_->memory)].get()};
    for (std::size_t i = 0; i < set_->tasks.size(); ++i)
        if (static_cast<int>(i) != layout_->memory) fds.push_back(set_->tasks[i].get());
    return fds;
}

std::uint64_t V1RunCgroup::cpu_usage_ns() const {
    std::string content;
    if (const int err = fs::try_pread_value(set_->cpuacct_usage.get(), content); err != 0)
        throw_errno("read " + (dir(layout_->cpuacct).path / "cpuacct.usage").string(), err);
    return fs::parse_u64(content).value_or(0);
}

Usage V1RunCgroup::usage() const {
    Usage u;
    u.cpu_ns = cpu_usage_ns();
    const fs::Dir& memory = dir(layout_->memory);
    std::string content;
    if (const int err = fs::try_pread_value(set_->memory_max_usage.get(), content); err != 0)
        throw_errno("read " + (memory.path / "memory.max_usage_in_bytes").string(), err);
    u.memory_peak_bytes = fs::parse_u64(content).value_or(0);
    const std::uint64_t oom_kills = fs::find_key_u64(read_oom_control(), "oom_kill").value_or(0);
    u.oom_kills = oom_kills > set_->oom_kills_before ? oom_kills - set_->oom_kills_before : 0;
    return u;
}

void V1RunCgroup::kill_all() noexcept {
    try {
        fs::Backoff backoff(kKillBudget);
        kill_until_empty(node(), backoff);
    } catch (...) {
    }
}

V1Backend::V1Backend(const std::string& subtree, const V1Locations& locations)
    : layout_(std::make_shared<V1Layout>()), subtree_(subtree) {
    fs::check_name(subtree, "subtree name");
    for (const auto& loc : locations.hierarchies) {
        fs::Dir own = fs::open_dir(loc.own_dir);
        if (const int err = fs::make_subdir(own, subtree); err != 0 && err != EEXIST)
            throw_errno("mkdir " + (loc.own_dir / subtree).string(), err);
        int err = 0;
        fs::Dir sub = fs::open_subdir(own, subtree, &err);
        if (!sub.valid()) throw_errno("open " + sub.path.string(), err);
        if (loc.has_cpuset) {
            for (const char* file : {"cpuset.cpus", "cpuset.mems"})
                if (fs::read_file_at(sub, file).find_first_not_of(" \n") == std::string::npos)
                    fs::write_file_at(sub, file, fs::read_file_at(own, file));
        }
        const int index = static_cast<int>(layout_->hierarchies.size());
        for (const auto& c : loc.controllers) {
            if (c == "memory") layout_->memory = index;
            if (c == "pids") layout_->pids = index;
            if (c == "cpuacct") layout_->cpuacct = index;
            if (c == "cpu") layout_->cpu = index;
        }
        layout_->hierarchies.push_back({loc.controllers, loc.has_cpuset, std::move(sub)});
        own_dirs_.push_back(std::move(own));
    }
    if (layout_->memory < 0 || layout_->pids < 0 || layout_->cpuacct < 0)
        throw SetupError("cgroup v1: the memory, pids and cpuacct hierarchies are all required");

    // Set once here, inherited by every run's directory when it is made.
    const fs::Dir& memory = layout_->hierarchies[static_cast<std::size_t>(layout_->memory)].subtree;
    // Before the cleanup below: what another live instance has in the subtree is not stale.
    subtree_lock_ = fs::lock_subtree(memory, fs::kSubtreeLockWait);
    layout_->has_memsw = fs::exists_at(memory.fd.get(), "memory.memsw.limit_in_bytes");
    // Best effort: older kernels refuse it (EBUSY) below a hierarchical parent, and the memsw
    // limit already keeps runs off swap where it matters.
    fs::try_write_file_at(memory.fd.get(), "memory.swappiness", "0");
    if (fs::find_key_u64(fs::read_file_at(memory, "memory.oom_control"), "oom_kill_disable")
            .value_or(0) != 0)
        fs::write_file_at(memory, "memory.oom_control", "0");

    kept_pool_ = std::make_shared<V1KeptPool>(kKeptCapacity);

    // Whatever is below our subtree now was left by an earlier instance that died without
    // cleaning up; its processes are ours to kill.
    Node parents;
    std::set<std::string> stale;
    for (const auto& h : layout_->hierarchies) {
        parents.push_back(&h.subtree);
        for (auto& c : fs::list_subdirs(h.subtree)) stale.insert(std::move(c));
    }
    for (const auto& name : stale) {
        fs::Backoff backoff(kTeardownBudget);
        if (const int err = destroy_node(parents, name, backoff); err != 0)
            throw_errno("cannot remove stale cgroup " +
                            (layout_->hierarchies.front().subtree.path / name).string(),
                        err);
    }
}

V1Backend::~V1Backend() {
    if (kept_pool_) kept_pool_->close();
    // Only an empty subtree goes away; runs still alive keep theirs (EBUSY is fine).
    for (const auto& own : own_dirs_) ::unlinkat(own.fd.get(), subtree_.c_str(), AT_REMOVEDIR);
}

std::unique_ptr<RunCgroup> V1Backend::create(const std::string& run_name,
                                             const CgroupLimits& limits) {
    // A run's directories are named after their set (V1DirSet), not the run: later runs use
    // them again.
    fs::check_name(run_name, "run name");
    auto run = std::make_unique<V1RunCgroup>(layout_, kept_pool_);
    run->build(limits);
    return run;
}

}  // namespace isolate::cgroup
