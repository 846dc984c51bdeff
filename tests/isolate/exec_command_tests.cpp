// `sandboxd exec`, the operator's entry point, run as a real process.

#include <doctest/doctest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "isolate/support.h"

namespace {

struct Completed {
    int exit_code = -1;
    std::string out, err;
};

Completed run_sandboxd(std::vector<std::string> args) {
    args.insert(args.begin(), SBX_SANDBOXD_BIN);
    std::vector<char*> argv;
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    int out[2], err[2];
    REQUIRE(pipe(out) == 0);
    REQUIRE(pipe(err) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_adddup2(&actions, err[1], 2);
    pid_t pid;
    REQUIRE(posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ) == 0);
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    close(err[1]);
    Completed done;
    char buf[4096];
    for (ssize_t n; (n = read(out[0], buf, sizeof buf)) > 0;) done.out.append(buf, n);
    for (ssize_t n; (n = read(err[0], buf, sizeof buf)) > 0;) done.err.append(buf, n);
    close(out[0]);
    close(err[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    done.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return done;
}

}  // namespace

TEST_CASE("sandboxd exec prints the outcome as JSON") {
    auto done = run_sandboxd({"exec", "--rootfs", test::rootfs(), "--bind", "/usr:/usr",
                              "--cgroup-subtree", test::cgroup_subtree() + "-exec", "--time-ms",
                              "1000", "--", "/bin/sh", "-c", "echo hi; exit 3"});
    INFO(done.err);
    CHECK(done.exit_code == 0);
    auto result = nlohmann::json::parse(done.out);
    CHECK(result["status"] == "runtime_error");
    CHECK(result["exit_code"] == 3);
    CHECK(result["stdout"] == "hi\n");
    CHECK(result["encoding"] == "utf8");
    CHECK((result["cgroup"] == "v1" || result["cgroup"] == "v2"));
}

TEST_CASE("sandboxd exec reports a broken rootfs as internal_error, exit 2") {
    auto done = run_sandboxd({"exec", "--rootfs", "/var", "--cgroup-subtree",
                              test::cgroup_subtree() + "-exec", "--", "/bin/true"});
    CHECK(done.exit_code == 2);
    auto result = nlohmann::json::parse(done.out);
    CHECK(result["status"] == "internal_error");
    CHECK(result["message"].get<std::string>().find("rootfs") != std::string::npos);
}

TEST_CASE("sandboxd exec refuses a malformed limit with a clear message") {
    auto done =
        run_sandboxd({"exec", "--rootfs", test::rootfs(), "--memory", "lots", "--", "/bin/true"});
    CHECK(done.exit_code == 2);
    CHECK(done.err.find("--memory: not a size: lots") != std::string::npos);
}

TEST_CASE("sandboxd exec: the program's own options after -- follow a repeatable option") {
    // --bind, --env, --file and --collect take one value each, so a `-c` after `--` belongs to
    // the program, not to the parser.
    auto done = run_sandboxd({"exec", "--rootfs", test::rootfs(), "--cgroup-subtree",
                              test::cgroup_subtree() + "-exec", "--env", "PATH=/usr/bin:/bin",
                              "--bind", "/usr:/usr", "--", "/bin/sh", "-c", "echo $0", "-x"});
    INFO(done.err);
    CHECK(done.exit_code == 0);
    auto result = nlohmann::json::parse(done.out);
    CHECK(result["stdout"] == "-x\n");
}

// `sandboxd exec` prepares no namespaces ahead: its run makes its own, and pid 1 brings lo up.
TEST_CASE("sandboxd exec: the run's own network namespace has a working lo and nothing else") {
    auto run = [](const char* what) {
        auto done =
            run_sandboxd({"exec", "--rootfs", test::rootfs(), "--bind", "/usr:/usr", "--bind",
                          std::string(SBX_PROBE_DIR) + ":/probe", "--cgroup-subtree",
                          test::cgroup_subtree() + "-exec", "--", "/probe/sbx-probe", what});
        INFO(done.err);
        REQUIRE(done.exit_code == 0);
        return nlohmann::json::parse(done.out);
    };
    auto fresh = run("net-traces");
    CHECK(fresh["stdout"] == "tcp=0 unix=0 lo_packets=0 active_opens=0\n");
    auto litter = run("net-litter");
    CHECK(litter["status"] == "ok");
    CHECK(litter["stdout"].get<std::string>().find("lo_packets=0") == std::string::npos);
}
