#pragma once

// Network namespaces made ahead of time, and kept by a slot for as long as its runs leave no
// trace in them.
//
// Creating a network namespace is the costliest single step of a run (per-namespace
// sysctl tables, registering lo, under the global rtnl lock), and tearing one down costs
// about as much again in the kernel's workqueues. A background thread makes them here, with
// lo up, so a run only joins one.
//
// Most programs never touch the network, and a namespace that nobody touched is exactly as
// it was when new. So each namespace records, when it is made, what it shows its users: lo's
// counters (any packet, of any protocol), the IP, IPv6, ICMP, TCP and UDP counters (also a
// send that failed before reaching lo), its unix sockets, and its IPv6 flow labels. A slot
// hands its namespace to its next sandbox only once every process of the last run is dead
// and all of that reads the same as when the namespace was new; any difference, and the
// namespace is dropped for a fresh one (docs/sandbox.md).
//
// Reading the IP, TCP and UDP counters (snmp, snmp6, netstat: ~300 counters summed over every
// CPU) is most of that look's cost, and none of them, nor a flow label, can move without a
// socket other than AF_UNIX in the namespace (an inet socket, or one of a family that makes
// inet sockets inside the kernel, like AF_SMC). The seccomp filter reports every socket but
// unix ones to the supervisor (SeccompFilter::reports_sockets), so after runs that made none
// only lo's counters and the unix sockets are read.
//
// Why that is enough: once its processes are gone, a socket stays alive only if the kernel
// holds it for traffic (TIME_WAIT, an orphan still sending FIN: lo's counters moved) or if it
// is in flight in a unix socket's queue (that unix socket is listed). The TCP and UDP
// listings are not read: /proc/net/tcp walks the whole host's connection table, ~1 ms each.
// Nor is sockstat's count of live sockets: netlink sockets, for one, leave it only an RCU
// grace period after they close. The IPv6 flow labels are the one object that outlives its
// socket with no traffic at all (a linger of up to a minute).

#include <array>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "isolate/unique_fd.h"

namespace isolate {

// One network namespace, and what it showed its users when it was new.
class Netns {
  public:
    // Makes a namespace with lo up. Call on a thread that may move: it enters the new
    // namespace and returns to `home` (or aborts the process, see NetnsEntered).
    static std::unique_ptr<Netns> create(int home);

    int fd() const { return netns_.get(); }
    // True while everything the namespace shows its users reads as it did when it was new;
    // false if anything differs or cannot be read. Call only when no process is in it.
    // Without `sockets_made` (no run since the last look made a socket other than AF_UNIX,
    // which the seccomp filter reports) only lo's counters and the unix sockets are read:
    // every IP, ICMP, TCP and UDP counter and every flow label needs such a socket to move.
    bool unchanged(bool sockets_made) const;

  private:
    struct View {
        const char* path;   // below /proc/thread-self/net
        bool ipv6;          // absent on a kernel without IPv6; every other file must exist
        bool needs_socket;  // only a socket other than AF_UNIX can change it
        UniqueFd fd;
        std::string when_new;
    };
    explicit Netns(UniqueFd netns) : netns_(std::move(netns)) {}

    UniqueFd netns_;
    // Opened inside the namespace, so they keep showing it; each pins only the namespace.
    std::array<View, 6> views_{{{"dev", false, false, {}, {}},
                                {"snmp", false, true, {}, {}},
                                {"snmp6", true, true, {}, {}},
                                {"netstat", false, true, {}, {}},
                                {"unix", false, false, {}, {}},
                                {"ip6_flowlabel", true, true, {}, {}}}};
};

class NetnsPool {
  public:
    // Keeps up to `capacity` namespaces ready. Throws SetupError if the calling thread's own
    // network namespace cannot be opened (the one every thread returns to).
    explicit NetnsPool(unsigned capacity);
    ~NetnsPool();
    NetnsPool(const NetnsPool&) = delete;
    NetnsPool& operator=(const NetnsPool&) = delete;

    // A new namespace, or null if none is ready (the caller makes its own then). Never
    // blocks on creation.
    std::unique_ptr<Netns> take();
    // How many are made and waiting; the filler thread is idle once this reaches capacity.
    std::size_t ready() const;
    // The namespace threads return to after entering a pooled one.
    int home() const { return home_.get(); }

  private:
    void fill();

    const unsigned capacity_;
    UniqueFd home_;
    mutable std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<std::unique_ptr<Netns>> ready_;
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
