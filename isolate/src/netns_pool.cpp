#include "netns_pool.h"

#include <fcntl.h>
#include <sched.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "cgroup/cgroup_fs.h"
#include "isolate/error.h"
#include "network.h"

namespace isolate {

namespace {

UniqueFd open_own_netns() {
    UniqueFd fd(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno("open /proc/thread-self/ns/net");
    return fd;
}

// A thread left in another namespace would start later runs, or make later namespaces,
// from there: there is no safe way on.
void return_home_or_abort(int home) noexcept {
    if (::setns(home, CLONE_NEWNET) != 0) {
        std::fprintf(stderr, "sandboxd: cannot return to the daemon's network namespace: %s\n",
                     std::strerror(errno));
        std::abort();
    }
}

// Whether a /proc/net file reads exactly `expected` now. These are seq_files: a read stops
// before filling the buffer only at the end, or where the next line would not fit in the
// kernel's page-sized buffer. With at most 2 KiB asked for and every line of these files far
// shorter than the 2 KiB left, one read of one byte more than `expected` settles it (a file
// that changed returns other bytes, or that byte more), saving the second read, and a
// second walk of the namespace's unix socket table, that reading to the end takes.
bool reads_as(int fd, const std::string& expected) {
    constexpr std::size_t kOneRead = 2048;
    if (expected.size() >= kOneRead) {
        std::string now;
        return cgroup::fs::try_pread_all(fd, now) == 0 && now == expected;
    }
    char buf[kOneRead];
    const ssize_t n = cgroup::fs::pread_from_start(fd, buf, expected.size() + 1);
    return n >= 0 && static_cast<std::size_t>(n) == expected.size() &&
           expected.compare(0, expected.size(), buf, expected.size()) == 0;
}

}  // namespace

std::unique_ptr<Netns> Netns::create(int home) {
    if (::unshare(CLONE_NEWNET) != 0) throw_errno("unshare(CLONE_NEWNET)");
    std::unique_ptr<Netns> made;
    int error = 0;
    try {
        made.reset(new Netns(open_own_netns()));
        error = set_loopback_up();
        for (View& view : made->views_) {
            std::string path = std::string("/proc/thread-self/net/") + view.path;
            view.fd.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
            // A kernel without IPv6 has neither its files nor anything they would show.
            if (!view.fd && !(view.ipv6 && errno == ENOENT))
                throw_errno("open " + path + " in a new network namespace");
        }
    } catch (...) {
        return_home_or_abort(home);
        throw;
    }
    return_home_or_abort(home);
    if (error != 0) throw_errno("bring lo up in a new network namespace", error);
    for (View& view : made->views_) {
        if (!view.fd) continue;
        if (const int err = cgroup::fs::try_pread_all(view.fd.get(), view.when_new); err != 0)
            throw_errno(std::string("read /proc/net/") + view.path + " of a new network namespace",
                        err);
    }
    return made;
}

bool Netns::unchanged(bool sockets_made) const {
    for (const View& view : views_) {
        if (!view.fd || (view.needs_socket && !sockets_made)) continue;
        if (!reads_as(view.fd.get(), view.when_new)) return false;
    }
    return true;
}

NetnsPool::NetnsPool(unsigned capacity) : capacity_(capacity), home_(open_own_netns()) {
    filler_ = std::thread([this] { fill(); });
}

NetnsPool::~NetnsPool() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    filler_.join();
}

std::unique_ptr<Netns> NetnsPool::take() {
    std::unique_ptr<Netns> netns;
    {
        std::lock_guard lock(mutex_);
        if (ready_.empty()) return netns;
        netns = std::move(ready_.front());
        ready_.pop_front();
    }
    wake_.notify_all();
    return netns;
}

std::size_t NetnsPool::ready() const {
    std::lock_guard lock(mutex_);
    return ready_.size();
}

// Runs on the filler thread only: Netns::create moves this thread, and only this thread,
// into the new namespace and back.
void NetnsPool::fill() {
    using namespace std::chrono_literals;
    std::string last_error;
    std::unique_lock lock(mutex_);
    while (!stopping_) {
        if (ready_.size() >= capacity_) {
            wake_.wait(lock);
            continue;
        }
        lock.unlock();
        std::unique_ptr<Netns> netns;
        try {
            netns = Netns::create(home_.get());
            last_error.clear();
        } catch (const std::exception& error) {
            // Runs then make their own namespace, as without a pool; say so once.
            if (last_error != error.what()) {
                last_error = error.what();
                std::fprintf(stderr, "sandboxd: cannot prepare a network namespace: %s\n",
                             error.what());
            }
        }
        lock.lock();
        if (netns) {
            ready_.push_back(std::move(netns));
        } else {
            wake_.wait_for(lock, 1s, [this] { return stopping_; });
        }
    }
}

NetnsEntered::NetnsEntered(int target, int home) : home_(home) {
    if (::setns(target, CLONE_NEWNET) != 0) throw_errno("setns into a prepared network namespace");
}

NetnsEntered::~NetnsEntered() {
    return_home_or_abort(home_);
}

}  // namespace isolate
