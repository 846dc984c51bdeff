#pragma once

#include <CLI/CLI.hpp>

namespace sandboxd {

// `sandboxd exec --rootfs DIR [limits] -- ARGV`: one program under the core, no daemon,
// result as JSON on stdout. For operators debugging a rootfs or a profile.
// Sets `exit_code`: 0 when the program ran (whatever its verdict), 2 on internal_error.
void add_exec_command(CLI::App& app, int& exit_code);

}  // namespace sandboxd
