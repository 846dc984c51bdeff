#include "scheduler.h"

#include <sys/eventfd.h>

#include <algorithm>
#include <cstdint>

#include "isolate/error.h"

namespace sandboxd {

CancelToken::CancelToken() : event_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (!event_) isolate::throw_errno("eventfd");
}

void CancelToken::cancel() noexcept {
    if (cancelled_.exchange(true)) return;
    std::uint64_t one = 1;
    // Cannot fail short of a full counter, which one write per token never reaches.
    [[maybe_unused]] auto written = ::write(event_.get(), &one, sizeof one);
}

Scheduler::Scheduler(unsigned slots, std::size_t queue_capacity, BetweenJobs between_jobs,
                     SlotStarted slot_started)
    : queue_capacity_(queue_capacity), between_jobs_(std::move(between_jobs)), running_(slots) {
    threads_.reserve(slots);
    for (unsigned slot = 0; slot < slots; ++slot)
        threads_.emplace_back([this, slot, slot_started] {
            if (slot_started) slot_started(slot);
            slot_loop(slot);
        });
}

Scheduler::~Scheduler() {
    std::deque<Job> dropped;
    {
        std::lock_guard lock(mutex_);
        exiting_ = true;
        accepting_ = false;
        dropped.swap(queue_);
        for (auto& token : running_)
            if (token) token->cancel();
    }
    work_ready_.notify_all();
    for (auto& thread : threads_) thread.join();
}

Scheduler::Admission Scheduler::submit(std::shared_ptr<CancelToken> token, Work work,
                                       Dropped dropped) {
    {
        std::lock_guard lock(mutex_);
        if (!accepting_) return Admission::shutting_down;
        if (queue_.size() >= queue_capacity_) {
            ++rejected_busy_;
            return Admission::busy;
        }
        queue_.push_back({std::move(token), std::move(work), std::move(dropped)});
    }
    work_ready_.notify_one();
    return Admission::accepted;
}

void Scheduler::withdraw(const std::shared_ptr<CancelToken>& token) {
    token->cancel();
    std::lock_guard lock(mutex_);
    std::erase_if(queue_, [&](const Job& job) { return job.token == token; });
}

void Scheduler::stop_accepting() {
    std::deque<Job> dropped;
    {
        std::lock_guard lock(mutex_);
        accepting_ = false;
        dropped.swap(queue_);
    }
    for (auto& job : dropped)
        if (job.dropped) job.dropped();
}

void Scheduler::cancel_running() {
    std::lock_guard lock(mutex_);
    for (auto& token : running_)
        if (token) token->cancel();
}

bool Scheduler::wait_idle(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return idle_.wait_for(lock, timeout, [this] {
        return std::none_of(running_.begin(), running_.end(), [](const auto& t) { return t; });
    });
}

Scheduler::Stats Scheduler::stats() const {
    std::lock_guard lock(mutex_);
    Stats stats;
    stats.running = static_cast<std::size_t>(std::count_if(
        running_.begin(), running_.end(), [](const auto& t) { return t != nullptr; }));
    stats.queued = queue_.size();
    stats.completed = completed_;
    stats.rejected_busy = rejected_busy_;
    stats.slots = static_cast<unsigned>(running_.size());
    stats.queue_capacity = queue_capacity_;
    return stats;
}

void Scheduler::slot_loop(unsigned slot) {
    std::unique_lock lock(mutex_);
    for (;;) {
        work_ready_.wait(lock, [this] { return exiting_ || !queue_.empty(); });
        if (exiting_) return;
        Job job = std::move(queue_.front());
        queue_.pop_front();
        if (job.token->cancelled()) continue;
        running_[slot] = job.token;
        lock.unlock();
        job.work(slot, *job.token);
        // Destroy the job (and what its closures hold) outside the lock.
        job = Job{};
        lock.lock();
        running_[slot] = nullptr;
        ++completed_;
        idle_.notify_all();
        // Not while draining for a shutdown: nothing would use what it builds.
        if (between_jobs_ && queue_.empty() && accepting_ && !exiting_) {
            lock.unlock();
            between_jobs_(slot);
            lock.lock();
        }
    }
}

}  // namespace sandboxd
