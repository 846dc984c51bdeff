// The daemon as an operator sees it: disconnects, SIGTERM, SIGKILL and restart, socket access,
// logs, configuration errors, and sandboxctl talking to it.

#include <doctest/doctest.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>

#include "harness.h"

using namespace test;
namespace fs = std::filesystem;

namespace {

// Waits until one of the daemon's sandboxes has a process on the host.
bool sandbox_running(const Daemon& daemon) {
    return eventually([&] { return !processes_of_uids(daemon.uid_base(), 64).empty(); }, 20s);
}

bool no_sandbox_left(const Daemon& daemon) {
    return eventually([&] { return processes_of_uids(daemon.uid_base(), 64).empty(); }, 10s);
}

// While the daemon lives, a slot may hold a sandbox built ahead (idle, no run in it).
bool no_run_left(const Daemon& daemon) {
    return eventually([&] { return run_processes_of_uids(daemon.uid_base(), 64).empty(); }, 10s);
}

// Waits until the daemon's stats show `running` runs and `queued` requests.
bool stats_reach(const Daemon& daemon, int running, int queued) {
    Client watcher(daemon.socket());
    return eventually(
        [&] {
            Json stats = watcher.call({{"op", "stats"}});
            return stats["running"] == running && stats["queued"] == queued;
        },
        10s);
}

// `count` requests, pipelined, that each sleep for 30 s unless something ends them.
std::string long_sleeps(int count) {
    std::string batch;
    for (int i = 0; i < count; ++i)
        batch +=
            execute("bash", "sleep 30", {{"id", i}, {"limits", {{"wall_time_ms", 60000}}}}).dump() +
            "\n";
    return batch;
}

std::string sandboxctl() {
    return fs::path(SBX_SANDBOXD_BIN).parent_path() / "sandboxctl";
}

}  // namespace

TEST_CASE("a client that disconnects mid-run has its sandbox killed and its queue dropped" *
          doctest::test_suite("vm")) {
    DaemonOptions options;
    options.slots = 1;
    Daemon daemon(options);
    {
        Client client(daemon.socket());
        client.send_raw(long_sleeps(3));
        REQUIRE(sandbox_running(daemon));
        Client watcher(daemon.socket());
        CHECK(watcher.call({{"op", "stats"}})["queued"] == 2);
    }
    CHECK(no_run_left(daemon));
    CHECK(stats_reach(daemon, 0, 0));
    CHECK(daemon.log().find("event=disconnect") != std::string::npos);
}

// A connection's runs share one cancel token; another connection's must not.
TEST_CASE("a client that disconnects cancels its own runs, never another client's" *
          doctest::test_suite("vm")) {
    Daemon daemon;  // two slots: the staying run and one of the leaving client's
    Client staying(daemon.socket());
    staying.send(execute("bash", "sleep 1.5; echo survived",
                         {{"id", "staying"}, {"limits", {{"wall_time_ms", 60000}}}}));
    {
        Client leaving(daemon.socket());
        leaving.send_raw(long_sleeps(2));
        REQUIRE(stats_reach(daemon, 2, 1));
    }
    auto answer = staying.read();
    REQUIRE(answer);
    CHECK((*answer)["id"] == "staying");
    CHECK((*answer)["status"] == "ok");
    CHECK((*answer)["run"]["stdout"] == "survived\n");
    CHECK(no_run_left(daemon));
}

TEST_CASE("a client that half-closes still gets its answer" * doctest::test_suite("vm")) {
    Daemon daemon;
    Client client(daemon.socket());
    client.send(execute("bash", "sleep 0.3; echo done", {{"id", "half"}}));
    ::shutdown(client.fd(), SHUT_WR);
    auto response = client.read(20s);
    REQUIRE(response);
    CHECK((*response)["run"]["stdout"] == "done\n");
    // Nothing more will come: the daemon closes its side once the last answer is out.
    CHECK(client.closed_by_peer(5s));
}

