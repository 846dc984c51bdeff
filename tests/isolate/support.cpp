#include "isolate/support.h"

#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "isolate/seccomp.h"
#include "seccomp_profile.h"

namespace fs = std::filesystem;

namespace test {

TempRootfs::TempRootfs() {
    char tmpl[] = "/var/tmp/sbx-test-rootfs-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
    make();
}

void TempRootfs::make() {
    const fs::path root = path_;
    fs::create_directory(root);
    // The sandbox's uid has to traverse it.
    fs::permissions(root, fs::perms(0755));
    for (const char* dir : {"usr", "etc", "proc", "dev", "tmp", "box", "probe"})
        fs::create_directory(root / dir);
    for (const char* link : {"bin", "lib", "lib64", "sbin"})
        fs::create_symlink(std::string("usr/") + link, root / link);
    std::ofstream(root / "etc/passwd") << "root:x:0:0:root:/root:/bin/sh\n"
                                          "sandbox:x:1000:1000:sandbox:/box:/bin/sh\n";
    std::ofstream(root / "etc/group") << "root:x:0:\nsandbox:x:1000:\n";
}

void TempRootfs::replace(const std::string& suffix) {
    old_paths_.push_back(path_ + suffix);
    fs::rename(path_, old_paths_.back());
    make();
}

TempRootfs::~TempRootfs() {
    old_paths_.push_back(path_);
    for (const auto& path : old_paths_) {
        // The sandboxes' /dev is mounted on dev/ in this process's own mount namespace only
        // (dev_mounts.h); with it unmounted, plain removal is safe.
        const std::string dev = path + "/dev";
        while (::umount2(dev.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0) {
        }
        std::error_code ec;
        fs::remove_all(path, ec);
    }
}

const std::string& rootfs() {
    static TempRootfs root;
    return root.path();
}

const std::string& cgroup_subtree() {
    static std::string name = "sbx-test-" + std::to_string(::getpid());
    return name;
}

std::string forced_cgroup_backend() {
    const char* value = std::getenv("SBX_CGROUP_BACKEND");
    return value ? value : "";
}

bool kernel_at_least(int major, int minor) {
    struct utsname u {};
    int running_major = 0;
    int running_minor = 0;
    if (::uname(&u) != 0 || std::sscanf(u.release, "%d.%d", &running_major, &running_minor) != 2)
        throw std::runtime_error("cannot read the kernel release");
    return running_major > major || (running_major == major && running_minor >= minor);
}

bool cgroups_handed_on(const std::string& backend) {
    return backend == "v1" || kernel_at_least(6, 12);
}

bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (condition()) return true;
        if (std::chrono::steady_clock::now() >= deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

bool namespaces_released() {
    return eventually([] { return sandbox().mount_namespace_stats().pending == 0; });
}

isolate::Sandbox& sandbox() {
    static isolate::Sandbox instance = [] {
        isolate::cgroup::BackendOptions options;
        options.subtree = cgroup_subtree();
        options.force = forced_cgroup_backend();
        return isolate::Sandbox(isolate::SandboxConfig{}, isolate::cgroup::detect_backend(options));
    }();
    return instance;
}

isolate::SeccompPolicy default_policy() {
    return sandboxd::load_seccomp_profile(fs::path(SBX_SECCOMP_DIR) / "default.json");
}

std::shared_ptr<const isolate::SeccompFilter> default_filter() {
    // With socket reports, as the daemon compiles it where namespaces are kept.
    static auto filter = isolate::SeccompFilter::compile(default_policy(), true);
    return filter;
}

isolate::RunSpec command(std::vector<std::string> argv) {
    isolate::RunSpec spec;
    spec.rootfs = rootfs();
    spec.binds = {{"/usr", "/usr"}, {SBX_PROBE_DIR, "/probe"}};
    spec.argv = std::move(argv);
    spec.env = {"PATH=/usr/bin:/bin", "HOME=/box", "LANG=C.UTF-8"};
    spec.seccomp = default_filter();
    spec.limits.wall_time_ms = 10'000;
    spec.limits.cpu_time_ms = 5'000;
    return spec;
}

isolate::RunSpec probe(std::vector<std::string> args) {
    args.insert(args.begin(), "/probe/sbx-probe");
    return command(std::move(args));
}

std::string unique_cgroup_subtree(const std::string& prefix) {
    static int counter = 0;
    return prefix + std::to_string(::getpid()) + "-" + std::to_string(++counter);
}

std::unique_ptr<isolate::Sandbox> own_sandbox(const std::string& name,
                                              const isolate::SandboxConfig& config) {
    isolate::cgroup::BackendOptions options;
    options.subtree = unique_cgroup_subtree(name);
    options.force = forced_cgroup_backend();
    return std::make_unique<isolate::Sandbox>(config, isolate::cgroup::detect_backend(options));
}

int wait_status(pid_t pid) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return status;
}

std::vector<pid_t> processes_of_uid(uid_t uid) {
    std::vector<pid_t> found;
    for (const auto& entry : fs::directory_iterator("/proc")) {
        const std::string name = entry.path().filename().string();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        struct stat st {};
        if (::stat(entry.path().c_str(), &st) == 0 && st.st_uid == uid)
            found.push_back(static_cast<pid_t>(std::stoi(name)));
    }
    return found;
}

}  // namespace test
