// What only cgroup v2 has, against the real kernel: clone3(CLONE_INTO_CGROUP), cgroup.kill,
// memory.peak, memory.events, pids.peak, and delegation (the no-internal-processes rule).
// scripts/vm-test runs them in a guest whose only cgroup hierarchy is v2. On a v1 host the
// v2-only cases are skipped visibly (doctest counts them as "skipped"); the others check
// behaviour both backends must share, and run everywhere.

#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/sched.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "cgroup/cgroup_fs.h"
#include "isolate/cgroup.h"
#include "isolate/error.h"
#include "isolate/support.h"

namespace {

using test::wait_status;
using namespace std::chrono_literals;

namespace cg = isolate::cgroup;
namespace stdfs = std::filesystem;
using isolate::Status;

constexpr std::uint64_t kMiB = 1024 * 1024;

bool is_v2() {
    struct statfs st {};
    return ::statfs("/sys/fs/cgroup", &st) == 0 &&
           static_cast<unsigned long>(st.f_type) == CGROUP2_SUPER_MAGIC;
}
const bool kNotV2 = !is_v2();

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

// This process's cgroup2 path ("/..." from "0::/..."), read now.
std::string own_cgroup() {
    const auto line = first_line("/proc/self/cgroup");
    REQUIRE(line.rfind("0::", 0) == 0);
    return line.substr(3);
}

// The cgroup the backend builds its subtree in: ours, or the parent of the "supervisor"
// leaf the backend moved us into.
stdfs::path backend_parent() {
    stdfs::path own = own_cgroup();
    if (own.filename() == "supervisor") own = own.parent_path();
    return stdfs::path("/sys/fs/cgroup") / own.relative_path();
}

std::string unique_subtree() {
    return test::unique_cgroup_subtree("sbx-test-v2-");
}

struct TestBackend {
    std::string subtree = unique_subtree();
    std::unique_ptr<cg::Backend> backend =
        cg::detect_backend({.subtree = subtree, .force = test::forced_cgroup_backend()});
    stdfs::path dir = backend_parent() / subtree;
};

}  // namespace

TEST_SUITE_BEGIN("vm");

TEST_CASE("cgroup backend in use is reported") {
    // scripts/vm-test looks for this line and fails unless it says v2.
    const std::string name = test::sandbox().cgroups().name();
    std::printf("cgroup: %s\n", name.c_str());
    std::fflush(stdout);
    CHECK((name == "v1" || name == "v2"));
    CHECK(name == (is_v2() ? "v2" : "v1"));
    if (!test::forced_cgroup_backend().empty()) CHECK(name == test::forced_cgroup_backend());
}

TEST_CASE("memory peak is fresh for each run, not the previous run's") {
    // A run's cgroup is new or handed on with its peak reset; memory.peak (v2) and
    // max_usage_in_bytes (v1) would otherwise carry the high-water mark over.
    auto big = test::probe({"hog", "96"});
    big.limits.memory_bytes = 256 << 20;
    big.slot = 5;
    const auto first = test::sandbox().run(big);
    CHECK(first.status == Status::ok);
    CHECK(first.memory_bytes >= 96u << 20);
    auto small = test::probe({"hello"});
    small.limits.memory_bytes = 256 << 20;
    small.slot = 5;
    const auto second = test::sandbox().run(small);
    CHECK(second.status == Status::ok);
    CHECK(second.memory_bytes > 0);
    CHECK(second.memory_bytes < 32u << 20);
}

