#include "cgroup/v1.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>

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
    {"memory", true}, {"pids", true}, {"cpuacct", true}, {"cpu", false}, {"freezer", true}};

constexpr auto kTeardownBudget = 2000ms;
constexpr auto kFreezeBudget = 100ms;

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

// Freezing first means nobody inside can fork or exit between reading cgroup.procs and
// the kill, so a fork bomb cannot outrun it. v1 frozen tasks keep a pending SIGKILL until
// thawed, hence the thaw at the end.
// An empty cgroup is left alone: nothing can enter it any more (pid 1 is dead or killed
// before this is called, and only pid 1 holds descriptors to join with), and each freeze
// and thaw flips a kernel static key, which patches kernel text and interrupts every CPU.
// That was ~0.5 ms of CPU per run, on every run, since pid 1's exit has already emptied it.
// Returns whether the cgroup was already empty.
bool kill_node(const Node& dirs, int freezer) noexcept {
    if (node_surely_empty(dirs)) return true;
    const fs::Dir* f = freezer >= 0 && dirs[freezer]->valid() ? dirs[freezer] : nullptr;
    bool frozen = false;
    if (f && fs::try_write_file_at(f->fd.get(), "freezer.state", "FROZEN") == 0) {
        frozen = true;
        // FREEZING lingers while a task sits in an uninterruptible sleep; kill anyway then.
        fs::Backoff backoff(kFreezeBudget);
        try {
            std::string state;
            while (fs::try_read_file_at(f->fd.get(), "freezer.state", state) == 0 &&
                   state.rfind("FROZEN", 0) != 0 && backoff.sleep()) {
            }
        } catch (...) {
        }
    }
    if (f) fs::kill_listed(f->fd.get());
    for (std::size_t i = 0; i < dirs.size(); ++i)
        if (static_cast<int>(i) != freezer && dirs[i]->valid()) fs::kill_listed(dirs[i]->fd.get());
    if (frozen) fs::try_write_file_at(f->fd.get(), "freezer.state", "THAWED");
    return false;
}

