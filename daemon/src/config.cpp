#include "config.h"

#include <grp.h>

#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "byte_size.h"

namespace sandboxd {
namespace {

using nlohmann::json;

// Where a value came from, for error messages: "/etc/sandboxd.json: limits.maxima.memory_bytes".
struct KeyPath {
    const std::filesystem::path& file;
    std::string key;

    [[noreturn]] void fail(const std::string& problem) const {
        throw ConfigError(file.string() + ": " + key + ": " + problem);
    }
    KeyPath operator/(const std::string& child) const {
        return {file, key.empty() ? child : key + "." + child};
    }
};

std::uint64_t read_count(const json& value, const KeyPath& at) {
    if (!value.is_number_integer() || value.get<std::int64_t>() < 0)
        at.fail("must be a non-negative integer");
    return value.get<std::uint64_t>();
}

// Sizes may be written as bytes or as "256M", "1G" (binary units).
std::uint64_t read_size(const json& value, const KeyPath& at) {
    if (value.is_string()) {
        auto bytes = parse_byte_size(value.get<std::string>());
        if (!bytes) at.fail("not a size: " + value.get<std::string>() + " (try 256M or 1G)");
        return *bytes;
    }
    return read_count(value, at);
}

std::string read_string(const json& value, const KeyPath& at) {
    if (!value.is_string()) at.fail("must be a string");
    return value.get<std::string>();
}

template <typename Id>
std::vector<Id> read_ids(const json& value, const KeyPath& at) {
    if (!value.is_array()) at.fail("must be an array of numeric ids");
    std::vector<Id> ids;
    for (std::size_t i = 0; i < value.size(); ++i) {
        std::uint64_t id = read_count(value[i], at / std::to_string(i));
        if (id > 0xFFFFFFFEu) (at / std::to_string(i)).fail("not a valid id");
        ids.push_back(static_cast<Id>(id));
    }
    return ids;
}

using LimitReader = std::function<void(isolate::Limits&, const json&, const KeyPath&)>;

LimitReader count_field(std::uint64_t isolate::Limits::*field) {
    return [field](isolate::Limits& limits, const json& value, const KeyPath& at) {
        limits.*field = read_count(value, at);
    };
}

LimitReader size_field(std::uint64_t isolate::Limits::*field) {
    return [field](isolate::Limits& limits, const json& value, const KeyPath& at) {
        limits.*field = read_size(value, at);
    };
}

void read_cpus(isolate::Limits& limits, const json& value, const KeyPath& at) {
    if (!value.is_number() || value.get<double>() < 0) at.fail("must be a non-negative number");
    limits.cpus = value.get<double>();
}

// The keys a client may send (and so have maxima), then the operator-only ones.
const std::map<std::string, LimitReader>& client_limit_readers() {
    static const std::map<std::string, LimitReader> readers = {
        {"wall_time_ms", count_field(&isolate::Limits::wall_time_ms)},
        {"cpu_time_ms", count_field(&isolate::Limits::cpu_time_ms)},
        {"memory_bytes", size_field(&isolate::Limits::memory_bytes)},
        {"max_processes", count_field(&isolate::Limits::max_processes)},
        {"max_output_bytes", size_field(&isolate::Limits::max_output_bytes)},
        {"max_file_bytes", size_field(&isolate::Limits::max_file_bytes)},
        {"cpus", read_cpus},
    };
    return readers;
}

const std::map<std::string, LimitReader>& operator_limit_readers() {
    static const std::map<std::string, LimitReader> readers = {
        {"tmpfs_bytes", size_field(&isolate::Limits::tmpfs_bytes)},
        {"stack_bytes", size_field(&isolate::Limits::stack_bytes)},
        {"open_files", count_field(&isolate::Limits::open_files)},
    };
    return readers;
}

void read_limits(const json& value, const KeyPath& at, isolate::Limits& limits,
                 bool operator_keys_allowed) {
    if (!value.is_object()) at.fail("must be an object");
    for (const auto& [key, item] : value.items()) {
        auto reader = client_limit_readers().find(key);
        if (reader != client_limit_readers().end()) {
            reader->second(limits, item, at / key);
            continue;
        }
        auto extra = operator_limit_readers().find(key);
        if (operator_keys_allowed && extra != operator_limit_readers().end()) {
            extra->second(limits, item, at / key);
            continue;
        }
        (at / key).fail("unknown limit");
    }
}

void read_policy(const json& value, const KeyPath& at, protocol::LimitPolicy& policy) {
    if (!value.is_object()) at.fail("must be an object with \"defaults\" and/or \"maxima\"");
    for (const auto& [key, item] : value.items()) {
        if (key == "defaults")
            read_limits(item, at / key, policy.defaults, true);
        else if (key == "maxima")
            read_limits(item, at / key, policy.maxima, false);
        else
            (at / key).fail("unknown key (expected \"defaults\" or \"maxima\")");
    }
}

isolate::Limits make_limits(std::uint64_t wall_ms, std::uint64_t cpu_ms, std::uint64_t memory,
                            std::uint64_t processes, std::uint64_t output, std::uint64_t file) {
    isolate::Limits limits;
    limits.wall_time_ms = wall_ms;
    limits.cpu_time_ms = cpu_ms;
    limits.memory_bytes = memory;
    limits.max_processes = processes;
    limits.max_output_bytes = output;
    limits.max_file_bytes = file;
    return limits;
}

constexpr std::uint64_t MiB = 1ull << 20;

// The integer limits a client may set, which have both a default and a maximum.
constexpr std::pair<const char*, std::uint64_t isolate::Limits::*> kBoundedLimits[] = {
    {"wall_time_ms", &isolate::Limits::wall_time_ms},
    {"cpu_time_ms", &isolate::Limits::cpu_time_ms},
    {"memory_bytes", &isolate::Limits::memory_bytes},
    {"max_processes", &isolate::Limits::max_processes},
    {"max_output_bytes", &isolate::Limits::max_output_bytes},
    {"max_file_bytes", &isolate::Limits::max_file_bytes},
};

void check_policy(const protocol::LimitPolicy& policy, const std::string& name) {
    for (const auto& [key, field] : kBoundedLimits) {
        if (policy.defaults.*field == 0)
            throw ConfigError(name + ".defaults." + key + " must not be 0");
        if (policy.defaults.*field > policy.maxima.*field)
            throw ConfigError(name + ".defaults." + key + " is above " + name + ".maxima." + key);
    }
    if (policy.maxima.cpus > 0 &&
        (policy.defaults.cpus == 0 || policy.defaults.cpus > policy.maxima.cpus))
        throw ConfigError(name + ".defaults.cpus must be set and at most " + name +
                          ".maxima.cpus when a maximum is configured");
}

}  // namespace

Config default_config() {
    Config config;
    config.seccomp_dir = std::filesystem::path(SANDBOXD_SOURCE_DIR) / "seccomp-profiles";
    config.run_limits.defaults = make_limits(5'000, 2'000, 256 * MiB, 64, 1 * MiB, 16 * MiB);
    config.run_limits.maxima = make_limits(60'000, 30'000, 2048 * MiB, 512, 64 * MiB, 256 * MiB);
    config.compile_limits.defaults =
        make_limits(30'000, 20'000, 1024 * MiB, 128, 1 * MiB, 256 * MiB);
    config.compile_limits.maxima =
        make_limits(120'000, 60'000, 4096 * MiB, 512, 64 * MiB, 1024 * MiB);
    config.compile_limits.defaults.tmpfs_bytes = 512 * MiB;
    return config;
}

void load_config_file(const std::filesystem::path& file, Config& config) {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw ConfigError(file.string() + ": cannot be read");
    std::stringstream text;
    text << in.rdbuf();
    json doc = json::parse(text.str(), nullptr, false);
    if (doc.is_discarded()) throw ConfigError(file.string() + ": not valid JSON");
    if (!doc.is_object()) throw ConfigError(file.string() + ": must be a JSON object");

    const KeyPath root{file, ""};
    for (const auto& [key, value] : doc.items()) {
        const KeyPath at = root / key;
        if (key == "socket") {
            config.socket = read_string(value, at);
        } else if (key == "socket_group") {
            config.socket_group = read_string(value, at);
        } else if (key == "allowed_uids") {
            config.allowed_uids = read_ids<uid_t>(value, at);
        } else if (key == "allowed_gids") {
            config.allowed_gids = read_ids<gid_t>(value, at);
        } else if (key == "slots") {
            std::uint64_t slots = read_count(value, at);
            if (slots > 1024) at.fail("at most 1024");
            config.slots = static_cast<unsigned>(slots);
        } else if (key == "queue_size") {
            config.queue_size = read_count(value, at);
        } else if (key == "max_request_bytes") {
            config.max_request_bytes = read_size(value, at);
        } else if (key == "language_dirs") {
            if (!value.is_array()) at.fail("must be an array of directories");
            config.language_dirs.clear();
            for (std::size_t i = 0; i < value.size(); ++i)
                config.language_dirs.emplace_back(read_string(value[i], at / std::to_string(i)));
        } else if (key == "seccomp_dir") {
            config.seccomp_dir = read_string(value, at);
        } else if (key == "uid_base") {
            std::uint64_t base = read_count(value, at);
            if (base == 0 || base > 0xF0000000u) at.fail("must be between 1 and 4026531840");
            config.uid_base = static_cast<uid_t>(base);
        } else if (key == "cgroup_subtree") {
            config.cgroup_subtree = read_string(value, at);
        } else if (key == "cgroup_version") {
            config.cgroup_version = read_string(value, at);
        } else if (key == "limits") {
            read_policy(value, at, config.run_limits);
        } else if (key == "compile_limits") {
            read_policy(value, at, config.compile_limits);
        } else if (key == "compile_cache_bytes") {
            config.compile_cache_bytes = read_size(value, at);
        } else if (key == "shutdown_grace_ms") {
            config.shutdown_grace_ms = read_count(value, at);
        } else if (key == "keep_clean_network_namespaces") {
            if (!value.is_boolean()) at.fail("must be true or false");
            config.keep_clean_network_namespaces = value.get<bool>();
        } else if (key == "pin_slots") {
            if (!value.is_boolean()) at.fail("must be true or false");
            config.pin_slots = value.get<bool>();
        } else {
            at.fail("unknown key");
        }
    }
}

void apply_limit_adjustments(const nlohmann::json& value, const std::string& where,
                             protocol::LimitPolicy& policy) {
    const std::filesystem::path origin(where);
    isolate::Limits adjusted = policy.defaults;
    read_limits(value, KeyPath{origin, ""}, adjusted, false);
    policy.defaults = adjusted;
    for (const auto& [key, field] : kBoundedLimits)
        policy.maxima.*field = std::max(policy.maxima.*field, policy.defaults.*field);
    if (policy.maxima.cpus > 0 && policy.defaults.cpus > policy.maxima.cpus)
        policy.maxima.cpus = policy.defaults.cpus;
}

void validate_config(const Config& config) {
    if (config.socket.empty() || !config.socket.is_absolute())
        throw ConfigError("socket must be an absolute path");
    if (config.socket.native().size() >= 108)
        throw ConfigError("socket path is longer than a unix socket address allows (107 bytes)");
    if (!config.socket_group.empty() && ::getgrnam(config.socket_group.c_str()) == nullptr)
        throw ConfigError("socket_group: no such group: " + config.socket_group);
    if (config.queue_size == 0) throw ConfigError("queue_size must be at least 1");
    if (config.max_request_bytes < 1024)
        throw ConfigError("max_request_bytes must be at least 1024");
    if (config.cgroup_version != "" && config.cgroup_version != "v1" &&
        config.cgroup_version != "v2")
        throw ConfigError("cgroup_version must be \"v1\", \"v2\" or absent (automatic)");
    if (config.cgroup_subtree.empty() || config.cgroup_subtree.find('/') != std::string::npos ||
        config.cgroup_subtree[0] == '.')
        throw ConfigError("cgroup_subtree must be one plain directory name");
    if (config.language_dirs.empty()) throw ConfigError("language_dirs must not be empty");
    check_policy(config.run_limits, "limits");
    check_policy(config.compile_limits, "compile_limits");
}

}  // namespace sandboxd