TEST_CASE("cgroup v2: clone3(CLONE_INTO_CGROUP) starts the child in the run cgroup" *
          doctest::skip(kNotV2)) {
    TestBackend t;
    auto run = t.backend->create("born", {.memory_bytes = 64 * kMiB, .max_tasks = 8});
    REQUIRE(run->clone_into_fd() >= 0);
    const std::string expected =
        "0::/" + stdfs::relative(t.dir / run->name(), "/sys/fs/cgroup").string();
    int report[2], release[2];
    REQUIRE(::pipe2(report, O_CLOEXEC) == 0);
    REQUIRE(::pipe2(release, O_CLOEXEC) == 0);
    clone_args args{};
    args.flags = CLONE_INTO_CGROUP;
    args.cgroup = static_cast<std::uint64_t>(run->clone_into_fd());
    args.exit_signal = SIGCHLD;
    const long pid = ::syscall(SYS_clone3, &args, sizeof args);
    REQUIRE(pid >= 0);
    if (pid == 0) {
        // The very first thing the child does: read where it is, report, wait.
        ::close(release[1]);
        char buf[512];
        const int fd = ::open("/proc/self/cgroup", O_RDONLY | O_CLOEXEC);
        const ssize_t n = fd >= 0 ? ::read(fd, buf, sizeof buf) : -1;
        if (n <= 0 || ::write(report[1], buf, static_cast<std::size_t>(n)) != n) ::_exit(2);
        char c;
        ::_exit(::read(release[0], &c, 1) == 0 ? 0 : 3);
    }
    ::close(report[1]);
    ::close(release[0]);
    char buf[512] = {};
    const ssize_t n = ::read(report[0], buf, sizeof buf - 1);
    ::close(report[0]);
    const std::string seen(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
    // And from outside, while it waits: the run's cgroup.procs lists it.
    const auto procs = cg::fs::parse_pids(read_text(t.dir / run->name() / "cgroup.procs"));
    ::close(release[1]);
    const int status = wait_status(static_cast<pid_t>(pid));
    CHECK(seen.substr(0, seen.find('\n')) == expected);
    CHECK(procs == std::vector<pid_t>{static_cast<pid_t>(pid)});
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("cgroup v2: the program sees its run cgroup as the root of its cgroup namespace" *
          doctest::skip(kNotV2)) {
    // pid 1 is cloned into the run cgroup and unshares its cgroup namespace there, so the
    // program (forked by pid 1) is at "/" of that namespace: it can name no cgroup above.
    auto result = test::sandbox().run(test::probe({"cat", "/proc/self/cgroup"}));
    CHECK(result.status == Status::ok);
    CHECK(result.stdout_data == "0::/\n");
}

TEST_CASE("cgroup v2: kill_all kills through cgroup.kill, nested cgroups and forkers included" *
          doctest::skip(kNotV2)) {
    TestBackend t;
    auto run = t.backend->create("kill2", {.memory_bytes = 256 * kMiB, .max_tasks = 64});
    const stdfs::path dir = t.dir / run->name();
    CHECK(stdfs::exists(dir / "cgroup.kill"));  // 5.14 and later
    stdfs::create_directory(dir / "nested");
    int ready[2];
    REQUIRE(::pipe2(ready, O_CLOEXEC) == 0);
    // A child that forks short-lived children as fast as it can, so a kill that walks
    // cgroup.procs would race with it; cgroup.kill does not.
    const pid_t forker = ::fork();
    REQUIRE(forker >= 0);
    if (forker == 0) {
        ::raise(SIGSTOP);  // until it is in the run cgroup
        if (::write(ready[1], "x", 1) != 1) ::_exit(1);
        for (;;) {
            const pid_t pid = ::fork();
            if (pid == 0) ::_exit(0);
            if (pid > 0) ::waitpid(pid, nullptr, 0);
        }
    }
    const pid_t sleeper = ::fork();
    REQUIRE(sleeper >= 0);
    if (sleeper == 0) {
        for (;;) ::pause();
    }
    int stopped = 0;
    REQUIRE(::waitpid(forker, &stopped, WUNTRACED) == forker);
    run->attach(forker);
    ::kill(forker, SIGCONT);
    std::ofstream(dir / "nested" / "cgroup.procs") << sleeper << std::flush;
    char c;
    REQUIRE(::read(ready[0], &c, 1) == 1);
    ::close(ready[0]);
    ::close(ready[1]);
    CHECK(cg::fs::find_key_u64(read_text(dir / "cgroup.events"), "populated") == 1u);

    run->kill_all();
    const int forker_status = wait_status(forker);
    const int sleeper_status = wait_status(sleeper);
    CHECK((WIFSIGNALED(forker_status) && WTERMSIG(forker_status) == SIGKILL));
    CHECK((WIFSIGNALED(sleeper_status) && WTERMSIG(sleeper_status) == SIGKILL));
    cg::fs::Backoff backoff(std::chrono::milliseconds(2000));
    while (cg::fs::find_key_u64(read_text(dir / "cgroup.events"), "populated") != 0u &&
           backoff.sleep()) {
    }
    CHECK(cg::fs::find_key_u64(read_text(dir / "cgroup.events"), "populated") == 0u);
    run.reset();
    CHECK_FALSE(stdfs::exists(dir));
}

TEST_CASE("cgroup v2: memory.peak is the run's own, memory.events oom_kill makes the verdict" *
          doctest::skip(kNotV2)) {
    TestBackend t;
    std::string first_name;
    {
        auto run = t.backend->create("again", {.memory_bytes = 32 * kMiB, .max_tasks = 8});
        first_name = run->name();
        const stdfs::path dir = t.dir / run->name();
        CHECK(stdfs::exists(dir / "memory.peak"));  // 5.19 and later: a real peak, not sampled
        CHECK(first_line(dir / "memory.max") == std::to_string(32 * kMiB));
        if (stdfs::exists(dir / "memory.swap.max"))
            CHECK(first_line(dir / "memory.swap.max") == "0");
        const pid_t hog = ::fork();
        REQUIRE(hog >= 0);
        if (hog == 0) {
            ::raise(SIGSTOP);
            const std::size_t size = 64 * kMiB;
            void* p =
                ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p != MAP_FAILED) std::memset(p, 1, size);
            ::_exit(0);
        }
        int status = 0;
        REQUIRE(::waitpid(hog, &status, WUNTRACED) == hog);
        run->attach(hog);
        ::kill(hog, SIGCONT);
        status = wait_status(hog);
        CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL));
        const auto usage = run->usage();
        CHECK(usage.oom_kills == 1);
        CHECK(cg::fs::find_key_u64(read_text(dir / "memory.events"), "oom_kill") == 1u);
        CHECK(usage.memory_peak_bytes ==
              cg::fs::parse_u64(read_text(dir / "memory.peak")).value_or(0));
        CHECK(usage.memory_peak_bytes > 16 * kMiB);
        CHECK(usage.memory_peak_bytes <= 32 * kMiB);
    }
    // Again: the same cgroup handed on (6.12 and later) or a new one, and neither way does the
    // peak or the OOM count carry over. A kept cgroup is taken once what the killed task left
    // charged is freed (at most 1 MiB); that happens after an RCU grace period.
    const bool reuse = test::cgroups_handed_on("v2");
    const stdfs::path current = t.dir / first_name / "memory.current";
    const auto settled_by = std::chrono::steady_clock::now() + 2s;
    while (reuse && cg::fs::parse_u64(read_text(current)).value_or(0) > kMiB &&
           std::chrono::steady_clock::now() < settled_by)
        std::this_thread::sleep_for(5ms);
    auto run = t.backend->create("again", {.memory_bytes = 32 * kMiB, .max_tasks = 8});
    CHECK((run->name() == first_name) == reuse);
    const auto usage = run->usage();
    CHECK(usage.oom_kills == 0);
    CHECK(usage.memory_peak_bytes <= 1 * kMiB);

    // Through the whole sandbox: the OOM kill is memory_limit.
    auto spec = test::probe({"hog", "256"});
    spec.limits.memory_bytes = 48 << 20;
    const auto result = test::sandbox().run(spec);
    CHECK(result.status == Status::memory_limit);
    CHECK(result.memory_bytes <= 48u << 20);
}

