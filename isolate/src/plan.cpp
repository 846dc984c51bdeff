// Turns a RunSpec into a ChildPlan: every string, path and array the child will need,
// validated here, where allocating and throwing are still allowed.

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "child_plan.h"
#include "isolate/error.h"
#include "isolate/seccomp.h"

namespace isolate {
namespace {

constexpr const char* kDefaultPath = "/usr/local/bin:/usr/bin:/bin";
// A relative path with no empty, "." or ".." component: it cannot leave the directory it is
// resolved in. The kernel enforces the same again (RESOLVE_IN_ROOT) when the file is opened.
void require_contained_path(const std::string& path, const char* what) {
    if (path.empty() || path.size() > 4096 || path.front() == '/' ||
        path.find('\0') != std::string::npos)
        throw SetupError(std::string(what) + " path is not a relative path: '" + path + "'");
    std::size_t start = 0;
    while (start <= path.size()) {
        std::size_t end = path.find('/', start);
        if (end == std::string::npos) end = path.size();
        std::string_view part(path.data() + start, end - start);
        if (part.empty() || part == "." || part == "..")
            throw SetupError(std::string(what) + " path has an empty, '.' or '..' part: '" + path +
                             "'");
        if (part.size() > 255)
            throw SetupError(std::string(what) + " path has a part over 255 bytes: '" + path + "'");
        start = end + 1;
    }
}

// The mountpoint must be a real directory of the rootfs: a symlink there could point the
// mount at a host path.
std::string require_directory(const std::string& rootfs, const std::string& inside,
                              DirectoryIdentity* identity = nullptr) {
    std::string host = rootfs;
    std::size_t start = 1;
    while (start < inside.size()) {
        std::size_t end = inside.find('/', start);
        if (end == std::string::npos) end = inside.size();
        std::string part = inside.substr(start, end - start);
        if (part.empty() || part == "." || part == "..")
            throw SetupError("mountpoint '" + inside + "' is not a clean absolute path");
        host += "/" + part;
        struct stat st {};
        if (::lstat(host.c_str(), &st) != 0) throw_errno("rootfs lacks the directory " + inside);
        if (!S_ISDIR(st.st_mode))
            throw SetupError("rootfs " + rootfs + ": " + inside + " is not a directory");
        if (identity) *identity = DirectoryIdentity::of(st);
        start = end + 1;
    }
    return host;
}

std::string tmpfs_options(std::uint64_t bytes, const char* mode) {
    std::uint64_t size = std::max<std::uint64_t>(bytes, 4096);
    std::uint64_t inodes = std::clamp<std::uint64_t>(size / 4096, 64, 65536);
    return "size=" + std::to_string(size) + ",nr_inodes=" + std::to_string(inodes) +
           ",mode=" + mode;
}

rlim_t at_least_one(std::uint64_t value) {
    return std::max<std::uint64_t>(value, 1);
}

}  // namespace

SandboxShape SandboxShape::of(const RunSpec& spec) {
    return {spec.rootfs,
            spec.binds,
            spec.workdir,
            spec.limits.tmpfs_bytes,
            spec.limits.memory_bytes,
            spec.limits.max_processes,
            spec.limits.cpus,
            spec.seccomp};
}

ChildPlan make_sandbox_plan(const SandboxShape& shape, uid_t inside_id, int last_capability) {
    if (shape.workdir.size() < 2 || shape.workdir.front() != '/')
        throw SetupError("workdir must be an absolute path below /");

    ChildPlan plan;
    plan.inside_id = inside_id;
    plan.last_capability = last_capability;
    if (!shape.seccomp) throw SetupError("no seccomp filter given; runs are never unfiltered");
    plan.seccomp = shape.seccomp.get();

    std::error_code ec;
    auto rootfs = std::filesystem::canonical(shape.rootfs, ec);
    if (ec) throw SetupError("rootfs " + shape.rootfs.string() + ": " + ec.message());
    plan.rootfs = rootfs.string();
    if (plan.rootfs == "/") throw SetupError("the host's / cannot be a rootfs");
    struct stat root {};
    if (::stat(plan.rootfs.c_str(), &root) != 0) throw_errno("stat rootfs " + plan.rootfs);
    plan.rootfs_identity = DirectoryIdentity::of(root);

    plan.proc_dir = require_directory(plan.rootfs, "/proc", &plan.proc_identity);
    plan.proc_sys_dir = plan.proc_dir + "/sys";
    plan.dev_dir = require_directory(plan.rootfs, "/dev");
    plan.dev_shm_dir = plan.dev_dir + "/shm";
    plan.tmp_dir = require_directory(plan.rootfs, "/tmp");
    plan.work_dir = require_directory(plan.rootfs, shape.workdir);
    plan.workdir_inside = shape.workdir;

    for (const auto& bind : shape.binds) {
        auto source = std::filesystem::canonical(bind.source, ec);
        if (ec) throw SetupError("bind source " + bind.source.string() + ": " + ec.message());
        if (bind.target.empty() || bind.target.front() != '/' || bind.target == "/")
            throw SetupError("bind target must be an absolute path below /: " + bind.target);
        struct stat st {};
        if (::stat(source.c_str(), &st) != 0) throw_errno("bind source " + source.string());
        PlannedBind planned{source.string(), "", bind.target, DirectoryIdentity::of(st), {}};
        planned.target = require_directory(plan.rootfs, bind.target, &planned.target_identity);
        plan.binds.push_back(std::move(planned));
    }

    plan.shm_options = tmpfs_options(shape.tmpfs_bytes, "1777");
    plan.tmp_options = tmpfs_options(shape.tmpfs_bytes, "1777");
    plan.work_options = tmpfs_options(shape.tmpfs_bytes, "0755");
    plan.control_fd = -1;
    return plan;
}

void use_mount_template(ChildPlan& plan) {
    // make_sandbox_plan checked each one is a real directory of the rootfs, so the inside path
    // names the same directory.
    plan.proc_dir = "/proc";
    plan.proc_sys_dir = "/proc/sys";
    plan.dev_dir = "/dev";
    plan.dev_shm_dir = "/dev/shm";
    plan.tmp_dir = "/tmp";
    plan.work_dir = plan.workdir_inside;
    plan.in_mount_template = true;
}

void plan_program(const RunSpec& spec, ChildPlan& plan) {
    if (spec.argv.empty() || spec.argv[0].empty()) throw SetupError("argv is empty");
    // pid 1 installed the sandbox's filter before it was ready (SandboxShape::seccomp).
    if (spec.seccomp.get() != plan.seccomp)
        throw SetupError("the run's seccomp filter is not the one its sandbox was built with");

    std::set<std::string> dirs;
    std::set<std::string> seen_files;
    plan.files.clear();
    for (const auto& file : spec.files) {
        require_contained_path(file.path, "input file");
        if (!seen_files.insert(file.path).second)
            throw SetupError("input file listed twice: " + file.path);
        for (std::size_t slash = file.path.find('/'); slash != std::string::npos;
             slash = file.path.find('/', slash + 1))
            dirs.insert(file.path.substr(0, slash));
        plan.files.push_back({file.path, &file.content, file.executable});
    }
    for (const auto& file : plan.files)
        if (dirs.count(file.path))
            throw SetupError("input path is both file and directory: " + file.path);
    // std::set orders "a" before "a/b", so parents are created first.
    plan.dirs_to_create.assign(dirs.begin(), dirs.end());

    for (const auto& path : spec.collect) require_contained_path(path, "collected file");
    plan.collect = spec.collect;

    const std::string& program = spec.argv[0];
    plan.exec_candidates.clear();
    if (program.find('/') != std::string::npos) {
        plan.exec_candidates.push_back(program);
    } else {
        std::string search = kDefaultPath;
        for (const auto& entry : spec.env)
            if (entry.rfind("PATH=", 0) == 0) search = entry.substr(5);
        std::size_t start = 0;
        while (start <= search.size()) {
            std::size_t end = search.find(':', start);
            if (end == std::string::npos) end = search.size();
            std::string dir = search.substr(start, end - start);
            if (!dir.empty() && dir.front() == '/')
                plan.exec_candidates.push_back(dir + "/" + program);
            start = end + 1;
        }
        if (plan.exec_candidates.empty()) throw SetupError("PATH has no absolute directory");
    }
    plan.argv.clear();
    plan.envp.clear();
    for (const auto& arg : spec.argv) plan.argv.push_back(const_cast<char*>(arg.c_str()));
    plan.argv.push_back(nullptr);
    for (const auto& entry : spec.env) {
        if (entry.find('=') == std::string::npos || entry.front() == '=')
            throw SetupError("environment entry is not KEY=VALUE: " + entry);
        plan.envp.push_back(const_cast<char*>(entry.c_str()));
    }
    plan.envp.push_back(nullptr);

    const Limits& limits = spec.limits;
    // RLIMIT_CPU is only a backstop: the supervisor enforces the exact budget through the
    // cgroup's accounting, for all processes together.
    rlim_t cpu_seconds = static_cast<rlim_t>(std::ceil(limits.cpu_time_ms / 1000.0)) + 1;
    plan.rlimits = {
        {RLIMIT_FSIZE, {limits.max_file_bytes, limits.max_file_bytes}},
        {RLIMIT_STACK, {at_least_one(limits.stack_bytes), at_least_one(limits.stack_bytes)}},
        {RLIMIT_NOFILE, {at_least_one(limits.open_files), at_least_one(limits.open_files)}},
        {RLIMIT_CORE, {0, 0}},
        {RLIMIT_CPU, {cpu_seconds, cpu_seconds + 1}},
    };
}

}  // namespace isolate
