#pragma once

#include <linux/filter.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace isolate {

// What a rule does to a matching syscall.
struct SeccompAction {
    enum class Kind { allow, kill, errno_ } kind = Kind::kill;
    int errno_value = 0;  // for Kind::errno_

    bool operator==(const SeccompAction&) const = default;
};

// One argument condition; all conditions of a rule must hold (libseccomp semantics).
struct SeccompArgCondition {
    enum class Op { eq, ne, lt, le, gt, ge, masked_eq } op = Op::eq;
    unsigned arg = 0;  // 0..5
    std::uint64_t value = 0;
    std::uint64_t mask = 0;  // for masked_eq: (arg & mask) == value
};

struct SeccompRule {
    std::string syscall;
    SeccompAction action;
    std::vector<SeccompArgCondition> conditions;
};

// A profile, already parsed. Syscalls of non-native ABIs (i386, x32) are always killed.
struct SeccompPolicy {
    SeccompAction default_action{SeccompAction::Kind::allow, 0};
    std::vector<SeccompRule> rules;
    // Syscalls whose rules the supervisor applies instead of the filter. The filter reports
    // every call of theirs, which costs the caller a round trip (10 to 60 µs), and carries none
    // of their comparisons, which every run pays for when it installs the filter: for calls
    // programs seldom make and whose rules are long (personality's 32).
    std::set<std::string> supervised_syscalls;
};

// A compiled BPF program. The "kill" action is compiled to SECCOMP_RET_USER_NOTIF so the
// supervisor learns which syscall it was and then kills the whole sandbox; the program
// never gets to run the call either way.
class SeccompFilter {
  public:
    // `report_sockets`: make the filter one that reports_sockets() where the policy allows;
    // worth it only where network namespaces are kept from run to run (each report costs the
    // program 10 to 15 µs per socket on Linux 6.6 and later, 40 to 60 µs before).
    static std::shared_ptr<const SeccompFilter> compile(const SeccompPolicy& policy,
                                                        bool report_sockets = true);

    SeccompFilter() = default;
    // program_ points into instructions_, so a copy would dangle.
    SeccompFilter(const SeccompFilter&) = delete;
    SeccompFilter& operator=(const SeccompFilter&) = delete;

    const sock_fprog* program() const { return &program_; }
    std::size_t instruction_count() const { return instructions_.size(); }

    // True when every socket() and socketpair() call but those for AF_UNIX reaches the
    // supervisor as a notification, which answers it with socket_verdict(): then a run with
    // none made no socket but unix ones, and so cannot have moved an IP, TCP or UDP counter
    // of its network namespace nor left a flow label (netns_pool.h). Every other family is
    // reported, since some (AF_SMC, AF_RXRPC) make inet sockets inside the kernel. False
    // where the policy's own rules for these calls are more than a comparison of the family,
    // where its default action is not allow, or where it lets io_uring, which makes sockets
    // without either call, through.
    bool reports_sockets() const { return reports_sockets_; }
    // For a notification (syscall number, AUDIT_ARCH_*, first argument): nothing when it is
    // not a socket report, so a call the policy kills; otherwise the policy's action for the
    // call, which such a filter leaves to the supervisor.
    std::optional<SeccompAction> socket_verdict(int number, std::uint32_t audit_arch,
                                                std::uint64_t arg0) const;
    // For a notification: nothing when its syscall is not one of the policy's
    // supervised_syscalls; otherwise the policy's action for the call, which the filter left
    // to the supervisor. The arguments are registers, so the call runs with the values judged.
    std::optional<SeccompAction> supervised_verdict(int number, std::uint32_t audit_arch,
                                                    const std::array<std::uint64_t, 6>& args) const;

  private:
    void take_supervised_rules(const SeccompPolicy& policy);

    std::vector<sock_filter> instructions_;
    sock_fprog program_{};
    bool reports_sockets_ = false;
    // The policy's rules for socket and socketpair of a filter that reports_sockets(), but
    // those that repeat the default: (syscall number, family) -> action; any other family
    // gets the default, allow.
    std::map<std::pair<int, std::uint32_t>, SeccompAction> socket_rules_;
    // A supervised syscall's rules that differ from the default: all with one action, which a
    // call gets when every condition of any of them holds; any other call gets the default.
    struct SupervisedRules {
        SeccompAction action, otherwise;
        std::vector<std::vector<SeccompArgCondition>> conditions;
    };
    std::map<int, SupervisedRules> supervised_;  // by syscall number
};

// The calls the sandbox's own code makes under the filter, which pid 1 installs before it is
// ready: pid 1's from then on, and those of the program's process before its execve. The
// supervisor lets them through where the profile kills them (it tells them apart by pid and
// by the program's "exec" message), but an errno happens in the kernel and would fail every
// run, so compile() refuses a policy that answers one of them with an errno. `sendmsg`, which
// hands the listener over, must not be refused at all.
const std::vector<std::string>& sandbox_own_syscalls();

// "mount" for the native syscall number; "syscall <n>" if libseccomp does not know it.
std::string syscall_name(int number);
// The name for a syscall number of the given audit arch (AUDIT_ARCH_*).
std::string syscall_name(int number, std::uint32_t audit_arch);

}  // namespace isolate
