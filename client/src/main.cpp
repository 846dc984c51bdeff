#include <CLI/CLI.hpp>
#include <iostream>

#include "commands.h"

namespace {

constexpr const char* kRunFooter = R"(Exit status:
  the program's exit code   when it exited (0 for ok, the code for runtime_error)
  128+N                     when it was killed by signal N (signaled)
  1                         compile_error
  124                       time_limit or wall_time_limit (like timeout(1))
  137                       memory_limit
  125                       output_limit, file_size_limit, syscall_blocked
  2                         internal_error, an error response, or a client failure
                            (cannot connect, timeout, unreadable file)
With --json: 0 when sandboxd answered ok:true, else 2.

The program's stdout and stderr are copied byte for byte; a compiler's diagnostics go to
stderr; a "[sandboxd] ..." verdict line follows on stderr unless --quiet.
An argument that looks like one of sandboxctl's options needs the --arg=VALUE form.)";

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"sandboxctl: command-line client of sandboxd"};
    app.set_version_flag("--version", SANDBOXD_VERSION);
    app.require_subcommand(1);
    // Lets --socket / --timeout-ms also follow the subcommand.
    app.fallthrough();

    sandboxctl::GlobalOptions global;
    app.add_option("--socket", global.socket_path, "sandboxd's unix socket")
        ->envname("SANDBOXD_SOCKET")
        ->capture_default_str();
    app.add_option("--timeout-ms", global.timeout_ms,
                   "give up when the whole request takes longer (0: wait forever)")
        ->capture_default_str();

    sandboxctl::RunOptions run;
    std::uint64_t cpu_time_ms = 0, wall_time_ms = 0, max_processes = 0;
    auto* run_command = app.add_subcommand("run", "run a program in the sandbox");
    run_command->add_option("FILE", run.file, "source file ('-': standard input)")->required();
    run_command->add_option("--lang", run.language,
                            "language name or alias (default: guessed from FILE's extension)");
    run_command->add_option("--stdin", run.stdin_file,
                            "file fed to the program's stdin ('-': ours)");
    auto* cpu_option =
        run_command->add_option("--time-ms", cpu_time_ms, "CPU time limit in milliseconds");
    auto* wall_option =
        run_command->add_option("--wall-ms", wall_time_ms, "wall-clock limit in milliseconds");
    run_command->add_option("--memory", run.memory, "memory limit, e.g. 256M");
    auto* processes_option =
        run_command->add_option("--processes", max_processes, "process/thread limit");
    run_command->add_option("--output", run.output, "stdout+stderr limit, e.g. 1M");
    run_command->add_option("--arg", run.args, "program argument (repeatable)")
        ->allow_extra_args(false);
    run_command
        ->add_option("--file", run.files,
                     "copy HOSTPATH to INSIDE (relative to the working directory; repeatable)")
        ->type_name("INSIDE=HOSTPATH")
        ->allow_extra_args(false);
    run_command->add_flag("--json", run.json, "print the raw response line");
    run_command->add_flag("-q,--quiet", run.quiet, "no verdict line");
    run_command->footer(kRunFooter);

    bool languages_json = false, stats_json = false, ping_json = false;
    app.add_subcommand("languages", "list the installed languages")
        ->add_flag("--json", languages_json, "print the raw response line");
    app.add_subcommand("stats", "show the daemon's counters")
        ->add_flag("--json", stats_json, "print the raw response line");
    app.add_subcommand("ping", "check that sandboxd answers")
        ->add_flag("--json", ping_json, "print the raw response line");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& error) {
        // Usage errors share exit code 2 with every other client failure; --help stays 0.
        int code = app.exit(error);
        return code == 0 ? 0 : sandboxctl::kExitClientError;
    }

    if (cpu_option->count() > 0) run.cpu_time_ms = cpu_time_ms;
    if (wall_option->count() > 0) run.wall_time_ms = wall_time_ms;
    if (processes_option->count() > 0) run.max_processes = max_processes;

    const std::string command = app.get_subcommands().front()->get_name();
    if (command == "run") return sandboxctl::run_command(global, run, std::cout, std::cerr);
    if (command == "languages")
        return sandboxctl::languages_command(global, languages_json, std::cout, std::cerr);
    if (command == "stats")
        return sandboxctl::stats_command(global, stats_json, std::cout, std::cerr);
    return sandboxctl::ping_command(global, ping_json, std::cout, std::cerr);
}
