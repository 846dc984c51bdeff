#include "mount_template.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

#include "child.h"
#include "dev_mounts.h"
#include "init_spawner.h"
#include "isolate/error.h"

namespace isolate {
namespace {

std::string shape_key(const ChildPlan& plan) {
    std::string key = plan.rootfs;
    for (const PlannedBind& bind : plan.binds) {
        key += '\0';
        key += bind.source;
        key += '\0';
        key += bind.target;
    }
    return key;
}

struct Build {
    const ChildPlan* plan;
    int mount_ns = -1;
    ChildFailure failure;
};

// Runs in the builder: a clone sharing our memory and descriptor table, so the namespace's
// descriptor it opens is ours. The rules of pid 1's code apply (child.h).
int build_main(void* arg) {
    auto* build = static_cast<Build*>(arg);
    if (!build_mount_template(*build->plan, build->failure)) return 1;
    // /proc is the builder's own pid namespace's, mounted above, so "self" is the builder.
    const int fd = ::open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fail(build->failure, ChildStep::open_mount_template);
        return 1;
    }
    build->mount_ns = fd;
    return 0;
}

// [guard][stack]: an overflow faults instead of writing over our memory, which the builder
// shares.
class BuilderStack {
  public:
    static constexpr std::size_t kGuard = 4096;
    static constexpr std::size_t kSize = 256 * 1024;
    BuilderStack() {
        region_ = ::mmap(nullptr, kGuard + kSize, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (region_ == MAP_FAILED) throw_errno("mmap the mount template builder's stack");
        if (::mprotect(region_, kGuard, PROT_NONE) != 0) {
            const int err = errno;
            ::munmap(region_, kGuard + kSize);
            throw_errno("mprotect the mount template builder's stack guard", err);
        }
    }
    ~BuilderStack() {
#if defined(__SANITIZE_ADDRESS__)
        // The builder never returned from its frames; a later mapping here must not inherit
        // their poison.
        __asan_unpoison_memory_region(base(), kSize);
#endif
        ::munmap(region_, kGuard + kSize);
    }
    BuilderStack(const BuilderStack&) = delete;
    BuilderStack& operator=(const BuilderStack&) = delete;
    void* base() const {
        return static_cast<char*>(region_) + kGuard;
    }

  private:
    void* region_;
};

// Builds the tree in a new mount namespace as the host's root, in a new pid namespace whose
// only process is the builder (the placeholder proc shows nothing once it has exited), and
// keeps the namespace by its descriptor.
UniqueFd build_template(const ChildPlan& plan) {
    BuilderStack stack;
    Build build{&plan, -1, {}};
    int pidfd = -1;
    clone_args args{};
    // CLONE_VFORK: we wait here until the builder has exited, and so has opened the namespace.
    args.flags = CLONE_VM | CLONE_VFORK | CLONE_FILES | CLONE_NEWNS | CLONE_NEWPID | CLONE_PIDFD;
    args.pidfd = reinterpret_cast<std::uint64_t>(&pidfd);
    args.exit_signal = SIGCHLD;
    args.stack = reinterpret_cast<std::uint64_t>(stack.base());
    args.stack_size = BuilderStack::kSize;
    // No handler of ours may run in the builder, on our memory.
    sigset_t all, previous;
    sigfillset(&all);
    if (const int err = ::pthread_sigmask(SIG_SETMASK, &all, &previous); err != 0)
        throw_errno("block signals for the mount template builder", err);
    const long pid = clone3_calling(&args, build_main, &build);
    const int clone_error = errno;
    ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    UniqueFd mount_ns(build.mount_ns);
    if (pid < 0) throw_errno("clone3 the mount template builder", clone_error);
    UniqueFd builder(pidfd);
    // By its pidfd: a process reaping with waitpid(-1) or ignoring SIGCHLD cannot take it.
    siginfo_t info{};
    while (::waitid(P_PIDFD, static_cast<id_t>(builder.get()), &info, WEXITED) != 0) {
        if (errno != EINTR) throw_errno("wait for the mount template builder");
    }
    if (info.si_code != CLD_EXITED || info.si_status != 0 || !mount_ns) {
        std::string why = info.si_code == CLD_EXITED
                              ? std::string(to_string(build.failure.step)) + ": " +
                                    std::strerror(build.failure.error)
                              : "killed by signal " + std::to_string(info.si_status);
        throw SetupError("build the mount template for " + plan.rootfs + ": " + why);
    }
    return mount_ns;
}

// A directory a template holds, by the host path make_sandbox_plan found it at.
struct HeldDirectory {
    const std::string* path;
    DirectoryIdentity identity;
};

// The rootfs, its /dev, its /proc, then each bind's source and mountpoint.
std::vector<HeldDirectory> held_directories(const ChildPlan& plan) {
    std::vector<HeldDirectory> held{{&plan.rootfs, plan.rootfs_identity},
                                    {&plan.dev_dir, plan.dev_identity},
                                    {&plan.proc_dir, plan.proc_identity}};
    for (const PlannedBind& bind : plan.binds) {
        held.push_back({&bind.source, bind.source_identity});
        held.push_back({&bind.target, bind.target_identity});
    }
    return held;
}

// Opens each, checked to be still the directory make_sandbox_plan found.
std::vector<UniqueFd> pin(const std::vector<HeldDirectory>& held) {
    std::vector<UniqueFd> pins;
    for (const HeldDirectory& dir : held) {
        UniqueFd pin(::open(dir.path->c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        struct stat st {};
        if (!pin || ::fstat(pin.get(), &st) != 0) throw_errno("open " + *dir.path);
        if (!(DirectoryIdentity::of(st) == dir.identity))
            throw SetupError(*dir.path + " was replaced while its mount template was being made");
        pins.push_back(std::move(pin));
    }
    return pins;
}

}  // namespace

MountTemplates::MountTemplates()
    : mount_table_(::open("/proc/thread-self/mountinfo", O_RDONLY | O_CLOEXEC)) {
    if (!mount_table_) throw_errno("open /proc/thread-self/mountinfo");
}

bool MountTemplates::mount_table_changed() const noexcept {
    // The kernel flags a mountinfo descriptor once per change to its namespace, ours: the
    // host's mounts and unmounts arrive in it (a slave), and so do our /dev mounts.
    pollfd fd{mount_table_.get(), POLLPRI, 0};
    return ::poll(&fd, 1, 0) != 0;
}

std::shared_ptr<const UniqueFd> MountTemplates::get(const ChildPlan& plan) {
    // As make_sandbox_plan found them. A mountpoint removed or replaced takes its mount out
    // of the template.
    const std::vector<HeldDirectory> held = held_directories(plan);
    Identities identities;
    for (const HeldDirectory& dir : held) identities.push_back(dir.identity);

    std::string shape = shape_key(plan);
    std::lock_guard lock(mutex_);
    if (mount_table_changed()) templates_.clear();
    auto it = std::find_if(templates_.begin(), templates_.end(),
                           [&](const Template& t) { return t.shape == shape; });
    if (it != templates_.end() && it->identities == identities) {
        it->last_used = ++uses_;
        return it->mount_ns;
    }
    // Replaced on disk since: build anew (runs still copying the old one keep it alive).
    if (it != templates_.end()) templates_.erase(it);
    std::vector<UniqueFd> pins = pin(held);
    std::shared_ptr<const UniqueFd> mount_ns;
    {
        // The builder copies our mounts: none of the /devs may be half built, still writable.
        auto steady = DevMounts::instance().hold_steady();
        mount_ns = std::make_shared<const UniqueFd>(build_template(plan));
    }
    if (templates_.size() >= kMaxTemplates) {
        templates_.erase(std::min_element(
            templates_.begin(), templates_.end(),
            [](const Template& a, const Template& b) { return a.last_used < b.last_used; }));
    }
    templates_.push_back(
        {std::move(shape), std::move(identities), std::move(pins), mount_ns, ++uses_});
    return mount_ns;
}

}  // namespace isolate
