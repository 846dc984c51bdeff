#include "cgroup/v2.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "isolate/error.h"

namespace isolate::cgroup {

namespace {

using namespace std::chrono_literals;

constexpr auto kTeardownBudget = 2000ms;
// The leaf that the daemon moves itself into so that its own cgroup may enable
// controllers for children (cgroup2's no-internal-processes rule), as systemd expects of
// a service with Delegate=yes.
constexpr const char* kSupervisor = "supervisor";

// The cgroup this process moved itself out of into <it>/supervisor (step 3 below). Only
// then is <it> ours to build in while we sit in the leaf; a cgroup that merely happens to
// be called "supervisor" says nothing. Inherited by fork, like the cgroup itself.
std::mutex moved_from_mutex;
std::filesystem::path moved_from;

std::filesystem::path get_moved_from() {
    std::lock_guard lock(moved_from_mutex);
    return moved_from;
}

void set_moved_from(const std::filesystem::path& own) {
    std::lock_guard lock(moved_from_mutex);
    moved_from = own;
}

bool populated(int dirfd) noexcept {
    try {
        std::string events;
        if (fs::try_read_file_at(dirfd, "cgroup.events", events) != 0) return false;
        return fs::find_key_u64(events, "populated").value_or(0) != 0;
    } catch (...) {
        return true;
    }
}

// Kills every task in dir and below it.
void kill_tree(const fs::Dir& dir) noexcept {
    const int err = fs::try_write_file_at(dir.fd.get(), "cgroup.kill", "1");
    if (err != ENOENT) return;
    // cgroup.kill arrived in 5.14. Before it, freeze (5.2) so nobody forks between reading
    // cgroup.procs and the kill; unlike v1, killed tasks leave a frozen v2 cgroup.
    try {
        const bool frozen = fs::try_write_file_at(dir.fd.get(), "cgroup.freeze", "1") == 0;
        fs::kill_listed(dir.fd.get());
        for (const auto& child : fs::list_subdirs(dir)) {
            const fs::Dir sub = fs::open_subdir(dir, child, nullptr);
            if (sub.valid()) kill_tree(sub);
        }
        if (frozen) fs::try_write_file_at(dir.fd.get(), "cgroup.freeze", "0");
    } catch (...) {
    }
}

// Kills and removes parent/name and everything below it. Returns 0 or an errno.
int destroy_tree(const fs::Dir& parent, const std::string& name, fs::Backoff& backoff) noexcept {
    int err = 0;
    const fs::Dir dir = fs::open_subdir(parent, name, &err);
    if (!dir.valid()) return err == ENOENT ? 0 : err;
    kill_tree(dir);
    while (populated(dir.fd.get()) && backoff.sleep()) kill_tree(dir);
    return fs::remove_tree(parent, name, backoff);
}

bool has_all(std::string_view content, const std::vector<std::string>& words) {
    return std::all_of(words.begin(), words.end(),
                       [&](const std::string& w) { return fs::has_word(content, w); });
}

}  // namespace

std::optional<V2Location> locate_v2(const std::filesystem::path& cgroup_root,
                                    std::string* why_not) {
    struct statfs st {};
    if (::statfs(cgroup_root.c_str(), &st) != 0 ||
        static_cast<unsigned long>(st.f_type) != CGROUP2_SUPER_MAGIC) {
        *why_not = cgroup_root.string() + " is not a cgroup2 mount";
        return std::nullopt;
    }
    const fs::Dir proc = fs::open_dir("/proc/self");
    const auto entries = fs::parse_proc_cgroup(fs::read_file_at(proc, "cgroup"));
    const auto entry = std::find_if(entries.begin(), entries.end(), [](const auto& e) {
        return e.hierarchy_id == 0 && e.controllers.empty();
    });
    if (entry == entries.end()) {
        *why_not = "/proc/self/cgroup has no cgroup2 entry";
        return std::nullopt;
    }
    V2Location loc;
    loc.root = cgroup_root;
    loc.own_path = entry->path;
    loc.own_dir = cgroup_root / std::filesystem::path(entry->path).relative_path();
    const fs::Dir own = fs::open_dir(loc.own_dir);
    const auto available = fs::read_file_at(own, "cgroup.controllers");
    for (const char* c : {"memory", "pids", "cpu"})
        if (fs::has_word(available, c)) loc.controllers.emplace_back(c);
    if (!fs::has_word(available, "memory") || !fs::has_word(available, "pids")) {
        *why_not = "cgroup2 at " + cgroup_root.string() + " offers only \"" +
                   std::string(available.substr(0, available.find('\n'))) + "\" to " +
                   loc.own_dir.string() + "; memory and pids are needed";
        return std::nullopt;
    }
    return loc;
}

V2Dir::~V2Dir() {
    if (!layout || name.empty()) return;
    fs::Backoff backoff(kTeardownBudget);
    if (const int err = destroy_tree(layout->subtree, name, backoff); err != 0) {
        std::fprintf(stderr, "sandboxd: cannot remove cgroup %s (v2): %s\n",
                     (layout->subtree.path / name).c_str(), std::strerror(err));
    }
}

bool V2Dir::surely_empty() const noexcept {
    try {
        std::string events;
        std::string stat;
        if (!cgroup_events || fs::try_pread_value(cgroup_events.get(), events) != 0 ||
            !cgroup_stat || fs::try_pread_value(cgroup_stat.get(), stat) != 0)
            return false;
        return fs::find_key_u64(events, "populated") == 0u &&
               fs::find_key_u64(events, "frozen") == 0u &&
               fs::find_key_u64(stat, "nr_descendants") == 0u;
    } catch (...) {
        return false;
    }
}

bool V2Dir::little_memory_charged() const noexcept {
    try {
        std::string content;
        return memory_current && fs::try_pread_value(memory_current.get(), content) == 0 &&
               fs::parse_u64(content).value_or(kKeptMemoryLeftover + 1) <= kKeptMemoryLeftover;
    } catch (...) {
        return false;
    }
}

V2RunCgroup::V2RunCgroup(std::shared_ptr<const V2Layout> layout, std::shared_ptr<V2KeptPool> pool)
    : layout_(std::move(layout)), pool_(std::move(pool)), dir_(std::make_unique<V2Dir>()) {}

V2RunCgroup::~V2RunCgroup() {
    if (keep_for_reuse()) return;
    // Removed like one that waited in the pool; destroy_tree() starts with the same kill as
    // kill_all().
    dir_->layout = layout_;
    dir_.reset();
}

bool V2RunCgroup::keep_for_reuse() noexcept {
    if (!built_ || !dir_->peak_resettable || !dir_->surely_empty()) return false;
    dir_->layout = layout_;
    try {
        pool_->put(std::move(dir_));
    } catch (...) {
        // put() gave it up on the way out (removed with its V2Dir).
    }
    return true;
}

void V2RunCgroup::make_dir() {
    V2Dir& d = *dir_;
    d.name = pool_->new_set_name();
    const fs::Dir& subtree = layout_->subtree;
    // Names are unique and the backend removed what earlier instances left, so only
    // something from outside made an existing one; it goes like a crashed run's.
    if (fs::exists_at(subtree.fd.get(), d.name.c_str())) {
        fs::Backoff backoff(kTeardownBudget);
        if (const int err = destroy_tree(subtree, d.name, backoff); err != 0)
            throw_errno("cannot remove stale cgroup " + (subtree.path / d.name).string(), err);
    }
    if (const int err = fs::make_subdir(subtree, d.name); err != 0)
        throw_errno("mkdir " + (subtree.path / d.name).string(), err);
    int err = 0;
    d.dir = fs::open_subdir(subtree, d.name, &err);
    if (!d.dir.valid()) throw_errno("open " + d.dir.path.string(), err);

    // Absent when the kernel has no swap accounting, and then there is no swap to limit.
    if (fs::exists_at(d.dir.fd.get(), "memory.swap.max"))
        fs::write_file_at(d.dir, "memory.swap.max", "0");

    auto open_ro = [&d](const char* file) { return fs::open_file(d.dir, file, O_RDONLY); };
    d.cgroup_events = open_ro("cgroup.events");
    d.cgroup_stat = open_ro("cgroup.stat");
    d.cpu_stat = open_ro("cpu.stat");
    d.memory_events = open_ro("memory.events");
    if (fs::exists_at(d.dir.fd.get(), "memory.peak")) {
        // Before 6.12 memory.peak is read-only: opening it for writing fails without
        // CAP_DAC_OVERRIDE, and with it the write does (EINVAL).
        d.memory_peak = fs::open_file_at(d.dir.fd.get(), "memory.peak", O_RDWR);
        d.peak_resettable = d.memory_peak && ::pwrite(d.memory_peak.get(), "reset", 5, 0) == 5;
        if (!d.memory_peak) d.memory_peak = open_ro("memory.peak");
        if (d.peak_resettable) d.memory_current = open_ro("memory.current");
    } else {
        d.memory_peak = open_ro("memory.current");
        d.peak_is_sampled = true;
    }
    if (fs::exists_at(d.dir.fd.get(), "pids.peak")) d.pids_peak = open_ro("pids.peak");
}

// Writes what differs from the limits the cgroup has now (a new one has none), except
// cpu.max, which is written whenever there is a cap: the write also refills the bandwidth
// and lifts a throttle the last run left.
void V2RunCgroup::apply_limits(const CgroupLimits& limits) {
    V2Dir& d = *dir_;
    auto limit_string = [](std::uint64_t value) {
        return value ? std::to_string(value) : std::string("max");
    };
    if (limits.memory_bytes != d.memory_bytes) {
        fs::write_file_at(d.dir, "memory.max", limit_string(limits.memory_bytes));
        d.memory_bytes = limits.memory_bytes;
    }
    if (limits.max_tasks != d.max_tasks) {
        fs::write_file_at(d.dir, "pids.max", limit_string(limits.max_tasks));
        d.max_tasks = limits.max_tasks;
    }
    if (!layout_->has_cpu) return;
    std::string cpu_max = "max 100000";
    if (limits.cpus > 0) {
        const double cpus = std::min(limits.cpus, 1e6);
        cpu_max = std::to_string(std::max(1000LL, std::llround(cpus * 100000))) + " 100000";
    }
    if (limits.cpus > 0 || cpu_max != d.cpu_max) {
        fs::write_file_at(d.dir, "cpu.max", cpu_max);
        d.cpu_max = cpu_max;
    }
}

bool V2RunCgroup::reuse_kept(const CgroupLimits& limits) {
    std::unique_ptr<V2Dir> kept = pool_->take();
    if (!kept) return false;
    kept->layout.reset();
    std::unique_ptr<V2Dir> made = std::exchange(dir_, std::move(kept));
    try {
        apply_limits(limits);
        fs::write_open_file(dir_->memory_peak.get(), dir_->dir, "memory.peak", "reset");
        dir_->cpu_usec_before = read_u64(dir_->cpu_stat, "cpu.stat", "usage_usec");
        dir_->oom_kills_before = read_u64(dir_->memory_events, "memory.events", "oom_kill");
        dir_->handed_on = true;
        return true;
    } catch (const std::exception& e) {
        // A limit it cannot take: it goes, and this run gets a new one. Its recorded limits
        // may no longer be what the files hold, so it is not kept either way.
        std::fprintf(stderr, "sandboxd: a kept cgroup (v2) is not used again: %s\n", e.what());
        dir_->layout = layout_;
        dir_ = std::move(made);
        return false;
    }
}

void V2RunCgroup::build(const CgroupLimits& limits) {
    // Before a kept cgroup is taken: a request none could meet must not cost one.
    if (limits.cpus > 0 && !layout_->has_cpu)
        throw SetupError(
            "a CPU rate cap was requested but the cgroup2 cpu controller is not "
            "available in " +
            layout_->subtree.path.string());
    if (limits.max_tasks > kPidMaxLimit)
        throw SetupError("pids.max cannot be above " + std::to_string(kPidMaxLimit) + ": " +
                         std::to_string(limits.max_tasks) + " was asked for");
    if (reuse_kept(limits)) {
        ++pool_->reused;
    } else {
        make_dir();
        apply_limits(limits);
        ++pool_->made;
    }
    built_ = true;
}

void V2RunCgroup::attach(pid_t pid) {
    fs::write_file_at(dir_->dir, "cgroup.procs", std::to_string(pid));
}

std::uint64_t V2RunCgroup::read_u64(const UniqueFd& fd, const char* file, const char* key) const {
    std::string content;
    if (const int err = fs::try_pread_value(fd.get(), content); err != 0)
        throw_errno("read " + (dir_->dir.path / file).string(), err);
    return (key ? fs::find_key_u64(content, key) : fs::parse_u64(content)).value_or(0);
}

std::uint64_t V2RunCgroup::cpu_usage_ns() const {
    const std::uint64_t usec = read_u64(dir_->cpu_stat, "cpu.stat", "usage_usec");
    const std::uint64_t ns =
        usec > dir_->cpu_usec_before ? (usec - dir_->cpu_usec_before) * 1000 : 0;
    if (dir_->peak_is_sampled) {
        // Without memory.peak the best estimate is the largest memory.current seen, and this
        // is the call that a run's timer makes regularly.
        const std::uint64_t current = read_u64(dir_->memory_peak, "memory.current", nullptr);
        std::uint64_t seen = sampled_peak_.load(std::memory_order_relaxed);
        while (current > seen && !sampled_peak_.compare_exchange_weak(seen, current)) {
        }
    }
    return ns;
}

Usage V2RunCgroup::usage() const {
    Usage u;
    u.cpu_ns = cpu_usage_ns();
    if (dir_->peak_is_sampled) {
        u.memory_peak_bytes = sampled_peak_.load();
    } else {
        u.memory_peak_bytes = read_u64(dir_->memory_peak, "memory.peak", nullptr);
    }
    const std::uint64_t oom_kills = read_u64(dir_->memory_events, "memory.events", "oom_kill");
    u.oom_kills = oom_kills > dir_->oom_kills_before ? oom_kills - dir_->oom_kills_before : 0;
    // pids.peak keeps the highest count since the cgroup was made, an earlier run's too.
    if (dir_->pids_peak && !dir_->handed_on)
        u.tasks_peak = read_u64(dir_->pids_peak, "pids.peak", nullptr);
    return u;
}

void V2RunCgroup::kill_all() noexcept {
    if (dir_ && dir_->dir.valid()) kill_tree(dir_->dir);
}

// Delegation. Controllers can only be enabled for children of a cgroup that has no
// processes of its own (the root excepted), and our own cgroup has at least us. So:
//  1. if our cgroup already enables what runs need, use it as it is;
//  2. else try to enable them there: that works in the root cgroup;
//  3. else move this process (only it: writing "0" moves the caller) into the leaf
//     <own>/supervisor and enable them in <own>. If that still fails with EBUSY, processes
//     we did not start share our cgroup, and we refuse to move them.
// A process in <own>/supervisor that step 3 (an earlier backend in this process, or in the
// parent it was forked from) put there, with <own> still enabling the controllers, counts
// <own> as its own. Any other leaf, whatever its name, is just our cgroup.
V2Backend::V2Backend(const std::string& subtree, const V2Location& location)
    : layout_(std::make_shared<V2Layout>()), subtree_(subtree) {
    fs::check_name(subtree, "subtree name");
    if (subtree == kSupervisor)
        throw SetupError(std::string("cgroup subtree name \"") + kSupervisor + "\" is reserved");
    const std::vector<std::string>& wanted = location.controllers;
    layout_->has_cpu = std::find(wanted.begin(), wanted.end(), "cpu") != wanted.end();
    for (const auto& c : wanted) layout_->enable += (layout_->enable.empty() ? "+" : " +") + c;

    fs::Dir own = fs::open_dir(location.own_dir);
    const bool is_root = location.own_path == "/";
    if (!is_root && location.own_dir.filename() == kSupervisor &&
        get_moved_from() == location.own_dir.parent_path()) {
        fs::Dir parent = fs::open_dir(location.own_dir.parent_path());
        if (has_all(fs::read_file_at(parent, "cgroup.subtree_control"), wanted))
            own = std::move(parent);
    }

    if (!has_all(fs::read_file_at(own, "cgroup.subtree_control"), wanted)) {
        int err = fs::try_write_file_at(own.fd.get(), "cgroup.subtree_control", layout_->enable);
        if (err == EBUSY) {
            if (const int e = fs::make_subdir(own, kSupervisor); e != 0 && e != EEXIST)
                throw_errno("mkdir " + (own.path / kSupervisor).string(), e);
            int e = 0;
            const fs::Dir supervisor = fs::open_subdir(own, kSupervisor, &e);
            if (!supervisor.valid()) throw_errno("open " + supervisor.path.string(), e);
            if (const int moved = fs::try_write_file_at(supervisor.fd.get(), "cgroup.procs", "0");
                moved != 0) {
                ::unlinkat(own.fd.get(), kSupervisor, AT_REMOVEDIR);
                throw_errno("cannot move sandboxd into " + supervisor.path.string(), moved);
            }
            err = fs::try_write_file_at(own.fd.get(), "cgroup.subtree_control", layout_->enable);
            if (err == 0) set_moved_from(own.path);
            if (err == EBUSY) {
                // Put things back as they were before refusing.
                fs::try_write_file_at(own.fd.get(), "cgroup.procs", "0");
                ::unlinkat(own.fd.get(), kSupervisor, AT_REMOVEDIR);
                throw SetupError(
                    "cannot enable cgroup controllers in " + own.path.string() +
                    ": processes that sandboxd did not start share its cgroup. Run sandboxd "
                    "as a systemd service with Delegate=yes, or start it in a cgroup of its own");
            }
        }
        if (err != 0)
            throw_errno("cannot write \"" + layout_->enable + "\" to " +
                            (own.path / "cgroup.subtree_control").string(),
                        err);
    }

    if (const int err = fs::make_subdir(own, subtree); err != 0 && err != EEXIST)
        throw_errno("mkdir " + (own.path / subtree).string(), err);
    int err = 0;
    layout_->subtree = fs::open_subdir(own, subtree, &err);
    if (!layout_->subtree.valid()) throw_errno("open " + layout_->subtree.path.string(), err);
    if (!has_all(fs::read_file_at(layout_->subtree, "cgroup.subtree_control"), wanted))
        fs::write_file_at(layout_->subtree, "cgroup.subtree_control", layout_->enable);
    parent_ = std::move(own);
    kept_pool_ = std::make_shared<V2KeptPool>(kKeptCapacity);
    // Before the cleanup below: what another live instance has in the subtree is not stale.
    subtree_lock_ = fs::lock_subtree(layout_->subtree, fs::kSubtreeLockWait);

    // Whatever is below our subtree now was left by an earlier instance that died without
    // cleaning up; its processes are ours to kill.
    for (const auto& name : fs::list_subdirs(layout_->subtree)) {
        fs::Backoff backoff(kTeardownBudget);
        if (const int e = destroy_tree(layout_->subtree, name, backoff); e != 0)
            throw_errno("cannot remove stale cgroup " + (layout_->subtree.path / name).string(), e);
    }
}

V2Backend::~V2Backend() {
    if (kept_pool_) kept_pool_->close();
    // Only an empty subtree goes away; runs still alive keep theirs (EBUSY is fine).
    ::unlinkat(parent_.fd.get(), subtree_.c_str(), AT_REMOVEDIR);
}

std::unique_ptr<RunCgroup> V2Backend::create(const std::string& run_name,
                                             const CgroupLimits& limits) {
    // A run's cgroup is named after itself (V2Dir), not the run: later runs may use it again.
    fs::check_name(run_name, "run name");
    auto run = std::make_unique<V2RunCgroup>(layout_, kept_pool_);
    run->build(limits);
    return run;
}

}  // namespace isolate::cgroup
