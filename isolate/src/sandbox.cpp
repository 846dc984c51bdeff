// The supervisor: creates the sandbox with clone3, feeds it, watches it, ends it, and
// turns what it saw into a RunResult. The only place that owns a run's kernel resources.

#include "isolate/sandbox.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <utility>

#include "child_plan.h"
#include "control.h"
#include "dev_mounts.h"
#include "init_spawner.h"
#include "isolate/error.h"
#include "isolate/seccomp.h"
#include "mount_template.h"
#include "namespace_releaser.h"
#include "netns_pool.h"
#include "prepared_sandbox.h"
#include "verdict.h"

namespace isolate {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kReadChunk = 64 * 1024;

// steady_clock is CLOCK_MONOTONIC, which the sandbox shares (it has no time namespace).
Clock::time_point from_monotonic_ns(std::int64_t ns) {
    if (ns <= 0) return Clock::now();
    return Clock::time_point(
        std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(ns)));
}

UniqueFd make_timer() {
    UniqueFd fd(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
    if (!fd) throw_errno("timerfd_create");
    return fd;
}

void arm_timer(int fd, std::chrono::nanoseconds delay) {
    itimerspec spec{};
    auto ns = std::max<std::int64_t>(delay.count(), 1);
    spec.it_value.tv_sec = ns / 1'000'000'000;
    spec.it_value.tv_nsec = ns % 1'000'000'000;
    if (::timerfd_settime(fd, 0, &spec, nullptr) != 0) throw_errno("timerfd_settime");
}

void disarm_timer(int fd) {
    itimerspec spec{};
    ::timerfd_settime(fd, 0, &spec, nullptr);
}

int read_last_capability() {
    std::ifstream in("/proc/sys/kernel/cap_last_cap");
    int last = 0;
    if (!(in >> last) || last < 0 || last > 63) throw SetupError("cannot read cap_last_cap");
    return last;
}

// Claims a slot for the duration of a run so that two runs never share a host uid.
class SlotClaim {
  public:
    SlotClaim(std::mutex& mutex, std::set<unsigned>& busy, unsigned slot)
        : mutex_(mutex), busy_(busy), slot_(slot) {
        std::lock_guard lock(mutex_);
        if (!busy_.insert(slot_).second)
            throw SetupError("slot " + std::to_string(slot_) + " is already running a sandbox");
    }
    ~SlotClaim() {
        std::lock_guard lock(mutex_);
        busy_.erase(slot_);
    }
    SlotClaim(const SlotClaim&) = delete;
    SlotClaim& operator=(const SlotClaim&) = delete;

  private:
    std::mutex& mutex_;
    std::set<unsigned>& busy_;
    unsigned slot_;
};

// A slot's two timers, kept from run to run rather than made for each: arming a timerfd
// clears its expirations, and every run arms both before it polls them, so no run sees an
// expiry of the run before.
struct RunTimers {
    UniqueFd phase, cpu;
};

// One run, from clone3 to the last byte of output.
class Supervisor {
  public:
    Supervisor(const SandboxConfig& config, PreparedSandbox& box, const RunSpec& spec,
               unsigned parallelism, RunTimers& timers)
        : config_(config),
          box_(box),
          spec_(spec),
          parallelism_(parallelism),
          plan_(box.plan),
          cgroup_(box.cgroup),
          stdin_(box.stdin_pipe),
          stdout_(box.stdout_pipe),
          stderr_(box.stderr_pipe),
          control_(box.control),
          process_(box.process),
          phase_timer_(timers.phase),
          cpu_timer_(timers.cpu) {}

    RunResult run();
    // True when the run cannot have made a socket other than AF_UNIX: its filter reports
    // every one and none was let through (a call the supervisor did not let through never
    // ran). False after a setup error too: a supervisor that gave up early may have left
    // the program running (its later reports then fail with ENOSYS, or wait for a listener
    // that never comes, but the full look does not have to rely on that).
    bool let_no_socket_through() const {
        return plan_.seccomp && plan_.seccomp->reports_sockets() && !socket_let_through_ &&
               !facts_.setup_error;
    }

  private:
    void start();
    void event_loop();
    void handle_control();
    void on_exited(const ControlMessage& message);
    void on_done(const ControlMessage& message);
    void handle_listener();
    void handle_output(UniqueFd& fd, std::string& sink, bool& truncated);
    // Reads what is left in both pipes and closes them, once no process can write more.
    void drain_output();
    void feed_stdin();
    // Learns of the program's execve if it has been announced; call before anything that
    // depends on whether it has.
    void learn_of_exec();
    void on_exec(std::uint64_t setup_cpu_ns, std::int64_t monotonic_ns);
    void on_phase_timer();
    void on_cpu_timer();
    // For `budget_ns` of CPU left, divided by how many CPUs could be burning it, so the kill
    // lands within a scheduler tick of the budget without polling.
    void arm_cpu_timer(std::uint64_t budget_ns);
    void check_cpu();
    void kill_sandbox();
    void adopt_listener(UniqueFd listener);
    // Lets the notified call run (error 0) or fails it with `error`.
    void answer_notification(std::uint64_t id, int error);
    void fail(std::string message);
    void collect_file(int index, int error, UniqueFd fd);

    const SandboxConfig& config_;
    PreparedSandbox& box_;
    const RunSpec& spec_;
    unsigned parallelism_;

    // The sandbox's parts, named as the supervisor sees them.
    ChildPlan& plan_;
    std::unique_ptr<cgroup::RunCgroup>& cgroup_;
    Pipe &stdin_, &stdout_, &stderr_;
    UniqueFd& control_;
    std::unique_ptr<SandboxProcess>& process_;
    UniqueFd &phase_timer_, &cpu_timer_;
    UniqueFd listener_;
    std::size_t stdin_offset_ = 0;

    RunFacts facts_;
    RunResult result_;
    bool exec_seen_ = false;
    bool exited_seen_ = false;
    bool init_dead_ = false;
    bool done_seen_ = false;
    bool socket_let_through_ = false;
    bool listener_received_ = false;
    std::uint64_t cpu_baseline_ns_ = 0;         // setup's CPU, charged to the cgroup before execve
    std::uint64_t init_cpu_after_fork_ns_ = 0;  // pid 1's own, reported when it is done
    Clock::time_point started_at_, wall_start_, wall_end_;
};

RunResult Supervisor::run() {
    try {
        start();
        event_loop();
        learn_of_exec();
        cgroup::Usage usage = cgroup_->usage();
        facts_.oom_killed = usage.oom_kills > 0;
        if (exec_seen_) {
            std::uint64_t not_the_program = cpu_baseline_ns_ + init_cpu_after_fork_ns_;
            std::uint64_t used =
                usage.cpu_ns > not_the_program ? usage.cpu_ns - not_the_program : 0;
            result_.cpu_time_ms = static_cast<double>(used) / 1e6;
            if (used > spec_.limits.cpu_time_ms * 1'000'000) facts_.cpu_exceeded = true;
            if (!exited_seen_) wall_end_ = Clock::now();
            result_.wall_time_ms =
                std::chrono::duration<double, std::milli>(wall_end_ - wall_start_).count();
        }
        result_.memory_bytes = usage.memory_peak_bytes;
    } catch (const std::exception& error) {
        if (!facts_.setup_error) facts_.setup_error = error.what();
        // Nothing watches the sandbox any more (its time limits, its notifications).
        kill_sandbox();
    }
    decide_verdict(facts_, spec_.limits, result_);
    if (result_.status == Status::internal_error) result_.collected.clear();
    return std::move(result_);
}

// Both timers run from here, not from the program's execve: the supervisor does not wake for
// that (learn_of_exec). Each fires no later than its limit measured from the execve, and
// re-arms itself for the rest once it knows when that was.
void Supervisor::start() {
    if (!phase_timer_) phase_timer_ = make_timer();
    if (!cpu_timer_) cpu_timer_ = make_timer();
    started_at_ = Clock::now();
    arm_timer(phase_timer_.get(), std::min(std::chrono::milliseconds(config_.setup_timeout_ms),
                                           std::chrono::milliseconds(spec_.limits.wall_time_ms)));
    arm_cpu_timer(spec_.limits.cpu_time_ms * 1'000'000);
    if (spec_.stdin_data.empty()) stdin_.write_end.reset();
    // Built ahead: wait_until_ready took the listener from `ready`.
    if (box_.listener) adopt_listener(std::move(box_.listener));
    if (box_.started()) return;
    box_.fill_in_program(spec_);
    box_.start();
}

void Supervisor::event_loop() {
    enum { kControl, kStdout, kStderr, kStdin, kProcess, kPhase, kCpu, kListener, kCancel, kCount };
    // After `done`, pid 1 has reaped everything else and says nothing more; its exit
    // (tearing down the namespaces) need not be waited for. A sandbox killed from here is
    // reaped first.
    while (!(init_dead_ || done_seen_) || stdout_.read_end || stderr_.read_end ||
           (control_ && !done_seen_)) {
        pollfd fds[kCount] = {};
        auto watch = [&](int slot, int fd, short events) {
            fds[slot].fd = fd;
            fds[slot].events = events;
        };
        watch(kControl, control_ ? control_.get() : -1, POLLIN);
        watch(kStdout, stdout_.read_end ? stdout_.read_end.get() : -1, POLLIN);
        watch(kStderr, stderr_.read_end ? stderr_.read_end.get() : -1, POLLIN);
        watch(kStdin, stdin_.write_end ? stdin_.write_end.get() : -1, POLLOUT);
        watch(kProcess, init_dead_ ? -1 : process_->pidfd(), POLLIN);
        watch(kPhase, phase_timer_.get(), POLLIN);
        watch(kCpu, cpu_timer_.get(), POLLIN);
        watch(kListener, listener_ ? listener_.get() : -1, POLLIN);
        watch(kCancel, spec_.cancel_fd, POLLIN);
        if (::poll(fds, kCount, -1) < 0) {
            if (errno == EINTR) continue;
            throw_errno("poll");
        }
        auto ready = [&](int slot) { return fds[slot].fd >= 0 && fds[slot].revents != 0; };
        if (ready(kListener)) {
            // Only POLLIN means a notification is waiting. POLLHUP alone means every
            // filtered task is gone; NOTIF_RECV then blocks forever on Debian 12's 6.1
            // kernel (seen in scripts/vm-test) instead of failing, so drop the listener.
            if (fds[kListener].revents & POLLIN) {
                handle_listener();
            } else {
                listener_.reset();
            }
        }
        if (ready(kControl)) handle_control();
        if (ready(kStdout))
            handle_output(stdout_.read_end, result_.stdout_data, result_.stdout_truncated);
        if (ready(kStderr))
            handle_output(stderr_.read_end, result_.stderr_data, result_.stderr_truncated);
        if (ready(kStdin)) feed_stdin();
        if (ready(kCpu)) {
            std::uint64_t expirations;
            if (::read(cpu_timer_.get(), &expirations, sizeof expirations) > 0) on_cpu_timer();
        }
        if (ready(kPhase)) {
            std::uint64_t expirations;
            if (::read(phase_timer_.get(), &expirations, sizeof expirations) > 0) on_phase_timer();
        }
        if (ready(kCancel) && !facts_.cancelled) {
            facts_.cancelled = true;
            kill_sandbox();
        }
        if (ready(kProcess)) {
            process_->reap();
            init_dead_ = true;
            // Every process of the sandbox is gone with its pid 1, so no one writes anymore.
            stdin_.write_end.reset();
            disarm_timer(cpu_timer_.get());
            disarm_timer(phase_timer_.get());
            listener_.reset();
        }
        // After "done" every process but pid 1 is gone, and pid 1 never writes to the pipes:
        // what they hold is all there is. pid 1 keeps their write ends until it exits, so
        // EOF would come only then.
        if (done_seen_ || init_dead_) drain_output();
    }
}

void Supervisor::drain_output() {
    if (stdout_.read_end)
        handle_output(stdout_.read_end, result_.stdout_data, result_.stdout_truncated);
    if (stderr_.read_end)
        handle_output(stderr_.read_end, result_.stderr_data, result_.stderr_truncated);
    stdout_.read_end.reset();
    stderr_.read_end.reset();
}

void Supervisor::handle_control() {
    for (;;) {
        UniqueFd passed;
        auto message = receive_control(control_.get(), &passed);
        if (!message) {
            if (errno == 0 || errno == ECONNRESET) {
                // EOF: every sandbox process is gone. ECONNRESET: the same, with messages of
                // ours left unread (a killed pid 1); the kernel delivers what was queued first.
                control_.reset();
            } else if (errno != EAGAIN) {
                // An "exec" left unread would make the program's calls look like ours.
                const int error = errno;
                control_.reset();
                fail(std::string("control socket: ") + std::strerror(error));
            }
            return;
        }
        switch (message->type) {
            case ControlType::exec:
                on_exec(message->cpu_ns, message->monotonic_ns);
                break;
            case ControlType::ready:
                // Built on the request's path: pid 1's listener arrives here.
                if (!passed) {
                    fail("the sandbox sent no seccomp listener");
                    break;
                }
                prefer_synchronous_wakeups(passed.get());
                adopt_listener(std::move(passed));
                break;
            case ControlType::error: {
                std::string detail = to_string(message->step);
                if (message->step == ChildStep::program_exec &&
                    message->index < static_cast<int>(plan_.exec_candidates.size()))
                    detail += " " + plan_.exec_candidates[static_cast<std::size_t>(message->index)];
                if (message->step == ChildStep::write_input_file &&
                    message->index < static_cast<int>(plan_.files.size()))
                    detail += " " + plan_.files[static_cast<std::size_t>(message->index)].path;
                fail("sandbox setup failed: " + detail + ": " + std::strerror(message->error));
                break;
            }
            case ControlType::exited:
                on_exited(*message);
                break;
            case ControlType::file:
                collect_file(message->index, message->error, std::move(passed));
                break;
            case ControlType::done:
                on_done(*message);
                break;
            case ControlType::finished:
                on_exited(*message);
                on_done(*message);
                break;
            case ControlType::go:
            case ControlType::start:
                break;
        }
    }
}

void Supervisor::on_exited(const ControlMessage& message) {
    exited_seen_ = true;
    wall_end_ = from_monotonic_ns(message.monotonic_ns);
    facts_.wait_status = message.wait_status;
    disarm_timer(phase_timer_.get());
    disarm_timer(cpu_timer_.get());
}

void Supervisor::on_done(const ControlMessage& message) {
    init_cpu_after_fork_ns_ = message.cpu_ns;
    done_seen_ = true;
}

void Supervisor::adopt_listener(UniqueFd listener) {
    listener_ = std::move(listener);
    listener_received_ = true;
}

void Supervisor::learn_of_exec() {
    if (exec_seen_) return;
    if (const ExecAnnouncement* announcement = plan_.exec_announcement) {
        if (announcement->made.load(std::memory_order_acquire))
            on_exec(announcement->cpu_ns.load(std::memory_order_relaxed),
                    announcement->monotonic_ns.load(std::memory_order_relaxed));
    } else if (control_) {
        // The message, sent just before the execve, is queued by now if it was made.
        handle_control();
    }
}

void Supervisor::on_exec(std::uint64_t setup_cpu_ns, std::int64_t monotonic_ns) {
    // Set before anything else: from here on, calls are the program's.
    exec_seen_ = true;
    // Not listener_ itself: by the time this is read, a short run may be over and its listener
    // dropped at POLLHUP.
    if (!listener_received_) {
        fail("the sandbox sent no seccomp listener");
        return;
    }
    // The wall clock started at execve, however late this thread got to hear of it.
    wall_start_ = from_monotonic_ns(monotonic_ns);
    cpu_baseline_ns_ = setup_cpu_ns;
}

void Supervisor::on_phase_timer() {
    using std::chrono::milliseconds;
    if (exited_seen_) return;
    learn_of_exec();
    const auto now = Clock::now();
    if (!exec_seen_) {
        const auto setup_left = started_at_ + milliseconds(config_.setup_timeout_ms) - now;
        if (setup_left <= Clock::duration::zero()) {
            fail("sandbox setup did not finish within " + std::to_string(config_.setup_timeout_ms) +
                 " ms");
            return;
        }
        arm_timer(phase_timer_.get(),
                  std::min<Clock::duration>(setup_left, milliseconds(spec_.limits.wall_time_ms)));
        return;
    }
    if (facts_.setup_error) return;
    const auto wall_left = wall_start_ + milliseconds(spec_.limits.wall_time_ms) - now;
    if (wall_left > Clock::duration::zero()) {
        arm_timer(phase_timer_.get(), wall_left);
        return;
    }
    facts_.wall_exceeded = true;
    kill_sandbox();
}

void Supervisor::on_cpu_timer() {
    learn_of_exec();
    if (exec_seen_)
        check_cpu();
    else if (!facts_.setup_error)
        arm_cpu_timer(spec_.limits.cpu_time_ms * 1'000'000);  // the program has used none yet
}

void Supervisor::arm_cpu_timer(std::uint64_t budget_ns) {
    const auto share = std::chrono::nanoseconds(budget_ns / parallelism_);
    arm_timer(cpu_timer_.get(),
              std::max<std::chrono::nanoseconds>(share, std::chrono::microseconds(500)));
}

// Kills at the budget, or re-arms for what is left of it.
void Supervisor::check_cpu() {
    if (exited_seen_ || facts_.cpu_exceeded) return;
    std::uint64_t limit = spec_.limits.cpu_time_ms * 1'000'000;
    std::uint64_t now = cgroup_->cpu_usage_ns();
    std::uint64_t used = now > cpu_baseline_ns_ ? now - cpu_baseline_ns_ : 0;
    if (used >= limit) {
        facts_.cpu_exceeded = true;
        kill_sandbox();
        return;
    }
    arm_cpu_timer(limit - used);
}

void Supervisor::handle_listener() {
    seccomp_notif notification;
    std::memset(&notification, 0, sizeof notification);
    if (::ioctl(listener_.get(), SECCOMP_IOCTL_NOTIF_RECV, &notification) != 0) {
        // ENOENT: the caller died meanwhile. Anything else (POLLHUP: no task left) ends it.
        if (errno != ENOENT && errno != EINTR) listener_.reset();
        return;
    }
    // pid 1 installs the filter before it is ready, so its own calls after that, and those
    // of the program's process before its execve, come here too. That process announces the
    // execve before making it, so once any of the program's calls is here, the announcement
    // is there to read (in memory, or queued on the control socket): read it first. pid 1's
    // pid cannot be reused while it is unreaped.
    learn_of_exec();
    const bool ours = !exec_seen_ || notification.pid == static_cast<__u32>(process_->pid());
    const auto verdict = plan_.seccomp->socket_verdict(
        static_cast<int>(notification.data.nr), notification.data.arch, notification.data.args[0]);
    if (ours) {
        // The profile confines the program, not the sandbox's own code, which ran unfiltered
        // before the filter moved into pid 1 (compile() refuses errno rules for its calls).
        // Not once the run is being ended: the call stays blocked until the kill lands.
        if (facts_.killed_by_supervisor) return;
        if (verdict) socket_let_through_ = true;
        answer_notification(notification.id, 0);
        return;
    }
    if (verdict && verdict->kind != SeccompAction::Kind::kill) {
        // A socket report: answered with the policy's action, which the filter left to us.
        const bool allowed = verdict->kind == SeccompAction::Kind::allow;
        // Noted before it can run, for the network namespace's next look.
        if (allowed) socket_let_through_ = true;
        answer_notification(notification.id, allowed ? 0 : verdict->errno_value);
        return;
    }
    if (!verdict) {
        std::array<std::uint64_t, 6> args;
        std::copy(std::begin(notification.data.args), std::end(notification.data.args),
                  args.begin());
        const auto checked = plan_.seccomp->supervised_verdict(
            static_cast<int>(notification.data.nr), notification.data.arch, args);
        if (checked && checked->kind != SeccompAction::Kind::kill) {
            const bool allowed = checked->kind == SeccompAction::Kind::allow;
            answer_notification(notification.id, allowed ? 0 : checked->errno_value);
            return;
        }
    }
    if (!facts_.blocked_syscall)
        facts_.blocked_syscall = syscall_name(notification.data.nr, notification.data.arch);
    // The call stays blocked in the kernel until the task dies; it never runs.
    kill_sandbox();
}

void Supervisor::answer_notification(std::uint64_t id, int error) {
    seccomp_notif_resp response;
    std::memset(&response, 0, sizeof response);
    response.id = id;
    if (error == 0) {
        response.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    } else {
        response.error = -error;
    }
    int sent;
    do {
        sent = ::ioctl(listener_.get(), SECCOMP_IOCTL_NOTIF_SEND, &response);
    } while (sent != 0 && errno == EINTR);
    // ENOENT: the caller died meanwhile. Otherwise, without the listener, this call and every
    // later notification fail with ENOSYS rather than hang.
    if (sent != 0 && errno != ENOENT) listener_.reset();
}

void Supervisor::handle_output(UniqueFd& fd, std::string& sink, bool& truncated) {
    char buffer[kReadChunk];
    for (;;) {
        ssize_t got = ::read(fd.get(), buffer, sizeof buffer);
        if (got < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return;
            fd.reset();
            return;
        }
        if (got == 0) {
            fd.reset();
            return;
        }
        std::size_t total = result_.stdout_data.size() + result_.stderr_data.size();
        std::size_t room =
            spec_.limits.max_output_bytes > total ? spec_.limits.max_output_bytes - total : 0;
        std::size_t take = std::min<std::size_t>(room, static_cast<std::size_t>(got));
        sink.append(buffer, take);
        if (take < static_cast<std::size_t>(got)) {
            truncated = true;
            if (!facts_.output_exceeded) {
                facts_.output_exceeded = true;
                kill_sandbox();
            }
        }
    }
}

void Supervisor::feed_stdin() {
    const std::string& data = spec_.stdin_data;
    while (stdin_offset_ < data.size()) {
        ssize_t written = ::write(stdin_.write_end.get(), data.data() + stdin_offset_,
                                  std::min<std::size_t>(data.size() - stdin_offset_, 1 << 20));
        if (written < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return;
            break;  // EPIPE: the program does not want the rest
        }
        stdin_offset_ += static_cast<std::size_t>(written);
    }
    stdin_.write_end.reset();
}

void Supervisor::collect_file(int index, int error, UniqueFd fd) {
    if (index < 0 || static_cast<std::size_t>(index) >= plan_.collect.size()) return;
    const std::string& path = plan_.collect[static_cast<std::size_t>(index)];
    if (!fd) {
        if (!facts_.setup_error)
            result_.message = "cannot collect " + path + ": " + std::strerror(error);
        return;
    }
    // The descriptor was opened inside the sandbox; reading it follows no host path.
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) ||
        static_cast<std::uint64_t>(st.st_size) > spec_.limits.max_file_bytes)
        return;
    CollectedFile file{path, std::string(static_cast<std::size_t>(st.st_size), '\0'),
                       (st.st_mode & 0111) != 0};
    std::size_t done = 0;
    while (done < file.content.size()) {
        ssize_t got = ::pread(fd.get(), file.content.data() + done, file.content.size() - done,
                              static_cast<off_t>(done));
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        done += static_cast<std::size_t>(got);
    }
    file.content.resize(done);
    result_.collected.push_back(std::move(file));
}

