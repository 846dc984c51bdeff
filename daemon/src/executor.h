#pragma once

// One execute request, start to end: compile once (for compiled languages), then run the
// program once or once per test. Runs on a scheduler slot thread and blocks it.

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "compile_cache.h"
#include "isolate/sandbox.h"
#include "languages.h"
#include "protocol.h"

namespace sandboxd {

struct ExecuteJob {
    const Language* language = nullptr;
    protocol::ExecuteRequest request;
    protocol::ExecuteLimits limits;
};

// What the daemon's request log needs besides the response.
struct ExecuteSummary {
    std::string status;
    double cpu_time_ms = 0;  // compile and every run together
    double wall_time_ms = 0;
    std::uint64_t memory_bytes = 0;  // the highest peak of any step
};

// Checks what only the language can tell: no input file may take the place of the source
// file or a compiled artifact. Returns the bad_request message, if any.
std::optional<std::string> check_against_language(const protocol::ExecuteRequest& request,
                                                  const Language& language);

// The response body of PROTOCOL.md's execute (without id and ok). `cache` may be null (off).
nlohmann::json execute(isolate::Sandbox& sandbox, CompileCache* cache, const ExecuteJob& job,
                       unsigned slot, int cancel_fd, ExecuteSummary& summary);

}  // namespace sandboxd
