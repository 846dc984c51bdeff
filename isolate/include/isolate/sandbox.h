#pragma once

#include <sys/types.h>

#include <memory>

#include "isolate/cgroup.h"
#include "isolate/run_spec.h"

namespace isolate {

struct SandboxConfig {
    // Slot n runs as host uid/gid uid_base + n. Never 0; must not belong to anyone else.
    uid_t uid_base = 1'000'000;
    unsigned slots = 64;
    // The uid and gid the program sees inside.
    uid_t inside_uid = 1000;
    // How long namespace/mount setup may take before the run fails as internal_error.
    unsigned setup_timeout_ms = 10'000;
    // Fresh network namespaces kept ready by a background thread, each used by one run
    // (see netns_pool.h); 0 makes every run create its own on its request path.
    unsigned prepared_netns = 4;
    // pid 1 shares the supervisor's memory instead of being a copy-on-write clone of it
    // (see init_spawner.h). Ignored where unsupported (not x86_64), where the copy remains.
    bool init_shares_memory = true;
};

struct SandboxState;

// Runs programs under full isolation. Thread-safe for concurrent runs in distinct slots.
class Sandbox {
  public:
    Sandbox(SandboxConfig config, std::unique_ptr<cgroup::Backend> cgroups);
    ~Sandbox();
    Sandbox(const Sandbox&) = delete;
    Sandbox& operator=(const Sandbox&) = delete;

    RunResult run(const RunSpec& spec);

    const SandboxConfig& config() const { return config_; }
    const cgroup::Backend& cgroups() const { return *cgroups_; }

  private:
    SandboxConfig config_;
    std::unique_ptr<cgroup::Backend> cgroups_;
    std::unique_ptr<SandboxState> state_;
};

}  // namespace isolate