void Supervisor::kill_sandbox() {
    facts_.killed_by_supervisor = true;
    if (process_ && !init_dead_) process_->kill();
    if (cgroup_) cgroup_->kill_all();
}

void Supervisor::fail(std::string message) {
    if (!facts_.setup_error) facts_.setup_error = std::move(message);
    kill_sandbox();
}

void ensure_standard_fds_open() {
    // The sandbox's stdio is set up with dup2 onto 0, 1 and 2; if one of those were free,
    // a pipe could land there and be clobbered.
    for (int fd = 0; fd < 3; ++fd) {
        if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
        int opened = ::open("/dev/null", O_RDWR);
        if (opened != fd)
            throw SetupError("cannot occupy standard descriptor " + std::to_string(fd));
    }
}

}  // namespace

// A slot's sandboxes between runs. Only the holder of the slot's SlotClaim touches it.
struct SlotSandboxes {
    // Built ahead in the expected shape, waiting at `ready`.
    std::unique_ptr<PreparedSandbox> prepared;
    // The last run's, once its answer is known: pid 1 may still be exiting, and its cgroup
    // is still there. Torn down by prepare_slot() or the slot's next run.
    std::unique_ptr<PreparedSandbox> finished;
    // The shape of the first run after the last prepare_slot(). In the daemon that is a
    // job's first run: its compile step if the compile cache misses, else its (first) run,
    // so jobs like the last one find their first sandbox ready.
    std::optional<SandboxShape> expected_shape;
    bool first_since_prepare = true;
    // The network namespace the slot's sandboxes join, kept from run to run for as long as
    // no run leaves a trace in it (netns_pool.h). Null: the next sandbox takes a new one.
    std::unique_ptr<Netns> netns;
    // Whether a run since the namespace was last checked may have made a socket other than
    // AF_UNIX, so its IP, TCP and UDP figures must be read too. Set before each run, and
    // cleared after it only if the run is known to have made none.
    bool netns_sockets_made = false;
    RunTimers timers;
};

