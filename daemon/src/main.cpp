#include <CLI/CLI.hpp>

#include "exec_command.h"

int main(int argc, char** argv) {
    CLI::App app{"sandboxd: runs untrusted code in fresh namespaces, cgroups and seccomp"};
    app.set_version_flag("--version", SANDBOXD_VERSION);
    app.require_subcommand(1);
    int exit_code = 0;
    sandboxd::add_exec_command(app, exit_code);
    CLI11_PARSE(app, argc, argv);
    return exit_code;
}
