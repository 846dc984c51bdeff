#pragma once

#include <optional>
#include <string>

#include "isolate/run_spec.h"

namespace isolate {

// What the supervisor observed during one run; decide_verdict turns it into a status.
struct RunFacts {
    std::optional<std::string> setup_error;  // internal_error, whatever else happened
    bool cancelled = false;
    bool oom_killed = false;
    bool cpu_exceeded = false;
    bool wall_exceeded = false;
    bool output_exceeded = false;
    bool killed_by_supervisor = false;
    std::optional<int> wait_status;  // the program's, as init reported it
    std::optional<std::string> blocked_syscall;
};

// Fills status, exit_code, signal and message, in PROTOCOL.md's order of precedence.
void decide_verdict(const RunFacts& facts, const Limits& limits, RunResult& result);

}  // namespace isolate
