#pragma once

#include <CLI/CLI.hpp>

namespace sandboxd {

// `sandboxd [--config FILE] [--socket PATH] ...`: the daemon itself. Runs until SIGTERM and
// sets `exit_code` (0 after a clean shutdown, 1 when it cannot start, 2 on a bad config).
void add_serve_options(CLI::App& app, int& exit_code);

}  // namespace sandboxd
