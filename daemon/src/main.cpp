#include <CLI/CLI.hpp>
#include <cstring>

#include "exec_command.h"
#include "serve_command.h"

int main(int argc, char** argv) {
    int exit_code = 0;
    // `exec` and the daemon share no option, so each gets a parser of its own: the daemon's
    // flags mean nothing to `exec`, and `sandboxd --socket X exec` is not a thing.
    if (argc > 1 && std::strcmp(argv[1], "exec") == 0) {
        CLI::App app{"sandboxd exec: one program under the sandbox core, without the daemon"};
        app.require_subcommand(1);
        sandboxd::add_exec_command(app, exit_code);
        CLI11_PARSE(app, argc, argv);
        return exit_code;
    }
    CLI::App app{
        "sandboxd: runs untrusted code in fresh namespaces, cgroups and seccomp.\n"
        "Serves requests on its unix socket; `sandboxd exec --help` runs one program without it."};
    app.set_version_flag("--version", SANDBOXD_VERSION);
    sandboxd::add_serve_options(app, exit_code);
    CLI11_PARSE(app, argc, argv);
    return exit_code;
}
