#pragma once

// Starts a slot's pid 1 inside the supervisor's own memory.
//
// pid 1 used to be a copy-on-write clone of the multithreaded supervisor: copying its page
// tables, the copy-on-write faults and TLB shootdowns that followed, and tearing the copy
// down again were about a third of a run's CPU. Here it shares the supervisor's memory
// (CLONE_VM), which needs what a copy had for free:
// - Its own stack: one per slot, reused run after run, since a slot's pid 1 is always
//   reaped before the slot's next run starts.
// - A thread-local area no running thread uses (errno lives there): each slot has a spawner
//   thread that makes the clone3 call with CLONE_VFORK, so it sleeps in the kernel for as
//   long as pid 1 lives, and pid 1 runs with its thread pointer.
// - Protection of the supervisor from what happens to pid 1. A task sharing memory with
//   others takes them along when the OOM killer picks it or when it dumps core. The kernel
//   never picks a task in vfork (oom_badness skips in_vfork()), which pid 1 is, and so is the
//   program's process until its execve; and the supervisor's memory is made non-dumpable,
//   so a crash ends only the crashing task.
// pid 1's code already obeys the rules for a clone of a multithreaded process (no
// allocation, no locks, no exceptions, raw syscalls for credentials), which are also the
// rules for running in its memory. pid 1 is non-dumpable and runs under the sandbox's uid,
// so nothing inside can read or trace this memory.

#include <linux/sched.h>
#include <sys/types.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>

#include "isolate/unique_fd.h"

namespace isolate {

// Moves the calling thread onto `cpu` alone. False (errno set) if the kernel refused.
bool pin_calling_thread(int cpu) noexcept;

class InitSpawner {
  public:
    // Throws SetupError if the stacks or the thread cannot be made. With `cpu` >= 0 the
    // spawner thread, and so every pid 1 it starts, runs on that CPU only (if the kernel
    // lets it; else anywhere, as without).
    explicit InitSpawner(int cpu = -1);
    ~InitSpawner();
    InitSpawner(const InitSpawner&) = delete;
    InitSpawner& operator=(const InitSpawner&) = delete;

    // clone3(args + CLONE_VM | CLONE_VFORK, on this slot's stack) on the spawner thread; the
    // child calls fn(arg). Returns the child's pid once the child has written to
    // `started_fd` (a fresh eventfd made by the caller) or has exited; args.pidfd is filled
    // by then. Throws SetupError if clone3 fails. With `netns` >= 0 the spawner thread makes
    // the call from inside that network namespace (returning to `home` afterwards), so a
    // clone3 without CLONE_NEWNET puts the child there. With a `mount_ns` it enters that
    // mount namespace first (a mount template, mount_template.h), so the child's CLONE_NEWNS
    // copies it and the child starts at its root; it returns to its own when clone3 does.
    pid_t spawn(clone_args args, int (*fn)(void*), void* arg, int started_fd, int netns = -1,
                int home = -1, std::shared_ptr<const UniqueFd> mount_ns = nullptr);

    // The stack the program's process runs on between its clone and its execve.
    void* program_stack() const { return program_stack_; }
    std::size_t program_stack_size() const { return kStackSize; }

    // False where this cannot work (no clone3 trampoline for the architecture).
    static bool supported();

  private:
    void serve();
    void release() noexcept;

    static constexpr std::size_t kGuard = 4096;
    static constexpr std::size_t kStackSize = 512 * 1024;

    int cpu_ = -1;
    void* region_ = nullptr;
    std::size_t region_size_ = 0;
    void* init_stack_ = nullptr;
    void* program_stack_ = nullptr;

    std::mutex mutex_;
    std::condition_variable changed_;
    bool stopping_ = false;
    bool pending_ = false;  // a request waits for the spawner thread
    bool busy_ = false;     // the spawner thread is in clone3 (pid 1 alive)
    int error_ = 0;         // clone3's (or setns's) errno; 0 while pid 1 runs
    UniqueFd started_;      // the caller's eventfd, until the child or clone3's return wrote to it
    clone_args args_{};
    pid_t pid_ = 0;
    int (*fn_)(void*) = nullptr;
    void* arg_ = nullptr;
    int netns_ = -1, home_ = -1;
    std::shared_ptr<const UniqueFd> mount_ns_;
    std::thread thread_;
};

// clone3 whose child calls fn(arg) on the stack in `args` and exits with its result. Returns
// the child's pid in the parent, or -1 with errno. x86_64 only (see InitSpawner::supported).
long clone3_calling(::clone_args* args, int (*fn)(void*), void* arg) noexcept;

}  // namespace isolate
