#pragma once

// The real daemon, started as a process on a temporary socket, and a line-oriented client
// that talks to it over that socket. Nothing is mocked: runs go through real namespaces,
// cgroups and seccomp on the host-derived languages of rootfs/host/.

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace test {

using Json = nlohmann::json;
using namespace std::chrono_literals;

// DIR/<name>/{language.json,manifest.json,root} for python, bash and c; made once per binary.
const std::filesystem::path& host_languages();

struct DaemonOptions {
    unsigned slots = 2;
    unsigned queue_size = 256;
    std::uint64_t shutdown_grace_ms = 3000;
    Json config = Json::object();  // written to a --config file (keys of docs/configuration.md)
    std::vector<std::string> extra_args;
    std::vector<std::string> extra_env;  // KEY=VALUE, on top of the test runner's environment
    bool with_languages = true;
    std::filesystem::path language_dir;  // when set, instead of host_languages()
};

class Daemon {
  public:
    explicit Daemon(DaemonOptions options = {});
    ~Daemon();  // SIGTERM, then SIGKILL if it has not exited within 10 s
    Daemon(const Daemon&) = delete;
    Daemon& operator=(const Daemon&) = delete;

    const std::filesystem::path& socket() const { return socket_; }
    pid_t pid() const { return pid_; }
    uid_t uid_base() const { return uid_base_; }
    const std::string& cgroup_subtree() const { return subtree_; }
    const std::filesystem::path& directory() const { return dir_; }
    // On a pure cgroup2 host where the test runner has a delegated cgroup of its own (see
    // delegated_cgroups()): the fresh cgroup <own>/daemon-N the running (or last) daemon was
    // born in, as systemd gives a Delegate=yes unit. Empty otherwise, and once trimmed.
    const std::filesystem::path& cgroup() const { return cgroup_; }
    // Everything the daemon wrote on stderr so far.
    std::string log() const;

    // Starts it (again, after SIGKILL: the restart case) with the same socket and subtree. With
    // delegated cgroups, a restart trims the last daemon's cgroup and gets a fresh one.
    void start();
    // What systemd does with a stopped unit's cgroup: waits (10 s at most) for it to empty,
    // then removes it bottom-up. Only after the daemon has exited. rmdir fails with EBUSY
    // while any process is left, so this is a check: it returns what could not be removed
    // and why (then kills what was left and removes it anyway), empty when all went. A
    // no-op without delegated cgroups.
    std::string trim_cgroup();
    void signal(int signal);
    // Waits for the process to exit; its exit status (or -signal), nullopt on timeout.
    std::optional<int> wait_exit(std::chrono::milliseconds timeout);

  private:
    DaemonOptions options_;
    std::filesystem::path dir_, socket_, log_file_, config_file_;
    std::string subtree_;
    std::filesystem::path cgroup_;
    uid_t uid_base_;
    pid_t pid_ = -1;
};

class Client {
  public:
    explicit Client(const std::filesystem::path& socket);
    ~Client();
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    void send_raw(const std::string& bytes);
    void send(const Json& request) { send_raw(request.dump() + "\n"); }
    // The next response line, parsed; nullopt on EOF or timeout.
    std::optional<Json> read(std::chrono::milliseconds timeout = 60s);
    // Sends one request and reads one response.
    Json call(const Json& request, std::chrono::milliseconds timeout = 60s);
    // True when the daemon closed the connection (EOF) within `timeout`.
    bool closed_by_peer(std::chrono::milliseconds timeout = 10s);
    void close();
    int fd() const { return fd_; }

  private:
    int fd_ = -1;
    std::string buffer_;
};

// {"op":"execute","language":L,"code":C, ...extra}
Json execute(const std::string& language, const std::string& code, Json extra = Json::object());

// Host processes whose real uid is in [first, first + count).
std::vector<pid_t> processes_of_uids(uid_t first, unsigned count);
// The same without the processes of sandboxes built ahead (pid 1, and the program's process
// named "sandbox-ready" as it waits for its request): the processes of runs.
std::vector<pid_t> run_processes_of_uids(uid_t first, unsigned count);
// How many sandboxes built ahead wait, idle, in [first, first + count).
std::size_t prepared_sandboxes_of_uids(uid_t first, unsigned count);

// True on a host with cgroup2 only (/sys/fs/cgroup is cgroup2, no v1 memory hierarchy), where
// the daemon must pick the v2 backend; false on hybrid v1 hosts like our CI machine.
bool pure_cgroup2_host();

// On a pure cgroup2 host, when the test runner's own cgroup is not the root (it is alone in
// a delegated cgroup, as scripts/vm-test's delegated mode puts it): the first call moves the
// runner into <own>/test-runner and enables memory, pids and cpu for <own>'s children, and
// each Daemon is then born into a fresh <own>/daemon-N of its own. Returns <own>, or empty
// when the daemons simply share the runner's cgroup (v1 hosts, the root cgroup).
const std::filesystem::path& delegated_cgroups();

// SBX_TIME_SCALE (1 to 10, default 1): how much slower than the host the machine is;
// scripts/vm-test sets it in its guest. Scales the daemons' default run budgets.
unsigned time_scale();

// SBX_CGROUP_BACKEND ("v1", "v2" or unset): the backend every daemon is started with
// (--cgroup-version), so that in scripts/vm-test's guest nothing can fall back.
std::string forced_cgroup_backend();

// The daemon's cgroup subtree wherever it puts it (in every v1 hierarchy or in cgroup2,
// below the daemon's own cgroup: daemon.cgroup() when delegated, else the runner's), with
// every directory below it; empty when nothing is left.
std::vector<std::filesystem::path> cgroup_leftovers(const Daemon& daemon);

// Runs argv to completion; stdout and stderr together, and the exit status.
struct Completed {
    int status = -1;
    std::string output;
};
Completed run_program(std::vector<std::string> argv, const std::string& stdin_data = "");

// Polls `condition` every 20 ms until it is true or `timeout` passes.
template <typename Condition>
bool eventually(Condition condition, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (condition()) return true;
        std::this_thread::sleep_for(20ms);
    }
    return condition();
}

}  // namespace test