struct SandboxState {
    std::mutex mutex;
    std::set<unsigned> busy_slots;
    std::atomic<std::uint64_t> run_counter{0};
    std::atomic<std::uint64_t> prepared_used{0}, prepared_discarded{0}, prepared_failed{0};
    std::atomic<std::uint64_t> netns_kept{0}, netns_replaced{0}, netns_kept_unix_only{0};
    int last_capability = 0;
    unsigned parallelism = 1;
    std::unique_ptr<NetnsPool> netns_pool;
    std::vector<std::unique_ptr<InitSpawner>> init_spawners;  // per slot, made on first use
    MountTemplates mount_templates;
    // Before the slots, which hand it their runs' mount namespaces as they go.
    NamespaceReleaser namespace_releaser;
    // With pin_slots: the CPUs this process could use at start, which every program gets,
    // and the one each slot's supervisor thread and pid 1 use (empty: nothing is pinned).
    cpu_set_t program_cpus{};
    std::vector<int> slot_cpus;
    // Last, so it goes first: a prepared pid 1 lives inside its spawner's clone3 call.
    std::vector<SlotSandboxes> slots;

    InitSpawner* init_spawner(const SandboxConfig& config, unsigned slot) {
        if (!config.init_shares_memory || !InitSpawner::supported()) return nullptr;
        std::lock_guard lock(mutex);
        if (init_spawners.size() < config.slots) init_spawners.resize(config.slots);
        if (!init_spawners[slot])
            init_spawners[slot] = std::make_unique<InitSpawner>(slot_cpu(slot));
        return init_spawners[slot].get();
    }

