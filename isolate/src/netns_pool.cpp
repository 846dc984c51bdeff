#include "netns_pool.h"

#include <fcntl.h>
#include <sched.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

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

}  // namespace

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

UniqueFd NetnsPool::take() {
    UniqueFd fd;
    {
        std::lock_guard lock(mutex_);
        if (ready_.empty()) return fd;
        fd = std::move(ready_.front());
        ready_.pop_front();
    }
    wake_.notify_all();
    return fd;
}

// Runs on the filler thread only: unshare() moves this thread, and only this thread, into
// the new namespace, and setns() brings it home before the next one.
UniqueFd NetnsPool::create() {
    if (::unshare(CLONE_NEWNET) != 0) throw_errno("unshare(CLONE_NEWNET)");
    UniqueFd netns;
    int error = 0;
    try {
        netns = open_own_netns();
        error = set_loopback_up();
    } catch (...) {
        return_home_or_abort(home_.get());
        throw;
    }
    return_home_or_abort(home_.get());
    if (error != 0) throw_errno("bring lo up in a new network namespace", error);
    return netns;
}

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
        UniqueFd fd;
        try {
            fd = create();
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
        if (fd) {
            ready_.push_back(std::move(fd));
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
