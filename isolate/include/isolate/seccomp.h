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
    static std::shared_ptr<const SeccompFilter> compile(const SeccompPolicy& policy);

    SeccompFilter() = default;
    // program_ points into instructions_, so a copy would dangle.
    SeccompFilter(const SeccompFilter&) = delete;
    SeccompFilter& operator=(const SeccompFilter&) = delete;

    const sock_fprog* program() const { return &program_; }
    std::size_t instruction_count() const { return instructions_.size(); }

  private:
    std::vector<sock_filter> instructions_;
    sock_fprog program_{};
};

// "mount" for the native syscall number; "syscall <n>" if libseccomp does not know it.
std::string syscall_name(int number);
// The name for a syscall number of the given audit arch (AUDIT_ARCH_*).
std::string syscall_name(int number, std::uint32_t audit_arch);

}  // namespace isolate