    // The network namespace for the slot's next sandbox: the slot's own if the runs before
    // left it as it was new, else a new one from the pool, else -1 (pid 1 makes its own).
    // Call only while none of the slot's sandboxes is alive, so nothing can change it after
    // the look.
    int next_netns(const SandboxConfig& config, SlotSandboxes& slot) {
        const bool sockets_made = std::exchange(slot.netns_sockets_made, false);
        if (slot.netns) {
            if (config.keep_clean_netns && slot.netns->unchanged(sockets_made)) {
                netns_kept.fetch_add(1);
                if (!sockets_made) netns_kept_unix_only.fetch_add(1);
                return slot.netns->fd();
            }
            if (config.keep_clean_netns) netns_replaced.fetch_add(1);
            slot.netns.reset();
        }
        if (netns_pool) slot.netns = netns_pool->take();
        return slot.netns ? slot.netns->fd() : -1;
    }

    int slot_cpu(unsigned slot) const {
        return slot_cpus.empty() ? -1 : slot_cpus[slot % slot_cpus.size()];
    }

    // With one CPU there is nothing to gain; and a set that cannot be read pins nothing.
    void choose_slot_cpus() {
        if (::sched_getaffinity(0, sizeof program_cpus, &program_cpus) != 0) return;
        for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
            if (CPU_ISSET(cpu, &program_cpus)) slot_cpus.push_back(cpu);
        if (slot_cpus.size() < 2) slot_cpus.clear();
    }

