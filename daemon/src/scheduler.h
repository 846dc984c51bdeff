#pragma once

// Runs jobs in a fixed number of slots behind a bounded FIFO queue. Each slot is one
// long-lived thread: the sandbox's pid 1 dies with the thread that cloned it (PDEATHSIG), so
// a slot thread must outlive every sandbox it starts. The slot number is also the sandbox's
// slot, which picks its host uid, so two concurrent runs never share one.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "isolate/unique_fd.h"

namespace sandboxd {

// Lets a job's owner stop it, queued or running. The descriptor becomes readable on cancel,
// which is what isolate's RunSpec::cancel_fd watches.
class CancelToken {
  public:
    CancelToken();
    void cancel() noexcept;
    bool cancelled() const noexcept { return cancelled_.load(); }
    int fd() const noexcept { return event_.get(); }

  private:
    std::atomic<bool> cancelled_{false};
    isolate::UniqueFd event_;
};

class Scheduler {
  public:
    // Runs on a slot thread. Must not throw (the executor turns failures into responses).
    using Work = std::function<void(unsigned slot, const CancelToken& token)>;
    // Called instead of `work` for a queued job dropped by shutdown, on the stopping thread.
    using Dropped = std::function<void()>;

    // Runs on a slot thread after each job whenever nothing waits in the queue: the time
    // between requests, for work that would otherwise slow the next one down.
    using BetweenJobs = std::function<void(unsigned slot)>;
    // Runs first thing on each slot thread, before any job.
    using SlotStarted = std::function<void(unsigned slot)>;

    enum class Admission { accepted, busy, shutting_down };

    struct Stats {
        std::size_t running = 0;
        std::size_t queued = 0;
        std::uint64_t completed = 0;
        std::uint64_t rejected_busy = 0;
        unsigned slots = 0;
        std::size_t queue_capacity = 0;
    };

    Scheduler(unsigned slots, std::size_t queue_capacity, BetweenJobs between_jobs = {},
              SlotStarted slot_started = {});
    ~Scheduler();  // cancels everything and joins the slot threads
    Scheduler(const Scheduler&) = delete;
    Scheduler& operator=(const Scheduler&) = delete;

    Admission submit(std::shared_ptr<CancelToken> token, Work work, Dropped dropped);
    // Removes the token's jobs that are still queued (their owner went away) and cancels those
    // that run. Jobs may share a token (a connection's do).
    void withdraw(const std::shared_ptr<CancelToken>& token);
    // Stops admitting work and calls `dropped` for every queued job. Running jobs go on.
    void stop_accepting();
    // Cancels every running job; their sandboxes are killed and their slots come back.
    void cancel_running();
    // Waits until no job runs, at most `timeout`; true if idle.
    bool wait_idle(std::chrono::milliseconds timeout);
    Stats stats() const;

  private:
    struct Job {
        std::shared_ptr<CancelToken> token;
        Work work;
        Dropped dropped;
    };

    void slot_loop(unsigned slot);

    const std::size_t queue_capacity_;
    const BetweenJobs between_jobs_;
    mutable std::mutex mutex_;
    std::condition_variable work_ready_;
    std::condition_variable idle_;
    std::deque<Job> queue_;
    std::vector<std::shared_ptr<CancelToken>> running_;  // by slot; null when the slot is free
    bool accepting_ = true;
    bool exiting_ = false;
    std::uint64_t completed_ = 0;
    std::uint64_t rejected_busy_ = 0;
    std::vector<std::thread> threads_;
};

}  // namespace sandboxd
