// The configuration file: defaults, overlays, and the errors that name the key.

#include <doctest/doctest.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "config.h"
#include "languages.h"

namespace fs = std::filesystem;

namespace {

// A config file with `text`, removed at scope exit.
struct ConfigFile {
    fs::path path;
    explicit ConfigFile(const std::string& text)
        : path(fs::temp_directory_path() /
               ("sbx-config-" + std::to_string(::getpid()) + "-" + std::to_string(counter++))) {
        std::ofstream(path) << text;
    }
    ~ConfigFile() { fs::remove(path); }
    static inline int counter = 0;
};

std::string load_error(const std::string& text) {
    ConfigFile file(text);
    sandboxd::Config config = sandboxd::default_config();
    try {
        sandboxd::load_config_file(file.path, config);
        sandboxd::validate_config(config);
    } catch (const sandboxd::ConfigError& error) {
        return error.what();
    }
    return "";
}

}  // namespace

TEST_CASE("the defaults are valid and match docs/configuration.md") {
    sandboxd::Config config = sandboxd::default_config();
    CHECK_NOTHROW(sandboxd::validate_config(config));
    CHECK(config.socket == "/run/sandboxd/sandboxd.sock");
    CHECK(config.queue_size == 256);
    CHECK(config.max_request_bytes == 16u << 20);
    CHECK(config.run_limits.defaults.wall_time_ms == 5000);
    CHECK(config.run_limits.maxima.memory_bytes == 2048ull << 20);
    CHECK(config.compile_limits.defaults.cpu_time_ms == 20000);
    CHECK(config.pin_slots);
}

TEST_CASE("keys overlay the defaults; sizes take units") {
    ConfigFile file(R"({"slots": 3, "queue_size": 9, "max_request_bytes": "1M",
        "allowed_uids": [1000, 1001], "limits": {"defaults": {"memory_bytes": "128M",
        "tmpfs_bytes": "32M"}, "maxima": {"cpus": 2}}})");
    sandboxd::Config config = sandboxd::default_config();
    sandboxd::load_config_file(file.path, config);
    CHECK(config.slots == 3);
    CHECK(config.queue_size == 9);
    CHECK(config.max_request_bytes == 1u << 20);
    CHECK(config.allowed_uids == std::vector<uid_t>{1000, 1001});
    CHECK(config.run_limits.defaults.memory_bytes == 128u << 20);
    CHECK(config.run_limits.defaults.tmpfs_bytes == 32u << 20);
    CHECK(config.run_limits.maxima.cpus == 2);
    CHECK(config.run_limits.defaults.wall_time_ms == 5000);  // untouched
}

TEST_CASE("mistakes are errors that name the key") {
    CHECK(load_error(R"({"queue_sise": 5})").find("queue_sise: unknown key") != std::string::npos);
    CHECK(load_error(R"({"slots": "two"})").find("slots") != std::string::npos);
    CHECK(load_error(R"({"limits": {"defaults": {"memory_bytes": "lots"}}})")
              .find("limits.defaults.memory_bytes") != std::string::npos);
    CHECK(load_error(R"({"limits": {"maxima": {"tmpfs_bytes": 1}}})").find("unknown limit") !=
          std::string::npos);
    CHECK(load_error(R"({"limits": {"defaults": {"wall_time_ms": 90000}}})")
              .find("limits.maxima.wall_time_ms") != std::string::npos);
    CHECK(load_error(R"({"pin_slots": "yes"})").find("pin_slots: must be true or false") !=
          std::string::npos);
    CHECK(load_error(R"({"uid_base": 0})").find("uid_base") != std::string::npos);
    CHECK(load_error(R"({"socket": "relative.sock"})").find("absolute") != std::string::npos);
    CHECK(load_error(R"({"cgroup_subtree": "../escape"})").find("cgroup_subtree") !=
          std::string::npos);
    CHECK(load_error(R"({"socket_group": "no-such-group-here"})").find("no such group") !=
          std::string::npos);
    CHECK(load_error("[1]").find("JSON object") != std::string::npos);
    CHECK(load_error("{").find("not valid JSON") != std::string::npos);
}

TEST_CASE("the example in docs/configuration.md loads") {
    std::ifstream in(std::string(SANDBOXD_SOURCE_DIR) + "/docs/configuration.md");
    std::stringstream doc;
    doc << in.rdbuf();
    std::string text = doc.str();
    auto start = text.find("```json\n");
    REQUIRE(start != std::string::npos);
    start += 8;
    auto end = text.find("```", start);
    std::string example = text.substr(start, end - start);
    // The group may not exist on a test machine; the rest must be valid.
    auto group = example.find("\"socket_group\": \"sandboxd\",");
    if (group != std::string::npos) example.erase(group, 27);
    CHECK(load_error(example) == "");
}

TEST_CASE("a language's limit adjustments raise its defaults, and maxima to match") {
    sandboxd::protocol::LimitPolicy policy = sandboxd::default_config().run_limits;
    sandboxd::apply_limit_adjustments({{"max_processes", 1000}, {"wall_time_ms", 100}}, "java",
                                      policy);
    CHECK(policy.defaults.max_processes == 1000);
    CHECK(policy.maxima.max_processes == 1000);
    CHECK(policy.defaults.wall_time_ms == 100);
    CHECK(policy.maxima.wall_time_ms == 60000);
    CHECK_THROWS_AS(sandboxd::apply_limit_adjustments({{"tmpfs_bytes", 1}}, "x", policy),
                    sandboxd::ConfigError);
}

TEST_CASE("{memory_mb} in argv becomes the step's memory limit") {
    auto argv = sandboxd::expand_argv({"java", "-Xmx{memory_mb}m", "-X{memory_mb}{memory_mb}"},
                                      256ull << 20);
    CHECK(argv == std::vector<std::string>{"java", "-Xmx256m", "-X256256"});
}
