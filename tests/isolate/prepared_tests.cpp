// Sandboxes built ahead of their request (SandboxConfig::prepare_ahead, as the daemon runs):
// each is used by one run, starts as clean as one built on the request's path, and a run
// whose shape differs never gets one.

#include <doctest/doctest.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "isolate/support.h"

using isolate::Status;
using namespace std::chrono_literals;

namespace {

constexpr unsigned kSlot = 3;

// A sandbox that builds ahead as the daemon's does, in a cgroup subtree of its own.
std::unique_ptr<isolate::Sandbox> preparing_sandbox(const std::string& name,
                                                    isolate::SandboxConfig config) {
    config.prepare_ahead = true;
    return test::own_sandbox(name, config);
}

struct PreparingSandbox {
    PreparingSandbox() {
        isolate::SandboxConfig config;
        config.uid_base = 2'100'000;
        config.slots = 4;
        sandbox = preparing_sandbox("prepared", config);
    }
    uid_t host_uid() const { return sandbox->config().uid_base + kSlot; }
    std::unique_ptr<isolate::Sandbox> sandbox;
};

isolate::RunSpec shell(const std::string& script) {
    auto spec = test::command({"/bin/sh", "-c", script});
    spec.slot = kSlot;
    return spec;
}

// Leaves what a run can leave: files in every writable place, a detached process.
constexpr const char* kLitter =
    "echo x > /tmp/left && echo x > /dev/shm/left && echo x > left && mkdir /tmp/dir && "
    "{ setsid sleep 1000 < /dev/null > /dev/null 2>&1 & } && echo littered";
// Looks for it, and names every process it can see.
constexpr const char* kLook =
    "ls -A /tmp /dev/shm .; for p in /proc/[0-9]*; do read c < $p/comm; echo \"$c\"; done";
const std::string kClean = ".:\n\n/dev/shm:\n\n/tmp:\nsandbox-init\nsh\n";

// Until a sandbox built ahead has both its processes: pid 1 says it is ready before it makes
// the program's (which waits for its request).
bool both_processes_wait(uid_t uid) {
    return test::eventually([&] { return test::processes_of_uid(uid).size() == 2; });
}

// The process of a sandbox built ahead named `comm`: pid 1 ("sandbox-init") or the program's
// process waiting for its request ("sandbox-ready", which it names itself once made).
pid_t waiting_process(uid_t uid, const std::string& comm) {
    pid_t found = -1;
    test::eventually([&] {
        for (pid_t pid : test::processes_of_uid(uid)) {
            std::ifstream in("/proc/" + std::to_string(pid) + "/comm");
            std::string name;
            std::getline(in, name);
            if (name == comm) found = pid;
        }
        return found > 0;
    });
    return found;
}

}  // namespace

TEST_CASE("a sandbox built ahead is used once and holds nothing of the run before" *
          doctest::test_suite("vm")) {
    PreparingSandbox fixture;
    isolate::Sandbox& sandbox = *fixture.sandbox;
    // The look finds the litter where it is.
    auto seen = sandbox.run(shell(std::string(kLitter) + "; sleep 0.1; " + kLook));
    REQUIRE(seen.status == Status::ok);
    CHECK(seen.stdout_data.find("left") != std::string::npos);
    CHECK(seen.stdout_data.find("sleep") != std::string::npos);

    sandbox.prepare_slot(kSlot);
    auto litter = sandbox.run(shell(kLitter));
    REQUIRE(litter.status == Status::ok);
    CHECK(litter.stdout_data == "littered\n");

    sandbox.prepare_slot(kSlot);
    // The littering run's pid 1 and its sleeper are gone; only the new sandbox waits, idle:
    // its pid 1 and its program's process.
    CHECK(both_processes_wait(fixture.host_uid()));

    for (int run = 0; run < 3; ++run) {
        auto before = sandbox.prepared_stats();
        auto look = sandbox.run(shell(kLook));
        CHECK(sandbox.prepared_stats().used == before.used + 1);
        CHECK(look.status == Status::ok);
        CHECK(look.stdout_data == kClean);
        sandbox.prepare_slot(kSlot);
    }
    const uid_t uid = fixture.host_uid();
    fixture.sandbox.reset();
    CHECK(test::processes_of_uid(uid).empty());
}

