// The threads that let go of finished runs' mount namespaces (namespace_releaser.h).

#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <string>
#include <thread>
#include <vector>

#include "isolate/support.h"
#include "namespace_releaser.h"

using isolate::NamespaceReleaser;
using isolate::UniqueFd;

TEST_CASE("the namespace releaser closes all it is given, at the latest when it goes") {
    ::signal(SIGPIPE, SIG_IGN);
    std::vector<UniqueFd> write_ends;
    {
        NamespaceReleaser releaser;
        for (int i = 0; i < 100; ++i) {
            int fds[2];
            REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
            write_ends.emplace_back(fds[1]);
            releaser.release(UniqueFd(fds[0]));
        }
        // Queued, and being closed.
        const NamespaceReleaser::Stats stats = releaser.stats();
        CHECK(stats.pending <= NamespaceReleaser::kMaxPending + NamespaceReleaser::kThreads);
        CHECK(stats.released + stats.closed_by_caller + stats.pending == 100);
    }
    // A pipe whose read end is closed refuses writes.
    for (const UniqueFd& end : write_ends) {
        CHECK(::write(end.get(), "x", 1) == -1);
        CHECK(errno == EPIPE);
    }
}

namespace {

// Read ends of pipes to hand to a releaser, and the write ends that tell whether it closed
// them (a pipe whose read end is closed refuses writes).
struct Pipes {
    std::vector<UniqueFd> read_ends, write_ends;
    explicit Pipes(std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) {
            int fds[2];
            REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
            read_ends.emplace_back(fds[0]);
            write_ends.emplace_back(fds[1]);
        }
    }
    std::size_t still_open() const {
        std::size_t open = 0;
        for (const UniqueFd& end : write_ends)
            if (::write(end.get(), "x", 1) == 1) ++open;
        return open;
    }
};

bool drained(const NamespaceReleaser& releaser) {
    return test::eventually([&] { return releaser.stats().pending == 0; });
}

}  // namespace

TEST_CASE("the namespace releaser closes fewer than a batch once they have waited") {
    ::signal(SIGPIPE, SIG_IGN);
    NamespaceReleaser releaser;
    Pipes pipes(1);
    releaser.release(std::move(pipes.read_ends[0]));
    REQUIRE(drained(releaser));
    CHECK(pipes.still_open() == 0);
    CHECK(releaser.stats().released == 1);
}

TEST_CASE("the namespace releaser closes nothing while a pid 1 is starting") {
    ::signal(SIGPIPE, SIG_IGN);
    NamespaceReleaser releaser;
    Pipes pipes(NamespaceReleaser::kThreads * 2);
    {
        NamespaceReleaser::SpawnInFlight spawning(&releaser);
        for (UniqueFd& end : pipes.read_ends) releaser.release(std::move(end));
        // Full batches, long due: held back all the same.
        std::this_thread::sleep_for(NamespaceReleaser::kBatchDelay * 5);
        CHECK(pipes.still_open() == NamespaceReleaser::kThreads * 2);
        CHECK(releaser.stats().pending == NamespaceReleaser::kThreads * 2);
    }
    REQUIRE(drained(releaser));
    CHECK(pipes.still_open() == 0);
}

TEST_CASE("a process's mount namespace is taken through its pidfd" * doctest::test_suite("vm")) {
    int ready[2];
    REQUIRE(::pipe2(ready, O_CLOEXEC) == 0);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        char ok = ::unshare(CLONE_NEWNS) == 0 ? '1' : '0';
        (void)::write(ready[1], &ok, 1);
        ::pause();
        ::_exit(0);
    }
    ::close(ready[1]);
    char ok = 0;
    REQUIRE(::read(ready[0], &ok, 1) == 1);
    ::close(ready[0]);
    CHECK(ok == '1');
    UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, child, 0)));
    REQUIRE(pidfd);
    UniqueFd ns = NamespaceReleaser::mount_namespace_of(pidfd.get());
    if (ns) {
        struct stat taken {
        }, child_ns{}, own{};
        REQUIRE(::fstat(ns.get(), &taken) == 0);
        REQUIRE(::stat(("/proc/" + std::to_string(child) + "/ns/mnt").c_str(), &child_ns) == 0);
        REQUIRE(::stat("/proc/self/ns/mnt", &own) == 0);
        CHECK(taken.st_ino == child_ns.st_ino);
        CHECK(taken.st_ino != own.st_ino);
    } else {
        // Where the kernel has the ioctl, an empty answer means the releaser is never used.
        CHECK_FALSE(test::kernel_at_least(6, 11));
        MESSAGE("PIDFD_GET_MNT_NAMESPACE is not here (Linux < 6.11): pid 1 frees its own");
    }
    ::kill(child, SIGKILL);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    // Its process is gone; the namespace stays for as long as the descriptor holds it.
    if (ns) CHECK(::ioctl(ns.get(), NS_GET_NSTYPE) == CLONE_NEWNS);
}