    // What building a sandbox for `slot` takes.
    SandboxParts parts(const SandboxConfig& config, cgroup::Backend& cgroups, unsigned slot_index) {
        int netns = next_netns(config, slots[slot_index]);
        return {config,
                cgroups,
                netns,
                netns >= 0 ? netns_pool->home() : -1,
                init_spawner(config, slot_index),
                mount_templates,
                &namespace_releaser,
                last_capability,
                slot_cpus.empty() ? nullptr : &program_cpus};
    }

    std::string next_run_name(unsigned slot) {
        return "run-" + std::to_string(slot) + "-" + std::to_string(run_counter.fetch_add(1));
    }
};

Sandbox::Sandbox(SandboxConfig config, std::unique_ptr<cgroup::Backend> cgroups)
    : config_(config), cgroups_(std::move(cgroups)) {
    if (config_.uid_base == 0) throw SetupError("uid_base must not be 0");
    if (!cgroups_) throw SetupError("no cgroup backend");
    // Writing to a sandbox's stdin after it exited must be EPIPE, not a dead supervisor.
    ::signal(SIGPIPE, SIG_IGN);
    ensure_standard_fds_open();
    // Before any of our threads exist: it moves the whole process into a mount namespace.
    DevMounts::instance();
    state_ = std::make_unique<SandboxState>();
    state_->last_capability = read_last_capability();
    state_->parallelism = std::max(1u, std::thread::hardware_concurrency());
    state_->slots.resize(config_.slots);
    if (config_.pin_slots) state_->choose_slot_cpus();
    if (config_.prepared_netns > 0)
        state_->netns_pool = std::make_unique<NetnsPool>(config_.prepared_netns);
}

