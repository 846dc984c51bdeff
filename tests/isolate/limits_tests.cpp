// One test per limit and verdict. The limits are small so each test ends quickly.

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>

#include "isolate/support.h"

using isolate::Status;

namespace {

// The CPU budget is enforced within ~100 ms of the limit on real hardware. scripts/vm-test's
// guest (SBX_TIME_SCALE set) emulates its CPUs on a shared host, which can starve a vCPU
// thread past the timer; there the same verdict is checked with a scaled margin.
double max_cpu_overshoot_ms(double limit_ms) {
    const char* scale = std::getenv("SBX_TIME_SCALE");
    const double factor = scale ? std::max(1.0, std::atof(scale)) : 1.0;
    return limit_ms + 100 * factor;
}

}  // namespace

TEST_CASE("a busy loop is stopped at its CPU budget, not much later" * doctest::test_suite("vm")) {
    auto spec = test::probe({"spin", "0"});
    spec.limits.cpu_time_ms = 1000;
    auto result = test::sandbox().run(spec);
    CHECK(result.status == Status::time_limit);
    CHECK(result.cpu_time_ms >= 1000);
    CHECK(result.cpu_time_ms <= max_cpu_overshoot_ms(1000));
    CHECK(result.signal == SIGKILL);
}

TEST_CASE("CPU time is summed over threads" * doctest::test_suite("vm")) {
    auto spec = test::probe({"spin", "0", "2"});
    spec.limits.cpu_time_ms = 1000;
    auto result = test::sandbox().run(spec);
    CHECK(result.status == Status::time_limit);
    CHECK(result.cpu_time_ms >= 1000);
    CHECK(result.cpu_time_ms <= max_cpu_overshoot_ms(1000));
}

TEST_CASE("sleeping past the wall time is wall_time_limit" * doctest::test_suite("vm")) {
    auto spec = test::probe({"sleep", "10000"});
    spec.limits.wall_time_ms = 300;
    auto result = test::sandbox().run(spec);
    CHECK(result.status == Status::wall_time_limit);
    CHECK(result.wall_time_ms >= 300);
    CHECK(result.wall_time_ms < 1000);
    // Sleeping is not CPU time. The figure still includes exec and teardown, which take
    // ~100 ms in scripts/vm-test's emulated guest, so compare with the wall time.
    CHECK(result.cpu_time_ms < result.wall_time_ms / 2);
}

// A slot keeps its two timers from run to run. Each run arms both before it polls them, which
// clears an expiry the run before did not read; a leftover one would end the next run at once.
TEST_CASE("a time limit that fired in one run does not reach the next run on its slot" *
          doctest::test_suite("vm")) {
    auto on_slot = [](isolate::RunSpec spec) {
        spec.slot = 4;
        return test::sandbox().run(spec);
    };
    auto slept_long = test::probe({"sleep", "10000"});
    slept_long.limits.wall_time_ms = 100;
    CHECK(on_slot(slept_long).status == Status::wall_time_limit);
    auto spun_long = test::probe({"spin", "0"});
    spun_long.limits.cpu_time_ms = 100;
    CHECK(on_slot(spun_long).status == Status::time_limit);

    auto sleeps = test::probe({"sleep", "300"});
    sleeps.limits.wall_time_ms = 5000;
    auto spins = test::probe({"spin", "200"});
    spins.limits.cpu_time_ms = 5000;
    for (const auto& spec : {sleeps, spins}) {
        const auto result = on_slot(spec);
        CHECK(result.status == Status::ok);
        CHECK(result.wall_time_ms >= 200);
    }
    // And the kept timers still enforce the limits of the runs after.
    const auto slept_again = on_slot(slept_long);
    CHECK(slept_again.status == Status::wall_time_limit);
    CHECK(slept_again.wall_time_ms < 1000);
    CHECK(on_slot(spun_long).status == Status::time_limit);
}

