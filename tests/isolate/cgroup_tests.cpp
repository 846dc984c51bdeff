// The cgroup backends against the real kernel. Every test uses a subtree of its own below
// this process's cgroups, forks only children it reaps itself, and kills only those.

#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "isolate/cgroup.h"
#include "isolate/error.h"
// The parsers are internal to the library but worth testing on inputs this host lacks
// (co-mounted controllers, escaped mount points).
#include "cgroup/cgroup_fs.h"
#include "isolate/support.h"

namespace {

using test::wait_status;
using namespace std::chrono_literals;

namespace cg = isolate::cgroup;
namespace stdfs = std::filesystem;

constexpr std::uint64_t kMiB = 1024 * 1024;

std::string read_text(const stdfs::path& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string first_line(const stdfs::path& path) {
    const auto text = read_text(path);
    return text.substr(0, text.find('\n'));
}

bool host_is_v2() {
    struct statfs st {};
    return ::statfs("/sys/fs/cgroup", &st) == 0 &&
           static_cast<unsigned long>(st.f_type) == CGROUP2_SUPER_MAGIC;
}

// Where the subtree lives in every hierarchy, worked out here independently of the code
// under test (simple parsing that is enough for this host and a plain cgroup2 guest).
std::vector<stdfs::path> subtree_dirs(const std::string& subtree) {
    std::vector<std::pair<std::string, std::string>> own;  // controllers, path
    {
        std::istringstream in(read_text("/proc/self/cgroup"));
        for (std::string line; std::getline(in, line);) {
            const auto a = line.find(':');
            const auto b = line.find(':', a + 1);
            own.emplace_back(line.substr(a + 1, b - a - 1), line.substr(b + 1));
        }
    }
    std::vector<stdfs::path> dirs;
    if (host_is_v2()) {
        for (const auto& [controllers, path] : own) {
            if (!controllers.empty()) continue;
            stdfs::path dir = stdfs::path("/sys/fs/cgroup") / stdfs::path(path).relative_path();
            if (dir.filename() == "supervisor") dir = dir.parent_path();
            dirs.push_back(dir / subtree);
        }
        return dirs;
    }
    std::istringstream in(read_text("/proc/self/mountinfo"));
    for (std::string line; std::getline(in, line);) {
        std::istringstream fields(line);
        std::vector<std::string> f;
        for (std::string w; fields >> w;) f.push_back(w);
        const auto dash = std::find(f.begin(), f.end(), "-");
        if (dash == f.end() || dash + 3 >= f.end() || dash[1] != "cgroup") continue;
        const std::string opts = "," + dash[3] + ",";
        for (const char* c : {"memory", "pids", "cpuacct", "cpu"}) {
            if (opts.find(std::string(",") + c + ",") == std::string::npos) continue;
            for (const auto& [controllers, path] : own) {
                if (("," + controllers + ",").find(std::string(",") + c + ",") == std::string::npos)
                    continue;
                const auto dir = stdfs::path(f[4]) / stdfs::path(path).relative_path() / subtree;
                if (std::find(dirs.begin(), dirs.end(), dir) == dirs.end()) dirs.push_back(dir);
            }
        }
    }
    return dirs;
}

std::string unique_subtree() {
    return test::unique_cgroup_subtree("sbx-test-cg-");
}

// A forked child that waits for release() before running its body, so the parent can
// attach it to a cgroup before it does anything. Killed and reaped on destruction if the
// test did not reap it (a failed CHECK must not leave it behind).
class Child {
  public:
    template <typename F>
    explicit Child(F body) {
        int fds[2];
        REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
        pid_ = ::fork();
        REQUIRE(pid_ >= 0);
        if (pid_ == 0) {
            ::close(fds[1]);
            char c;
            if (::read(fds[0], &c, 1) != 1) ::_exit(99);
            ::close(fds[0]);
            ::_exit(body());
        }
        ::close(fds[0]);
        release_fd_ = fds[1];
    }
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;
    ~Child() {
        if (release_fd_ >= 0) ::close(release_fd_);
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            wait_status(pid_);
        }
    }

    pid_t pid() const { return pid_; }
    void release() {
        REQUIRE(::write(release_fd_, "x", 1) == 1);
        ::close(release_fd_);
        release_fd_ = -1;
    }
    int wait() {
        const int status = wait_status(pid_);
        pid_ = -1;
        return status;
    }

  private:
    pid_t pid_ = -1;
    int release_fd_ = -1;
};

bool killed_by_sigkill(int status) {
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

double thread_cpu_ms() {
    timespec ts{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// Burns `ms` of this thread's CPU.
void spin_cpu_ms(double ms) {
    const double start = thread_cpu_ms();
    volatile std::uint64_t sink = 0;
    while (thread_cpu_ms() - start < ms) sink = sink + 1;
}

// For a child that is its cgroup's task 1: forks until the kernel says no, cleans up after
// itself, and returns the number of forks that worked (200 + errno if the failure was odd).
int fork_until_refused() {
    pid_t kids[16];
    int n = 0;
    int err = 0;
    while (n < 16) {
        const pid_t pid = ::fork();
        if (pid == 0) {
            for (;;) ::pause();
        }
        if (pid < 0) {
            err = errno;
            break;
        }
        kids[n++] = pid;
    }
    for (int i = 0; i < n; ++i) {
        ::kill(kids[i], SIGKILL);
        ::waitpid(kids[i], nullptr, 0);
    }
    return err == EAGAIN ? n : 200 + err;
}

bool hands_on(const cg::Backend& backend) {
    return test::cgroups_handed_on(backend.name());
}

struct TestBackend {
    std::string subtree = unique_subtree();
    std::unique_ptr<cg::Backend> backend =
        cg::detect_backend({.subtree = subtree, .force = test::forced_cgroup_backend()});
};

// The value of `key` in a flat-keyed control file (cpu.stat), or -1 if it has none.
long long key_value(const stdfs::path& file, const std::string& key) {
    std::istringstream in(read_text(file));
    std::string k;
    long long v = 0;
    while (in >> k >> v)
        if (k == key) return v;
    return -1;
}

ino_t inode_of(const stdfs::path& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

// The directories below a subtree: the sets kept for later runs besides those in use.
std::vector<stdfs::path> dirs_below(const std::vector<stdfs::path>& subtrees) {
    std::vector<stdfs::path> found;
    for (const auto& dir : subtrees)
        for (const auto& entry : stdfs::directory_iterator(dir))
            if (entry.is_directory()) found.push_back(entry.path());
    return found;
}

// A destroyed run's directory: removed, or kept with no task for a later run where the
// backend hands cgroups on.
bool gone_or_kept_empty(const stdfs::path& dir, const cg::Backend& backend) {
    if (!stdfs::exists(dir)) return true;
    return hands_on(backend) && first_line(dir / "cgroup.procs").empty();
}

// Reaps every child and grandchild of this process (a subreaper) that has exited.
void reap_exited() {
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
}

// Becomes the reaper of orphaned grandchildren for as long as it lives, so a test can
// reap the processes its children started.
struct Subreaper {
    Subreaper() { REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0); }
    ~Subreaper() { ::prctl(PR_SET_CHILD_SUBREAPER, 0); }
};

}  // namespace

// Every test here needs real cgroups, so scripts/vm-test runs them in its cgroup v2 guest.
TEST_SUITE_BEGIN("vm");

TEST_CASE("cgroup detect_backend picks the backend this host supports") {
    const std::string subtree = unique_subtree();
    {
        auto backend = cg::detect_backend({.subtree = subtree});
        REQUIRE(backend);
        CHECK(backend->name() == (host_is_v2() ? "v2" : "v1"));
        for (const auto& dir : subtree_dirs(subtree)) CHECK(stdfs::is_directory(dir));
    }
    // An idle backend takes its subtree with it.
    for (const auto& dir : subtree_dirs(subtree)) CHECK_FALSE(stdfs::exists(dir));

    CHECK_THROWS_AS(cg::detect_backend({.subtree = subtree, .force = "v3"}), isolate::SetupError);
    CHECK_THROWS_AS(cg::detect_backend({.subtree = "a/b"}), isolate::SetupError);
    if (!host_is_v2()) {
        // The hybrid host's cgroup2 mount offers no memory or pids controller.
        CHECK_THROWS_WITH_AS(
            cg::detect_backend(
                {.subtree = subtree, .cgroup_root = "/sys/fs/cgroup/unified", .force = "v2"}),
            doctest::Contains("memory and pids are needed"), isolate::SetupError);
        auto v1 = cg::detect_backend({.subtree = subtree, .force = "v1"});
        CHECK(v1->name() == "v1");
    }
}

TEST_CASE("cgroup create applies the limits and destroy leaves no directory behind") {
    TestBackend t;
    const auto subtrees = subtree_dirs(t.subtree);
    REQUIRE_FALSE(subtrees.empty());
    std::string name;
    {
        auto run =
            t.backend->create("run-a", {.memory_bytes = 64 * kMiB, .max_tasks = 16, .cpus = 0.5});
        name = run->name();
        CHECK(name == "box-0");
        for (const auto& dir : subtrees) {
            const auto d = dir / name;
            CHECK(stdfs::is_directory(d));
            if (stdfs::exists(d / "memory.limit_in_bytes")) {
                CHECK(first_line(d / "memory.limit_in_bytes") == std::to_string(64 * kMiB));
                if (stdfs::exists(d / "memory.memsw.limit_in_bytes"))
                    CHECK(first_line(d / "memory.memsw.limit_in_bytes") ==
                          std::to_string(64 * kMiB));
            }
            if (stdfs::exists(d / "memory.max"))
                CHECK(first_line(d / "memory.max") == std::to_string(64 * kMiB));
            if (stdfs::exists(d / "pids.max")) CHECK(first_line(d / "pids.max") == "16");
            if (stdfs::exists(d / "cpu.cfs_quota_us")) {
                CHECK(first_line(d / "cpu.cfs_quota_us") == "50000");
                CHECK(first_line(d / "cpu.cfs_period_us") == "100000");
            }
            if (stdfs::exists(d / "cpu.max")) CHECK(first_line(d / "cpu.max") == "50000 100000");
        }
        if (t.backend->name() == "v2") {
            CHECK(run->clone_into_fd() >= 0);
        } else {
            CHECK(run->clone_into_fd() == -1);
        }
    }
    for (const auto& dir : subtrees) {
        CHECK(gone_or_kept_empty(dir / name, *t.backend));
        CHECK(stdfs::is_directory(dir));
    }

    SUBCASE("a limit the kernel refuses throws, naming the file, and leaves nothing behind") {
        // pids.max accepts at most PID_MAX_LIMIT.
        const auto before = dirs_below(subtrees);
        CHECK_THROWS_WITH_AS(t.backend->create("run-b", {.max_tasks = 100'000'000}),
                             doctest::Contains("pids.max"), isolate::SetupError);
        // Refused before a kept set is taken: the set stays.
        CHECK(dirs_below(subtrees).size() == before.size());
        for (const auto& dir : subtrees) CHECK_FALSE(stdfs::exists(dir / "run-b"));
        for (const auto& dir : dirs_below(subtrees))
            CHECK(first_line(dir / "cgroup.procs").empty());
    }
    SUBCASE("a run name that is not one path component is refused") {
        CHECK_THROWS_AS(t.backend->create("../x", {}), isolate::SetupError);
        CHECK_THROWS_AS(t.backend->create("", {}), isolate::SetupError);
    }
    SUBCASE("an existing directory of the same name is replaced") {
        // The first run's set was box-0; where it was kept, the run in use takes it. Either
        // way the next one is made as box-1.
        auto in_use = hands_on(*t.backend) ? t.backend->create("run-b", {}) : nullptr;
        const std::string name = "box-1";
        for (const auto& dir : subtrees) stdfs::create_directory(dir / name);
        auto run = t.backend->create("run-c", {.max_tasks = 7});
        CHECK(run->name() == name);
        for (const auto& dir : subtrees)
            if (stdfs::exists(dir / name / "pids.max"))
                CHECK(first_line(dir / name / "pids.max") == "7");
    }
}

TEST_CASE("cgroup cpu_usage_ns of a 200 ms spin is between 150 and 400 ms") {
    TestBackend t;
    auto run = t.backend->create("spin", {.memory_bytes = 256 * kMiB, .max_tasks = 8});
    CHECK(run->cpu_usage_ns() == 0);
    Child child([] {
        spin_cpu_ms(200);
        return 0;
    });
    run->attach(child.pid());
    child.release();
    const int status = child.wait();
    CHECK(WIFEXITED(status));
    const auto ns = run->cpu_usage_ns();
    CHECK(ns >= 150'000'000);
    CHECK(ns <= 400'000'000);
    const auto usage = run->usage();
    CHECK(usage.cpu_ns >= ns);
    CHECK(usage.oom_kills == 0);
}

TEST_CASE("cgroup 64 MiB touched under a 32 MiB limit is OOM-killed and counted") {
    TestBackend t;
    auto run = t.backend->create("oom", {.memory_bytes = 32 * kMiB, .max_tasks = 8});
    Child child([] {
        const std::size_t size = 64 * kMiB;
        void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return 2;
        std::memset(p, 1, size);
        return 0;
    });
    run->attach(child.pid());
    child.release();
    CHECK(killed_by_sigkill(child.wait()));
    const auto usage = run->usage();
    CHECK(usage.oom_kills >= 1);
    CHECK(usage.memory_peak_bytes >= 16 * kMiB);
    CHECK(usage.memory_peak_bytes <= 33 * kMiB);
}

TEST_CASE("cgroup memory peak of a 16 MiB touch under a 64 MiB limit is reported") {
    TestBackend t;
    auto run = t.backend->create("peak", {.memory_bytes = 64 * kMiB, .max_tasks = 8});
    Child child([] {
        const std::size_t size = 16 * kMiB;
        void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return 2;
        std::memset(p, 1, size);
        return 0;
    });
    run->attach(child.pid());
    child.release();
    const int status = child.wait();
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    const auto usage = run->usage();
    CHECK(usage.oom_kills == 0);
    CHECK(usage.memory_peak_bytes >= 16 * kMiB);
    CHECK(usage.memory_peak_bytes <= 48 * kMiB);
}

TEST_CASE("cgroup pids limit 5 makes the 6th task's fork fail") {
    TestBackend t;
    auto run = t.backend->create("pids", {.memory_bytes = 256 * kMiB, .max_tasks = 5});
    Child child([] { return fork_until_refused(); });
    run->attach(child.pid());
    child.release();
    const int status = child.wait();
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 4);
    if (t.backend->name() == "v2" && run->usage().tasks_peak != 0)
        CHECK(run->usage().tasks_peak == 5);
}

TEST_CASE(
    "cgroup control files: one read gives a value whole, a task list's first read says empty") {
    TestBackend t;
    auto run = t.backend->create("reads", {.memory_bytes = 64 * kMiB, .max_tasks = 8});
    const auto dirs = subtree_dirs(t.subtree);
    REQUIRE_FALSE(dirs.empty());
    auto task_list_empty = [](const stdfs::path& dir) {
        isolate::UniqueFd procs(::open((dir / "cgroup.procs").c_str(), O_RDONLY | O_CLOEXEC));
        REQUIRE(procs.valid());
        bool empty = false;
        REQUIRE(cg::fs::try_task_list_empty(procs.get(), &empty) == 0);
        return empty;
    };
    for (const auto& dir : dirs) {
        CAPTURE(dir);
        CHECK(task_list_empty(dir / run->name()));
        // A multi-line value (v2) and a one-line one (v1 hierarchies), read as cat reads them.
        const auto file =
            dir / run->name() / (t.backend->name() == "v2" ? "cgroup.stat" : "notify_on_release");
        isolate::UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
        REQUIRE(fd.valid());
        std::string value;
        REQUIRE(cg::fs::try_pread_value(fd.get(), value) == 0);
        CHECK(value == read_text(file));
        CHECK_FALSE(value.empty());
    }
    Child child([] { return ::pause(); });  // never released: it waits where it started
    run->attach(child.pid());
    for (const auto& dir : dirs) CHECK_FALSE(task_list_empty(dir / run->name()));
    run->kill_all();
    CHECK(killed_by_sigkill(child.wait()));
    for (const auto& dir : dirs) CHECK(task_list_empty(dir / run->name()));

    // Content longer than one read's buffer is read on to its end.
    const std::string long_text(10000, 'x');
    char path[] = "/tmp/sbx-test-long-XXXXXX";
    isolate::UniqueFd file(::mkstemp(path));
    REQUIRE(file.valid());
    ::unlink(path);
    REQUIRE(::write(file.get(), long_text.data(), long_text.size()) ==
            static_cast<ssize_t>(long_text.size()));
    std::string read_back;
    REQUIRE(cg::fs::try_pread_value(file.get(), read_back) == 0);
    CHECK(read_back == long_text);
}

TEST_CASE("cgroup kill_all kills a child that sleeps forever, and its children") {
    TestBackend t;
    auto run = t.backend->create("kill", {.memory_bytes = 256 * kMiB, .max_tasks = 16});
    Subreaper subreaper;
    int report[2];
    REQUIRE(::pipe2(report, O_CLOEXEC) == 0);
    Child child([&] {
        for (int i = 0; i < 3; ++i) {
            const pid_t pid = ::fork();
            if (pid == 0) {
                for (;;) ::pause();
            }
            if (pid < 0 || ::write(report[1], &pid, sizeof pid) != sizeof pid) return 1;
        }
        ::close(report[1]);
        for (;;) ::pause();
    });
    ::close(report[1]);
    run->attach(child.pid());
    child.release();
    std::vector<pid_t> grandchildren(3);
    for (auto& pid : grandchildren) REQUIRE(::read(report[0], &pid, sizeof pid) == sizeof pid);
    ::close(report[0]);

    run->kill_all();
    run->kill_all();  // harmless when there is nothing left
    CHECK(killed_by_sigkill(child.wait()));
    for (pid_t pid : grandchildren) CHECK(killed_by_sigkill(wait_status(pid)));
    const std::string name = run->name();
    run.reset();
    for (const auto& dir : subtree_dirs(t.subtree))
        CHECK(gone_or_kept_empty(dir / name, *t.backend));
}

TEST_CASE("cgroup kill_all empties a cgroup whose processes keep forking and exiting") {
    TestBackend t;
    auto run = t.backend->create("runners", {.memory_bytes = 256 * kMiB, .max_tasks = 64});
    Subreaper subreaper;
    // Four chains of processes that each fork a child and exit at once, so the cgroup's
    // pids keep changing under the reads of cgroup.procs. (The kernel also hands a
    // SIGKILL that arrives during a fork on to the new child, which is why even one pass
    // of reading and killing catches them in practice.)
    int go[2];
    REQUIRE(::pipe2(go, O_CLOEXEC) == 0);
    const pid_t first = ::fork();
    REQUIRE(first >= 0);
    if (first == 0) {
        char c;
        if (::read(go[0], &c, 1) != 1) ::_exit(99);
        for (int i = 0; i < 3; ++i)
            if (::fork() == 0) break;
        for (;;)
            if (::fork() > 0) ::_exit(0);
    }
    ::close(go[0]);
    run->attach(first);
    // The exited ones become zombies of this process (the subreaper); their pids count
    // against pids.max until reaped.
    std::atomic<bool> stop{false};
    std::thread reaper([&] {
        while (!stop)
            if (::waitpid(-1, nullptr, WNOHANG) <= 0) std::this_thread::sleep_for(100us);
    });
    REQUIRE(::write(go[1], "x", 1) == 1);
    ::close(go[1]);
    const auto dirs = subtree_dirs(t.subtree);
    auto listed = [&] {
        std::size_t most = 0;
        for (const auto& dir : dirs) {
            std::istringstream in(read_text(dir / run->name() / "cgroup.procs"));
            std::size_t n = 0;
            for (std::string line; std::getline(in, line);) ++n;
            most = std::max(most, n);
        }
        return most;
    };
    std::this_thread::sleep_for(100ms);
    CHECK(listed() > 0);

    // Killed tasks take a moment to exit (v2's cgroup.kill does not wait for them); a
    // survivor would keep the cgroup populated for good.
    run->kill_all();
    const auto empty_by = std::chrono::steady_clock::now() + 2s;
    while (listed() > 0 && std::chrono::steady_clock::now() < empty_by)
        std::this_thread::sleep_for(1ms);
    CHECK(listed() == 0);
    stop = true;
    reaper.join();
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    const std::string name = run->name();
    run.reset();
    for (const auto& dir : dirs) CHECK(gone_or_kept_empty(dir / name, *t.backend));
}

TEST_CASE("cgroup destroying a run kills what is still inside") {
    TestBackend t;
    auto run = t.backend->create("busy", {.memory_bytes = 256 * kMiB, .max_tasks = 16});
    Child child([] {
        for (;;) ::pause();
        return 0;
    });
    run->attach(child.pid());
    child.release();
    const std::string name = run->name();
    run.reset();
    CHECK(killed_by_sigkill(child.wait()));
    const auto subtrees = subtree_dirs(t.subtree);
    for (const auto& dir : subtrees) CHECK_FALSE(stdfs::exists(dir / name));
    // Only a run that ended empty hands its directories on.
    CHECK(dirs_below(subtrees).empty());
}

// Waits up to 2 s for a kept set's memcg to have at most 1 MiB charged, the most a run
// takes it with; what the last run's tasks leave is freed after an RCU grace period.
void wait_until_settled(const std::vector<stdfs::path>& subtrees, const std::string& name) {
    for (const auto& dir : subtrees) {
        auto usage = dir / name / "memory.usage_in_bytes";
        if (!stdfs::exists(usage)) usage = dir / name / "memory.current";
        if (!stdfs::exists(usage)) continue;
        const auto by = std::chrono::steady_clock::now() + 2s;
        while (std::stoull(first_line(usage)) > kMiB && std::chrono::steady_clock::now() < by)
            std::this_thread::sleep_for(5ms);
        REQUIRE_MESSAGE(std::stoull(first_line(usage)) <= kMiB,
                        usage << " still reads " << first_line(usage) << " after 2 s");
    }
}

// Touches `mib` MiB of anonymous memory and keeps it; false if it cannot be mapped.
bool touch_mib(std::size_t mib) {
    const std::size_t size = mib * kMiB;
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return false;
    std::memset(p, 1, size);
    return true;
}

TEST_CASE("cgroup hands a run's directories on with nothing of the run") {
    TestBackend t;
    const bool reuse = hands_on(*t.backend);
    MESSAGE((std::string("cgroup ") + t.backend->name() + ": cgroups " +
             (reuse ? "are" : "are not") + " handed on"));
    const auto subtrees = subtree_dirs(t.subtree);
    Subreaper subreaper;
    auto a = t.backend->create("run-a", {.memory_bytes = 64 * kMiB, .max_tasks = 7, .cpus = 0.5});
    // Run A leaves all it can: a detached CPU burner held back by its quota, every one of its
    // task slots taken, a memory peak at its limit and an OOM kill.
    Child child([] {
        const pid_t detacher = ::fork();
        if (detacher == 0) {
            ::setsid();
            const pid_t burner = ::fork();
            if (burner == 0) {
                volatile std::uint64_t sink = 0;
                for (;;) sink = sink + 1;
            }
            ::_exit(burner > 0 ? 0 : 1);
        }
        // The burner exists before the slots are filled.
        int detached = -1;
        if (detacher < 0 || ::waitpid(detacher, &detached, 0) != detacher || detached != 0)
            return 1;
        const pid_t hog = ::fork();
        if (hog == 0) ::_exit(touch_mib(128) ? 0 : 2);
        int hogged = -1;
        if (hog < 0 || ::waitpid(hog, &hogged, 0) != hog || !WIFSIGNALED(hogged)) return 1;
        while (true) {
            const pid_t pid = ::fork();
            if (pid == 0) {
                for (;;) ::pause();
            }
            if (pid < 0) break;
        }
        for (;;) ::pause();
        return 0;
    });
    a->attach(child.pid());
    child.release();
    // The tasks that fill the slots are forked after the OOM kill; an emulated guest is slow.
    auto slots_filled = [&] {
        for (const auto& dir : subtrees)
            if (stdfs::exists(dir / a->name() / "pids.current") &&
                first_line(dir / a->name() / "pids.current") != "7")
                return false;
        return true;
    };
    const auto busy_by = std::chrono::steady_clock::now() + 30s;
    while ((a->cpu_usage_ns() < 200'000'000 || a->usage().oom_kills == 0 || !slots_filled()) &&
           std::chrono::steady_clock::now() < busy_by)
        std::this_thread::sleep_for(10ms);
    REQUIRE(a->cpu_usage_ns() >= 200'000'000);
    REQUIRE(a->usage().oom_kills == 1);
    CHECK(a->usage().memory_peak_bytes >= 60 * kMiB);

    const std::string name = a->name();
    std::vector<std::pair<stdfs::path, ino_t>> handed_on;  // A's inodes, where handed on
    for (const auto& dir : subtrees) {
        const auto d = dir / name;
        if (stdfs::exists(d / "pids.current")) CHECK(first_line(d / "pids.current") == "7");
        if (stdfs::exists(d / "cpu.stat")) CHECK(key_value(d / "cpu.stat", "nr_throttled") > 0);
        if (reuse) handed_on.emplace_back(dir, inode_of(d));
    }
    a->kill_all();
    CHECK(killed_by_sigkill(child.wait()));
    // The kill is asynchronous, and a set is handed on only once nothing runs in it. The
    // burner is this process's to reap; a zombie would still count in pids.current. An
    // emulated guest can take longer than any fixed pause for both.
    const auto empty_by = std::chrono::steady_clock::now() + 10s;
    auto run_gone = [&] {
        for (const auto& dir : subtrees) {
            const auto d = dir / name;
            if (!first_line(d / "cgroup.procs").empty()) return false;
            if (stdfs::exists(d / "pids.current") && first_line(d / "pids.current") != "0")
                return false;
        }
        return true;
    };
    for (reap_exited(); !run_gone() && std::chrono::steady_clock::now() < empty_by; reap_exited())
        std::this_thread::sleep_for(5ms);
    REQUIRE(run_gone());
    a.reset();
    CHECK(dirs_below(subtrees).size() == handed_on.size());

    wait_until_settled(subtrees, name);
    auto b = t.backend->create("run-b", {.memory_bytes = 256 * kMiB, .max_tasks = 5});
    // B got A's directories (the same kernel objects), else this test would prove nothing
    // about them; or, before Linux 6.12 on v2, a new one.
    CHECK((b->name() == name) == reuse);
    for (const auto& [dir, inode] : handed_on) CHECK(inode_of(dir / b->name()) == inode);
    CHECK(b->cpu_usage_ns() == 0);
    CHECK(b->usage().oom_kills == 0);
    CHECK(b->usage().memory_peak_bytes < 4 * kMiB);
    // pids.peak cannot be reset: a handed-on cgroup reports none rather than A's 7.
    CHECK(b->usage().tasks_peak < 7);
    long long throttled_before = -1;
    for (const auto& dir : subtrees) {
        const auto d = dir / b->name();
        CHECK(first_line(d / "cgroup.procs").empty());
        if (stdfs::exists(d / "pids.current")) {
            CHECK(first_line(d / "pids.current") == "0");
            CHECK(first_line(d / "pids.max") == "5");
        }
        if (stdfs::exists(d / "memory.limit_in_bytes")) {
            CHECK(first_line(d / "memory.limit_in_bytes") == std::to_string(256 * kMiB));
            if (stdfs::exists(d / "memory.memsw.limit_in_bytes"))
                CHECK(first_line(d / "memory.memsw.limit_in_bytes") == std::to_string(256 * kMiB));
        }
        if (stdfs::exists(d / "memory.max"))
            CHECK(first_line(d / "memory.max") == std::to_string(256 * kMiB));
        if (stdfs::exists(d / "cpu.cfs_quota_us"))
            CHECK(first_line(d / "cpu.cfs_quota_us") == "-1");
        if (stdfs::exists(d / "cpu.max")) CHECK(first_line(d / "cpu.max").rfind("max ", 0) == 0);
        if (stdfs::exists(d / "cpu.stat") && key_value(d / "cpu.stat", "nr_throttled") >= 0)
            throttled_before = key_value(d / "cpu.stat", "nr_throttled");
    }

    // B counts its own CPU and memory from zero, is never throttled, and has all of its task
    // slots: the child is task 1 and forks until refused, like "pids limit 5" above.
    Child worker([] {
        spin_cpu_ms(200);
        return fork_until_refused();
    });
    b->attach(worker.pid());
    worker.release();
    const int status = worker.wait();
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 4);
    const auto ns = b->cpu_usage_ns();
    CHECK(ns >= 150'000'000);
    CHECK(ns <= 400'000'000);
    const auto usage = b->usage();
    CHECK(usage.oom_kills == 0);
    // Far below A's 64 MiB; the forks of a sanitized test process touch ~10 MiB.
    CHECK(usage.memory_peak_bytes < 32 * kMiB);
    for (const auto& dir : subtrees)
        if (throttled_before >= 0 && stdfs::exists(dir / b->name() / "cpu.stat"))
            CHECK(key_value(dir / b->name() / "cpu.stat", "nr_throttled") == throttled_before);
    b.reset();

    // C lowers the memory limit below B's (memory before memsw) and is held to it.
    wait_until_settled(subtrees, name);
    auto c = t.backend->create("run-c", {.memory_bytes = 32 * kMiB, .max_tasks = 5});
    for (const auto& [dir, inode] : handed_on) CHECK(inode_of(dir / c->name()) == inode);
    Child over([] { return touch_mib(64) ? 0 : 2; });
    c->attach(over.pid());
    over.release();
    CHECK(killed_by_sigkill(over.wait()));
    CHECK(c->usage().oom_kills == 1);
    CHECK(c->usage().memory_peak_bytes <= 33 * kMiB);
    c.reset();

    // D has no memory limit at all (memsw first), and touches more than A's and C's; E has
    // one again (memory first).
    wait_until_settled(subtrees, name);
    auto d = t.backend->create("run-d", {.max_tasks = 5});
    for (const auto& [dir, inode] : handed_on) CHECK(inode_of(dir / d->name()) == inode);
    Child unlimited([] { return touch_mib(96) ? 0 : 2; });
    d->attach(unlimited.pid());
    unlimited.release();
    const int unlimited_status = unlimited.wait();
    CHECK(WIFEXITED(unlimited_status));
    CHECK(d->usage().oom_kills == 0);
    CHECK(d->usage().memory_peak_bytes >= 96 * kMiB);
    CHECK(d->usage().memory_peak_bytes <= 112 * kMiB);
    d.reset();
    wait_until_settled(subtrees, name);
    auto e = t.backend->create("run-e", {.memory_bytes = 48 * kMiB, .max_tasks = 5});
    for (const auto& [dir, inode] : handed_on) CHECK(inode_of(dir / e->name()) == inode);
    for (const auto& dir : subtrees) {
        for (const char* file : {"memory.limit_in_bytes", "memory.max"}) {
            const auto limit = dir / e->name() / file;
            if (stdfs::exists(limit)) CHECK(first_line(limit) == std::to_string(48 * kMiB));
        }
    }
}

TEST_CASE("cgroup does not hand on a memory cgroup that a run left memory charged to") {
    TestBackend t;
    const auto subtrees = subtree_dirs(t.subtree);
    // A file on the host's /dev/shm outlives the run, and its pages stay charged to the
    // memcg that wrote them.
    const stdfs::path file = "/dev/shm/sbx-test-cg-" + std::to_string(::getpid());
    struct Remove {
        stdfs::path path;
        ~Remove() { ::unlink(path.c_str()); }
    } remove{file};
    auto a = t.backend->create("run-a", {.memory_bytes = 64 * kMiB, .max_tasks = 8});
    Child writer([&] {
        const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) return 2;
        const std::string block(kMiB, 'x');
        for (int i = 0; i < 8; ++i)
            if (::write(fd, block.data(), block.size()) != static_cast<ssize_t>(block.size()))
                return 3;
        return ::close(fd) == 0 ? 0 : 4;
    });
    a->attach(writer.pid());
    writer.release();
    const int status = writer.wait();
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
    const std::string name = a->name();
    std::vector<std::pair<stdfs::path, ino_t>> dirs_of_a;
    for (const auto& dir : subtrees) dirs_of_a.emplace_back(dir, inode_of(dir / name));
    a.reset();

