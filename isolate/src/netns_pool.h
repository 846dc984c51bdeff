#pragma once

// Fresh network namespaces made ahead of time, each given to exactly one run.
//
// Creating a network namespace is the costliest single step of a run (per-namespace
// sysctl tables, registering lo, under the global rtnl lock that the kernel's asynchronous
// teardown of earlier namespaces also holds for long stretches). A background thread
// makes them here, with lo up, so a run only joins one. Nothing is reused: a namespace's
// descriptor is handed out once and closed when its run has started, and the kernel tears
// it down after the run as before.

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "isolate/unique_fd.h"

namespace isolate {

class NetnsPool {
  public:
    // Keeps up to `capacity` namespaces ready. Throws SetupError if the calling thread's own
    // network namespace cannot be opened (the one every thread returns to).
    explicit NetnsPool(unsigned capacity);
    ~NetnsPool();
    NetnsPool(const NetnsPool&) = delete;
    NetnsPool& operator=(const NetnsPool&) = delete;

    // A fresh namespace, or an invalid descriptor if none is ready (the caller makes its
    // own then). Never blocks on creation.
    UniqueFd take();
    // The namespace threads return to after entering a pooled one.
    int home() const { return home_.get(); }

  private:
    void fill();
    UniqueFd create();

    const unsigned capacity_;
    UniqueFd home_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<UniqueFd> ready_;
    bool stopping_ = false;
    std::thread filler_;
};

// Puts the calling thread into a network namespace until destroyed, so a clone3 without
// CLONE_NEWNET places the child there. Failing to go back aborts the process: the thread
// would otherwise start its next run inside this run's namespace.
class NetnsEntered {
  public:
    NetnsEntered(int target, int home);
    ~NetnsEntered();
    NetnsEntered(const NetnsEntered&) = delete;
    NetnsEntered& operator=(const NetnsEntered&) = delete;

  private:
    int home_;
};

}  // namespace isolate