TEST_CASE("SIGTERM: queued requests get shutting_down, running ones finish, exit 0, nothing left" *
          doctest::test_suite("vm")) {
    DaemonOptions options;
    options.slots = 1;
    options.shutdown_grace_ms = 5000;
    Daemon daemon(options);
    Client client(daemon.socket());
    client.send(execute("bash", "sleep 1; echo finished", {{"id", "running"}}));
    REQUIRE(sandbox_running(daemon));
    client.send(execute("bash", "echo never", {{"id", "queued-1"}}));
    client.send(execute("bash", "echo never", {{"id", "queued-2"}}));
    Client watcher(daemon.socket());
    REQUIRE(eventually([&] { return watcher.call({{"op", "stats"}})["queued"] == 2; }, 10s));

    auto started = std::chrono::steady_clock::now();
    daemon.signal(SIGTERM);
    std::map<std::string, Json> answers;
    for (int i = 0; i < 3; ++i) {
        auto response = client.read(20s);
        REQUIRE(response);
        answers[(*response)["id"]] = *response;
    }
    CHECK(answers["queued-1"]["error"]["code"] == "shutting_down");
    CHECK(answers["queued-2"]["error"]["code"] == "shutting_down");
    CHECK(answers["running"]["run"]["stdout"] == "finished\n");
    auto status = daemon.wait_exit(10s);
    REQUIRE(status);
    CHECK(*status == 0);
    CHECK(std::chrono::steady_clock::now() - started < 10s);
    CHECK_FALSE(fs::exists(daemon.socket()));
    CHECK(cgroup_leftovers(daemon).empty());
    CHECK(no_sandbox_left(daemon));
    // Delegated: nothing is left in the cgroup it was born in, so it can be removed.
    const std::string trimmed = daemon.trim_cgroup();
    CHECK_MESSAGE(trimmed.empty(), "the daemon's cgroup:" << trimmed);
}

TEST_CASE("SIGTERM kills sandboxes that outlast the grace period" * doctest::test_suite("vm")) {
    DaemonOptions options;
    options.shutdown_grace_ms = 200;
    Daemon daemon(options);
    Client client(daemon.socket());
    client.send(
        execute("bash", "sleep 60", {{"id", "long"}, {"limits", {{"wall_time_ms", 60000}}}}));
    REQUIRE(sandbox_running(daemon));
    daemon.signal(SIGTERM);
    auto status = daemon.wait_exit(10s);
    REQUIRE(status);
    CHECK(*status == 0);
    CHECK(no_sandbox_left(daemon));
    CHECK(cgroup_leftovers(daemon).empty());
    const std::string trimmed = daemon.trim_cgroup();
    CHECK_MESSAGE(trimmed.empty(), "the daemon's cgroup:" << trimmed);
}

TEST_CASE("SIGKILL of the daemon: its sandboxes die, and a restart leaves nothing stale" *
          doctest::test_suite("vm")) {
    auto mounts = [] {
        std::ifstream in("/proc/self/mountinfo");
        return std::count(std::istreambuf_iterator<char>(in), {}, '\n');
    };
    const auto mounts_before = mounts();
    Daemon daemon;
    if (!daemon.cgroup().empty()) {
        // Delegated: the daemon moved itself into a leaf of the cgroup it was born in.
        std::ifstream in("/proc/" + std::to_string(daemon.pid()) + "/cgroup");
        std::string line;
        std::getline(in, line);
        const std::string leaf = "/" + daemon.cgroup().filename().string() + "/supervisor";
        CHECK_MESSAGE(line.size() > leaf.size(), line);
        CHECK_MESSAGE(line.compare(line.size() - leaf.size(), leaf.size(), leaf) == 0, line);
    }
    {
        Client client(daemon.socket());
        client.send(
            execute("bash", "setsid sleep 60 & sleep 60", {{"limits", {{"wall_time_ms", 60000}}}}));
        REQUIRE(sandbox_running(daemon));
        daemon.signal(SIGKILL);
        REQUIRE(daemon.wait_exit(10s) == -SIGKILL);
        CHECK(no_sandbox_left(daemon));
        CHECK(client.closed_by_peer());
    }
    // The socket file and the run's cgroup outlive a SIGKILL. Delegated, the stopped unit's
    // cgroup is trimmed as systemd does: every process in it must be gone, or rmdir fails
    // (EBUSY), and the restart gets a fresh cgroup. Otherwise the next start removes the
    // stale run cgroups.
    CHECK(fs::exists(daemon.socket()));
    // What the killed daemon left below its subtree, by inode: on v1 the next start reuses
    // the names (box-<n>), not the directories.
    std::set<std::pair<fs::path, ino_t>> left_by_killed;
    for (const auto& dir : cgroup_leftovers(daemon)) {
        struct stat st {};
        if (::stat(dir.c_str(), &st) == 0) left_by_killed.emplace(dir, st.st_ino);
    }
    const fs::path killed_in = daemon.cgroup();
    const std::string trimmed = daemon.trim_cgroup();
    CHECK_MESSAGE(trimmed.empty(), "the SIGKILLed daemon's cgroup:" << trimmed);
    if (!killed_in.empty()) CHECK_FALSE(fs::exists(killed_in));
    daemon.start();
    if (!killed_in.empty()) CHECK(daemon.cgroup() != killed_in);
    Client client(daemon.socket());
    CHECK(client.call(execute("bash", "echo back"))["run"]["stdout"] == "back\n");
    // Once the slot has built its next sandbox, the run cgroups are that sandbox's and (v1)
    // the set the run handed on; none is a directory the killed daemon left.
    REQUIRE(
        eventually([&] { return prepared_sandboxes_of_uids(daemon.uid_base(), 64) == 1; }, 10s));
    for (const auto& dir : cgroup_leftovers(daemon)) {
        if (dir.filename() == daemon.cgroup_subtree()) continue;
        struct stat st {};
        if (::stat(dir.c_str(), &st) != 0) continue;
        CHECK_MESSAGE(left_by_killed.count({dir, st.st_ino}) == 0, "stale cgroup " << dir);
    }
    // Sandbox mounts live in the sandboxes' own mount namespaces: none reach the host's.
    CHECK(mounts() == mounts_before);
}

