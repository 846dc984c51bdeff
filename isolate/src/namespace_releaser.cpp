#include "namespace_releaser.h"

#include <sys/ioctl.h>

#include <exception>

#include "isolate/error.h"

namespace isolate {
namespace {

// <linux/pidfd.h> from Linux 6.11; Debian 12's headers predate it.
constexpr unsigned long kPidfdGetMntNamespace = _IO(0xFF, 3);

}  // namespace

NamespaceReleaser::NamespaceReleaser() {
    // So that release(), which must not throw, never allocates.
    queue_.reserve(kMaxPending);
    threads_.reserve(kThreads);
    try {
        for (std::size_t i = 0; i < kThreads; ++i) threads_.emplace_back([this] { serve(); });
    } catch (const std::exception& error) {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        for (std::thread& thread : threads_) thread.join();
        throw SetupError(std::string("start the namespace releaser: ") + error.what());
    }
}

NamespaceReleaser::~NamespaceReleaser() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    for (std::thread& thread : threads_) thread.join();
}

UniqueFd NamespaceReleaser::mount_namespace_of(int pidfd) noexcept {
    return UniqueFd(::ioctl(pidfd, kPidfdGetMntNamespace, 0));
}

void NamespaceReleaser::release(UniqueFd ns) noexcept {
    if (!ns) return;
    {
        std::lock_guard lock(mutex_);
        if (!stopping_ && queue_.size() < kMaxPending)
            queue_.push_back(std::move(ns));
        else
            ++closed_by_caller_;
    }
    if (ns) {
        ns.reset();
        return;
    }
    wake_.notify_one();
}

void NamespaceReleaser::count_not_held() noexcept {
    std::lock_guard lock(mutex_);
    ++not_held_;
}

NamespaceReleaser::Stats NamespaceReleaser::stats() const {
    std::lock_guard lock(mutex_);
    return {released_, closed_by_caller_, not_held_, queue_.size() + closing_};
}

void NamespaceReleaser::serve() {
    std::unique_lock lock(mutex_);
    for (;;) {
        wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        // Stopping drains the queue first.
        if (queue_.empty()) return;
        // Oldest first: each holds its run's files until it goes. At most kMaxPending to move.
        UniqueFd ns = std::move(queue_.front());
        queue_.erase(queue_.begin());
        ++closing_;
        lock.unlock();
        // The last reference: the mounts go, after a grace period, before close returns.
        ns.reset();
        lock.lock();
        --closing_;
        ++released_;
    }
}

}  // namespace isolate
