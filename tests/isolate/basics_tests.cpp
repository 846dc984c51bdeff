// A program runs, reads its stdin, prints, exits, and the result says so exactly.

#include <doctest/doctest.h>

#include <atomic>
#include <csignal>

#include "isolate/support.h"

using isolate::Status;

TEST_CASE("hello world prints and exits 0" * doctest::test_suite("vm")) {
    auto result = test::sandbox().run(test::probe({"hello"}));
    INFO(result.message, " ", result.stderr_data);
    CHECK(result.status == Status::ok);
    CHECK(result.stdout_data == "hello\n");
    CHECK(result.stderr_data.empty());
    CHECK(result.exit_code == 0);
    CHECK(!result.signal);
    CHECK(result.wall_time_ms > 0);
    CHECK(result.memory_bytes > 0);
}

TEST_CASE("a non-zero exit code is a runtime_error with that code") {
    auto result = test::sandbox().run(test::probe({"exit", "42"}));
    CHECK(result.status == Status::runtime_error);
    CHECK(result.exit_code == 42);
    CHECK(result.message == "exited with code 42");
}

TEST_CASE("SIGSEGV is reported as signaled with its name") {
    auto result = test::sandbox().run(test::probe({"segv"}));
    CHECK(result.status == Status::signaled);
    REQUIRE(result.signal);
    CHECK(isolate::signal_name(*result.signal) == "SIGSEGV");
    CHECK(!result.exit_code);
}

TEST_CASE("abort() gives SIGABRT, as on a normal system") {
    auto result = test::sandbox().run(test::probe({"abort"}));
    CHECK(result.status == Status::signaled);
    CHECK(result.signal == SIGABRT);
}

TEST_CASE("8 MiB of stdin arrives intact") {
    auto spec = test::probe({"stdin-count"});
    spec.stdin_data.resize(8 << 20);
    unsigned long long sum = 0;
    for (std::size_t i = 0; i < spec.stdin_data.size(); ++i) {
        spec.stdin_data[i] = static_cast<char>((i * 7919) & 0xff);
        sum = sum * 31 + static_cast<unsigned char>(spec.stdin_data[i]);
    }
    auto result = test::sandbox().run(spec);
    CHECK(result.status == Status::ok);
    CHECK(result.stdout_data == std::to_string(8 << 20) + " " + std::to_string(sum) + "\n");
}

TEST_CASE("a program that ignores its stdin still finishes") {
    auto spec = test::probe({"hello"});
    spec.stdin_data.assign(4 << 20, 'x');
    auto result = test::sandbox().run(spec);
    CHECK(result.status == Status::ok);
}

TEST_CASE("non-UTF-8 stdout comes back byte for byte") {
    auto result = test::sandbox().run(test::probe({"binary"}));
    CHECK(result.status == Status::ok);
    CHECK(result.stdout_data == std::string("\xff\xfe\x00\x80ok", 6));
}

TEST_CASE("argv and env are exactly what was given") {
    auto spec = test::probe({"env"});
    spec.env = {"ONLY=this"};
    auto result = test::sandbox().run(spec);
    CHECK(result.stdout_data == "ONLY=this\n");
    auto args = test::sandbox().run(test::probe({"args", "a b", "", "c"}));
    CHECK(args.stdout_data == "a b\n\nc\n");
}

TEST_CASE("the program sees only stdin, stdout and stderr, and default SIGPIPE") {
    auto fds = test::sandbox().run(test::probe({"fds"}));
    // 0, 1, 2 and the directory descriptor opendir used.
    CHECK(fds.stdout_data == "0\n1\n2\n3\n");
    auto sigpipe = test::sandbox().run(test::probe({"sigpipe"}));
    CHECK(sigpipe.stdout_data == "SIGPIPE default\n");
}

