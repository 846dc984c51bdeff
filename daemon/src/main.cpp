#include <CLI/CLI.hpp>

#include "exec_command.h"
#include "serve_command.h"

int main(int argc, char** argv) {
    CLI::App app{
        "sandboxd: runs untrusted code in fresh namespaces, cgroups and seccomp.\n"
        "Without a subcommand it serves requests on its unix socket."};
    app.set_version_flag("--version", SANDBOXD_VERSION);
    app.require_subcommand(0, 1);
    int exit_code = 0;
    sandboxd::add_serve_options(app, exit_code);
    sandboxd::add_exec_command(app, exit_code);
    CLI11_PARSE(app, argc, argv);
    return exit_code;
}
