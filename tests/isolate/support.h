#pragma once

// Shared fixtures for the kernel-level tests: a rootfs made from the host's /usr, one
// Sandbox for the whole test binary, and helpers to run the probe program inside.

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "isolate/sandbox.h"
#include "isolate/seccomp.h"

namespace test {

// A rootfs directory under /var/tmp with the mountpoints and symlinks the specs below need
// (/usr and /probe are bound in per run). Removed, with the /dev mounted on it in this
// process's mount namespace, when destroyed.
class TempRootfs {
  public:
    TempRootfs();
    ~TempRootfs();
    TempRootfs(const TempRootfs&) = delete;
    TempRootfs& operator=(const TempRootfs&) = delete;
    const std::string& path() const { return path_; }
    // Renames the directory to `path() + suffix` (removed too, when this is destroyed) and
    // makes a new one in its place, like a rootfs rebuilt while the daemon runs.
    void replace(const std::string& suffix);

  private:
    void make();
    std::string path_;
    std::vector<std::string> old_paths_;
};

// The rootfs directory: /usr, /bin, /lib... from the host, plus /probe with sbx-probe.
const std::string& rootfs();
isolate::Sandbox& sandbox();
// seccomp-profiles/default.json, and the daemon's filter of it.
isolate::SeccompPolicy default_policy();
std::shared_ptr<const isolate::SeccompFilter> default_filter();
// The cgroup subtree this test binary uses (unique per process).
const std::string& cgroup_subtree();
// SBX_CGROUP_BACKEND ("v1", "v2" or unset): the backend every test must use. scripts/vm-test
// sets v2 so that nothing can quietly fall back to another backend.
std::string forced_cgroup_backend();
// Whether the running kernel is at least major.minor (from uname).
bool kernel_at_least(int major, int minor);
// Whether a backend called `backend` ("v1", "v2") must hand a clean run's cgroups on to later
// runs: v1 always; v2 from Linux 6.12, which can reset memory.peak. From uname, not the library.
bool cgroups_handed_on(const std::string& backend);

// Polls `condition` every 10 ms until it holds (true) or `timeout` passes (false).
bool eventually(const std::function<bool()>& condition,
                std::chrono::milliseconds timeout = std::chrono::seconds(5));

// Waits (up to 5 s) until sandbox() has let go of every finished run's mount namespace, so
// that descriptors can be counted. False if it never did.
bool namespaces_released();

// A spec that runs `sbx-probe args...` with the default profile and roomy limits.
isolate::RunSpec probe(std::vector<std::string> args);
// A spec that runs a host program such as /usr/bin/sleep.
isolate::RunSpec command(std::vector<std::string> argv);

// A cgroup subtree name no other test uses: prefix, this process's pid, a counter.
std::string unique_cgroup_subtree(const std::string& prefix);
// A Sandbox with `config` of its own, in a fresh cgroup subtree (unique_cgroup_subtree(name)),
// on the forced backend; for tests that need settings sandbox() does not have.
std::unique_ptr<isolate::Sandbox> own_sandbox(const std::string& name,
                                              const isolate::SandboxConfig& config);
// waitpid(pid) through EINTR; the wait status.
int wait_status(pid_t pid);

// Every process on the host whose real uid is `uid`.
std::vector<pid_t> processes_of_uid(uid_t uid);

}  // namespace test
