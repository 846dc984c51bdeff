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
        resume_.notify_all();
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
    resume_.notify_all();
    for (std::thread& thread : threads_) thread.join();
}

UniqueFd NamespaceReleaser::mount_namespace_of(int pidfd) noexcept {
    return UniqueFd(::ioctl(pidfd, kPidfdGetMntNamespace, 0));
}

void NamespaceReleaser::release(UniqueFd ns) noexcept {
    if (!ns) return;
    const Clock::time_point now = Clock::now();
    std::size_t queued = 0;
    {
        std::lock_guard lock(mutex_);
        if (!stopping_ && queue_.size() < kMaxPending) {
            queue_.push_back({std::move(ns), now});
            queued = queue_.size();
        } else {
            ++closed_by_caller_;
        }
    }
    if (ns) {
        ns.reset();
        return;
    }
    // The first starts a thread's wait for kBatchDelay; a full batch starts them all (more
    // than that wait for threads that are closing, which look again when done).
    if (queued == kThreads)
        wake_.notify_all();
    else if (queued == 1)
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

NamespaceReleaser::SpawnInFlight::SpawnInFlight(NamespaceReleaser* releaser) noexcept
    : releaser_(releaser) {
    if (!releaser_) return;
    std::lock_guard lock(releaser_->mutex_);
    ++releaser_->spawning_;
}

NamespaceReleaser::SpawnInFlight::~SpawnInFlight() {
    if (!releaser_) return;
    bool wake = false;
    {
        std::lock_guard lock(releaser_->mutex_);
        // Only a thread held back needs waking; the others wait for their batch.
        wake = --releaser_->spawning_ == 0 && releaser_->held_back_;
        if (wake) releaser_->held_back_ = false;
    }
    if (wake) releaser_->resume_.notify_all();
}

bool NamespaceReleaser::batch_due(Clock::time_point now) const {
    return !queue_.empty() &&
           (stopping_ || queue_.size() >= kThreads || now >= queue_.front().since + kBatchDelay);
}

void NamespaceReleaser::serve() {
    std::unique_lock lock(mutex_);
    for (;;) {
        if (batch_left_ == 0) {
            while (!batch_due(Clock::now())) {
                // Stopping drains the queue first.
                if (stopping_ && queue_.empty()) return;
                if (queue_.empty())
                    wake_.wait(lock);
                else
                    wake_.wait_until(lock, queue_.front().since + kBatchDelay);
                if (batch_left_ > 0) break;  // another thread started one
            }
            if (batch_left_ == 0) {
                batch_left_ = queue_.size();
                // As many helpers as the batch has namespaces, not every thread: each wake-up
                // of a thread with nothing to close costs a context switch or two.
                for (std::size_t i = 1; i < batch_left_; ++i) wake_.notify_one();
            }
        }
        // A pid 1 starting may hold a copy of what is queued (SpawnInFlight).
        if (spawning_ > 0 && !stopping_) {
            held_back_ = true;
            resume_.wait(lock);
            continue;
        }
        // Oldest first: each holds its run's tmpfs until it goes. At most kMaxPending to move.
        UniqueFd ns = std::move(queue_.front().ns);
        queue_.erase(queue_.begin());
        --batch_left_;
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
