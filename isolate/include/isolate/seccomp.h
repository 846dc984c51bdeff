#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace isolate {

// What a rule does to a matching syscall.
struct SeccompAction {
    enum class Kind { allow, kill, errno_ } kind = Kind::kill;
    int errno_value = 0;  // for Kind::errno_
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
};

// A compiled BPF program. The "kill" action is compiled to SECCOMP_RET_USER_NOTIF so the
// supervisor learns which syscall it was and then kills the whole sandbox; the program
// never gets to run the call either way.
class SeccompFilter {
  public:
    // `report_inet_sockets`: add the rules of reports_inet_sockets() where the policy allows;
    // worth it only where network namespaces are kept from run to run (each report costs the
    // program ~15 µs per inet socket).
    static std::shared_ptr<const SeccompFilter> compile(const SeccompPolicy& policy,
                                                        bool report_inet_sockets = true);

    SeccompFilter() = default;
    // program_ points into instructions_, so a copy would dangle.
    SeccompFilter(const SeccompFilter&) = delete;
    SeccompFilter& operator=(const SeccompFilter&) = delete;

    const sock_fprog* program() const { return &program_; }
    std::size_t instruction_count() const { return instructions_.size(); }
    // True when the filter also sends a notification for every socket(AF_INET or AF_INET6)
    // call, which the supervisor lets through (is_inet_socket_report): then a run without one
    // cannot have moved any counter of its network namespace's IP, TCP or UDP statistics
    // (netns_pool.h). False when the policy has rules of its own for `socket` that could
    // overlap those, or a default action other than allow.
    bool reports_inet_sockets() const { return reports_inet_sockets_; }

  private:
    std::vector<sock_filter> instructions_;
    sock_fprog program_{};
    bool reports_inet_sockets_ = false;
};

// Whether a notification (syscall number, AUDIT_ARCH_*, first argument) is the report of an
// inet socket being made, from a filter that reports_inet_sockets(); any other notification
// is a call the policy kills.
bool is_inet_socket_report(int number, std::uint32_t audit_arch, std::uint64_t arg0);

// "mount" for the native syscall number; "syscall <n>" if libseccomp does not know it.
std::string syscall_name(int number);
// The name for a syscall number of the given audit arch (AUDIT_ARCH_*).
std::string syscall_name(int number, std::uint32_t audit_arch);

}  // namespace isolate