// Kills and removes <parent>/<name> in every hierarchy, children first. Returns 0 or the
// errno of the first directory that could not be removed.
int destroy_node(const Node& parents, const std::string& name, int freezer,
                 fs::Backoff& backoff) noexcept {
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
            if (const int e = destroy_node(node, child, freezer, backoff); e != 0 && result == 0)
                result = e;
        const bool was_empty = kill_node(node, freezer);
        // Stragglers are tasks that were still FREEZING: they hold a SIGKILL and cannot fork
        // any more, so plain kills suffice from here on.
        while (!was_empty && !node_empty(node) && backoff.sleep())
            for (const fs::Dir* d : node)
                if (d->valid()) fs::kill_listed(d->fd.get());
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

V1RunCgroup::V1RunCgroup(std::shared_ptr<const V1Layout> layout, std::string name)
    : layout_(std::move(layout)), name_(std::move(name)) {
    dirs_.resize(layout_->hierarchies.size());
}

V1RunCgroup::~V1RunCgroup() {
    if (remove_empty()) return;
    // destroy_node() starts with the same freeze-kill-thaw as kill_all().
    Node parents;
    for (const auto& h : layout_->hierarchies) parents.push_back(&h.subtree);
    fs::Backoff backoff(kTeardownBudget);
    if (const int err = destroy_node(parents, name_, layout_->freezer, backoff); err != 0) {
        std::fprintf(stderr, "sandboxd: cannot remove cgroup %s (v1): %s\n",
                     (layout_->hierarchies.front().subtree.path / name_).c_str(),
                     std::strerror(err));
    }
}

// The usual end of a run: pid 1 has been reaped, so its pid namespace and every task of the
// run are gone, and nothing inside could have made a child cgroup (the sandbox has no
// cgroupfs). Removing the directories, through the descriptors already open, is then all
// there is to do; the general path reopens and lists every directory first. Returns false,
// leaving the rest to it, when anything is not as expected.
bool V1RunCgroup::remove_empty() noexcept {
    Node node;
    for (const auto& d : dirs_) node.push_back(&d);
    if (!node_surely_empty(node)) return false;
    const auto& hs = layout_->hierarchies;
    for (std::size_t i = 0; i < hs.size(); ++i) {
        if (::unlinkat(hs[i].subtree.fd.get(), name_.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT)
            return false;
    }
    return true;
}

void V1RunCgroup::build(const CgroupLimits& limits) {
    const auto& hs = layout_->hierarchies;
    Node parents;
    for (const auto& h : hs) parents.push_back(&h.subtree);

    // Runs have unique names, so an existing directory is left by a crashed earlier run.
    if (std::any_of(hs.begin(), hs.end(), [&](const auto& h) {
            return fs::exists_at(h.subtree.fd.get(), name_.c_str());
        })) {
        fs::Backoff backoff(kTeardownBudget);
        if (const int err = destroy_node(parents, name_, layout_->freezer, backoff); err != 0)
            throw_errno("cannot remove stale cgroup " + (hs.front().subtree.path / name_).string(),
                        err);
    }

    for (std::size_t i = 0; i < hs.size(); ++i) {
        if (const int err = fs::make_subdir(hs[i].subtree, name_); err != 0)
            throw_errno("mkdir " + (hs[i].subtree.path / name_).string(), err);
        int err = 0;
        dirs_[i] = fs::open_subdir(hs[i].subtree, name_, &err);
        if (!dirs_[i].valid()) throw_errno("open " + dirs_[i].path.string(), err);
        if (hs[i].has_cpuset) {
            // A v1 cpuset cgroup with empty cpus/mems refuses tasks (ENOSPC).
            for (const char* file : {"cpuset.cpus", "cpuset.mems"})
                fs::write_file_at(dirs_[i], file, fs::read_file_at(hs[i].subtree, file));
        }
    }

    const fs::Dir& memory = dirs_[layout_->memory];
    if (limits.memory_bytes > 0) {
        const auto bytes = std::to_string(limits.memory_bytes);
        fs::write_file_at(memory, "memory.limit_in_bytes", bytes);
        // memsw must not be below memory, so it comes second; it exists only with swap
        // accounting, and without it there is no way to keep a run off swap.
        if (fs::exists_at(memory.fd.get(), "memory.memsw.limit_in_bytes"))
            fs::write_file_at(memory, "memory.memsw.limit_in_bytes", bytes);
    }
    // Best effort: older kernels refuse it (EBUSY) below a hierarchical parent, and the
    // memsw limit above already keeps runs off swap where it matters.
    fs::try_write_file_at(memory.fd.get(), "memory.swappiness", "0");
    // oom_kill_disable is inherited from the parent; with it set, a run over its limit
    // would hang instead of being killed.
    if (fs::find_key_u64(fs::read_file_at(memory, "memory.oom_control"), "oom_kill_disable")
            .value_or(0) != 0)
        fs::write_file_at(memory, "memory.oom_control", "0");

    if (limits.max_tasks > 0)
        fs::write_file_at(dirs_[layout_->pids], "pids.max", limit_string(limits.max_tasks));

    if (limits.cpus > 0) {
        if (layout_->cpu < 0)
            throw SetupError(
                "a CPU rate cap was requested but the cgroup v1 cpu controller is "
                "not mounted");
        const double cpus = std::min(limits.cpus, 1e6);
        const long long quota = std::max(1000LL, std::llround(cpus * 100000));
        const fs::Dir& cpu = dirs_[layout_->cpu];
        fs::write_file_at(cpu, "cpu.cfs_period_us", "100000");
        fs::write_file_at(cpu, "cpu.cfs_quota_us", std::to_string(quota));
    }

    auto open_ro = [](const fs::Dir& dir, const char* file) {
        UniqueFd fd = fs::open_file_at(dir.fd.get(), file, O_RDONLY);
        if (!fd) {
            const int err = errno;
            throw_errno("open " + (dir.path / file).string(), err);
        }
        return fd;
    };
    // Opened here, as root, for the sandbox's pid 1 to join with; the kernel checks the
    // credentials of the opener.
    for (std::size_t i : join_order()) {
        UniqueFd fd = fs::open_file_at(dirs_[i].fd.get(), "tasks", O_WRONLY);
        if (!fd) {
            const int err = errno;
            throw_errno("open " + (dirs_[i].path / "tasks").string(), err);
        }
        tasks_.push_back(std::move(fd));
    }
    cpuacct_usage_ = open_ro(dirs_[layout_->cpuacct], "cpuacct.usage");
    memory_max_usage_ = open_ro(memory, "memory.max_usage_in_bytes");
    oom_control_ = open_ro(memory, "memory.oom_control");
}

// The freezer first, so that a kill_all() racing with a move sees the process frozen.
std::vector<std::size_t> V1RunCgroup::join_order() const {
    std::vector<std::size_t> order{static_cast<std::size_t>(layout_->freezer)};
    for (std::size_t i = 0; i < dirs_.size(); ++i)
        if (static_cast<int>(i) != layout_->freezer) order.push_back(i);
    return order;
}

void V1RunCgroup::attach(pid_t pid) {
    const auto value = std::to_string(pid);
    for (std::size_t i : join_order()) fs::write_file_at(dirs_[i], "cgroup.procs", value);
}

std::vector<int> V1RunCgroup::self_join_fds() const {
    std::vector<int> fds;
    for (const auto& fd : tasks_) fds.push_back(fd.get());
    return fds;
}

std::uint64_t V1RunCgroup::cpu_usage_ns() const {
    std::string content;
    if (const int err = fs::try_pread_all(cpuacct_usage_.get(), content); err != 0)
        throw_errno("read " + (dirs_[layout_->cpuacct].path / "cpuacct.usage").string(), err);
    return fs::parse_u64(content).value_or(0);
}

Usage V1RunCgroup::usage() const {
    Usage u;
    u.cpu_ns = cpu_usage_ns();
    std::string content;
    const fs::Dir& memory = dirs_[layout_->memory];
    if (const int err = fs::try_pread_all(memory_max_usage_.get(), content); err != 0)
        throw_errno("read " + (memory.path / "memory.max_usage_in_bytes").string(), err);
    u.memory_peak_bytes = fs::parse_u64(content).value_or(0);
    if (const int err = fs::try_pread_all(oom_control_.get(), content); err != 0)
        throw_errno("read " + (memory.path / "memory.oom_control").string(), err);
    u.oom_kills = fs::find_key_u64(content, "oom_kill").value_or(0);
    return u;
}

void V1RunCgroup::kill_all() noexcept {
    try {
        Node node;
        for (const auto& d : dirs_) node.push_back(&d);
        kill_node(node, layout_->freezer);
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
            if (c == "freezer") layout_->freezer = index;
        }
        layout_->hierarchies.push_back({loc.controllers, loc.has_cpuset, std::move(sub)});
        own_dirs_.push_back(std::move(own));
    }
    if (layout_->memory < 0 || layout_->pids < 0 || layout_->cpuacct < 0 || layout_->freezer < 0)
        throw SetupError(
            "cgroup v1: the memory, pids, cpuacct and freezer hierarchies are all "
            "required");

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
        if (const int err = destroy_node(parents, name, layout_->freezer, backoff); err != 0)
            throw_errno("cannot remove stale cgroup " +
                            (layout_->hierarchies.front().subtree.path / name).string(),
                        err);
    }
}

V1Backend::~V1Backend() {
    // Only an empty subtree goes away; runs still alive keep theirs (EBUSY is fine).
    for (const auto& own : own_dirs_) ::unlinkat(own.fd.get(), subtree_.c_str(), AT_REMOVEDIR);
}

std::unique_ptr<RunCgroup> V1Backend::create(const std::string& run_name,
                                             const CgroupLimits& limits) {
    fs::check_name(run_name, "run name");
    auto run = std::make_unique<V1RunCgroup>(layout_, run_name);
    run->build(limits);
    return run;
}

}  // namespace isolate::cgroup