// The supervisor's timer runs from `start`, before pid 1 writes the input files and the program
// starts, and re-arms itself for the rest of the limit counted from the execve: 48 MiB of
// input take long enough to write that stopping at the first expiry would stop short, and
// longer than a 10 ms limit, which must not pass for a setup that never finished.
TEST_CASE("the wall time limit counts from the execve, however long the input files took") {
    for (const std::uint64_t limit_ms : {200, 10}) {
        CAPTURE(limit_ms);
        auto spec = test::probe({"sleep", "10000"});
        spec.limits.wall_time_ms = limit_ms;
        spec.files.push_back({"input", std::string(48u << 20, 'x')});
        auto result = test::sandbox().run(spec);
        CHECK(result.status == Status::wall_time_limit);
        CHECK(result.wall_time_ms >= static_cast<double>(limit_ms));
        CHECK(result.wall_time_ms < static_cast<double>(limit_ms) + 800);
    }
}

// The same timer ends a setup that does not reach the execve within the setup timeout, here
// 5 ms against 48 MiB of input to write: internal_error, not a wall time verdict.
TEST_CASE("a setup slower than the setup timeout fails as internal_error") {
    isolate::SandboxConfig config;
    config.uid_base = 2'300'000;
    config.slots = 1;
    config.setup_timeout_ms = 5;
    auto sandbox = test::own_sandbox("setup-timeout", config);
    auto spec = test::probe({"hello"});
    spec.limits.wall_time_ms = 2;
    spec.files.push_back({"input", std::string(48u << 20, 'x')});
    auto result = sandbox->run(spec);
    CHECK(result.status == Status::internal_error);
    CHECK_MESSAGE(
        result.message.find("sandbox setup did not finish within 5 ms") != std::string::npos,
        result.message);
    CHECK(result.stdout_data.empty());
}

TEST_CASE("a heap hog is memory_limit" * doctest::test_suite("vm")) {
    auto spec = test::probe({"hog", "1024"});
    spec.limits.memory_bytes = 64 << 20;
    auto result = test::sandbox().run(spec);
    CHECK(result.status == Status::memory_limit);
    CHECK(result.memory_bytes >= 60u << 20);
    CHECK(result.memory_bytes <= 64u << 20);
}

TEST_CASE("a fork bomb is contained by max_processes and hurts nothing" *
          doctest::test_suite("vm")) {
    SUBCASE("forks stop at the limit") {
        auto spec = test::probe({"forkcount"});
        spec.limits.max_processes = 16;
        auto result = test::sandbox().run(spec);
        CHECK(result.status == Status::ok);
        int forked = -1;
        REQUIRE(std::sscanf(result.stdout_data.c_str(), "forked %d", &forked) == 1);
        CHECK(forked >= 1);
        CHECK(forked < 16);
    }
    SUBCASE("an endless bomb ends at the wall time and the host can still fork") {
        auto spec = test::probe({"forkbomb"});
        spec.limits.max_processes = 32;
        spec.limits.wall_time_ms = 1000;
        auto result = test::sandbox().run(spec);
        CHECK((result.status == Status::wall_time_limit || result.status == Status::time_limit));
        pid_t pid = fork();
        if (pid == 0) _exit(0);
        REQUIRE(pid > 0);
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid);
        CHECK(test::processes_of_uid(test::sandbox().config().uid_base + spec.slot).empty());
    }
}

TEST_CASE(
    "a run's task count, CPU quota, CPU time, memory limit, peak and OOM kill do not carry over "
    "to the next run" *
    doctest::test_suite("vm")) {
    // On v1 later runs take this run's directories (the cgroup tests prove it is the same
    // kernel objects); on v2 each run has a new cgroup. All run on one slot, one after another.
    auto run_on_slot = [](std::vector<std::string> args, auto set_limits) {
        auto spec = test::probe(std::move(args));
        spec.slot = 2;
        set_limits(spec.limits);
        return test::sandbox().run(spec);
    };
    const auto hogged = run_on_slot({"hog", "64"}, [](auto& l) { l.memory_bytes = 32 << 20; });
    CHECK(hogged.status == Status::memory_limit);
    CHECK(hogged.memory_bytes >= 24u << 20);

    // Its limit and its OOM kill are gone: 48 MiB fit under 128.
    const auto fitted = run_on_slot({"hog", "48"}, [](auto& l) { l.memory_bytes = 128 << 20; });
    CHECK(fitted.status == Status::ok);
    CHECK(fitted.memory_bytes >= 48u << 20);
    CHECK(fitted.memory_bytes <= 80u << 20);

    const auto bombed = run_on_slot({"forkbomb"}, [](auto& l) {
        l.max_processes = 8;
        l.cpus = 0.5;
        l.wall_time_ms = 700;
    });
    CHECK((bombed.status == Status::wall_time_limit || bombed.status == Status::time_limit));
    CHECK(bombed.cpu_time_ms >= 100);

    // All of the next run's task slots are free: the probe and pid 1 take two.
    const auto counted = run_on_slot({"forkcount"}, [](auto& l) { l.max_processes = 16; });
    CHECK(counted.status == Status::ok);
    CHECK(counted.stdout_data == "forked 15\n");
    // Its CPU time is its own, counted from zero, and no quota slows it: 300 ms of CPU at
    // half a core would take 600 ms.
    const auto spun = run_on_slot({"spin", "300"}, [](auto&) {});
    CHECK(spun.status == Status::ok);
    CHECK(spun.cpu_time_ms >= 270);
    CHECK(spun.cpu_time_ms <= 450);
    // And its memory peak is its own, not the 48 MiB before.
    CHECK(spun.memory_bytes < 16u << 20);
}

