#include "harness.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <utility>

namespace fs = std::filesystem;

namespace test {
namespace {

std::atomic<unsigned> daemon_counter{0};
// Never reused within a run: a restarted daemon gets a fresh cgroup, as under systemd.
std::atomic<unsigned> cgroup_counter{0};

fs::path make_temp_dir(const char* prefix) {
    std::string pattern = std::string("/var/tmp/") + prefix + "-XXXXXX";
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    // Unprivileged peers (the allowlist test) must reach the socket inside.
    ::chmod(pattern.c_str(), 0755);
    return pattern;
}

// Removed when the test binary exits.
struct TempDir {
    fs::path path;
    explicit TempDir(const char* prefix) : path(make_temp_dir(prefix)) {}
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

bool can_connect(const fs::path& socket) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, socket.c_str(), sizeof address.sun_path - 1);
    bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
    ::close(fd);
    return ok;
}

// Our cgroup in the v1 hierarchy of `controller`, or in cgroup2 when `controller` is empty.
std::string own_cgroup(const std::string& controller) {
    std::ifstream in("/proc/self/cgroup");
    for (std::string line; std::getline(in, line);) {
        auto first = line.find(':'), second = line.find(':', first + 1);
        std::string controllers = line.substr(first + 1, second - first - 1);
        bool match = controller.empty() ? controllers.empty()
                                        : ("," + controllers + ",").find("," + controller + ",") !=
                                              std::string::npos;
        if (match) return line.substr(second + 1);
    }
    return "";
}

std::string read_text(const fs::path& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

// Writes `text` to a cgroup file in one write(2): 0 or the errno.
int write_cgroup_file(const fs::path& path, const std::string& text) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    ssize_t n = ::write(fd, text.data(), text.size());
    int err = n == static_cast<ssize_t>(text.size()) ? 0 : (n < 0 ? errno : EIO);
    ::close(fd);
    return err;
}

void must_write(const fs::path& path, const std::string& text) {
    if (int err = write_cgroup_file(path, text); err != 0)
        throw std::runtime_error("cannot write \"" + text + "\" to " + path.string() + ": " +
                                 std::strerror(err));
}

bool populated(const fs::path& cgroup) {
    std::istringstream events(read_text(cgroup / "cgroup.events"));
    for (std::string key, value; events >> key >> value;)
        if (key == "populated") return value != "0";
    return fs::exists(cgroup);
}

// "dir: pid pid ..." for every cgroup at or below dir that still has processes.
std::string processes_below(const fs::path& dir) {
    std::string found;
    std::error_code ec;
    std::vector<fs::path> dirs = {dir};
    for (const auto& entry : fs::recursive_directory_iterator(dir, ec))
        if (entry.is_directory(ec)) dirs.push_back(entry.path());
    for (const auto& d : dirs) {
        std::string procs = read_text(d / "cgroup.procs");
        for (char& c : procs)
            if (c == '\n') c = ' ';
        if (procs.find_first_not_of(' ') != std::string::npos)
            found += "\n  " + d.string() + ": " + procs;
    }
    return found;
}

// rmdir of every cgroup below dir, children first, then dir itself; errors appended.
void remove_bottom_up(const fs::path& dir, std::string& errors) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir, ec))
        if (entry.is_directory(ec)) remove_bottom_up(entry.path(), errors);
    if (::rmdir(dir.c_str()) != 0 && errno != ENOENT)
        errors += "\n  rmdir " + dir.string() + ": " + std::strerror(errno);
}

}  // namespace

bool pure_cgroup2_host() {
    if (!fs::exists("/sys/fs/cgroup/cgroup.controllers")) return false;
    std::ifstream mounts("/proc/self/mounts");
    for (std::string line; std::getline(mounts, line);) {
        std::istringstream fields(line);
        std::string source, target, type, options;
        fields >> source >> target >> type >> options;
        if (type == "cgroup" && ("," + options + ",").find(",memory,") != std::string::npos)
            return false;
    }
    return true;
}