Sandbox::~Sandbox() = default;

bool Sandbox::pin_current_thread(unsigned slot) const {
    const int cpu = state_->slot_cpu(slot);
    return cpu < 0 || pin_calling_thread(cpu);
}

RunResult Sandbox::run(const RunSpec& spec) {
    try {
        if (spec.slot >= config_.slots)
            throw SetupError("slot " + std::to_string(spec.slot) + " is out of range");
        SlotClaim claim(state_->mutex, state_->busy_slots, spec.slot);
        SlotSandboxes& slot = state_->slots[spec.slot];
        slot.finished.reset();
        unsigned parallelism = state_->parallelism;
        if (spec.limits.cpus > 0)
            parallelism = std::min(parallelism, static_cast<unsigned>(std::ceil(spec.limits.cpus)));

        const SandboxShape shape = SandboxShape::of(spec);
        std::unique_ptr<PreparedSandbox> box = std::move(slot.prepared);
        if (box && box->shape() == shape && box->still_waiting()) {
            state_->prepared_used.fetch_add(1);
        } else {
            if (box) state_->prepared_discarded.fetch_add(1);
            box.reset();
            box = std::make_unique<PreparedSandbox>(state_->parts(config_, *cgroups_, spec.slot),
                                                    shape, spec.slot, &spec,
                                                    state_->next_run_name(spec.slot));
        }
        const bool sockets_made_before = slot.netns_sockets_made;
        slot.netns_sockets_made = true;  // until the run is known to have made none
        Supervisor supervisor(config_, *box, spec, std::max(1u, parallelism), slot.timers);
        RunResult result = supervisor.run();
        if (supervisor.let_no_socket_through()) slot.netns_sockets_made = sockets_made_before;
        if (config_.prepare_ahead) {
            slot.finished = std::move(box);
            if (slot.first_since_prepare) slot.expected_shape = shape;
            slot.first_since_prepare = false;
        }
        return result;
    } catch (const std::exception& error) {
        RunResult result;
        result.status = Status::internal_error;
        result.message = error.what();
        return result;
    }
}

