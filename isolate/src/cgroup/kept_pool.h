#pragma once

// The cgroups that runs hand on to later runs (v1 always, v2 where memory.peak can be reset),
// shared by a backend and its runs. Making a cgroup and removing it costs far more kernel
// work than reading and writing a few of its files: a memcg's mkdir, rmdir and asynchronous
// offlining alone are ~0.3 ms of CPU per run. What a backend must reset for the next run,
// and what it may leave, is its own business (v1.h, v2.h); the pool only keeps the order and
// the memory rule below.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace isolate::cgroup {

// A memcg with at most this much charged is used again. Page cache and kernel memory stay
// charged to the memcg that first touched them, and some of a run's memory (SysV shared
// memory, task structs) is freed only after an RCU grace period. What is left in a memcg that
// reads this little is mostly the kernel's per-CPU cache of charges for it (at most 64 pages
// per CPU), which the next run's first pages use up; a fresh memcg makes such a cache with
// its first page, so its peak has the same slack. The rest counts in the next run's peak and
// against its limit: at most this much, less than what the shared page cache already moves a
// peak by (a run that reads a file an earlier run left cached is not charged for it).
inline constexpr std::uint64_t kKeptMemoryLeftover = 1 << 20;
// A kept cgroup whose memcg still has more charged after this long is removed: what is left
// is page cache, which stays.
inline constexpr std::chrono::milliseconds kKeptSettleTime{1000};

// Set: a backend's kept cgroup, with
//   std::chrono::steady_clock::time_point kept_since;
//   bool little_memory_charged() const noexcept;  // at most kKeptMemoryLeftover charged
// and a destructor that removes it from the hierarchy.
template <typename Set>
class KeptPool {
  public:
    explicit KeptPool(std::size_t capacity) : capacity_(capacity) {}
    KeptPool(const KeptPool&) = delete;
    KeptPool& operator=(const KeptPool&) = delete;

    // box-<n>, unique for the pool's lifetime.
    std::string new_set_name() { return "box-" + std::to_string(serial_++); }

    // The oldest kept set with little memory charged, or null. Oldest first: the longer a
    // set has waited, the likelier what its last run freed late has gone. Removes the sets
    // that still have more than that after kKeptSettleTime.
    std::unique_ptr<Set> take() {
        std::vector<std::unique_ptr<Set>> unsettled;  // removed outside the lock
        std::lock_guard lock(mutex_);
        const auto now = std::chrono::steady_clock::now();
        for (auto it = kept_.begin(); it != kept_.end();) {
            if ((*it)->little_memory_charged()) {
                std::unique_ptr<Set> set = std::move(*it);
                kept_.erase(it);
                return set;
            }
            if (now - (*it)->kept_since < kKeptSettleTime) {
                ++it;
                continue;
            }
            unsettled.push_back(std::move(*it));
            it = kept_.erase(it);
        }
        return nullptr;
    }

    // Keeps `set`, or removes it when the pool is full or closed.
    void put(std::unique_ptr<Set> set) {
        {
            std::lock_guard lock(mutex_);
            if (!closed_ && kept_.size() < capacity_) {
                set->kept_since = std::chrono::steady_clock::now();
                kept_.push_back(std::move(set));
                return;
            }
        }
        set.reset();  // removed outside the lock
    }

    // Removes every kept set and every later one handed in (the backend is going).
    void close() {
        std::deque<std::unique_ptr<Set>> kept;
        {
            std::lock_guard lock(mutex_);
            closed_ = true;
            kept.swap(kept_);
        }
    }

    // Counted by the runs: a new set made, a kept one taken.
    std::atomic<std::uint64_t> made{0};
    std::atomic<std::uint64_t> reused{0};

  private:
    const std::size_t capacity_;
    std::mutex mutex_;
    std::deque<std::unique_ptr<Set>> kept_;  // oldest first
    bool closed_ = false;
    std::atomic<std::uint64_t> serial_{0};
};

// More than a daemon's slots ever leave at once (each holds at most two runs' sets).
inline constexpr std::size_t kKeptCapacity = 16;
// The kernel's PID_MAX_LIMIT on 64-bit: pids.max refuses more, on v1 and v2.
inline constexpr std::uint64_t kPidMaxLimit = 4 * 1024 * 1024;

}  // namespace isolate::cgroup
