#include "isolate/seccomp.h"

#include <linux/audit.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>

#include "isolate/error.h"
#include "isolate/unique_fd.h"

namespace isolate {
namespace {

// libseccomp reports failures as negative errno values.
[[noreturn]] void throw_libseccomp(const std::string& step, int rc) {
    throw SetupError("seccomp: " + step + ": " + std::strerror(-rc));
}

void check(int rc, const std::string& step) {
    if (rc < 0) throw_libseccomp(step, rc);
}

struct CtxDeleter {
    void operator()(void* ctx) const noexcept { seccomp_release(ctx); }
};
using Ctx = std::unique_ptr<void, CtxDeleter>;

// The kernel reports only 16 bits of SECCOMP_RET_DATA, and values above MAX_ERRNO would not
// read as an error to the caller; SCMP_ACT_ERRNO would silently truncate them.
constexpr int max_errno = 4095;

std::uint32_t to_scmp_action(const SeccompAction& action, const std::string& where) {
    switch (action.kind) {
        case SeccompAction::Kind::allow:
            return SCMP_ACT_ALLOW;
        case SeccompAction::Kind::kill:
            // The supervisor, not the kernel, kills: that way it learns the syscall's name and
            // takes down every process of the sandbox, not only the offending one.
            return SCMP_ACT_NOTIFY;
        case SeccompAction::Kind::errno_:
            if (action.errno_value < 1 || action.errno_value > max_errno)
                throw SetupError("seccomp: " + where + ": errno " +
                                 std::to_string(action.errno_value) + " is not in 1.." +
                                 std::to_string(max_errno));
            return SCMP_ACT_ERRNO(static_cast<std::uint32_t>(action.errno_value));
    }
    throw SetupError("seccomp: " + where + ": invalid action kind");
}

scmp_compare to_scmp_op(SeccompArgCondition::Op op) {
    switch (op) {
        case SeccompArgCondition::Op::eq:
            return SCMP_CMP_EQ;
        case SeccompArgCondition::Op::ne:
            return SCMP_CMP_NE;
        case SeccompArgCondition::Op::lt:
            return SCMP_CMP_LT;
        case SeccompArgCondition::Op::le:
            return SCMP_CMP_LE;
        case SeccompArgCondition::Op::gt:
            return SCMP_CMP_GT;
        case SeccompArgCondition::Op::ge:
            return SCMP_CMP_GE;
        case SeccompArgCondition::Op::masked_eq:
            return SCMP_CMP_MASKED_EQ;
    }
    return _SCMP_CMP_MIN;  // rejected by the caller
}

std::string describe(const SeccompRule& rule, std::size_t index) {
    return "rule " + std::to_string(index) + " (" + rule.syscall + ")";
}

// libseccomp lets an unconditional rule silently override every conditional rule of the same
// syscall, so such a policy would not mean what it says; refuse it instead of guessing.
void reject_ambiguous_rules(const SeccompPolicy& policy) {
    std::map<std::string, std::size_t> unconditional;  // syscall -> rule index
    std::map<std::string, std::size_t> first;
    for (std::size_t i = 0; i < policy.rules.size(); ++i) {
        const SeccompRule& rule = policy.rules[i];
        auto [it, inserted] = first.emplace(rule.syscall, i);
        if (rule.conditions.empty()) {
            if (!inserted)
                throw SetupError("seccomp: " + describe(rule, i) + " is unconditional but rule " +
                                 std::to_string(it->second) + " also covers '" + rule.syscall +
                                 "'");
            unconditional.emplace(rule.syscall, i);
        } else if (auto u = unconditional.find(rule.syscall); u != unconditional.end()) {
            throw SetupError("seccomp: " + describe(rule, i) + " is conditional but rule " +
                             std::to_string(u->second) + " already covers '" + rule.syscall +
                             "' unconditionally");
        }
    }
}

std::string resolve(std::uint32_t scmp_arch, int number) {
    char* name = seccomp_syscall_resolve_num_arch(scmp_arch, number);
    if (name == nullptr) return "syscall " + std::to_string(number);
    std::unique_ptr<char, decltype(&std::free)> owner(name, &std::free);
    return std::string(name);
}

// The call pid 1 makes first after installing the filter: it hands the listener over. Were
// it notified, pid 1 would wait on a listener only it holds.
constexpr const char* kListenerHandover = "sendmsg";

bool allowed_outright(const SeccompPolicy& policy, const std::string& name) {
    return std::any_of(policy.rules.begin(), policy.rules.end(), [&](const SeccompRule& r) {
        return r.syscall == name && r.conditions.empty() &&
               r.action.kind == SeccompAction::Kind::allow;
    });
}

// See sandbox_own_syscalls(): an errno for any of these would reach the sandbox's own code,
// and so would any rule for the listener's handover.
void reject_rules_for_own_syscalls(const SeccompPolicy& policy) {
    const auto& own = sandbox_own_syscalls();
    for (std::size_t i = 0; i < policy.rules.size(); ++i) {
        const SeccompRule& rule = policy.rules[i];
        if (rule.syscall == kListenerHandover && rule.action.kind != SeccompAction::Kind::allow)
            throw SetupError("seccomp: " + describe(rule, i) +
                             ": the sandbox's pid 1 hands the seccomp listener over with " +
                             kListenerHandover +
                             " under the filter, so it cannot be refused; "
                             "refuse socket creation instead");
        if (rule.action.kind == SeccompAction::Kind::errno_ &&
            std::find(own.begin(), own.end(), rule.syscall) != own.end())
            throw SetupError("seccomp: " + describe(rule, i) +
                             " answers with an errno, but the sandbox's own setup calls " +
                             rule.syscall +
                             " under the filter; use kill (the sandbox's own calls are let "
                             "through, the program's end the run) or a limit");
    }
    const auto default_kind = policy.default_action.kind;
    if (default_kind == SeccompAction::Kind::allow) return;
    for (const std::string& name : own) {
        if ((default_kind == SeccompAction::Kind::errno_ || name == kListenerHandover) &&
            !allowed_outright(policy, name))
            throw SetupError(
                "seccomp: the default action is not allow, but the sandbox's own "
                "setup calls " +
                name + " under the filter; allow it unconditionally");
    }
}

// The kernel reads the domain of socket() and socketpair() as an int, so only the low 32
// bits count.
constexpr std::uint64_t kIntMask = 0xffffffff;

bool is_socket_call(const std::string& syscall) {
    return syscall == "socket" || syscall == "socketpair";
}

// Whether the policy's verdict on every socket() and socketpair() call can be reached in two
// steps: the filter lets AF_UNIX through as the default and reports the rest, and the
// supervisor applies the policy's rules to the family. So the default must be allow, every
// rule for these calls a comparison of the family (as an int) alone, none refusing AF_UNIX;
// and io_uring, whose IORING_OP_SOCKET makes sockets without either call, must be refused.
bool can_report_sockets(const SeccompPolicy& policy) {
    if (policy.default_action.kind != SeccompAction::Kind::allow) return false;
    // Where socketcall is native (i386, s390x, ppc) it makes sockets without either call.
    if (seccomp_syscall_resolve_name("socketcall") >= 0) return false;
    bool io_uring_refused = false;
    for (const SeccompRule& rule : policy.rules) {
        if (rule.syscall == "io_uring_setup" && rule.conditions.empty() &&
            rule.action.kind != SeccompAction::Kind::allow)
            io_uring_refused = true;
        if (!is_socket_call(rule.syscall)) continue;
        if (rule.conditions.size() != 1) return false;
        const SeccompArgCondition& c = rule.conditions.front();
        // A value above 32 bits never matches in the filter, but would as a family.
        if (c.arg != 0 || c.op != SeccompArgCondition::Op::masked_eq || c.mask != kIntMask ||
            c.value > kIntMask)
            return false;
        if (c.value == AF_UNIX && rule.action.kind != SeccompAction::Kind::allow) return false;
    }
    return io_uring_refused;
}

// libseccomp's semantics: 64-bit unsigned comparisons.
bool holds(const SeccompArgCondition& c, std::uint64_t arg) {
    switch (c.op) {
        case SeccompArgCondition::Op::eq:
            return arg == c.value;
        case SeccompArgCondition::Op::ne:
            return arg != c.value;
        case SeccompArgCondition::Op::lt:
            return arg < c.value;
        case SeccompArgCondition::Op::le:
            return arg <= c.value;
        case SeccompArgCondition::Op::gt:
            return arg > c.value;
        case SeccompArgCondition::Op::ge:
            return arg >= c.value;
        case SeccompArgCondition::Op::masked_eq:
            return (arg & c.mask) == c.value;
    }
    return false;
}

}  // namespace

const std::vector<std::string>& sandbox_own_syscalls() {
    // init.cpp after the install (the ready message, the program's spawn, waiting for it,
    // killing the rest, collected files, exit) and program.cpp up to its execve (waiting for
    // start, the input files, stdio, limits). Keep in step with those two files.
    static const std::vector<std::string> own = {
        "prctl",     "sendmsg",       "recvfrom", "close",       "mkdirat", "openat2",
        "write",     "clock_gettime", "mmap",     "mprotect",    "munmap",  "rt_sigprocmask",
        "clone",     "setsid",        "dup2",     "close_range", "fchdir",  "sched_setaffinity",
        "prlimit64", "wait4",         "kill",     "exit_group",  "exit"};
    return own;
}

std::optional<SeccompAction> SeccompFilter::socket_verdict(int number, std::uint32_t audit_arch,
                                                           std::uint64_t arg0) const {
    // The filter holds the native arch only (libseccomp's tokens are the AUDIT_ARCH values).
    if (!reports_sockets_ || audit_arch != seccomp_arch_native() ||
        (number != SCMP_SYS(socket) && number != SCMP_SYS(socketpair)))
        return std::nullopt;
    const auto rule = socket_rules_.find({number, static_cast<std::uint32_t>(arg0 & kIntMask)});
    if (rule == socket_rules_.end()) return SeccompAction{SeccompAction::Kind::allow, 0};
    return rule->second;
}

std::optional<SeccompAction> SeccompFilter::supervised_verdict(
    int number, std::uint32_t audit_arch, const std::array<std::uint64_t, 6>& args) const {
    if (audit_arch != seccomp_arch_native()) return std::nullopt;
    const auto supervised = supervised_.find(number);
    if (supervised == supervised_.end()) return std::nullopt;
    for (const auto& conditions : supervised->second.conditions) {
        if (std::all_of(conditions.begin(), conditions.end(),
                        [&](const SeccompArgCondition& c) { return holds(c, args[c.arg]); }))
            return supervised->second.action;
    }
    return supervised->second.otherwise;
}

// The rules of the policy's supervised syscalls, which the filter only reports. Refused for
// the sandbox's own calls, each of which would become a round trip in every run's setup, and
// for socket calls, which have their own reports.
void SeccompFilter::take_supervised_rules(const SeccompPolicy& policy) {
    const auto& own = sandbox_own_syscalls();
    for (const std::string& name : policy.supervised_syscalls) {
        const std::string where = "supervised syscall '" + name + "'";
        const int nr = seccomp_syscall_resolve_name(name.c_str());
        if (nr == __NR_SCMP_ERROR) throw SetupError("seccomp: unknown syscall '" + name + "'");
        if (nr < 0) continue;  // not a native call: nothing to filter
        if (is_socket_call(name))
            throw SetupError("seccomp: " + where +
                             ": socket calls are reported by the socket rules of their own");
        if (std::find(own.begin(), own.end(), name) != own.end())
            throw SetupError("seccomp: " + where +
                             ": the sandbox's own setup calls it under the filter, so every "
                             "run would wait for the supervisor");
        SupervisedRules rules{policy.default_action, policy.default_action, {}};
        for (std::size_t i = 0; i < policy.rules.size(); ++i) {
            const SeccompRule& rule = policy.rules[i];
            if (rule.syscall != name || rule.action == policy.default_action) continue;
            to_scmp_action(rule.action, describe(rule, i));  // refuses an errno out of range
            for (const SeccompArgCondition& c : rule.conditions)
                if (c.arg > 5)
                    throw SetupError("seccomp: " + describe(rule, i) + ": argument index " +
                                     std::to_string(c.arg) + " is not in 0..5");
            if (!rules.conditions.empty() && rule.action != rules.action)
                throw SetupError("seccomp: " + describe(rule, i) + ": the rules of " + where +
                                 " must all have one action");
            rules.action = rule.action;
            rules.conditions.push_back(rule.conditions);
        }
        // Every call gets the default, as in the filter.
        if (rules.conditions.empty()) continue;
        supervised_.emplace(nr, std::move(rules));
    }
}

std::shared_ptr<const SeccompFilter> SeccompFilter::compile(const SeccompPolicy& policy,
                                                            bool report_sockets) {
    reject_ambiguous_rules(policy);
    reject_rules_for_own_syscalls(policy);
    auto filter = std::make_shared<SeccompFilter>();
    filter->reports_sockets_ = report_sockets && can_report_sockets(policy);
    filter->take_supervised_rules(policy);

    const std::uint32_t default_action = to_scmp_action(policy.default_action, "default action");
    Ctx ctx(seccomp_init(default_action));
    if (!ctx) throw SetupError("seccomp: seccomp_init failed");

    // Only the native arch is in the filter, so i386 (`int 0x80`) calls hit the bad-arch
    // action. libseccomp's x86_64 filter also sends every number with the x32 bit
    // (0x40000000) there; tests/unit/seccomp_profile_tests.cpp checks both on the real kernel.
    check(seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS),
          "seccomp_attr_set(ACT_BADARCH)");
    // The program is exported, never loaded by libseccomp; the sandbox sets no_new_privs itself.
    check(seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_NNP, 0), "seccomp_attr_set(CTL_NNP)");
    // A binary tree of syscall numbers instead of a list: the kernel runs the filter for every
    // syscall number when it is installed (to cache the ones that are always allowed) and the
    // program runs it on every call, so the path's length counts twice (docs/performance.md).
    check(seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2),
          "seccomp_attr_set(CTL_OPTIMIZE)");

    for (std::size_t i = 0; i < policy.rules.size(); ++i) {
        const SeccompRule& rule = policy.rules[i];
        const int nr = seccomp_syscall_resolve_name(rule.syscall.c_str());
        if (nr == __NR_SCMP_ERROR)
            throw SetupError("seccomp: unknown syscall '" + rule.syscall + "'");
        // A pseudo number: libseccomp knows the name from another arch (socketcall, mmap2...).
        // The call cannot be made natively, so there is nothing to filter.
        if (nr < 0) continue;
        if (filter->supervised_.contains(nr)) continue;

        const std::uint32_t action = to_scmp_action(rule.action, describe(rule, i));
        // libseccomp refuses (EACCES) rules that repeat the default action. They are no-ops:
        // a call that matches no other rule of its syscall gets the default action anyway.
        if (action == default_action) continue;
        if (filter->reports_sockets_ && is_socket_call(rule.syscall)) {
            // Left to the supervisor (socket_verdict); in the filter it would overlap the
            // report, and libseccomp leaves overlapping rules with two actions undefined.
            const auto family = static_cast<std::uint32_t>(rule.conditions.front().value);
            const auto [it, added] =
                filter->socket_rules_.emplace(std::pair{nr, family}, rule.action);
            if (!added && it->second != rule.action)
                throw SetupError("seccomp: " + describe(rule, i) +
                                 ": another rule has the same conditions but a different action");
            continue;
        }

        std::vector<scmp_arg_cmp> cmps;
        cmps.reserve(rule.conditions.size());
        unsigned compared = 0;  // bit n: argument n already has a condition
        for (const SeccompArgCondition& c : rule.conditions) {
            if (c.arg > 5)
                throw SetupError("seccomp: " + describe(rule, i) + ": argument index " +
                                 std::to_string(c.arg) + " is not in 0..5");
            // libseccomp would only say EINVAL.
            if (compared & (1u << c.arg))
                throw SetupError("seccomp: " + describe(rule, i) + ": argument " +
                                 std::to_string(c.arg) +
                                 " is compared twice; libseccomp allows one comparison per "
                                 "argument and rule");
            compared |= 1u << c.arg;
            const scmp_compare op = to_scmp_op(c.op);
            if (op == _SCMP_CMP_MIN)
                throw SetupError("seccomp: " + describe(rule, i) + ": invalid comparison");
            // For SCMP_CMP_MASKED_EQ datum_a is the mask and datum_b the value.
            const bool masked = c.op == SeccompArgCondition::Op::masked_eq;
            cmps.push_back(
                scmp_arg_cmp{c.arg, op, masked ? c.mask : c.value, masked ? c.value : 0});
        }
        const int rc =
            seccomp_rule_add_array(ctx.get(), action, nr, static_cast<unsigned>(cmps.size()),
                                   cmps.empty() ? nullptr : cmps.data());
        if (rc == -EEXIST)
            throw SetupError("seccomp: " + describe(rule, i) +
                             ": another rule has the same conditions but a different action");
        check(rc, "seccomp_rule_add(" + describe(rule, i) + ")");
    }

    if (filter->reports_sockets_) {
        // 64-bit: a domain of AF_UNIX with any high bit set is reported too, and the
        // supervisor reads it as the kernel does.
        for (const int nr : {SCMP_SYS(socket), SCMP_SYS(socketpair)})
            check(seccomp_rule_add(ctx.get(), SCMP_ACT_NOTIFY, nr, 1,
                                   SCMP_A0(SCMP_CMP_NE, static_cast<scmp_datum_t>(AF_UNIX))),
                  "seccomp_rule_add(report sockets)");
    }

    // A kill default reports them already.
    if (default_action != SCMP_ACT_NOTIFY) {
        for (const auto& [nr, rules] : filter->supervised_)
            check(seccomp_rule_add(ctx.get(), SCMP_ACT_NOTIFY, nr, 0),
                  "seccomp_rule_add(report " + syscall_name(nr) + ")");
    }

    // libseccomp 2.5 exports only to a file descriptor; a memfd keeps it off the filesystem.
    UniqueFd memfd(memfd_create("sandboxd-seccomp-bpf", MFD_CLOEXEC));
    if (!memfd) throw SetupError(std::string("seccomp: memfd_create: ") + std::strerror(errno));
    check(seccomp_export_bpf(ctx.get(), memfd.get()), "seccomp_export_bpf");

    struct stat st {};
    if (fstat(memfd.get(), &st) != 0)
        throw SetupError(std::string("seccomp: fstat(memfd): ") + std::strerror(errno));
    const auto size = static_cast<std::size_t>(st.st_size);
    if (size == 0 || size % sizeof(sock_filter) != 0)
        throw SetupError("seccomp: exported BPF has invalid size " + std::to_string(size));
    // The kernel refuses longer programs with EINVAL at install time, inside the child, where
    // the error is much harder to report; catch it here.
    if (size / sizeof(sock_filter) > BPF_MAXINSNS)
        throw SetupError("seccomp: filter has " + std::to_string(size / sizeof(sock_filter)) +
                         " instructions, the kernel allows " + std::to_string(BPF_MAXINSNS));

    filter->instructions_.resize(size / sizeof(sock_filter));
    auto* out = reinterpret_cast<char*>(filter->instructions_.data());
    std::size_t done = 0;
    while (done < size) {
        const ssize_t n = pread(memfd.get(), out + done, size - done, static_cast<off_t>(done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw SetupError(std::string("seccomp: read(memfd): ") + std::strerror(errno));
        if (n == 0) throw SetupError("seccomp: exported BPF is shorter than its memfd");
        done += static_cast<std::size_t>(n);
    }
    filter->program_.len = static_cast<unsigned short>(filter->instructions_.size());
    filter->program_.filter = filter->instructions_.data();
    return filter;
}

std::string syscall_name(int number) {
    return resolve(SCMP_ARCH_NATIVE, number);
}

std::string syscall_name(int number, std::uint32_t audit_arch) {
    switch (audit_arch) {
        case AUDIT_ARCH_X86_64:
            return resolve(SCMP_ARCH_X86_64, number);
        case AUDIT_ARCH_I386:
            return resolve(SCMP_ARCH_X86, number);
        default: {
            char arch[16];
            std::snprintf(arch, sizeof arch, "0x%x", static_cast<unsigned>(audit_arch));
            return "syscall " + std::to_string(number) + " (arch " + arch + ")";
        }
    }
}

}  // namespace isolate
