#pragma once

#include <nlohmann/json.hpp>

#include "isolate/run_spec.h"

namespace sandboxd {

// One outcome object of PROTOCOL.md: status, exit code, signal, output, usage, message.
nlohmann::json outcome_to_json(const isolate::RunResult& result);

}  // namespace sandboxd