TEST_CASE("a second daemon on a live socket refuses to start and leaves it alone") {
    Daemon daemon;
    auto second = run_program({SBX_SANDBOXD_BIN, "--socket", daemon.socket().string(),
                               "--cgroup-subtree", daemon.cgroup_subtree() + "-second",
                               "--language-dir", host_languages().string()});
    CHECK(second.status == 1);
    CHECK(second.output.find("already listening") != std::string::npos);
    Client client(daemon.socket());
    CHECK(client.call({{"op", "ping"}})["ok"] == true);
}

// Each instance cleans up what it finds in its cgroup subtree as a dead instance's leftovers,
// so a second one on the same subtree must refuse before touching it.
// Not in the "vm" suite: there each daemon gets a cgroup of its own, so a second one started
// here would have a different subtree (the cgroup tests cover the v2 backend's lock).
TEST_CASE(
    "a second daemon on a live daemon's cgroup subtree refuses to start and leaves it alone") {
    if (!delegated_cgroups().empty()) return;
    DaemonOptions options;
    options.slots = 1;
    Daemon daemon(options);
    Client client(daemon.socket());
    REQUIRE(client.call(execute("bash", "echo one"))["run"]["stdout"] == "one\n");
    REQUIRE(eventually([&] { return prepared_sandboxes_of_uids(daemon.uid_base(), 1) == 1; }, 10s));
    const auto processes = processes_of_uids(daemon.uid_base(), 1);

    // Bounded, so that a daemon which wrongly starts fails the test instead of hanging it.
    std::vector<std::string> argv = {"/usr/bin/timeout",
                                     "30",
                                     SBX_SANDBOXD_BIN,
                                     "--socket",
                                     (daemon.directory() / "second.sock").string(),
                                     "--cgroup-subtree",
                                     daemon.cgroup_subtree(),
                                     "--language-dir",
                                     host_languages().string()};
    if (const std::string forced = forced_cgroup_backend(); !forced.empty())
        argv.insert(argv.end(), {"--cgroup-version", forced});
    auto second = run_program(argv);
    CHECK(second.status == 1);
    CHECK(second.output.find("in use by another running sandboxd") != std::string::npos);
    // The sandbox built ahead is still there, and the next request uses it.
    CHECK(processes_of_uids(daemon.uid_base(), 1) == processes);
    const int used = client.call({{"op", "stats"}})["prepared_sandboxes"]["used"];
    CHECK(client.call(execute("bash", "echo two"))["run"]["stdout"] == "two\n");
    CHECK(client.call({{"op", "stats"}})["prepared_sandboxes"]["used"] == used + 1);
}

