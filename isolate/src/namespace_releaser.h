#pragma once

// Lets go of finished runs' mount namespaces on threads of its own.
//
// The kernel frees a mount namespace when its last reference goes, and before it frees the
// mounts it waits for an RCU grace period (namespace_unlock). That reference used to be pid
// 1's, so its exit waited, and the slot that reaps it before building its next sandbox
// waited with it: 150 µs per run on average under load, and over 1 ms whenever the kernel
// thread that drives the grace period was queued behind a program on the other CPU, while
// the slot's own CPU sat idle.
//
// So each sandbox also holds its mount namespace by a descriptor, taken from pid 1's pidfd
// right after clone3, and once pid 1 is reaped the descriptor comes here. pid 1's exit then
// frees no mounts and the slot goes straight on. Nothing can use the namespace meanwhile:
// every process of the run is dead by then (they die with pid 1's pid namespace), and this
// process, which never enters it, holds the descriptor; so, briefly, does any pid 1 cloned
// meanwhile with a copy of our descriptor table, until it closes what it inherited before it
// runs anything else. Were that copy the last, that pid 1 would wait for the grace period in
// its setup; so nothing is closed here while a pid 1 is starting (SpawnInFlight), and pid 1
// says it has started only once it has closed what it inherited.
//
// The grace period is an expedited one, driven by a kernel thread that interrupts every CPU:
// about 20 µs of CPU each, one per namespace or more, when they come one at a time. Waits
// that start while one is running all share the next. So the descriptors are closed in
// batches: once kThreads are waiting, or the oldest has waited kBatchDelay, one thread per
// queued namespace closes one at the same moment, and a batch of eight costs about two grace
// periods, not eight.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "isolate/unique_fd.h"

namespace isolate {

class NamespaceReleaser {
  public:
    // Starts its threads; they may run on any CPU the calling thread may. Throws SetupError.
    NamespaceReleaser();
    // Closes whatever is still queued, then joins its threads.
    ~NamespaceReleaser();
    NamespaceReleaser(const NamespaceReleaser&) = delete;
    NamespaceReleaser& operator=(const NamespaceReleaser&) = delete;

    // pid 1's mount namespace, by its pidfd (PIDFD_GET_MNT_NAMESPACE, Linux 6.11). Empty if
    // the kernel cannot give it (older kernels, a pid 1 already gone, a caller that may not
    // ptrace it): pid 1's exit frees it then, as it always did.
    static UniqueFd mount_namespace_of(int pidfd) noexcept;

    // Closes `ns` on one of this object's threads. With kMaxPending already waiting (the
    // kernel is that slow to free them), closes it here: the caller waits, and the backlog,
    // with the mounts and files it keeps, stays bounded.
    void release(UniqueFd ns) noexcept;

    // Counts a pid 1 whose namespace the kernel would not give (mount_namespace_of), which
    // its exit frees then.
    void count_not_held() noexcept;

    // Held from before a pid 1 is cloned with a copy of our descriptor table until it has
    // closed what it inherited: no namespace is closed here meanwhile.
    class SpawnInFlight {
      public:
        explicit SpawnInFlight(NamespaceReleaser* releaser) noexcept;
        ~SpawnInFlight();
        SpawnInFlight(const SpawnInFlight&) = delete;
        SpawnInFlight& operator=(const SpawnInFlight&) = delete;

      private:
        NamespaceReleaser* releaser_;
    };

    struct Stats {
        std::uint64_t released = 0;          // closed on this object's threads
        std::uint64_t closed_by_caller = 0;  // closed in release(), the backlog being full
        std::uint64_t not_held = 0;          // count_not_held()
        std::size_t pending = 0;             // queued or being closed
    };
    Stats stats() const;

    static constexpr std::size_t kThreads = 8;
    static constexpr std::size_t kMaxPending = 64;
    // Long enough for a busy daemon to fill a batch; the run's files are gone already, only
    // its tmpfs contents wait this long.
    static constexpr std::chrono::milliseconds kBatchDelay{10};

  private:
    using Clock = std::chrono::steady_clock;
    struct Pending {
        UniqueFd ns;
        Clock::time_point since;
    };

    void serve();
    bool batch_due(Clock::time_point now) const;

    mutable std::mutex mutex_;
    // Work queued, a batch due, or stopping.
    std::condition_variable wake_;
    // spawning_ reached 0 while a thread was held back, or stopping.
    std::condition_variable resume_;
    std::vector<Pending> queue_;  // oldest first; never beyond its reserved kMaxPending
    std::size_t closing_ = 0;     // taken off the queue, not yet closed
    std::size_t batch_left_ = 0;  // of the batch being closed, still queued
    std::size_t spawning_ = 0;    // SpawnInFlight objects alive
    bool held_back_ = false;      // a thread waits for spawning_ to reach 0
    std::uint64_t released_ = 0, closed_by_caller_ = 0, not_held_ = 0;
    bool stopping_ = false;
    std::vector<std::thread> threads_;
};

}  // namespace isolate