TEST_CASE("a run of another shape builds its own sandbox with its own limits" *
          doctest::test_suite("vm")) {
    PreparingSandbox fixture;
    isolate::Sandbox& sandbox = *fixture.sandbox;
    REQUIRE(sandbox.run(shell("true")).status == Status::ok);
    sandbox.prepare_slot(kSlot);

    auto smaller = shell("stat -f -c '%b %S' /tmp");
    smaller.limits.tmpfs_bytes = 8 << 20;
    auto before = sandbox.prepared_stats();
    auto result = sandbox.run(smaller);
    CHECK(sandbox.prepared_stats().used == before.used);
    CHECK(sandbox.prepared_stats().discarded == before.discarded + 1);
    REQUIRE(result.status == Status::ok);
    unsigned long blocks = 0, block_size = 0;
    REQUIRE(std::sscanf(result.stdout_data.c_str(), "%lu %lu", &blocks, &block_size) == 2);
    CHECK(blocks * block_size == 8ul << 20);

    // So is the seccomp filter, which pid 1 installed before it was ready: the same run with
    // a stricter filter does not take the sandbox built for it.
    auto plain = test::probe({"syscall", "getpid"});
    plain.slot = kSlot;
    REQUIRE(sandbox.run(plain).stdout_data == "getpid returned 2 errno 0\n");
    sandbox.prepare_slot(kSlot);
    isolate::SeccompPolicy policy = test::default_policy();
    policy.rules.push_back({"getpid", {isolate::SeccompAction::Kind::kill, 0}, {}});
    auto stricter = test::probe({"syscall", "getpid"});
    stricter.slot = kSlot;
    stricter.seccomp = isolate::SeccompFilter::compile(policy, true);
    before = sandbox.prepared_stats();
    result = sandbox.run(stricter);
    CHECK(sandbox.prepared_stats().discarded == before.discarded + 1);
    CHECK(sandbox.prepared_stats().used == before.used);
    CHECK(result.status == Status::syscall_blocked);
    CHECK(result.message == "blocked syscall: getpid");

    // A memory limit is part of the shape too: the prepared cgroup's would be wrong.
    sandbox.prepare_slot(kSlot);
    auto hungry = test::probe({"hog", "1024"});
    hungry.slot = kSlot;
    hungry.limits.memory_bytes = 64 << 20;
    hungry.limits.tmpfs_bytes = 8 << 20;
    CHECK(sandbox.run(hungry).status == Status::memory_limit);
}

TEST_CASE("a sandbox built ahead that died while it waited is not used") {
    // Either of its processes: the program's process dying ends the sandbox as surely as pid 1.
    for (const std::string comm : {"sandbox-init", "sandbox-ready"}) {
        CAPTURE(comm);
        PreparingSandbox fixture;
        isolate::Sandbox& sandbox = *fixture.sandbox;
        REQUIRE(sandbox.run(shell("true")).status == Status::ok);
        sandbox.prepare_slot(kSlot);
        REQUIRE(both_processes_wait(fixture.host_uid()));
        const pid_t victim = waiting_process(fixture.host_uid(), comm);
        REQUIRE(victim > 0);
        REQUIRE(::kill(victim, SIGKILL) == 0);
        // Dead: pid 1 not yet reaped (the sandbox reaps it when it drops it), the program's
        // process reaped by pid 1.
        auto dead = [&] {
            std::ifstream stat("/proc/" + std::to_string(victim) + "/stat");
            std::string pid, name, state;
            return !(stat >> pid >> name >> state) || state == "Z";
        };
        test::eventually(dead, 2s);
        REQUIRE(dead());

        auto before = sandbox.prepared_stats();
        auto result = sandbox.run(shell("echo fresh"));
        CHECK(result.status == Status::ok);
        CHECK(result.stdout_data == "fresh\n");
        CHECK(sandbox.prepared_stats().discarded == before.discarded + 1);
    }
}

// A job of several runs (a compile, then the program) is prepared for in the shape of its
// first run, so the next such job finds its compile's sandbox ready.
TEST_CASE("the sandbox built ahead has the shape of the last job's first run" *
          doctest::test_suite("vm")) {
    PreparingSandbox fixture;
    isolate::Sandbox& sandbox = *fixture.sandbox;
    auto compile = shell("echo compiled");
    compile.limits.tmpfs_bytes = 32 << 20;
    auto run = shell("echo ran");
    for (int job = 0; job < 3; ++job) {
        auto before = sandbox.prepared_stats();
        CHECK(sandbox.run(compile).stdout_data == "compiled\n");
        CHECK(sandbox.run(run).stdout_data == "ran\n");
        sandbox.prepare_slot(kSlot);
        if (job > 0) CHECK(sandbox.prepared_stats().used == before.used + 1);
        CHECK(sandbox.prepared_stats().discarded == before.discarded);
    }
}

