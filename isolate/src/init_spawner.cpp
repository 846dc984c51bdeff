#include "init_spawner.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <optional>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

#include "isolate/error.h"
#include "netns_pool.h"

#if defined(__x86_64__)
// The child of clone3 starts with the parent's registers on a new, empty stack, so it
// cannot return through C++ frames: like glibc's own clone3 wrapper (which it does not
// export), call fn(arg) and exit. rdx (fn) and r8 (arg) survive the syscall.
asm(R"(
    .text
    .globl isolate_clone3_calling_raw
    .type isolate_clone3_calling_raw, @function
isolate_clone3_calling_raw:
    .cfi_startproc
    mov %rcx, %r8
    mov $435, %eax
    .cfi_endproc
    syscall
    test %rax, %rax
    jz 1f
    ret
1:
    .cfi_startproc
    .cfi_undefined rip
    xor %ebp, %ebp
    and $-16, %rsp
    mov %r8, %rdi
    call *%rdx
    mov %eax, %edi
    mov $60, %eax
    syscall
    hlt
    .cfi_endproc
    .size isolate_clone3_calling_raw, .-isolate_clone3_calling_raw
)");
extern "C" long isolate_clone3_calling_raw(clone_args* args, std::size_t size, int (*fn)(void*),
                                           void* arg);
#endif