TEST_CASE("the socket is mode 0660; the peer's credentials are logged with each request") {
    Daemon daemon;
    struct stat st {};
    REQUIRE(::stat(daemon.socket().c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK((st.st_mode & 07777) == 0660);
    Client client(daemon.socket());
    client.call({{"id", "logged"}, {"op", "ping"}});
    client.call(execute("bash", "true", {{"id", "run-logged"}}));
    // An execute's line is written just after its answer.
    REQUIRE(
        eventually([&] { return daemon.log().find("id=run-logged") != std::string::npos; }, 10s));
    std::string log = daemon.log();
    CHECK(log.find("event=request id=logged peer_uid=0 peer_pid=" + std::to_string(::getpid()) +
                   " op=ping status=ok") != std::string::npos);
    auto line_start = log.find("id=run-logged");
    REQUIRE(line_start != std::string::npos);
    std::string line = log.substr(line_start, log.find('\n', line_start) - line_start);
    for (const char* field :
         {"language=bash", "status=ok", "cpu_ms=", "wall_ms=", "queue_ms=", "total_ms="})
        CHECK_MESSAGE(line.find(field) != std::string::npos, line);
}

TEST_CASE("socket_group and the uid allowlist decide who may talk") {
    DaemonOptions options;
    options.config = {{"socket_group", "root"}, {"allowed_uids", {4242}}};
    Daemon daemon(options);
    struct stat st {};
    REQUIRE(::stat(daemon.socket().c_str(), &st) == 0);
    CHECK(st.st_gid == 0);

    // Root is not on the list: the daemon closes without reading.
    Client refused(daemon.socket());
    try {
        refused.send({{"op", "ping"}});
    } catch (const std::runtime_error&) {
        // EPIPE: the daemon closed before the request was written, which is the refusal too.
    }
    CHECK(refused.closed_by_peer());
    CHECK(daemon.log().find("event=peer_refused peer_uid=0") != std::string::npos);

    // uid 4242 (group root, which owns the socket) is.
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        int code = 1;
        if (::setgroups(0, nullptr) == 0 && ::setgid(0) == 0 && ::setuid(4242) == 0) {
            try {
                Client allowed(daemon.socket());
                code = allowed.call({{"op", "ping"}}, 10s)["ok"] == true ? 0 : 3;
            } catch (...) {
                code = 4;
            }
        }
        ::_exit(code);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("a broken language is a start-up warning and is left out; the others load") {
    fs::path dir = fs::path("/var/tmp") / ("sbx-broken-langs-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    fs::copy(host_languages() / "bash", dir / "bash",
             fs::copy_options::recursive | fs::copy_options::copy_symlinks);
    fs::create_directories(dir / "broken");
    std::ofstream(dir / "broken" / "language.json") << R"({"name": "broken", "run": []})";
    fs::copy(host_languages() / "python", dir / "norootfs",
             fs::copy_options::recursive | fs::copy_options::copy_symlinks);
    fs::remove_all(dir / "norootfs" / "root");
    std::ofstream(dir / "norootfs" / "language.json")
        << R"({"name":"norootfs","source_file":"a.py","run":["/usr/bin/python3","a.py"]})";

    DaemonOptions options;
    options.extra_args = {"--language-dir", dir.string()};
    Daemon daemon(options);
    Client client(daemon.socket());
    Json languages = client.call({{"op", "languages"}})["languages"];
    std::set<std::string> names;
    for (const auto& language : languages) names.insert(language["name"]);
    CHECK(names.count("bash"));
    CHECK_FALSE(names.count("broken"));
    CHECK_FALSE(names.count("norootfs"));
    std::string log = daemon.log();
    CHECK(log.find("event=language_skipped") != std::string::npos);
    CHECK(log.find("broken") != std::string::npos);
    CHECK(log.find("norootfs") != std::string::npos);
    fs::remove_all(dir);
}

TEST_CASE("a bad configuration file stops the start with a message naming the key") {
    fs::path file =
        fs::path("/var/tmp") / ("sbx-bad-config-" + std::to_string(::getpid()) + ".json");
    std::ofstream(file) << R"({"slots": 2, "queue_sise": 5})";
    auto result = run_program(
        {SBX_SANDBOXD_BIN, "--config", file.string(), "--socket", "/var/tmp/sbx-never.sock"});
    CHECK(result.status == 2);
    CHECK(result.output.find("queue_sise") != std::string::npos);
    std::ofstream(file) << R"({"limits": {"defaults": {"memory_bytes": "4G"}}})";
    result = run_program(
        {SBX_SANDBOXD_BIN, "--config", file.string(), "--socket", "/var/tmp/sbx-never.sock"});
    CHECK(result.status == 2);
    CHECK(result.output.find("maxima.memory_bytes") != std::string::npos);
    fs::remove(file);
}

TEST_CASE("sandboxctl against the real daemon: output, verdict line, exit code mirrored") {
    Daemon daemon;
    fs::path program = daemon.directory() / "prog.py";
    std::ofstream(program)
        << "import sys\nprint('from sandboxctl', sys.stdin.read().strip())\nsys.exit(3)\n";
    fs::path input = daemon.directory() / "input.txt";
    std::ofstream(input) << "and stdin\n";
    auto result = run_program({sandboxctl(), "--socket", daemon.socket().string(), "run",
                               program.string(), "--stdin", input.string()});
    CHECK(result.status == 3);
    CHECK(result.output.find("from sandboxctl and stdin\n") != std::string::npos);
    CHECK(result.output.find("runtime_error") != std::string::npos);

    auto ping = run_program({sandboxctl(), "--socket", daemon.socket().string(), "ping"});
    CHECK(ping.status == 0);
    auto languages = run_program({sandboxctl(), "--socket", daemon.socket().string(), "languages"});
    CHECK(languages.status == 0);
    CHECK(languages.output.find("python") != std::string::npos);
    auto stats = run_program({sandboxctl(), "--socket", daemon.socket().string(), "stats"});
    CHECK(stats.status == 0);
    CHECK(stats.output.find("completed") != std::string::npos);

    auto missing = run_program({sandboxctl(), "--socket", "/var/tmp/sbx-nobody-here.sock", "ping"});
    CHECK(missing.status == 2);
    CHECK(missing.output.find("is sandboxd running?") != std::string::npos);
}

TEST_CASE("sd_notify: READY=1 once the socket accepts, STOPPING=1 at SIGTERM") {
    fs::path notify_path = fs::path("/var/tmp") / ("sbx-notify-" + std::to_string(::getpid()));
    fs::remove(notify_path);
    int notify = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(notify >= 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, notify_path.c_str(), sizeof address.sun_path - 1);
    REQUIRE(::bind(notify, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);

    auto next_message = [&] {
        pollfd fd{notify, POLLIN, 0};
        if (::poll(&fd, 1, 10000) != 1) return std::string();
        char buffer[4096];
        ssize_t n = ::recv(notify, buffer, sizeof buffer, 0);
        return n > 0 ? std::string(buffer, static_cast<std::size_t>(n)) : std::string();
    };
    {
        DaemonOptions options;
        options.extra_env = {"NOTIFY_SOCKET=" + notify_path.string()};
        Daemon daemon(options);
        CHECK(next_message().find("READY=1") != std::string::npos);
        daemon.signal(SIGTERM);
        CHECK(next_message().find("STOPPING=1") != std::string::npos);
        CHECK(daemon.wait_exit(10s) == 0);
    }
    ::close(notify);
    fs::remove(notify_path);
}

TEST_CASE("packaging/sandboxd.service passes systemd-analyze verify") {
    if (::access("/usr/bin/systemd-analyze", X_OK) != 0) {
        FAIL("systemd-analyze is missing (package systemd)");
        return;
    }
    std::ifstream in(std::string(SBX_SOURCE_DIR) + "/packaging/sandboxd.service");
    std::stringstream unit;
    unit << in.rdbuf();
    std::string text = unit.str();
    // Verify against the binary just built rather than an installed one.
    const std::string installed = "ExecStart=/usr/local/bin/sandboxd";
    auto at = text.find(installed);
    REQUIRE(at != std::string::npos);
    text.replace(at, installed.size(), std::string("ExecStart=") + SBX_SANDBOXD_BIN);
    fs::path dir = fs::path("/var/tmp") / ("sbx-unit-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    std::ofstream(dir / "sandboxd.service") << text;
    auto verified = run_program({"systemd-analyze", "verify", (dir / "sandboxd.service").string()});
    CHECK_MESSAGE(verified.status == 0, verified.output);
    CHECK_MESSAGE(verified.output.find("sandboxd.service") == std::string::npos, verified.output);
    fs::remove_all(dir);
}
