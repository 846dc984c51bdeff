// Builds a sandbox up to its program: cgroup, pipes, clone3 into fresh namespaces, id maps,
// and pid 1's setup. The supervisor (sandbox.cpp) runs the program in it.

#include "prepared_sandbox.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <string>

#include "control.h"
#include "dev_mounts.h"
#include "init_spawner.h"
#include "isolate/error.h"
#include "mount_template.h"
#include "namespace_releaser.h"
#include "netns_pool.h"

namespace isolate {
namespace {

using Clock = std::chrono::steady_clock;

// From linux/seccomp.h of Linux 6.6, newer than Debian 12's headers.
constexpr unsigned long kNotifSetFlags = SECCOMP_IOW(4, __u64);
constexpr unsigned long kNotifSyncWakeUp = 1;

Pipe make_pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2");
    return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// For the supervisor's ends of the sandbox's pipes, set here rather than on the request's
// path; the sandbox's ends stay blocking, as programs expect.
void set_nonblocking(int fd) {
    if (::fcntl(fd, F_SETFL, O_NONBLOCK) != 0) throw_errno("fcntl O_NONBLOCK");
}

void write_file(const std::string& path, const std::string& content) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) throw_errno("open " + path);
    if (::write(fd.get(), content.data(), content.size()) != static_cast<ssize_t>(content.size()))
        throw_errno("write " + path);
}

// pid 1's entry when it shares our memory (clone3_calling).
int init_main(void* plan) {
    run_init(*static_cast<const ChildPlan*>(plan));
}

}  // namespace

void prefer_synchronous_wakeups(int listener) noexcept {
    ::ioctl(listener, kNotifSetFlags, kNotifSyncWakeUp);
}

SandboxProcess::SandboxProcess(pid_t pid, int pidfd, NamespaceReleaser* releaser)
    : pid_(pid), pidfd_(pidfd), releaser_(releaser) {
    // pid 1 has started, so it is in its new mount namespace.
    if (releaser_) {
        mount_ns_ = NamespaceReleaser::mount_namespace_of(pidfd);
        if (!mount_ns_) releaser_->count_not_held();
    }
}

SandboxProcess::~SandboxProcess() {
    if (reaped_) return;
    kill();
    siginfo_t info{};
    while (::waitid(P_PIDFD, static_cast<id_t>(pidfd_.get()), &info, WEXITED | __WALL) != 0 &&
           errno == EINTR) {
    }
    release_mount_namespace();
}

void SandboxProcess::kill() noexcept {
    ::syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
}

void SandboxProcess::reap() {
    siginfo_t info{};
    while (::waitid(P_PIDFD, static_cast<id_t>(pidfd_.get()), &info, WEXITED | __WALL) != 0) {
        if (errno != EINTR) throw_errno("waitid");
    }
    reaped_ = true;
    release_mount_namespace();
}

void SandboxProcess::release_mount_namespace() noexcept {
    // Every process of the run died with pid 1, so no process of the run holds it any more.
    if (mount_ns_) releaser_->release(std::move(mount_ns_));
}