TEST_CASE("cgroup v2: pids.peak is reported where the kernel has it" * doctest::skip(kNotV2)) {
    TestBackend t;
    auto run = t.backend->create("tasks", {.memory_bytes = 64 * kMiB, .max_tasks = 8});
    const bool has_peak = stdfs::exists(t.dir / run->name() / "pids.peak");
    utsname u{};
    ::uname(&u);
    std::printf("cgroup v2: pids.peak %s on kernel %s\n",
                has_peak ? "present" : "absent; tasks_peak stays 0", u.release);
    std::fflush(stdout);
    const pid_t parent = ::fork();
    REQUIRE(parent >= 0);
    if (parent == 0) {
        ::raise(SIGSTOP);
        pid_t kids[3];
        for (pid_t& kid : kids) {
            kid = ::fork();
            if (kid == 0) ::_exit(0);
        }
        for (pid_t kid : kids) ::waitpid(kid, nullptr, 0);
        ::_exit(0);
    }
    int status = 0;
    REQUIRE(::waitpid(parent, &status, WUNTRACED) == parent);
    run->attach(parent);
    ::kill(parent, SIGCONT);
    status = wait_status(parent);
    CHECK(WIFEXITED(status));
    const auto peak = run->usage().tasks_peak;
    if (has_peak) {
        CHECK(peak >= 2);
        CHECK(peak <= 4);
    } else {
        CHECK(peak == 0);
    }
}

