#include "exec_command.h"

#include <unistd.h>

#include <fstream>
#include <iostream>
#include <sstream>

#include "byte_size.h"
#include "isolate/error.h"
#include "isolate/sandbox.h"
#include "isolate/seccomp.h"
#include "outcome_json.h"
#include "seccomp_profile.h"

namespace sandboxd {
namespace {

struct ExecOptions {
    std::string rootfs;
    std::vector<std::string> binds;
    std::vector<std::string> files;
    std::vector<std::string> env;
    std::vector<std::string> collect;
    std::string stdin_file;
    std::string seccomp = std::string(SANDBOXD_SOURCE_DIR) + "/seccomp-profiles/default.json";
    std::string workdir = "/box";
    std::string memory = "256M", output = "1M", file_size = "16M", tmpfs = "64M", stack = "64M";
    std::uint64_t wall_ms = 5000, cpu_ms = 2000, processes = 64, open_files = 256;
    double cpus = 0;
    unsigned slot = 0;
    std::uint32_t uid_base = 1'000'000;
    std::string cgroup_subtree = "sandboxd-exec";
    std::vector<std::string> argv;
};

std::string read_host_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + path);
    std::ostringstream content;
    content << in.rdbuf();
    return content.str();
}

std::uint64_t size_option(const std::string& name, const std::string& value) {
    auto parsed = parse_byte_size(value);
    if (!parsed) throw std::runtime_error("--" + name + ": not a size: " + value);
    return *parsed;
}

std::pair<std::string, std::string> split_pair(const std::string& text, char separator,
                                               const char* option) {
    auto at = text.find(separator);
    if (at == std::string::npos || at == 0 || at + 1 == text.size())
        throw std::runtime_error(std::string(option) + " wants A" + separator + "B, got " + text);
    return {text.substr(0, at), text.substr(at + 1)};
}

int run_exec(const ExecOptions& options) {
    isolate::RunSpec spec;
    spec.rootfs = options.rootfs;
    for (const auto& bind : options.binds) {
        auto [source, target] = split_pair(bind, ':', "--bind");
        spec.binds.push_back({source, target});
    }
    for (const auto& file : options.files) {
        auto [inside, host] = split_pair(file, '=', "--file");
        spec.files.push_back({inside, read_host_file(host), ::access(host.c_str(), X_OK) == 0});
    }
    spec.argv = options.argv;
    spec.env = options.env;
    if (spec.env.empty())
        spec.env = {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + options.workdir};
    spec.workdir = options.workdir;
    spec.collect = options.collect;
    if (!options.stdin_file.empty()) spec.stdin_data = read_host_file(options.stdin_file);
    spec.limits.wall_time_ms = options.wall_ms;
    spec.limits.cpu_time_ms = options.cpu_ms;
    spec.limits.memory_bytes = size_option("memory", options.memory);
    spec.limits.max_processes = options.processes;
    spec.limits.max_output_bytes = size_option("output", options.output);
    spec.limits.max_file_bytes = size_option("file-size", options.file_size);
    spec.limits.tmpfs_bytes = size_option("tmpfs", options.tmpfs);
    spec.limits.stack_bytes = size_option("stack", options.stack);
    spec.limits.open_files = options.open_files;
    spec.limits.cpus = options.cpus;
    spec.slot = options.slot;
    // One run in a namespace of its own: nothing is kept for which reports would count.
    spec.seccomp = isolate::SeccompFilter::compile(load_seccomp_profile(options.seccomp), false);

    isolate::cgroup::BackendOptions cgroup_options;
    cgroup_options.subtree = options.cgroup_subtree;
    auto backend = isolate::cgroup::detect_backend(cgroup_options);
    std::string backend_name = backend->name();
    isolate::SandboxConfig config;
    config.uid_base = options.uid_base;
    config.prepared_netns = 0;  // one run: nothing to prepare ahead for
    isolate::Sandbox sandbox(config, std::move(backend));
    isolate::RunResult result = sandbox.run(spec);

    nlohmann::json out = outcome_to_json(result);
    out["cgroup"] = backend_name;
    nlohmann::json collected = nlohmann::json::array();
    for (const auto& file : result.collected)
        collected.push_back({{"path", file.path}, {"bytes", file.content.size()}});
    if (!spec.collect.empty()) out["collected"] = collected;
    std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return result.status == isolate::Status::internal_error ? 2 : 0;
}

}  // namespace

void add_exec_command(CLI::App& app, int& exit_code) {
    auto options = std::make_shared<ExecOptions>();
    CLI::App* exec = app.add_subcommand(
        "exec",
        "Run one program under the sandbox core, without the daemon; print the result as JSON");
    exec->add_option("--rootfs", options->rootfs,
                     "Root filesystem directory (needs /proc, /dev, /tmp, /box)")
        ->required()
        ->check(CLI::ExistingDirectory);
    exec->add_option("--bind", options->binds, "Read-only bind mount HOST:INSIDE (repeatable)")
        ->allow_extra_args(false);
    exec->add_option("--file", options->files,
                     "Put host file HOST at INSIDE (relative): INSIDE=HOST")
        ->allow_extra_args(false);
    exec->add_option("--collect", options->collect,
                     "Report this working-directory file after the run")
        ->allow_extra_args(false);
    exec->add_option("--env", options->env, "Environment entry KEY=VALUE (nothing is inherited)")
        ->allow_extra_args(false);
    exec->add_option("--stdin", options->stdin_file, "File fed to the program's stdin");
    exec->add_option("--seccomp", options->seccomp, "Seccomp profile JSON")->capture_default_str();
    exec->add_option("--workdir", options->workdir, "Working directory inside")
        ->capture_default_str();
    exec->add_option("--wall-ms", options->wall_ms, "Wall-clock limit")->capture_default_str();
    exec->add_option("--time-ms", options->cpu_ms, "CPU time limit, all processes together")
        ->capture_default_str();
    exec->add_option("--memory", options->memory, "Memory limit (256M, 1G, ...)")
        ->capture_default_str();
    exec->add_option("--processes", options->processes, "Processes and threads")
        ->capture_default_str();
    exec->add_option("--output", options->output, "stdout+stderr limit")->capture_default_str();
    exec->add_option("--file-size", options->file_size, "Largest file the program may write")
        ->capture_default_str();
    exec->add_option("--tmpfs", options->tmpfs, "Size of /tmp and of the working directory")
        ->capture_default_str();
    exec->add_option("--stack", options->stack, "Stack limit")->capture_default_str();
    exec->add_option("--open-files", options->open_files, "Open files limit")
        ->capture_default_str();
    exec->add_option("--cpus", options->cpus, "CPU rate cap, like docker --cpus (0: none)");
    exec->add_option("--slot", options->slot, "Slot: the host uid is uid-base + slot")
        ->capture_default_str();
    exec->add_option("--uid-base", options->uid_base, "First host uid of the slots")
        ->capture_default_str();
    exec->add_option("--cgroup-subtree", options->cgroup_subtree, "cgroup directory below our own")
        ->capture_default_str();
    exec->add_option("argv", options->argv, "The program and its arguments (after --)")->required();
    exec->callback([options, &exit_code] {
        try {
            exit_code = run_exec(*options);
        } catch (const std::exception& error) {
            std::cerr << "sandboxd exec: " << error.what() << "\n";
            exit_code = 2;
        }
    });
}

}  // namespace sandboxd