const fs::path& delegated_cgroups() {
    static const fs::path own = []() -> fs::path {
        if (!pure_cgroup2_host()) return {};
        const std::string path = own_cgroup("");
        if (path.empty() || path == "/") return {};
        const fs::path dir = fs::path("/sys/fs/cgroup") / fs::path(path).relative_path();
        // No internal processes: the runner leaves <own> so <own> can enable controllers for
        // the daemons' cgroups. Writing "0" moves this process (all its threads) only.
        const fs::path runner = dir / "test-runner";
        if (::mkdir(runner.c_str(), 0755) != 0 && errno != EEXIST)
            throw std::runtime_error("mkdir " + runner.string() + ": " + std::strerror(errno));
        must_write(runner / "cgroup.procs", "0");
        const std::string available = " " + read_text(dir / "cgroup.controllers");
        std::string enable;
        for (const char* controller : {"memory", "pids", "cpu"})
            if (available.find(std::string(" ") + controller) != std::string::npos)
                enable += (enable.empty() ? "+" : " +") + std::string(controller);
        must_write(dir / "cgroup.subtree_control", enable);
        return dir;
    }();
    return own;
}

unsigned time_scale() {
    const char* value = std::getenv("SBX_TIME_SCALE");
    if (!value || !*value) return 1;
    const unsigned long scale = std::strtoul(value, nullptr, 10);
    if (scale < 1 || scale > 10) throw std::runtime_error("SBX_TIME_SCALE must be 1 to 10");
    return static_cast<unsigned>(scale);
}

std::string forced_cgroup_backend() {
    const char* value = std::getenv("SBX_CGROUP_BACKEND");
    return value ? value : "";
}

const fs::path& host_languages() {
    static TempDir dir("sbx-daemon-langs");
    static bool made = [] {
        Completed made = run_program(
            {std::string(SBX_SOURCE_DIR) + "/scripts/make-host-languages", dir.path.string()});
        if (made.status != 0)
            throw std::runtime_error("make-host-languages failed: " + made.output);
        return true;
    }();
    (void)made;
    return dir.path;
}

Daemon::Daemon(DaemonOptions options) : options_(std::move(options)) {
    static TempDir root("sbx-daemon-test");
    unsigned n = daemon_counter.fetch_add(1);
    dir_ = root.path / ("d" + std::to_string(n));
    fs::create_directories(dir_);
    ::chmod(dir_.c_str(), 0755);
    socket_ = dir_ / "sandboxd.sock";
    log_file_ = dir_ / "daemon.log";
    config_file_ = dir_ / "config.json";
    subtree_ = "sbx-dtest-" + std::to_string(::getpid()) + "-" + std::to_string(n);
    // Far from the isolate tests' 1,000,000 and distinct per daemon, so a test that counts a
    // daemon's sandbox processes by uid sees only that daemon's.
    uid_base_ = 2'000'000 + static_cast<uid_t>((::getpid() % 1000) * 4096 + n * 64);
    // SBX_TIME_SCALE (scripts/vm-test's guest, where exec and page faults are emulated and a
    // bare python3 start costs 1 to 1.5 s of CPU time): the default CPU and wall-time budgets
    // of runs (docs/configuration.md: 2000 and 5000 ms) times that, unless the test sets
    // limits itself. Only a budget for programs meant to finish: every limit a test asserts
    // a verdict for is explicit in its request.
    if (const unsigned scale = time_scale(); scale > 1 && !options_.config.contains("limits"))
        options_.config["limits"] = {
            {"defaults", {{"cpu_time_ms", 2000 * scale}, {"wall_time_ms", 5000 * scale}}}};
    std::ofstream(config_file_) << options_.config.dump(2);
    start();
}

Daemon::~Daemon() {
    if (pid_ > 0) {
        ::kill(pid_, SIGTERM);
        if (!wait_exit(10s)) {
            ::kill(pid_, SIGKILL);
            wait_exit(10s);
        }
    }
    if (pid_ <= 0) {
        if (std::string errors = trim_cgroup(); !errors.empty())
            std::fprintf(stderr, "daemon_tests: cannot trim a daemon's cgroup:%s\n",
                         errors.c_str());
    }
}