    // B does not take A's set: it still holds 8 MiB.
    auto b = t.backend->create("run-b", {.memory_bytes = 64 * kMiB, .max_tasks = 8});
    CHECK(b->usage().memory_peak_bytes < 4 * kMiB);
    for (const auto& [dir, inode] : dirs_of_a) CHECK(inode_of(dir / b->name()) != inode);
    // Nor does C once the page cache has had time to go (it stays): A's set is removed.
    std::this_thread::sleep_for(1100ms);
    auto c = t.backend->create("run-c", {.memory_bytes = 64 * kMiB, .max_tasks = 8});
    CHECK(c->usage().memory_peak_bytes < 4 * kMiB);
    for (const auto& [dir, inode] : dirs_of_a) {
        CHECK(inode_of(dir / c->name()) != inode);
        CHECK_FALSE(stdfs::exists(dir / name));
    }
}

TEST_CASE("cgroup a new backend removes what a crashed one left, processes included") {
    const std::string subtree = unique_subtree();
    Subreaper subreaper;
    int report[2];
    REQUIRE(::pipe2(report, O_CLOEXEC) == 0);
    // The "crashed instance": it builds a run cgroup with a sleeper in it and a nested
    // cgroup with another, then dies without running any destructor.
    const pid_t crasher = ::fork();
    REQUIRE(crasher >= 0);
    if (crasher == 0) {
        ::close(report[0]);
        try {
            // Forked before the backend exists, as a daemon's sandboxes never hold its
            // descriptors: a sleeper holding the subtree's lock would be a live instance.
            pid_t sleepers[2];
            for (pid_t& pid : sleepers) {
                pid = ::fork();
                if (pid == 0) {
                    for (;;) ::pause();
                }
                if (pid < 0) ::_exit(1);
            }
            auto backend = cg::detect_backend({.subtree = subtree});
            auto run = backend->create("left-behind", {.memory_bytes = 64 * kMiB, .max_tasks = 8});
            run->attach(sleepers[0]);
            for (const auto& dir : subtree_dirs(subtree)) {
                stdfs::create_directory(dir / run->name() / "nested");
                std::ofstream(dir / run->name() / "nested" / "cgroup.procs")
                    << sleepers[1] << std::flush;
            }
            char name[64] = {};
            run->name().copy(name, sizeof name - 1);
            if (::write(report[1], sleepers, sizeof sleepers) != sizeof sleepers ||
                ::write(report[1], name, sizeof name) != sizeof name)
                ::_exit(1);
            ::raise(SIGKILL);  // here, before backend and run go out of scope
        } catch (...) {
        }
        ::_exit(1);
    }
    ::close(report[1]);
    pid_t sleepers[2] = {-1, -1};
    char name[64] = {};
    const bool reported = ::read(report[0], sleepers, sizeof sleepers) == sizeof sleepers &&
                          ::read(report[0], name, sizeof name) == sizeof name;
    ::close(report[0]);
    CHECK(killed_by_sigkill(wait_status(crasher)));
    REQUIRE(reported);
    const std::string left_behind = name;
    const auto dirs = subtree_dirs(subtree);
    for (const auto& dir : dirs) {
        REQUIRE(stdfs::is_directory(dir / left_behind / "nested"));
        CHECK(read_text(dir / left_behind / "nested" / "cgroup.procs")
                  .find(std::to_string(sleepers[1])) != std::string::npos);
    }
    CHECK(::kill(sleepers[0], 0) == 0);

    {
        auto backend = cg::detect_backend({.subtree = subtree});
        for (const auto& dir : dirs) {
            CHECK(stdfs::is_directory(dir));
            CHECK_FALSE(stdfs::exists(dir / left_behind));
        }
        for (pid_t pid : sleepers) CHECK(killed_by_sigkill(wait_status(pid)));
    }
    for (const auto& dir : dirs) CHECK_FALSE(stdfs::exists(dir));
}