TEST_CASE("a sandbox that cannot be built ahead is reported, and the next run builds its own" *
          doctest::test_suite("vm")) {
    PreparingSandbox fixture;
    isolate::Sandbox& sandbox = *fixture.sandbox;
    char dir_template[] = "/var/tmp/sbx-prepared-bind-XXXXXX";
    REQUIRE(::mkdtemp(dir_template) != nullptr);
    const std::filesystem::path bound = dir_template;
    std::filesystem::permissions(bound, std::filesystem::perms(0755));
    auto listing = shell("ls /probe");
    listing.binds = {{"/usr", "/usr"}, {bound, "/probe"}};
    REQUIRE(sandbox.run(listing).status == Status::ok);

    // The next sandbox of this shape needs the bind's source, which is gone.
    std::filesystem::remove(bound);
    const auto before = sandbox.prepared_stats();
    const auto outcome = sandbox.prepare_slot(kSlot);
    CHECK(outcome.kind == isolate::Sandbox::PrepareOutcome::Kind::failed);
    CHECK(outcome.error.find(bound.string()) != std::string::npos);
    CHECK(sandbox.prepared_stats().failed == before.failed + 1);
    CHECK(test::processes_of_uid(fixture.host_uid()).empty());
    // The run says why itself.
    auto failed = sandbox.run(listing);
    CHECK(failed.status == Status::internal_error);
    CHECK(failed.message.find(bound.string()) != std::string::npos);

    std::filesystem::create_directory(bound);
    std::filesystem::permissions(bound, std::filesystem::perms(0755));
    std::ofstream(bound / "back") << "x";
    CHECK(sandbox.prepare_slot(kSlot).kind == isolate::Sandbox::PrepareOutcome::Kind::built);
    auto result = sandbox.run(listing);
    CHECK(result.status == Status::ok);
    CHECK(result.stdout_data == "back\n");
    CHECK(sandbox.prepared_stats().used == before.used + 1);
    CHECK(sandbox.prepared_stats().failed == before.failed + 1);
    std::filesystem::remove_all(bound);
}

namespace {

// The CPUs this process may use, as the kernel lists them in /proc/<pid>/status.
std::vector<int> allowed_cpus() {
    cpu_set_t set;
    REQUIRE(::sched_getaffinity(0, sizeof set, &set) == 0);
    std::vector<int> cpus;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
        if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
    return cpus;
}

std::string cpu_list_of(const std::string& status_file) {
    std::ifstream in(status_file);
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("Cpus_allowed_list:\t", 0) == 0) return line.substr(19);
    return "";
}

}  // namespace

// SandboxConfig::pin_slots: each slot's pid 1 (and the thread that supervises it) share one
// CPU, and the program gets back every CPU it would have had.
TEST_CASE("with pin_slots, pid 1 stays on its slot's CPU and the program gets every CPU" *
          doctest::test_suite("vm")) {
    const std::vector<int> cpus = allowed_cpus();
    if (cpus.size() < 2) {
        MESSAGE("one CPU: nothing is pinned, nothing to see");
        return;
    }
    const std::string everything = cpu_list_of("/proc/self/status");
    REQUIRE(!everything.empty());

    isolate::SandboxConfig config;
    config.uid_base = 2'200'000;
    config.slots = 2;
    config.pin_slots = true;
    auto pinned_sandbox = preparing_sandbox("pinned", config);
    isolate::Sandbox& sandbox = *pinned_sandbox;

    // What pid 1 and the program (grep, a child of the program's shell) may use.
    const std::string look = "grep -h Cpus_allowed_list /proc/1/status /proc/self/status | cut -f2";
    for (unsigned slot : {0u, 1u}) {
        CAPTURE(slot);
        const std::string own = std::to_string(cpus[slot % cpus.size()]);
        auto spec = test::command({"/bin/sh", "-c", look});
        spec.slot = slot;
        auto first = sandbox.run(spec);  // built on the request's path
        REQUIRE(first.status == Status::ok);
        CHECK(first.stdout_data == own + "\n" + everything + "\n");
        sandbox.prepare_slot(slot);
        auto second = sandbox.run(spec);  // built ahead
        REQUIRE(second.status == Status::ok);
        CHECK(second.stdout_data == own + "\n" + everything + "\n");
        CHECK(sandbox.prepared_stats().used >= 1);
    }

    // The supervising thread, as the daemon's slot threads pin themselves.
    std::string pinned;
    std::thread([&] {
        if (sandbox.pin_current_thread(1)) pinned = cpu_list_of("/proc/thread-self/status");
    }).join();
    CHECK(pinned == std::to_string(cpus[1]));
}