namespace isolate {

long clone3_calling(::clone_args* args, int (*fn)(void*), void* arg) noexcept {
#if defined(__x86_64__)
    static_assert(SYS_clone3 == 435 && SYS_exit == 60);
    long result = isolate_clone3_calling_raw(args, sizeof *args, fn, arg);
    if (result < 0) {
        errno = static_cast<int>(-result);
        return -1;
    }
    return result;
#else
    (void)args, (void)fn, (void)arg;
    errno = ENOSYS;
    return -1;
#endif
}

bool InitSpawner::supported() {
#if defined(__x86_64__)
    return true;
#else
    return false;
#endif
}

bool pin_calling_thread(int cpu) noexcept {
    cpu_set_t only;
    CPU_ZERO(&only);
    CPU_SET(static_cast<unsigned>(cpu), &only);
    return ::sched_setaffinity(0, sizeof only, &only) == 0;
}

InitSpawner::InitSpawner(int cpu) : cpu_(cpu) {
    if (!supported()) throw SetupError("pid 1 cannot share the supervisor's memory here");
    // A task that dumps core takes every task sharing its memory with it; a non-dumpable
    // memory makes a crash end the crashing task alone. pid 1 makes it non-dumpable anyway.
    if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) throw_errno("prctl(PR_SET_DUMPABLE, 0)");
    // [guard][pid 1's stack][guard][the program's stack]; stacks grow down onto a guard.
    region_size_ = 2 * (kGuard + kStackSize);
    region_ = ::mmap(nullptr, region_size_, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (region_ == MAP_FAILED) {
        region_ = nullptr;
        throw_errno("mmap pid 1's stacks");
    }
    auto* base = static_cast<char*>(region_);
    if (::mprotect(base, kGuard, PROT_NONE) != 0 ||
        ::mprotect(base + kGuard + kStackSize, kGuard, PROT_NONE) != 0) {
        release();
        throw_errno("mprotect pid 1's stack guards");
    }
    init_stack_ = base + kGuard;
    program_stack_ = base + 2 * kGuard + kStackSize;
    // No handler may ever run on the spawner thread, since pid 1 uses its thread-local area:
    // it is born with every signal blocked (a thread inherits its creator's mask).
    sigset_t all, previous;
    sigfillset(&all);
    if (const int err = ::pthread_sigmask(SIG_SETMASK, &all, &previous); err != 0) {
        release();
        throw_errno("block signals for the spawner thread", err);
    }
    try {
        thread_ = std::thread([this] { serve(); });
    } catch (...) {
        ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
        release();
        throw;
    }
    ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
}

InitSpawner::~InitSpawner() {
    release();
}

void InitSpawner::release() noexcept {
    if (thread_.joinable()) {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        changed_.notify_all();
        thread_.join();
    }
    if (region_) ::munmap(region_, region_size_);
    region_ = nullptr;
}

void InitSpawner::serve() {
    // Only speed depends on it (SandboxConfig::pin_slots): the program's CPUs are set from
    // the plan, checked, whatever pid 1 has.
    if (cpu_ >= 0) (void)pin_calling_thread(cpu_);
    // Threads share one root and working directory, and setns into a mount namespace changes
    // them: only a thread with its own may enter one.
    const int own_fs_error = ::unshare(CLONE_FS) == 0 ? 0 : errno;
    // Where the thread returns after each clone3 from a mount template, so that it holds none
    // beyond its pid 1's life.
    const UniqueFd own_mount_ns(::open("/proc/thread-self/ns/mnt", O_RDONLY | O_CLOEXEC));
    const int mount_home_error = own_fs_error != 0 ? own_fs_error : own_mount_ns ? 0 : errno;
    std::unique_lock lock(mutex_);
    for (;;) {
        changed_.wait(lock, [this] { return stopping_ || pending_; });
        if (stopping_) return;
        pending_ = false;
        busy_ = true;
        clone_args args = args_;
        args.flags |= CLONE_VM | CLONE_VFORK;
        args.stack = reinterpret_cast<std::uint64_t>(init_stack_);
        args.stack_size = kStackSize;
        args.parent_tid = reinterpret_cast<std::uint64_t>(&pid_);
        args.flags |= CLONE_PARENT_SETTID;
        const int netns = netns_, home = home_;
        // Ours until the setns below: the caller may give up on a run, and its descriptor,
        // before this thread gets to it.
        const std::shared_ptr<const UniqueFd> mount_ns = std::move(mount_ns_);
        lock.unlock();
        long result = -1;
        int error = 0;
        if (mount_ns && mount_home_error != 0) {
            error = mount_home_error;
        } else if (mount_ns && ::setns(mount_ns->get(), CLONE_NEWNS) != 0) {
            error = errno;
        } else {
            try {
                std::optional<NetnsEntered> in_netns;
                if (netns >= 0) in_netns.emplace(netns, home);
                // Returns when pid 1 has exited (or at once if clone3 failed).
                result = clone3_calling(&args, fn_, arg_);
                error = result < 0 ? errno : 0;
            } catch (const std::exception&) {
                error = errno ? errno : EINVAL;  // setns failed; nothing was cloned
            }
            // Cannot fail for a namespace this thread was in; if it did, the next clone3 from
            // here would copy the wrong tree.
            if (mount_ns && ::setns(own_mount_ns.get(), CLONE_NEWNS) != 0) std::abort();
        }
        lock.lock();
        busy_ = false;
        error_ = error;
        // Wakes spawn() if the child never did: clone3 failed, or it died first thing. If it
        // did, spawn() has dropped our copy already.
        if (started_) {
            std::uint64_t one = 1;
            if (::write(started_.get(), &one, sizeof one) != sizeof one) std::abort();
            started_.reset();
        }
        changed_.notify_all();
    }
}

pid_t InitSpawner::spawn(clone_args args, int (*fn)(void*), void* arg, int started_fd, int netns,
                         int home, std::shared_ptr<const UniqueFd> mount_ns) {
#if defined(__SANITIZE_ADDRESS__)
    // The stacks are reused, and the tasks that ran on them last never returned from their
    // frames (they exec'd or died): clear the poison AddressSanitizer left for those frames.
    __asan_unpoison_memory_region(init_stack_, kStackSize);
    __asan_unpoison_memory_region(program_stack_, kStackSize);
#endif
    UniqueFd own_copy(::fcntl(started_fd, F_DUPFD_CLOEXEC, 0));
    if (!own_copy) throw_errno("dup pid 1's start eventfd");
    {
        std::unique_lock lock(mutex_);
        // The previous pid 1 is reaped; its clone3 call returns any moment now.
        changed_.wait(lock, [this] { return !busy_ && !pending_; });
        args_ = args;
        fn_ = fn;
        arg_ = arg;
        netns_ = netns;
        home_ = home;
        mount_ns_ = std::move(mount_ns);
        error_ = 0;
        pid_ = 0;
        started_ = std::move(own_copy);
        pending_ = true;
    }
    changed_.notify_all();
    std::uint64_t count;
    while (::read(started_fd, &count, sizeof count) < 0) {
        // Cannot fail for an eventfd of ours. Throwing here would let the caller close the
        // network namespace's descriptor while the spawner thread may still be about to
        // enter it by number, perhaps by then another run's.
        if (errno != EINTR) std::abort();
    }
    std::lock_guard lock(mutex_);
    // Someone wrote, so nobody needs waking any more. Closed here rather than when clone3
    // returns at pid 1's exit, which is after the run has ended: the caller's descriptors
    // are then all closed by the time a run returns.
    started_.reset();
    // A child that died before it said so is still returned: the caller reaps it and fails.
    if (pid_ <= 0) throw_errno("enter the mount template or clone3", error_ != 0 ? error_ : ECHILD);
    return pid_;
}

}  // namespace isolate