Sandbox::PrepareOutcome Sandbox::prepare_slot(unsigned slot_index) {
    using Kind = PrepareOutcome::Kind;
    if (slot_index >= config_.slots) return {};
    std::optional<SlotClaim> claim;
    try {
        claim.emplace(state_->mutex, state_->busy_slots, slot_index);
    } catch (const SetupError&) {
        return {};  // the slot is running
    }
    try {
        SlotSandboxes& slot = state_->slots[slot_index];
        slot.finished.reset();
        slot.first_since_prepare = true;
        if (slot.prepared || !slot.expected_shape) return {};
        SandboxParts parts = state_->parts(config_, *cgroups_, slot_index);
        if (!parts.init_spawner) return {};  // a copy-on-write pid 1 cannot be given a plan later
        auto box = std::make_unique<PreparedSandbox>(parts, *slot.expected_shape, slot_index,
                                                     nullptr, state_->next_run_name(slot_index));
        std::string why;
        if (!box->wait_until_ready(std::chrono::milliseconds(config_.setup_timeout_ms), &why)) {
            state_->prepared_failed.fetch_add(1);
            return {Kind::failed, why};
        }
        slot.prepared = std::move(box);
        return {Kind::built, {}};
    } catch (const std::exception& error) {
        state_->prepared_failed.fetch_add(1);
        return {Kind::failed, error.what()};
    }
}

Sandbox::PreparedStats Sandbox::prepared_stats() const {
    return {state_->prepared_used.load(), state_->prepared_discarded.load(),
            state_->prepared_failed.load()};
}

Sandbox::NetnsStats Sandbox::netns_stats() const {
    return {state_->netns_kept.load(), state_->netns_replaced.load(),
            state_->netns_pool ? state_->netns_pool->ready() : 0,
            state_->netns_kept_unix_only.load()};
}

Sandbox::MountNamespaceStats Sandbox::mount_namespace_stats() const {
    const NamespaceReleaser::Stats stats = state_->namespace_releaser.stats();
    return {stats.released, stats.closed_by_caller, stats.not_held, stats.pending};
}

}  // namespace isolate