TEST_CASE("a thread bomb is contained by max_processes" * doctest::test_suite("vm")) {
    auto spec = test::probe({"threadbomb"});
    spec.limits.max_processes = 20;
    auto result = test::sandbox().run(spec);
    CHECK(result.status == Status::ok);
    int threads = -1;
    REQUIRE(std::sscanf(result.stdout_data.c_str(), "threads %d", &threads) == 1);
    CHECK(threads < 20);
}

TEST_CASE("an output flood is cut at max_output_bytes and keeps what came before") {
    auto spec = test::probe({"flood"});
    spec.limits.max_output_bytes = 1 << 20;
    auto result = test::sandbox().run(spec);
    CHECK(result.status == Status::output_limit);
    CHECK(result.stdout_data.size() == 1u << 20);
    CHECK(result.stdout_data.find_first_not_of('x') == std::string::npos);
    CHECK(result.stdout_truncated);
    CHECK(!result.stderr_truncated);
}

TEST_CASE("output exactly at the limit is fine") {
    auto spec = test::command({"/bin/sh", "-c", "printf 12345"});
    spec.limits.max_output_bytes = 5;
    auto result = test::sandbox().run(spec);
    CHECK(result.status == Status::ok);
    CHECK(result.stdout_data == "12345");
    CHECK(!result.stdout_truncated);
}

TEST_CASE("a file bigger than max_file_bytes is file_size_limit") {
    auto spec = test::probe({"bigfile", std::to_string(4 << 20)});
    spec.limits.max_file_bytes = 1 << 20;
    auto result = test::sandbox().run(spec);
    CHECK(result.status == Status::file_size_limit);
    CHECK(result.signal == SIGXFSZ);
}

TEST_CASE("filling /tmp stops at the tmpfs size") {
    auto spec = test::probe({"filltmp"});
    spec.limits.tmpfs_bytes = 8 << 20;
    spec.limits.max_file_bytes = 1ull << 30;
    auto result = test::sandbox().run(spec);
    CHECK(result.status == Status::ok);
    long long filled = -1;
    char error[64] = {};
    REQUIRE(std::sscanf(result.stdout_data.c_str(), "filled %lld %63s", &filled, error) == 2);
    CHECK(filled <= 8 << 20);
    CHECK(filled > 0);
    CHECK(std::string(error) == "ENOSPC");
}

TEST_CASE("the cpus cap slows a two-thread loop to one core" * doctest::test_suite("vm")) {
    auto spec = test::probe({"spin", "300", "2"});
    spec.limits.cpus = 1.0;
    auto result = test::sandbox().run(spec);
    CHECK(result.status == Status::ok);
    // 600 ms of CPU at one core takes at least ~600 ms of wall time.
    CHECK(result.wall_time_ms >= 500);
}

TEST_CASE("cancel_fd stops a run" * doctest::test_suite("vm")) {
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    REQUIRE(write(fds[1], "x", 1) == 1);
    auto spec = test::probe({"sleep", "5000"});
    spec.cancel_fd = fds[0];
    auto result = test::sandbox().run(spec);
    CHECK(result.status == Status::cancelled);
    close(fds[0]);
    close(fds[1]);
}