std::string Daemon::trim_cgroup() {
    if (cgroup_.empty()) return "";
    if (pid_ > 0) return "\n  the daemon (pid " + std::to_string(pid_) + ") is still running";
    const fs::path dir = std::exchange(cgroup_, {});
    std::string errors;
    if (!eventually([&] { return !populated(dir); }, 10s))
        errors += "\n  still populated 10 s after the daemon exited:" + processes_below(dir);
    remove_bottom_up(dir, errors);
    if (!errors.empty() && fs::exists(dir)) {
        // The check failed; do not let what was left spill into the next tests.
        write_cgroup_file(dir / "cgroup.kill", "1");
        eventually([&] { return !populated(dir); }, 10s);
        std::string ignored;
        remove_bottom_up(dir, ignored);
    }
    return errors;
}

void Daemon::start() {
    std::vector<std::string> args = {SBX_SANDBOXD_BIN,
                                     "--config",
                                     config_file_.string(),
                                     "--socket",
                                     socket_.string(),
                                     "--slots",
                                     std::to_string(options_.slots),
                                     "--queue-size",
                                     std::to_string(options_.queue_size),
                                     "--cgroup-subtree",
                                     subtree_,
                                     "--uid-base",
                                     std::to_string(uid_base_),
                                     "--shutdown-grace-ms",
                                     std::to_string(options_.shutdown_grace_ms),
                                     "--seccomp-dir",
                                     std::string(SBX_SOURCE_DIR) + "/seccomp-profiles",
                                     "--language-dir",
                                     !options_.language_dir.empty() ? options_.language_dir.string()
                                     : options_.with_languages      ? host_languages().string()
                                                               : (dir_ / "no-languages").string()};
    if (const std::string forced = forced_cgroup_backend(); !forced.empty())
        args.insert(args.end(), {"--cgroup-version", forced});
    args.insert(args.end(), options_.extra_args.begin(), options_.extra_args.end());
    std::vector<char*> argv;
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    // The daemon must not think it runs under systemd because the test runner does.
    std::vector<char*> env;
    for (char** e = environ; *e; ++e)
        if (std::strncmp(*e, "JOURNAL_STREAM=", 15) != 0 &&
            std::strncmp(*e, "NOTIFY_SOCKET=", 14) != 0)
            env.push_back(*e);
    for (auto& extra : options_.extra_env) env.push_back(extra.data());
    env.push_back(nullptr);

    // A restart leaves the last daemon's cgroup behind, as systemd does a unit's.
    if (!cgroup_.empty()) {
        if (std::string errors = trim_cgroup(); !errors.empty())
            throw std::runtime_error("cannot trim the last daemon's cgroup:" + errors);
    }
    int cgroup_fd = -1;
    if (const fs::path& delegated = delegated_cgroups(); !delegated.empty()) {
        fs::path dir = delegated / ("daemon-" + std::to_string(cgroup_counter.fetch_add(1)));
        if (::mkdir(dir.c_str(), 0755) != 0)
            throw std::runtime_error("mkdir " + dir.string() + ": " + std::strerror(errno));
        cgroup_ = dir;
        cgroup_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (cgroup_fd < 0)
            throw std::runtime_error("open " + dir.string() + ": " + std::strerror(errno));
    }

    int log_fd = ::open(log_file_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) {
        if (cgroup_fd >= 0) ::close(cgroup_fd);
        throw std::runtime_error("cannot open the daemon log");
    }
    int rc = 0;
    if (cgroup_fd < 0) {
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, log_fd, 2);
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
        rc = ::posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), env.data());
        posix_spawn_file_actions_destroy(&actions);
    } else {
        // Born in its own cgroup, so no moment of it is spent (or accounted) in the runner's.
        // The child of this multithreaded process only makes raw system calls until execve.
        int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        clone_args args{};
        args.flags = CLONE_INTO_CGROUP;
        args.exit_signal = SIGCHLD;
        args.cgroup = static_cast<std::uint64_t>(cgroup_fd);
        long child = null_fd < 0 ? -1 : ::syscall(SYS_clone3, &args, sizeof args);
        if (child == 0) {
            if (::dup2(log_fd, 2) < 0 || ::dup2(null_fd, 0) < 0) ::_exit(127);
            ::execve(argv[0], argv.data(), env.data());
            ::_exit(127);
        }
        rc = child < 0 ? errno : 0;
        if (child > 0) pid_ = static_cast<pid_t>(child);
        if (null_fd >= 0) ::close(null_fd);
        ::close(cgroup_fd);
    }
    ::close(log_fd);
    if (rc != 0)
        throw std::runtime_error(std::string("cannot start sandboxd: ") + std::strerror(rc));
    bool exited = false;
    bool ready = eventually(
        [&] {
            int status;
            exited = ::waitpid(pid_, &status, WNOHANG) == pid_;
            return exited || can_connect(socket_);
        },
        20s);
    if (exited || !ready) {
        // The constructor throws, so no destructor will clean up after this daemon.
        if (!exited) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        pid_ = -1;
        trim_cgroup();
        throw std::runtime_error(std::string(exited ? "sandboxd exited at start-up:\n"
                                                    : "sandboxd did not start listening:\n") +
                                 log());
    }
}