TEST_CASE("the program starts with no signal blocked or ignored, whatever the supervisor's") {
    // Ignored dispositions survive execve; pid 1 starts as a copy of the supervisor's.
    struct sigaction ignore {
    }, previous{};
    ignore.sa_handler = SIG_IGN;
    REQUIRE(::sigaction(SIGUSR1, &ignore, &previous) == 0);
    auto state = test::sandbox().run(test::probe({"sigstate"}));
    ::sigaction(SIGUSR1, &previous, nullptr);
    CHECK(state.stdout_data == "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
}

namespace {
std::atomic<int> child_signals{0};
void count_child_signal(int) {
    child_signals.fetch_add(1);
}
}  // namespace

TEST_CASE("a run's end signals none of the supervisor's threads") {
    // pid 1 is reaped by its pidfd. A SIGCHLD at its exit would wake one of the daemon's
    // threads for nothing at every run's end (its parent, the spawner thread, blocks it).
    REQUIRE(test::sandbox().run(test::probe({"hello"})).status == Status::ok);
    struct sigaction counting {
    }, previous{};
    counting.sa_handler = count_child_signal;
    counting.sa_flags = SA_RESTART;
    child_signals = 0;
    REQUIRE(::sigaction(SIGCHLD, &counting, &previous) == 0);
    int ok = 0;
    for (int run = 0; run < 3; ++run)
        ok += test::sandbox().run(test::probe({"hello"})).status == Status::ok;
    ::sigaction(SIGCHLD, &previous, nullptr);
    CHECK(ok == 3);
    CHECK(child_signals.load() == 0);
}

TEST_CASE("input files land in the working directory, and collected files come back") {
    auto spec = test::command({"/bin/sh", "-c", "cat data/in.txt; cp data/in.txt out.txt; ls"});
    spec.files = {{"data/in.txt", "payload\n", false}};
    spec.collect = {"out.txt", "missing.txt"};
    auto result = test::sandbox().run(spec);
    INFO(result.message, result.stderr_data);
    CHECK(result.status == Status::ok);
    CHECK(result.stdout_data == "payload\ndata\nout.txt\n");
    REQUIRE(result.collected.size() == 1);
    CHECK(result.collected[0].path == "out.txt");
    CHECK(result.collected[0].content == "payload\n");
}

TEST_CASE("a collected symlink is not followed") {
    auto spec = test::command({"/bin/sh", "-c", "ln -s /etc/passwd out"});
    spec.collect = {"out"};
    auto result = test::sandbox().run(spec);
    CHECK(result.status == Status::ok);
    CHECK(result.collected.empty());
}

TEST_CASE("a missing program is an internal_error that names it") {
    auto result = test::sandbox().run(test::command({"no-such-program"}));
    CHECK(result.status == Status::internal_error);
    CHECK(result.message.find("execve") != std::string::npos);
    CHECK(result.message.find("no-such-program") != std::string::npos);
}

TEST_CASE("setup problems fail closed with a precise message") {
    SUBCASE("no seccomp filter") {
        auto spec = test::probe({"hello"});
        spec.seccomp = nullptr;
        auto result = test::sandbox().run(spec);
        CHECK(result.status == Status::internal_error);
        CHECK(result.message.find("seccomp") != std::string::npos);
        CHECK(result.stdout_data.empty());
    }
    SUBCASE("rootfs without /proc") {
        auto spec = test::probe({"hello"});
        spec.rootfs = "/var/empty-does-not-exist";
        auto result = test::sandbox().run(spec);
        CHECK(result.status == Status::internal_error);
        CHECK(result.stdout_data.empty());
    }
    SUBCASE("a bind target missing from the rootfs") {
        auto spec = test::probe({"hello"});
        spec.binds.push_back({"/usr", "/nowhere"});
        auto result = test::sandbox().run(spec);
        CHECK(result.status == Status::internal_error);
        CHECK(result.message.find("/nowhere") != std::string::npos);
    }
    SUBCASE("an input path with ..") {
        auto spec = test::probe({"hello"});
        spec.files = {{"../escape", "x", false}};
        auto result = test::sandbox().run(spec);
        CHECK(result.status == Status::internal_error);
        CHECK(result.message.find("..") != std::string::npos);
    }
    SUBCASE("a memory limit too small for the sandbox to start in") {
        auto spec = test::probe({"hello"});
        spec.limits.memory_bytes = 1;  // rounded up to one page: nothing can run in that
        auto result = test::sandbox().run(spec);
        CHECK(result.status != Status::ok);
        CHECK(result.stdout_data.empty());
    }
}