// Delegation, in a cgroup of its own below the backend's parent: a child process plays a
// daemon started in a fresh delegated cgroup (alone, or sharing it).
TEST_CASE("cgroup v2: a delegated daemon moves itself into a leaf, and refuses to move others" *
          doctest::skip(kNotV2)) {
    TestBackend t;  // ensures our cgroup tree has the controllers enabled for children
    const stdfs::path service = backend_parent() / ("sbx-deleg-" + std::to_string(::getpid()));
    REQUIRE(stdfs::create_directory(service));
    CHECK(cg::fs::has_word(read_text(service / "cgroup.controllers"), "memory"));
    CHECK(read_text(service / "cgroup.subtree_control").find_first_not_of(" \n") ==
          std::string::npos);

    // Runs `body` in a child that first moves itself into `dir`; returns its exit code.
    auto in_cgroup = [&](const stdfs::path& dir, auto body) {
        const pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            std::ofstream(dir / "cgroup.procs") << 0 << std::flush;
            ::_exit(body());
        }
        const int status = wait_status(pid);
        REQUIRE(WIFEXITED(status));
        return WEXITSTATUS(status);
    };
    auto in_service = [&](auto body) { return in_cgroup(service, body); };

    SUBCASE("alone: it moves into <service>/supervisor and enables the controllers") {
        const int code = in_service([&] {
            try {
                auto backend = cg::detect_backend({.subtree = "daemon", .force = "v2"});
                if (own_cgroup() !=
                    "/" + stdfs::relative(service, "/sys/fs/cgroup").string() + "/supervisor")
                    return 10;
                if (!cg::fs::has_word(read_text(service / "cgroup.subtree_control"), "memory"))
                    return 11;
                if (!cg::fs::has_word(read_text(service / "daemon" / "cgroup.subtree_control"),
                                      "pids"))
                    return 12;
                if (!cg::fs::parse_pids(read_text(service / "cgroup.procs")).empty()) return 13;
                auto run = backend->create("r", {.memory_bytes = 16 * kMiB, .max_tasks = 4});
                if (first_line(service / "daemon" / run->name() / "memory.max") !=
                    std::to_string(16 * kMiB))
                    return 14;
                return 0;
            } catch (const std::exception& e) {
                std::fprintf(stderr, "%s\n", e.what());
                return 20;
            }
        });
        CHECK(code == 0);
    }
    SUBCASE("sharing its cgroup: it refuses, says why, and leaves things as they were") {
        const pid_t other = ::fork();
        REQUIRE(other >= 0);
        if (other == 0) {
            for (;;) ::pause();
        }
        std::ofstream(service / "cgroup.procs") << other << std::flush;
        const int code = in_service([&] {
            try {
                cg::detect_backend({.subtree = "daemon", .force = "v2"});
                return 30;
            } catch (const isolate::SetupError& e) {
                if (!std::strstr(e.what(), "Delegate=yes")) {
                    std::fprintf(stderr, "%s\n", e.what());
                    return 31;
                }
                if (own_cgroup() != "/" + stdfs::relative(service, "/sys/fs/cgroup").string())
                    return 32;
                return stdfs::exists(service / "supervisor") ? 33 : 0;
            }
        });
        CHECK(code == 0);
        ::kill(other, SIGKILL);
        wait_status(other);
    }
    SUBCASE("a leaf that someone else called supervisor is just its own cgroup") {
        // Only a leaf the backend moved itself into makes the parent its own; otherwise it
        // would build (and clean up) in a cgroup that is not its.
        stdfs::create_directory(service / "supervisor");
        std::ofstream(service / "cgroup.subtree_control") << "+memory +pids" << std::flush;
        const int code = in_cgroup(service / "supervisor", [&] {
            try {
                auto backend = cg::detect_backend({.subtree = "daemon", .force = "v2"});
                if (stdfs::exists(service / "daemon")) return 40;
                if (!stdfs::is_directory(service / "supervisor" / "daemon")) return 41;
                return 0;
            } catch (const std::exception& e) {
                std::fprintf(stderr, "%s\n", e.what());
                return 42;
            }
        });
        CHECK(code == 0);
    }
    cg::fs::Backoff backoff(std::chrono::milliseconds(2000));
    const cg::fs::Dir parent = cg::fs::open_dir(service.parent_path());
    CHECK(cg::fs::remove_tree(parent, service.filename().string(), backoff) == 0);
}

TEST_SUITE_END();
