#pragma once

// The wire protocol of shared/PROTOCOL.md as pure functions: one request line in, a typed
// request or an error out; a response body in, one line out. No sockets, no kernel, so it can
// be fuzzed. Everything a client controls is validated here; later stages trust these types
// (except for language names, which only the daemon's language table can check).

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "isolate/run_spec.h"

namespace sandboxd::protocol {

enum class ErrorCode {
    bad_request,
    unknown_op,
    unknown_language,
    limit_too_high,
    too_large,
    busy,
    shutting_down,
    internal,
};

const char* to_string(ErrorCode code);

// A string or a number, echoed back verbatim; null when absent or unusable.
using RequestId = nlohmann::json;

// Bounds that keep one request's validation cheap and its sandbox setup sane.
inline constexpr std::size_t max_depth = 64;  // nesting of arrays and objects, top level is 1
inline constexpr std::size_t max_files = 1000;
inline constexpr std::size_t max_tests = 1000;
inline constexpr std::size_t max_path_bytes = 4096;           // PATH_MAX
inline constexpr std::size_t max_component_bytes = 255;       // NAME_MAX
inline constexpr std::uint64_t max_limit_value = 1ull << 53;  // exact in every JSON reader

// A limit a client set explicitly; nullopt takes the next layer's value.
struct LimitOverrides {
    std::optional<std::uint64_t> wall_time_ms;
    std::optional<std::uint64_t> cpu_time_ms;
    std::optional<std::uint64_t> memory_bytes;
    std::optional<std::uint64_t> max_processes;
    std::optional<std::uint64_t> max_output_bytes;
    std::optional<std::uint64_t> max_file_bytes;
    std::optional<double> cpus;  // 0 = no rate cap
};

struct InputFile {
    std::string path;     // relative, normalized (no empty, "." or ".." component), unique
    std::string content;  // decoded bytes
};

struct TestCase {
    std::string stdin_data;
    LimitOverrides limits;
};

struct ExecuteRequest {
    std::string language;  // a name or an alias, not yet looked up
    std::string code;
    std::vector<InputFile> files;
    std::string stdin_data;
    std::vector<std::string> args;
    std::vector<std::pair<std::string, std::string>> env;  // sorted by key, keys unique
    LimitOverrides limits;
    LimitOverrides compile_limits;
    std::optional<std::vector<TestCase>> tests;  // never an empty vector
};

struct PingRequest {};
struct LanguagesRequest {};
struct StatsRequest {};

struct Request {
    RequestId id;
    std::variant<PingRequest, LanguagesRequest, ExecuteRequest, StatsRequest> body;
};

struct Error {
    RequestId id;
    ErrorCode code = ErrorCode::internal;
    std::string message;
};

// `line` is one request without its trailing '\n'. Never throws: anything a client can send,
// including invalid UTF-8 and pathological nesting, becomes an Error (running out of memory
// becomes an `internal` one). The Error carries the request's id whenever the id could be
// read, even from a line that is otherwise broken. An optional field that is null counts as
// absent, because many JSON serializers write null for "not set".
std::variant<Request, Error> parse_request(std::string_view line);

// The daemon's configured limits. Only the keys a client may override are checked against
// `maxima`; maxima.cpus == 0 means "no maximum" (a client may ask for any rate, or none).
struct LimitPolicy {
    isolate::Limits defaults;
    isolate::Limits maxima;
};

// Overrides on top of policy.defaults. A value above the maximum is a limit_too_high whose
// message names `field_name`.key and the maximum; values are never clamped. `field_name` is
// the JSON path of the overrides: "limits", "compile_limits", "tests[3].limits".
std::variant<isolate::Limits, Error> resolve_limits(const LimitOverrides& overrides,
                                                    const LimitPolicy& policy, const RequestId& id,
                                                    std::string_view field_name);

struct ExecuteLimits {
    isolate::Limits compile;             // compile_limits over compile_policy.defaults
    isolate::Limits run;                 // limits over run_policy.defaults
    std::vector<isolate::Limits> tests;  // tests[i].limits over `run`; one per test, if any
};

// All the limits of one execute request: a test's limits override the request's limits,
// which override the defaults; every explicit value is checked against the maxima.
std::variant<ExecuteLimits, Error> resolve_execute_limits(const ExecuteRequest& request,
                                                          const LimitPolicy& run_policy,
                                                          const LimitPolicy& compile_policy,
                                                          const RequestId& id);

// One line ending in '\n': {"id":..,"ok":false,"error":{"code":..,"message":..}}.
std::string encode_error(const Error& error);

// One line ending in '\n': {"id":..,"ok":true, ...body}. `body` must be an object (its own
// "id" and "ok" keys are replaced). Strings that are not UTF-8 are written with U+FFFD in
// place of the bad bytes rather than failing; binary output must be base64-encoded before.
// Neither encoder throws anything but std::bad_alloc.
std::string encode_ok(const RequestId& id, nlohmann::json body);

}  // namespace sandboxd::protocol
