#pragma once

// The daemon's configuration: read once at start-up from one JSON file (every key optional,
// documented in docs/configuration.md), then overridden by command-line flags, then frozen and
// passed down by const reference. No globals.

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "protocol.h"

namespace sandboxd {

// A configuration that cannot be used: the message names the file, the key and the problem.
class ConfigError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

struct Config {
    std::filesystem::path socket = "/run/sandboxd/sandboxd.sock";
    std::string socket_group;  // "" keeps the daemon's own group
    // Empty lists admit every peer that can open the socket (its mode and group decide).
    std::vector<uid_t> allowed_uids;
    std::vector<gid_t> allowed_gids;

    unsigned slots = 0;  // 0: the number of cores
    std::size_t queue_size = 256;
    std::size_t max_request_bytes = 16u << 20;

    // Each directory holds one subdirectory per language: language.json, manifest.json, root/.
    std::vector<std::filesystem::path> language_dirs = {"/var/lib/sandboxd/rootfs"};
    std::filesystem::path seccomp_dir;  // default: the profiles shipped with this build

    uid_t uid_base = 1'000'000;
    std::string cgroup_subtree = "sandboxd";
    std::string cgroup_version;  // "", "v1" or "v2"

    protocol::LimitPolicy run_limits;
    protocol::LimitPolicy compile_limits;

    std::uint64_t shutdown_grace_ms = 3000;
    std::uint64_t compile_cache_bytes = 256u << 20;  // 0: no compile cache
    // A slot's runs share a network namespace while none leaves a trace in it
    // (isolate::SandboxConfig::keep_clean_netns); false: a new one for every run.
    bool keep_clean_network_namespaces = true;
    // Each slot's thread and its sandboxes' pid 1 share one CPU (isolate::SandboxConfig::
    // pin_slots); the programs still get every CPU.
    bool pin_slots = true;
};

// The built-in defaults: what an empty configuration file means.
Config default_config();

// Overlays the keys present in `file` on `config`. Unknown keys, wrong types and impossible
// values are ConfigErrors, so a typo never silently falls back to a default.
void load_config_file(const std::filesystem::path& file, Config& config);

// A language's limit adjustments ({"max_processes": 128, ...}, client keys only) become new
// defaults; a maximum below its new default is raised to it, so the default is always allowed.
// `where` prefixes error messages ("/var/lib/.../java/language.json: limits").
void apply_limit_adjustments(const nlohmann::json& value, const std::string& where,
                             protocol::LimitPolicy& policy);

// Checks the cross-key rules (a default above its maximum, zero slots...) after all overrides.
void validate_config(const Config& config);

}  // namespace sandboxd