std::string Daemon::log() const {
    return read_text(log_file_);
}

void Daemon::signal(int signal) {
    if (pid_ > 0) ::kill(pid_, signal);
}

std::optional<int> Daemon::wait_exit(std::chrono::milliseconds timeout) {
    if (pid_ <= 0) return std::nullopt;
    std::optional<int> result;
    eventually(
        [&] {
            int status;
            if (::waitpid(pid_, &status, WNOHANG) != pid_) return false;
            result = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
            return true;
        },
        timeout);
    if (result) pid_ = -1;
    return result;
}

Client::Client(const fs::path& socket) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, socket.c_str(), sizeof address.sun_path - 1);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
        ::close(fd_);
        throw std::runtime_error("cannot connect to " + socket.string() + ": " +
                                 std::strerror(errno));
    }
}

Client::~Client() {
    close();
}

void Client::close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
}

void Client::send_raw(const std::string& bytes) {
    std::size_t sent = 0;
    while (sent < bytes.size()) {
        ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) throw std::runtime_error(std::string("send failed: ") + std::strerror(errno));
        sent += static_cast<std::size_t>(n);
    }
}

std::optional<Json> Client::read(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        auto newline = buffer_.find('\n');
        if (newline != std::string::npos) {
            std::string line = buffer_.substr(0, newline);
            buffer_.erase(0, newline + 1);
            return Json::parse(line);
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return std::nullopt;
        pollfd fd{fd_, POLLIN, 0};
        if (::poll(&fd, 1, static_cast<int>(left.count())) <= 0) return std::nullopt;
        char chunk[65536];
        ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
        if (n <= 0) return std::nullopt;
        buffer_.append(chunk, static_cast<std::size_t>(n));
    }
}

Json Client::call(const Json& request, std::chrono::milliseconds timeout) {
    send(request);
    auto response = read(timeout);
    if (!response) throw std::runtime_error("no response to " + request.dump().substr(0, 200));
    return *response;
}

bool Client::closed_by_peer(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        pollfd fd{fd_, POLLIN, 0};
        if (::poll(&fd, 1, 50) <= 0) continue;
        char chunk[65536];
        ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
        if (n == 0) return true;
        if (n < 0) return errno == ECONNRESET;
    }
    return false;
}

Json execute(const std::string& language, const std::string& code, Json extra) {
    Json request = {{"op", "execute"}, {"language", language}, {"code", code}};
    for (auto& [key, value] : extra.items()) request[key] = value;
    return request;
}