PreparedSandbox::PreparedSandbox(const SandboxParts& parts, const SandboxShape& shape,
                                 unsigned slot, const RunSpec* program, std::string run_name)
    : shape_(shape) {
    plan = make_sandbox_plan(shape, parts.config.inside_uid, parts.last_capability);
    plan.dev_identity = DevMounts::instance().equip(plan.dev_dir);
    plan.program_cpus = parts.program_cpus;
    std::shared_ptr<const UniqueFd> mount_template;
    if (parts.init_spawner) {
        mount_template = parts.mount_templates.get(plan);
        use_mount_template(plan);
    }
    // A copy-on-write pid 1 sees only what the plan held at clone3.
    if (!program && !parts.init_spawner)
        throw SetupError("a sandbox is prepared ahead only where pid 1 shares our memory");
    if (program) fill_in_program(*program);
    cgroup = parts.cgroups.create(run_name, {shape.memory_bytes,
                                             shape.max_processes + 1,  // + init
                                             shape.cpus});
    stdin_pipe = make_pipe();
    stdout_pipe = make_pipe();
    stderr_pipe = make_pipe();
    set_nonblocking(stdin_pipe.write_end.get());
    set_nonblocking(stdout_pipe.read_end.get());
    set_nonblocking(stderr_pipe.read_end.get());
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0)
        throw_errno("socketpair");
    control.reset(pair[0]);
    UniqueFd child_control(pair[1]);
    plan.control_fd = child_control.get();
    plan.stdin_fd = stdin_pipe.read_end.get();
    plan.stdout_fd = stdout_pipe.write_end.get();
    plan.stderr_fd = stderr_pipe.write_end.get();
    plan.cgroup_join_fds = cgroup->self_join_fds();

    const bool joins_netns = parts.netns >= 0;
    if (joins_netns) plan.bring_up_loopback = false;
    int pidfd = -1;
    clone_args args{};
    args.flags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS |
                 CLONE_PIDFD | (joins_netns ? 0 : CLONE_NEWNET);
    args.pidfd = reinterpret_cast<std::uint64_t>(&pidfd);
    // No exit signal: pid 1 is reaped by its pidfd (with __WALL), and a SIGCHLD, blocked on
    // the spawner thread that is pid 1's parent, would wake another of our threads for
    // nothing at every run's end (its blocking call returns EINTR).
    args.exit_signal = 0;
    if (int cgroup_fd = cgroup->clone_into_fd(); cgroup_fd >= 0) {
        // The process is born inside its cgroup; it is never accounted anywhere else.
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = static_cast<std::uint64_t>(cgroup_fd);
    }
    long pid;
    if (InitSpawner* spawner = parts.init_spawner) {
        UniqueFd started(::eventfd(0, EFD_CLOEXEC));
        if (!started) throw_errno("eventfd");
        plan.started_fd = started.get();
        plan.program_stack = spawner->program_stack();
        plan.program_stack_size = spawner->program_stack_size();
        plan.exec_announcement = &exec_announcement;
        // Until spawn() returns, pid 1 holds a copy of our descriptors, queued namespaces
        // included. (A copy-on-write pid 1, below, is a fallback for other architectures.)
        NamespaceReleaser::SpawnInFlight spawning(parts.namespace_releaser);
        pid = spawner->spawn(args, init_main, &plan, started.get(), parts.netns, parts.netns_home,
                             mount_template);
    } else {
        std::optional<NetnsEntered> in_prepared_netns;
        if (joins_netns) in_prepared_netns.emplace(parts.netns, parts.netns_home);
        pid = ::syscall(SYS_clone3, &args, sizeof args);
        if (pid == 0) run_init(plan);
        if (pid < 0) throw_errno("clone3");
    }
    process =
        std::make_unique<SandboxProcess>(static_cast<pid_t>(pid), pidfd, parts.namespace_releaser);
    child_control.reset();
    stdin_pipe.read_end.reset();
    stdout_pipe.write_end.reset();
    stderr_pipe.write_end.reset();

    uid_t host_id = parts.config.uid_base + slot;
    std::string map =
        std::to_string(parts.config.inside_uid) + " " + std::to_string(host_id) + " 1\n";
    std::string proc = "/proc/" + std::to_string(pid);
    write_file(proc + "/uid_map", map);
    write_file(proc + "/gid_map", map);
    // v1 without self-join descriptors (none today): move it from here, at a lock's cost.
    if (cgroup->clone_into_fd() < 0 && plan.cgroup_join_fds.empty()) cgroup->attach(process->pid());

    if (!send_control(control.get(), {ControlType::go, ChildStep::wait_for_go, 0, 0, 0}))
        throw_errno("send go to the sandbox");
    if (program) start();
}

PreparedSandbox::~PreparedSandbox() {
    process.reset();
    cgroup.reset();
}

bool PreparedSandbox::wait_until_ready(std::chrono::milliseconds timeout, std::string* why) {
    auto fail = [why](std::string reason) {
        *why = std::move(reason);
        return false;
    };
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0)
            return fail("sandbox setup took longer than " + std::to_string(timeout.count()) +
                        " ms");
        pollfd fd{control.get(), POLLIN, 0};
        int ready = ::poll(&fd, 1, static_cast<int>(left.count()));
        if (ready < 0 && errno == EINTR) continue;
        if (ready < 0) return fail(std::string("poll: ") + std::strerror(errno));
        if (ready == 0) continue;  // the deadline check above ends it
        UniqueFd passed;
        auto message = receive_control(control.get(), &passed);
        if (!message && errno == EAGAIN) continue;
        if (!message) return fail("the sandbox's pid 1 ended before it was ready");
        if (message->type == ControlType::ready) {
            if (!passed) return fail("the sandbox sent no seccomp listener");
            prefer_synchronous_wakeups(passed.get());
            listener = std::move(passed);
            return true;
        }
        if (message->type == ControlType::error)
            return fail(std::string("sandbox setup failed: ") + to_string(message->step) + ": " +
                        std::strerror(message->error));
        return fail("the sandbox's pid 1 sent an unexpected message before it was ready");
    }
}

bool PreparedSandbox::still_waiting() const {
    // Nothing is said between `ready` and `start`: anything readable is an error or an end
    // (the program's process failing or dying makes pid 1 report it; pid 1's death is EOF).
    pollfd fd{control.get(), POLLIN, 0};
    return ::poll(&fd, 1, 0) == 0;
}

void PreparedSandbox::fill_in_program(const RunSpec& spec) {
    if (started_) throw SetupError("the sandbox's program has already started");
    plan_program(spec, plan);
    program_filled_in_ = true;
}

void PreparedSandbox::start() {
    if (!program_filled_in_) throw SetupError("the sandbox has no program yet");
    started_ = true;
    if (!send_control(control.get(), {ControlType::start, ChildStep::wait_for_go, 0, 0, 0}))
        throw_errno("send start to the sandbox");
}

}  // namespace isolate
