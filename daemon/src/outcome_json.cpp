#include "outcome_json.h"

#include <cmath>

#include "encoding.h"

namespace sandboxd {
namespace {

double round_ms(double ms) {
    return std::round(ms * 10.0) / 10.0;
}

}  // namespace

nlohmann::json outcome_to_json(const isolate::RunResult& result) {
    // Both streams share one encoding so a client decodes them the same way.
    bool utf8 = is_valid_utf8(result.stdout_data) && is_valid_utf8(result.stderr_data);
    nlohmann::json out = {
        {"status", isolate::to_string(result.status)},
        {"exit_code", result.exit_code ? nlohmann::json(*result.exit_code) : nlohmann::json()},
        {"signal",
         result.signal ? nlohmann::json(isolate::signal_name(*result.signal)) : nlohmann::json()},
        {"stdout", utf8 ? result.stdout_data : base64_encode(result.stdout_data)},
        {"stderr", utf8 ? result.stderr_data : base64_encode(result.stderr_data)},
        {"stdout_truncated", result.stdout_truncated},
        {"stderr_truncated", result.stderr_truncated},
        {"encoding", utf8 ? "utf8" : "base64"},
        {"cpu_time_ms", round_ms(result.cpu_time_ms)},
        {"wall_time_ms", round_ms(result.wall_time_ms)},
        {"memory_bytes", result.memory_bytes},
        {"message", result.message},
    };
    return out;
}

}  // namespace sandboxd
