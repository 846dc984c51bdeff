#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace isolate {

class SeccompFilter;

// Every limit of one run. Zero never means "unlimited" except for `cpus`.
struct Limits {
    std::uint64_t wall_time_ms = 5000;
    std::uint64_t cpu_time_ms = 2000;
    std::uint64_t memory_bytes = 256ull << 20;
    std::uint64_t max_processes = 64;             // processes and threads together
    std::uint64_t max_output_bytes = 1ull << 20;  // stdout + stderr
    std::uint64_t max_file_bytes = 16ull << 20;   // RLIMIT_FSIZE
    double cpus = 0;                              // CPU rate cap like `docker --cpus`; 0 = none
    std::uint64_t tmpfs_bytes = 64ull << 20;      // size of each of /tmp and the working directory
    std::uint64_t stack_bytes = 64ull << 20;
    std::uint64_t open_files = 256;
};

// A file placed in the working directory before the program starts.
struct InputFile {
    std::string path;  // relative to the working directory, already validated by the caller
    std::string content;
    bool executable = false;
};

// A read-only bind mount of a host directory that the operator controls (never the user).
struct BindMount {
    std::filesystem::path source;  // host path
    std::string target;  // absolute path inside the rootfs; the directory must exist there
    bool operator==(const BindMount&) const = default;
};

struct RunSpec {
    std::filesystem::path rootfs;  // needs the directories /proc, /dev, /tmp and `workdir`
    std::vector<BindMount> binds;
    std::vector<std::string> argv;  // argv[0] is resolved with PATH from `env` if it has no '/'
    std::vector<std::string> env;   // "KEY=VALUE"; nothing is inherited
    std::string workdir = "/box";
    std::vector<InputFile> files;
    std::string stdin_data;
    Limits limits;
    std::shared_ptr<const SeccompFilter> seccomp;  // required: a run never goes unfiltered
    unsigned slot = 0;   // selects the host uid/gid; two concurrent runs never share a slot
    int cancel_fd = -1;  // optional: readable means "stop this run now"
    std::vector<std::string> collect;  // working-directory files copied out after the run
};

// In order of precedence: the first that applies is the run's status.
enum class Status {
    memory_limit,
    time_limit,
    wall_time_limit,
    output_limit,
    file_size_limit,
    syscall_blocked,
    signaled,
    runtime_error,
    ok,
    internal_error,
    cancelled,
};

const char* to_string(Status status);

struct CollectedFile {
    std::string path;
    std::string content;
    bool executable = false;
};

struct RunResult {
    Status status = Status::internal_error;
    std::optional<int> exit_code;
    std::optional<int> signal;
    double cpu_time_ms = 0;
    double wall_time_ms = 0;
    std::uint64_t memory_bytes = 0;
    std::string stdout_data;
    std::string stderr_data;
    bool stdout_truncated = false;
    bool stderr_truncated = false;
    std::string message;
    std::vector<CollectedFile> collected;
};

// "SIGSEGV" for 11; "SIG<n>" for a number without a name.
std::string signal_name(int signal);

}  // namespace isolate