TEST_CASE("cgroup a second backend on a live one's subtree refuses and leaves its runs alone") {
    TestBackend first;
    Subreaper subreaper;
    auto run = first.backend->create("busy", {.memory_bytes = 64 * kMiB, .max_tasks = 8});
    const pid_t sleeper = ::fork();
    REQUIRE(sleeper >= 0);
    if (sleeper == 0) {
        for (;;) ::pause();
    }
    run->attach(sleeper);
    CHECK_THROWS_WITH_AS(
        cg::detect_backend({.subtree = first.subtree, .force = test::forced_cgroup_backend()}),
        doctest::Contains("in use by another running sandboxd"), isolate::SetupError);
    for (const auto& dir : subtree_dirs(first.subtree))
        CHECK(stdfs::is_directory(dir / run->name()));
    CHECK(::kill(sleeper, 0) == 0);
    run.reset();
    CHECK(killed_by_sigkill(wait_status(sleeper)));
    // Once the first is gone, the subtree is free again.
    first.backend.reset();
    CHECK_NOTHROW(
        cg::detect_backend({.subtree = first.subtree, .force = test::forced_cgroup_backend()}));
}

TEST_CASE("cgroup parsers read /proc/self/cgroup and mountinfo lines") {
    namespace fs = isolate::cgroup::fs;
    const auto entries = fs::parse_proc_cgroup(
        "12:cpu,cpuacct:/user.slice\n1:name=systemd:/a:b\n0::/system.slice/x.service\n");
    REQUIRE(entries.size() == 3);
    CHECK(entries[0].hierarchy_id == 12);
    CHECK(entries[0].controllers == std::vector<std::string>{"cpu", "cpuacct"});
    CHECK(entries[0].path == "/user.slice");
    CHECK(entries[1].path == "/a:b");
    CHECK(entries[2].hierarchy_id == 0);
    CHECK(entries[2].controllers.empty());
    CHECK(entries[2].path == "/system.slice/x.service");

    const auto mounts = fs::parse_mountinfo(
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup "
        "rw,cpu,cpuacct\n"
        "40 31 0:37 /docker/ab /mnt/with\\040space rw - cgroup2 cgroup2 rw,nsdelegate\n");
    REQUIRE(mounts.size() == 2);
    CHECK(mounts[0].mount_point == "/sys/fs/cgroup/cpu,cpuacct");
    CHECK(mounts[0].fstype == "cgroup");
    CHECK(mounts[0].super_options == std::vector<std::string>{"rw", "cpu", "cpuacct"});
    CHECK(mounts[1].root == "/docker/ab");
    CHECK(mounts[1].mount_point == "/mnt/with space");
    CHECK(mounts[1].fstype == "cgroup2");

    CHECK(fs::find_key_u64("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill") == 3u);
    CHECK(fs::find_key_u64("usage_usec 1500\nuser_usec 1000\n", "usage_usec") == 1500u);
    CHECK_FALSE(fs::find_key_u64("populated 1\n", "frozen").has_value());
    CHECK(fs::parse_pids("12\n345\n") == std::vector<pid_t>{12, 345});
    CHECK(fs::has_word("cpuset cpu io memory pids\n", "cpu"));
    CHECK_FALSE(fs::has_word("cpuset io memory\n", "cpu"));
}

TEST_SUITE_END();