std::vector<pid_t> processes_of_uids(uid_t first, unsigned count) {
    std::vector<pid_t> found;
    for (const auto& entry : fs::directory_iterator("/proc")) {
        const std::string name = entry.path().filename().string();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        struct stat st {};
        if (::stat(entry.path().c_str(), &st) == 0 && st.st_uid >= first &&
            st.st_uid < first + count)
            found.push_back(static_cast<pid_t>(std::stoi(name)));
    }
    return found;
}

namespace {

// The program's process of a sandbox built ahead, waiting for its request (isolate's
// kWaitingProgramName).
bool waiting_program(pid_t pid) {
    std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
    std::string name;
    std::getline(comm, name);
    return name == "sandbox-ready";
}

// Which pid namespace the process is in ("pid:[4026532...]"), empty once it is gone.
std::string pid_namespace_of(pid_t pid) {
    std::error_code error;
    return fs::read_symlink("/proc/" + std::to_string(pid) + "/ns/pid", error).string();
}

}  // namespace

std::vector<pid_t> run_processes_of_uids(uid_t first, unsigned count) {
    auto found = processes_of_uids(first, count);
    // A sandbox built ahead is its pid 1 and its waiting program's process, in one namespace.
    std::set<std::string> idle;
    for (pid_t pid : found)
        if (waiting_program(pid)) idle.insert(pid_namespace_of(pid));
    std::erase_if(found, [&](pid_t pid) { return idle.count(pid_namespace_of(pid)) > 0; });
    return found;
}

std::size_t prepared_sandboxes_of_uids(uid_t first, unsigned count) {
    auto found = processes_of_uids(first, count);
    return static_cast<std::size_t>(std::count_if(found.begin(), found.end(), waiting_program));
}

std::vector<fs::path> cgroup_leftovers(const Daemon& daemon) {
    const std::string& subtree = daemon.cgroup_subtree();
    std::vector<fs::path> left;
    auto check = [&](const fs::path& base) {
        std::error_code ec;
        if (fs::exists(base / subtree, ec)) {
            left.push_back(base / subtree);
            for (const auto& entry : fs::recursive_directory_iterator(base / subtree, ec))
                if (entry.is_directory()) left.push_back(entry.path());
        }
    };
    if (!daemon.cgroup().empty()) {
        // Delegated: the daemon's subtree is below the cgroup it was born in.
        check(daemon.cgroup());
        return left;
    }
    for (const char* controller : {"memory", "pids", "cpuacct", "freezer", "cpu"}) {
        fs::path hierarchy = fs::path("/sys/fs/cgroup") / controller;
        if (fs::exists(hierarchy / "cgroup.procs"))
            check(hierarchy.string() + own_cgroup(controller));
    }
    if (fs::exists("/sys/fs/cgroup/cgroup.controllers"))
        check(fs::path("/sys/fs/cgroup").string() + own_cgroup(""));
    return left;
}

Completed run_program(std::vector<std::string> args, const std::string& stdin_data) {
    std::vector<char*> argv;
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0)
        throw std::runtime_error("pipe failed");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], 0);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_adddup2(&actions, out[1], 2);
    pid_t pid;
    int rc = ::posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(in[0]);
    ::close(out[1]);
    if (rc != 0) throw std::runtime_error("cannot run " + args[0]);
    std::thread feeder([&] {
        std::size_t sent = 0;
        while (sent < stdin_data.size()) {
            ssize_t n = ::write(in[1], stdin_data.data() + sent, stdin_data.size() - sent);
            if (n <= 0) break;
            sent += static_cast<std::size_t>(n);
        }
        ::close(in[1]);
    });
    Completed done;
    char chunk[4096];
    for (ssize_t n; (n = ::read(out[0], chunk, sizeof chunk)) > 0;) done.output.append(chunk, n);
    ::close(out[0]);
    feeder.join();
    int status = 0;
    ::waitpid(pid, &status, 0);
    done.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return done;
}

}  // namespace test
