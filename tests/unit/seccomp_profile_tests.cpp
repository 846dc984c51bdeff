#include <doctest/doctest.h>
#include <linux/audit.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "isolate/error.h"
#include "isolate/seccomp.h"
#include "isolate/unique_fd.h"
#include "seccomp_profile.h"

namespace fs = std::filesystem;
using isolate::SeccompAction;
using isolate::SeccompArgCondition;
using isolate::SeccompFilter;
using isolate::SeccompPolicy;
using isolate::SeccompRule;
using isolate::SetupError;
using sandboxd::load_seccomp_profile;
using sandboxd::parse_seccomp_profile;
using sandboxd::SeccompProfileError;

namespace {

const fs::path profiles_dir = fs::path(SANDBOXD_SOURCE_DIR) / "seccomp-profiles";

std::vector<SeccompRule> rules_for(const SeccompPolicy& policy, const std::string& syscall) {
    std::vector<SeccompRule> out;
    for (const SeccompRule& r : policy.rules)
        if (r.syscall == syscall) out.push_back(r);
    return out;
}

// What the policy does with a call, evaluated like the filter would (first matching rule;
// the profiles never let matching rules of one syscall disagree).
SeccompAction evaluate(const SeccompPolicy& policy, const std::string& syscall,
                       std::array<std::uint64_t, 6> args) {
    for (const SeccompRule& r : policy.rules) {
        if (r.syscall != syscall) continue;
        bool all = true;
        for (const SeccompArgCondition& c : r.conditions) {
            const std::uint64_t a = args[c.arg];
            switch (c.op) {
                case SeccompArgCondition::Op::eq:
                    all = all && a == c.value;
                    break;
                case SeccompArgCondition::Op::ne:
                    all = all && a != c.value;
                    break;
                case SeccompArgCondition::Op::lt:
                    all = all && a < c.value;
                    break;
                case SeccompArgCondition::Op::le:
                    all = all && a <= c.value;
                    break;
                case SeccompArgCondition::Op::gt:
                    all = all && a > c.value;
                    break;
                case SeccompArgCondition::Op::ge:
                    all = all && a >= c.value;
                    break;
                case SeccompArgCondition::Op::masked_eq:
                    all = all && (a & c.mask) == c.value;
                    break;
            }
        }
        if (all) return r.action;
    }
    return policy.default_action;
}

bool is_kill(const SeccompAction& a) {
    return a.kind == SeccompAction::Kind::kill;
}
bool is_allow(const SeccompAction& a) {
    return a.kind == SeccompAction::Kind::allow;
}
bool is_errno(const SeccompAction& a, int e) {
    return a.kind == SeccompAction::Kind::errno_ && a.errno_value == e;
}

template <class Error = SeccompProfileError, class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    FAIL_CHECK("no exception was thrown");
    return {};
}

#define CHECK_CONTAINS(haystack, needle)                                   \
    CHECK_MESSAGE(std::string(haystack).find(needle) != std::string::npos, \
                  "'" << (haystack) << "' does not contain '" << (needle) << "'")

std::string parse_error(const std::string& json) {
    return error_of([&] { parse_seccomp_profile(json, profiles_dir); });
}

// A scratch directory for profiles that refer to each other.
class TempDir {
  public:
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "seccomp-profile-test.XXXXXX").string();
        REQUIRE(mkdtemp(tmpl.data()) != nullptr);
        path_ = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    fs::path write(const std::string& name, const std::string& text) const {
        const fs::path p = path_ / name;
        std::ofstream(p) << text;
        return p;
    }
    const fs::path& path() const { return path_; }

  private:
    fs::path path_;
};

SeccompPolicy default_policy() {
    return load_seccomp_profile(profiles_dir / "default.json");
}

}  // namespace

TEST_CASE("default.json parses and blocks what it must") {
    const SeccompPolicy policy = default_policy();
    CHECK(is_allow(policy.default_action));

    for (const char* name : {"mount",
                             "umount2",
                             "pivot_root",
                             "chroot",
                             "unshare",
                             "setns",
                             "keyctl",
                             "add_key",
                             "request_key",
                             "bpf",
                             "perf_event_open",
                             "userfaultfd",
                             "kexec_load",
                             "kexec_file_load",
                             "init_module",
                             "finit_module",
                             "delete_module",
                             "reboot",
                             "swapon",
                             "swapoff",
                             "acct",
                             "quotactl",
                             "quotactl_fd",
                             "syslog",
                             "settimeofday",
                             "clock_settime",
                             "clock_adjtime",
                             "adjtimex",
                             "open_by_handle_at",
                             "name_to_handle_at",
                             "open_tree",
                             "move_mount",
                             "fsopen",
                             "fsconfig",
                             "fsmount",
                             "fspick",
                             "mount_setattr",
                             "ptrace",
                             "process_vm_readv",
                             "process_vm_writev",
                             "kcmp",
                             "iopl",
                             "ioperm",
                             "lookup_dcookie",
                             "vhangup",
                             "uselib",
                             "fanotify_init",
                             "nfsservctl"}) {
        CAPTURE(name);
        const auto rules = rules_for(policy, name);
        REQUIRE(rules.size() == 1);
        CHECK(rules[0].conditions.empty());
        CHECK(is_kill(rules[0].action));
    }
    for (const char* name : {"clone3", "io_uring_setup", "io_uring_enter", "io_uring_register"}) {
        CAPTURE(name);
        const auto rules = rules_for(policy, name);
        REQUIRE(rules.size() == 1);
        CHECK(rules[0].conditions.empty());
        CHECK(is_errno(rules[0].action, ENOSYS));
    }

    SUBCASE("clone: one kill rule per namespace flag") {
        const std::set<std::uint64_t> flags{0x20000,    0x02000000, 0x04000000, 0x08000000,
                                            0x10000000, 0x20000000, 0x40000000};
        std::set<std::uint64_t> seen;
        for (const SeccompRule& r : rules_for(policy, "clone")) {
            CHECK(is_kill(r.action));
            REQUIRE(r.conditions.size() == 1);
            const SeccompArgCondition& c = r.conditions[0];
            CHECK(c.arg == 0);
            CHECK(c.op == SeccompArgCondition::Op::masked_eq);
            CHECK(c.mask == c.value);
            seen.insert(c.mask);
        }
        CHECK(seen == flags);
        // What glibc's pthread_create and fork pass must stay allowed.
        CHECK(is_allow(evaluate(policy, "clone", {0x3d0f00, 0, 0, 0, 0, 0})));
        CHECK(is_allow(evaluate(policy, "clone", {0x1200011, 0, 0, 0, 0, 0})));
        CHECK(is_kill(evaluate(policy, "clone", {0x10000000 | SIGCHLD, 0, 0, 0, 0, 0})));
        CHECK(is_kill(evaluate(policy, "clone", {0x7e020000, 0, 0, 0, 0, 0})));
    }

    SUBCASE("ioctl: TIOCSTI and TIOCLINUX, also with high bits set") {
        for (const SeccompRule& r : rules_for(policy, "ioctl")) {
            REQUIRE(r.conditions.size() == 1);
            CHECK(r.conditions[0].arg == 1);
            CHECK(r.conditions[0].op == SeccompArgCondition::Op::masked_eq);
            CHECK(r.conditions[0].mask == 0xffffffff);
        }
        CHECK(is_kill(evaluate(policy, "ioctl", {0, 0x5412, 0, 0, 0, 0})));
        CHECK(is_kill(evaluate(policy, "ioctl", {0, 0x541c, 0, 0, 0, 0})));
        CHECK(is_kill(evaluate(policy, "ioctl", {0, 0xdead00000000'5412, 0, 0, 0, 0})));
        CHECK(is_allow(evaluate(policy, "ioctl", {0, 0x5401 /* TCGETS */, 0, 0, 0, 0})));
    }

    SUBCASE("personality: only 0 and the 0xffffffff query") {
        CHECK(is_allow(evaluate(policy, "personality", {0, 0, 0, 0, 0, 0})));
        CHECK(is_allow(evaluate(policy, "personality", {0xffffffff, 0, 0, 0, 0, 0})));
        // The kernel sees only the low 32 bits, so these are 0 and the query for it.
        CHECK(is_allow(evaluate(policy, "personality", {0x1'00000000, 0, 0, 0, 0, 0})));
        CHECK(is_allow(evaluate(policy, "personality", {0xffffffff'ffffffff, 0, 0, 0, 0, 0})));
        for (std::uint64_t v : {0x8ull, 0x20000ull, 0x40000ull /* ADDR_NO_RANDOMIZE */,
                                0x400000ull /* READ_IMPLIES_EXEC */, 0xfffffffeull, 0x7fffffffull,
                                0x80000000ull, 0x12345678ull}) {
            CAPTURE(v);
            CHECK(is_kill(evaluate(policy, "personality", {v, 0, 0, 0, 0, 0})));
        }
        for (unsigned bit = 0; bit < 32; ++bit) {
            CAPTURE(bit);
            CHECK(is_kill(evaluate(policy, "personality", {1ull << bit, 0, 0, 0, 0, 0})));
            CHECK(is_kill(
                evaluate(policy, "personality", {0xffffffffull & ~(1ull << bit), 0, 0, 0, 0, 0})));
        }
    }

    SUBCASE("socket: AF_VSOCK refused as unsupported, also with high bits set; others allowed") {
        for (const char* name : {"socket", "socketpair"}) {
            CAPTURE(name);
            CHECK(is_errno(evaluate(policy, name, {40, 1, 0, 0, 0, 0}), EAFNOSUPPORT));
            CHECK(is_errno(evaluate(policy, name, {0xffffffff'00000028, 1, 0, 0, 0, 0}),
                           EAFNOSUPPORT));
            for (std::uint64_t family : {1ull /* unix */, 2ull, 10ull, 16ull /* netlink */})
                CHECK(is_allow(evaluate(policy, name, {family, 1, 0, 0, 0, 0})));
        }
    }

    CHECK(is_allow(evaluate(policy, "read", {0, 0, 0, 0, 0, 0})));
    CHECK(is_allow(evaluate(policy, "execve", {0, 0, 0, 0, 0, 0})));
}

TEST_CASE("default.json: every rule says why") {
    std::ifstream in(profiles_dir / "default.json");
    const nlohmann::json doc = nlohmann::json::parse(in);
    for (std::size_t i = 0; i < doc.at("rules").size(); ++i) {
        CAPTURE(i);
        const auto& rule = doc["rules"][i];
        REQUIRE(rule.contains("comment"));
        CHECK(rule["comment"].get<std::string>().size() > 10);
    }
}

TEST_CASE("a profile's rules replace its base's rules for the same syscall") {
    const SeccompPolicy base = default_policy();
    const SeccompPolicy derived = parse_seccomp_profile(R"({
        "base": "default",
        "rules": [
          {"syscalls": ["personality"], "action": "allow", "comment": "needs ADDR_NO_RANDOMIZE"},
          {"syscalls": ["ioctl"], "action": "errno:EPERM",
           "args": [{"index": 1, "op": "eq", "value": "0x5412"}]},
          {"syscalls": ["ioctl"], "action": "errno:EPERM",
           "args": [{"index": 1, "op": "eq", "value": 21532}]},
          {"syscalls": ["mbind"], "action": "errno:EPERM"}
        ]})",
                                                        profiles_dir);
    CHECK(is_allow(derived.default_action));

    const auto personality = rules_for(derived, "personality");
    REQUIRE(personality.size() == 1);
    CHECK(is_allow(personality[0].action));
    CHECK(is_allow(evaluate(derived, "personality", {0x40000, 0, 0, 0, 0, 0})));

    // Both conditional rules of this profile stay; both of the base's are gone.
    const auto ioctl = rules_for(derived, "ioctl");
    REQUIRE(ioctl.size() == 2);
    CHECK(is_errno(ioctl[0].action, EPERM));
    CHECK(is_errno(ioctl[1].action, EPERM));
    CHECK(ioctl[0].conditions[0].value == 0x5412);
    CHECK(ioctl[1].conditions[0].value == 0x541c);

    CHECK(rules_for(derived, "mbind").size() == 1);
    // Everything else is the base's.
    CHECK(rules_for(derived, "clone").size() == rules_for(base, "clone").size());
    CHECK(derived.rules.size() == base.rules.size() - 32 - 2 + 1 + 2 + 1);
}

TEST_CASE("supervised_syscalls: parsed, added to the base's, checked") {
    CHECK(default_policy().supervised_syscalls == std::set<std::string>{"personality"});
    const SeccompPolicy derived = parse_seccomp_profile(
        R"({"base": "default", "supervised_syscalls": ["mbind"], "rules": []})", profiles_dir);
    CHECK(derived.supervised_syscalls == std::set<std::string>{"mbind", "personality"});
    CHECK(parse_seccomp_profile(R"({"rules": []})", profiles_dir).supervised_syscalls.empty());

    CHECK_CONTAINS(parse_error(R"({"supervised_syscalls": "personality", "rules": []})"),
                   "supervised_syscalls: expected an array of syscall names, got string");
    CHECK_CONTAINS(parse_error(R"({"supervised_syscalls": [7], "rules": []})"),
                   "supervised_syscalls[0]: expected a string, got number");
    CHECK_CONTAINS(parse_error(R"({"supervised_syscalls": ["a b"], "rules": []})"),
                   "supervised_syscalls[0]: 'a b' is not a syscall name");
    CHECK_CONTAINS(parse_error(R"({"supervised_syscalls": ["mbind", "mbind"], "rules": []})"),
                   "supervised_syscalls[1]: 'mbind' is listed twice");
}

TEST_CASE("base chains, default_action inheritance and cycles") {
    TempDir dir;
    dir.write("strict.json", R"({"default_action": "kill",
        "rules": [{"syscalls": ["read", "write", "exit_group"], "action": "allow"}]})");
    dir.write("middle.json", R"({"base": "strict",
        "rules": [{"syscalls": ["write"], "action": "errno:5"}]})");
    const fs::path top = dir.write("top.json", R"({"base": "middle",
        "rules": [{"syscalls": ["openat"], "action": "allow"}]})");

    const SeccompPolicy policy = load_seccomp_profile(top);
    // No default_action anywhere but in strict.json: it must not fall back to allow.
    CHECK(is_kill(policy.default_action));
    CHECK(is_allow(evaluate(policy, "read", {})));
    CHECK(is_errno(evaluate(policy, "write", {}), 5));
    CHECK(is_allow(evaluate(policy, "openat", {})));
    CHECK(is_kill(evaluate(policy, "mount", {})));

    SUBCASE("a cycle is an error naming the chain") {
        dir.write("a.json", R"({"base": "b", "rules": []})");
        dir.write("b.json", R"({"base": "a", "rules": []})");
        const std::string msg = error_of([&] { load_seccomp_profile(dir.path() / "a.json"); });
        CHECK_CONTAINS(msg, "cycle in base profiles: a.json -> b.json -> a.json");
    }
    SUBCASE("a profile that is its own base") {
        dir.write("self.json", R"({"base": "self", "rules": []})");
        CHECK_CONTAINS(error_of([&] { load_seccomp_profile(dir.path() / "self.json"); }),
                       "cycle in base profiles: self.json -> self.json");
    }
    SUBCASE("an error in a base names the base file and who included it") {
        dir.write("broken.json", R"({"rules": [{"syscalls": ["read"], "action": "deny"}]})");
        const fs::path user = dir.write("user.json", R"({"base": "broken", "rules": []})");
        const std::string msg = error_of([&] { load_seccomp_profile(user); });
        CHECK_CONTAINS(msg, "broken.json': rules[0].action: unknown action 'deny'");
        CHECK_CONTAINS(msg, "(base of '" + user.string() + "')");
    }
    SUBCASE("a missing base") {
        const fs::path user = dir.write("user.json", R"({"base": "nope", "rules": []})");
        CHECK_CONTAINS(error_of([&] { load_seccomp_profile(user); }), "nope.json': cannot read");
    }
}

TEST_CASE("profile errors are precise") {
    SUBCASE("the file name") {
        TempDir dir;
        const fs::path file =
            dir.write("bad.json", R"({"rules": [{"syscalls": ["read"], "action": "allow"},
                                      {"syscalls": ["mount"], "action": "errno:EFOO"}]})");
        const std::string msg = error_of([&] { load_seccomp_profile(file); });
        CHECK_CONTAINS(msg, "seccomp profile '" + file.string() + "': rules[1].action");
        CHECK_CONTAINS(msg, "unknown errno name 'EFOO'");
        CHECK_CONTAINS(error_of([&] { load_seccomp_profile(dir.path() / "absent.json"); }),
                       "absent.json': cannot read");
    }
    CHECK_CONTAINS(parse_error(R"({"rules": [], "defualt_action": "allow"})"),
                   "unknown key 'defualt_action'");
    CHECK_CONTAINS(parse_error(R"({"rules": [{"syscalls": ["read"], "action": "kill"},
                                             {"syscalls": ["read2"], "acton": "kill"}]})"),
                   "rules[1]: unknown key 'acton'");
    CHECK_CONTAINS(parse_error(R"({"rules": [{"syscalls": "mount", "action": "kill"}]})"),
                   "rules[0].syscalls: expected a non-empty array of syscall names, got string");
    CHECK_CONTAINS(parse_error(R"({"rules": [{"syscalls": [], "action": "kill"}]})"),
                   "got an empty array");
    CHECK_CONTAINS(parse_error(R"({"rules": [{"syscalls": [42], "action": "kill"}]})"),
                   "rules[0].syscalls[0]: expected a string, got number");
    CHECK_CONTAINS(parse_error(R"({"rules": [{"syscalls": ["mount"]}]})"),
                   "rules[0]: missing key 'action'");
    CHECK_CONTAINS(parse_error(R"({"rules": [{"syscalls": ["mount"], "action": "deny"}]})"),
                   "rules[0].action: unknown action 'deny'");
    CHECK_CONTAINS(parse_error(R"({"rules": [{"syscalls": ["mount"], "action": "errno:0"}]})"),
                   "errno number in 'errno:0' is not in 1..4095");
    CHECK_CONTAINS(parse_error(R"({"rules": [{"syscalls": ["mount"], "action": "errno:eperm"}]})"),
                   "unknown errno name 'eperm'");
    CHECK_CONTAINS(parse_error(R"({"default_action": 1, "rules": []})"),
                   "default_action: expected a string, got number");
    CHECK_CONTAINS(parse_error(R"({"description": "no rules"})"), "missing key 'rules'");
    CHECK_CONTAINS(parse_error(R"([1, 2])"), "expected a JSON object at top level, got array");
    CHECK_CONTAINS(parse_error(R"({"rules": [)"), "invalid JSON");
    CHECK_CONTAINS(parse_error(R"({"rules": [{"syscalls": ["a"], "action": "kill",
                                              "action": "allow"}]})"),
                   "key 'action' appears twice");
    CHECK_CONTAINS(parse_error(R"({"base": "../etc/x", "rules": []})"),
                   "base: '../etc/x' is not a profile name");
    CHECK_CONTAINS(parse_error(R"({"rules": [{"syscalls": ["Mount"], "action": "kill"}]})"),
                   "rules[0].syscalls[0]: 'Mount' is not a syscall name");

    const std::string rule = R"({"rules": [{"syscalls": ["ioctl"], "action": "kill", "args": [)";
    CHECK_CONTAINS(parse_error(rule + R"({"index": 1, "op": "and", "value": 1}]}]})"),
                   "rules[0].args[0].op: unknown op 'and'");
    CHECK_CONTAINS(parse_error(rule + R"({"index": 6, "op": "eq", "value": 1}]}]})"),
                   "rules[0].args[0].index: 6 is not in 0..5");
    CHECK_CONTAINS(parse_error(rule + R"({"index": -1, "op": "eq", "value": 1}]}]})"),
                   "index: expected an integer 0..5, got a negative number");
    CHECK_CONTAINS(parse_error(rule + R"({"index": 1, "op": "eq"}]}]})"),
                   "rules[0].args[0]: missing key 'value'");
    CHECK_CONTAINS(parse_error(rule + R"({"index": 1, "op": "eq", "value": -3}]}]})"),
                   "value: must not be negative");
    CHECK_CONTAINS(parse_error(rule + R"({"index": 1, "op": "eq", "value": "12"}]}]})"),
                   "value: '12' is not a hexadecimal number");
    CHECK_CONTAINS(parse_error(rule + R"({"index": 1, "op": "eq", "value": 1.5}]}]})"),
                   "expected an unsigned integer or a \"0x...\" string, got number");
    CHECK_CONTAINS(parse_error(rule + R"({"index": 1, "op": "eq", "value": 1, "mask": 3}]}]})"),
                   "rules[0].args[0].mask: only op masked_eq takes a mask");
    CHECK_CONTAINS(parse_error(rule + R"({"index": 1, "op": "masked_eq", "value": 1}]}]})"),
                   "missing key 'mask'");
    CHECK_CONTAINS(parse_error(rule + R"({"index": 1, "op": "masked_eq", "value": 4,
                                          "mask": 3}]}]})"),
                   "value 0x4 has bits outside mask 0x3");
    CHECK_CONTAINS(parse_error(rule + R"({"index": 1, "op": "eq", "value": 1, "x": 0}]}]})"),
                   "rules[0].args[0]: unknown key 'x'");
    CHECK_CONTAINS(parse_error(rule + R"({"index": 1, "op": "ge", "value": 1},
                                         {"index": 1, "op": "le", "value": 9}]}]})"),
                   "rules[0].args[1]: argument 1 is already compared in args[0]");

    SUBCASE("repeating a syscall inside one profile") {
        CHECK_CONTAINS(parse_error(R"({"rules": [{"syscalls": ["mount"], "action": "kill"},
                                                 {"syscalls": ["mount"], "action": "allow"}]})"),
                       "rules[1].syscalls[0]: 'mount' already has a rule in this profile "
                       "(rules[0])");
        CHECK_CONTAINS(
            parse_error(R"({"rules": [{"syscalls": ["mount", "mount"], "action": "kill"}]})"),
            "'mount' is listed twice in this rule");
        CHECK_CONTAINS(parse_error(R"({"rules": [
              {"syscalls": ["clone"], "action": "kill",
               "args": [{"index": 0, "op": "masked_eq", "mask": 1, "value": 1}]},
              {"syscalls": ["clone"], "action": "kill"}]})"),
                       "only conditional rules may repeat a syscall");
    }
}

TEST_CASE("SeccompFilter::compile") {
    SUBCASE("the default profile") {
        const auto filter = SeccompFilter::compile(default_policy());
        REQUIRE(filter);
        CHECK(filter->instruction_count() > 10);
        CHECK(filter->instruction_count() <= BPF_MAXINSNS);
        CHECK(filter->program()->len == filter->instruction_count());
        CHECK(filter->program()->filter != nullptr);
        // The program starts by checking the architecture: BPF_LD|BPF_W|BPF_ABS of
        // seccomp_data.arch (offset 4).
        CHECK(filter->program()->filter[0].code == (BPF_LD | BPF_W | BPF_ABS));
        CHECK(filter->program()->filter[0].k == 4);
    }
    SUBCASE("an unknown syscall is named") {
        const SeccompPolicy policy = parse_seccomp_profile(
            R"({"rules": [{"syscalls": ["mount", "no_such_call"], "action": "kill"}]})",
            profiles_dir);
        CHECK(error_of<SetupError>([&] { SeccompFilter::compile(policy); }) ==
              "seccomp: unknown syscall 'no_such_call'");
    }
    SUBCASE("syscalls of other architectures are skipped") {
        const SeccompPolicy policy = parse_seccomp_profile(
            R"({"rules": [{"syscalls": ["socketcall", "mmap2", "mount"], "action": "kill"}]})",
            profiles_dir);
        CHECK(SeccompFilter::compile(policy)->instruction_count() > 0);
    }
    SUBCASE("an allow-list with errno actions") {
        SeccompPolicy policy;
        policy.default_action = {SeccompAction::Kind::kill, 0};
        policy.rules = {{"read", {SeccompAction::Kind::allow, 0}, {}},
                        {"sendmsg", {SeccompAction::Kind::allow, 0}, {}},  // sandbox_own_syscalls
                        {"readv", {SeccompAction::Kind::errno_, EPERM}, {}},
                        {"mount", {SeccompAction::Kind::kill, 0}, {}}};  // no-op, skipped
        CHECK(SeccompFilter::compile(policy)->instruction_count() > 0);
    }
    SUBCASE("sockets are reported only where the policy's socket rules compare the family alone") {
        CHECK(SeccompFilter::compile(default_policy())->reports_sockets());
        CHECK_FALSE(SeccompFilter::compile(default_policy(), false)->reports_sockets());
        auto reports = [](SeccompPolicy policy) {
            return SeccompFilter::compile(policy)->reports_sockets();
        };
        using Op = SeccompArgCondition::Op;
        auto socket_rule = [](const char* name, Op op, unsigned arg, std::uint64_t value,
                              std::uint64_t mask = 0xffffffff) {
            return SeccompRule{
                name, {SeccompAction::Kind::errno_, EPERM}, {{op, arg, value, mask}}};
        };
        const SeccompRule no_io_uring{"io_uring_setup", {SeccompAction::Kind::errno_, ENOSYS}, {}};
        SeccompPolicy policy;
        policy.rules = {no_io_uring};
        CHECK(reports(policy));
        // Any family may have rules, inet ones too: the supervisor applies them.
        policy.rules = {no_io_uring, socket_rule("socket", Op::masked_eq, 0, AF_VSOCK),
                        socket_rule("socketpair", Op::masked_eq, 0, AF_INET),
                        socket_rule("socket", Op::masked_eq, 0, AF_INET6)};
        CHECK(reports(policy));
        // io_uring makes sockets without socket(): it must be refused, unconditionally.
        policy.rules = {};
        CHECK_FALSE(reports(policy));
        policy.rules = {{"io_uring_setup", {SeccompAction::Kind::kill, 0}, {{Op::eq, 0, 1, 0}}}};
        CHECK_FALSE(reports(policy));
        // Rules the supervisor could not apply to the family alone.
        for (const SeccompRule& rule :
             {socket_rule("socket", Op::eq, 0, AF_VSOCK),  // 64-bit, where the kernel reads an int
              socket_rule("socket", Op::masked_eq, 0, AF_VSOCK, 0xff),
              socket_rule("socket", Op::masked_eq, 0, 0x1'00000000 | AF_VSOCK),  // never matches
              socket_rule("socketpair", Op::masked_eq, 1, SOCK_RAW),
              socket_rule("socket", Op::masked_eq, 0, AF_UNIX),  // refuses what passes unseen
              SeccompRule{"socket", {SeccompAction::Kind::kill, 0}, {}},
              SeccompRule{"socket",
                          {SeccompAction::Kind::errno_, EPERM},
                          {{Op::masked_eq, 0, AF_INET, 0xffffffff}, {Op::eq, 1, SOCK_RAW, 0}}}}) {
            CAPTURE(rule.syscall);
            policy.rules = {no_io_uring, rule};
            CHECK_FALSE(reports(policy));
        }
        policy.rules = {no_io_uring};
        for (const std::string& own : isolate::sandbox_own_syscalls())
            policy.rules.push_back({own, {SeccompAction::Kind::allow, 0}, {}});
        policy.default_action = {SeccompAction::Kind::errno_, EPERM};
        CHECK_FALSE(reports(policy));
        // An allow rule repeats the default, so it is a no-op beside another action for the
        // same family, with reports as without.
        policy = {};
        policy.rules = {no_io_uring, socket_rule("socket", Op::masked_eq, 0, AF_PACKET),
                        SeccompRule{"socket",
                                    {SeccompAction::Kind::allow, 0},
                                    {{Op::masked_eq, 0, AF_PACKET, 0xffffffff}}}};
        CHECK(reports(policy));
        CHECK(is_errno(*SeccompFilter::compile(policy)->socket_verdict(
                           SYS_socket, AUDIT_ARCH_X86_64, AF_PACKET),
                       EPERM));
        // Two actions for one family are refused, whether the supervisor or the filter
        // applies them.
        policy.rules.push_back({"socket",
                                {SeccompAction::Kind::kill, 0},
                                {{Op::masked_eq, 0, AF_PACKET, 0xffffffff}}});
        for (const bool report : {true, false})
            CHECK_THROWS_WITH_AS(SeccompFilter::compile(policy, report),
                                 doctest::Contains("same conditions but a different action"),
                                 SetupError);
    }
    SUBCASE("a socket report's verdict is the policy's") {
        const SeccompPolicy policy = default_policy();
        const auto filter = SeccompFilter::compile(policy);
        for (const char* name : {"socket", "socketpair"}) {
            const int nr = name == std::string("socket") ? SYS_socket : SYS_socketpair;
            for (std::uint64_t high : {0ull, 0xffffffff'00000000ull, 0x1'00000000ull}) {
                for (std::uint64_t family = 0; family < 64; ++family) {
                    CAPTURE(name);
                    CAPTURE(high);
                    CAPTURE(family);
                    const auto verdict =
                        filter->socket_verdict(nr, AUDIT_ARCH_X86_64, high | family);
                    REQUIRE(verdict);
                    const SeccompAction expected = evaluate(policy, name, {family, 1, 0, 0, 0, 0});
                    CHECK(verdict->kind == expected.kind);
                    CHECK(verdict->errno_value == expected.errno_value);
                }
            }
        }
        CHECK(is_errno(*filter->socket_verdict(SYS_socketpair, AUDIT_ARCH_X86_64, AF_VSOCK),
                       EAFNOSUPPORT));
        CHECK(is_allow(*filter->socket_verdict(SYS_socket, AUDIT_ARCH_X86_64, 43 /* AF_SMC */)));
        // Not socket reports: calls the policy kills.
        CHECK_FALSE(filter->socket_verdict(SYS_socket, AUDIT_ARCH_I386, AF_INET));
        CHECK_FALSE(filter->socket_verdict(SYS_unshare, AUDIT_ARCH_X86_64, 0));
        CHECK_FALSE(SeccompFilter::compile(policy, false)
                        ->socket_verdict(SYS_socket, AUDIT_ARCH_X86_64, AF_INET));
        // A kill rule for a family stays a kill.
        SeccompPolicy killing = policy;
        killing.rules.push_back({"socket",
                                 {SeccompAction::Kind::kill, 0},
                                 {{SeccompArgCondition::Op::masked_eq, 0, AF_PACKET, 0xffffffff}}});
        const auto verdict = SeccompFilter::compile(killing)->socket_verdict(
            SYS_socket, AUDIT_ARCH_X86_64, AF_PACKET);
        REQUIRE(verdict);
        CHECK(is_kill(*verdict));
    }
    SUBCASE("a supervised syscall's rules leave the filter, and its verdict is the policy's") {
        const SeccompPolicy policy = default_policy();
        REQUIRE(policy.supervised_syscalls == std::set<std::string>{"personality"});
        const auto filter = SeccompFilter::compile(policy);
        SeccompPolicy in_filter = policy;
        in_filter.supervised_syscalls.clear();
        // personality's 32 rules take about 100 instructions in the filter.
        CHECK(filter->instruction_count() + 90 <
              SeccompFilter::compile(in_filter)->instruction_count());
        CHECK_FALSE(SeccompFilter::compile(in_filter)->supervised_verdict(
            SYS_personality, AUDIT_ARCH_X86_64, {0x40000, 0, 0, 0, 0, 0}));

        std::vector<std::uint64_t> values = {
            0,           0xffffffff, 0x40000,      0x0020000,
            0x8,         0xfffffffe, 0x1'00000000, 0xffffffff'ffffffff,
            0x1'00040000};
        for (int bit = 0; bit < 32; ++bit) {
            values.push_back(1ull << bit);
            values.push_back(0xffffffffull & ~(1ull << bit));
        }
        for (const std::uint64_t value : values) {
            CAPTURE(value);
            const auto verdict = filter->supervised_verdict(SYS_personality, AUDIT_ARCH_X86_64,
                                                            {value, 0, 0, 0, 0, 0});
            REQUIRE(verdict);
            CHECK(verdict->kind == evaluate(policy, "personality", {value, 0, 0, 0, 0, 0}).kind);
        }
        CHECK(is_allow(*filter->supervised_verdict(SYS_personality, AUDIT_ARCH_X86_64,
                                                   {0xffffffff, 0, 0, 0, 0, 0})));
        CHECK(is_kill(*filter->supervised_verdict(SYS_personality, AUDIT_ARCH_X86_64,
                                                  {0x40000, 0, 0, 0, 0, 0})));
        // Other calls, and other ABIs (killed by the filter itself), are not supervised.
        CHECK_FALSE(filter->supervised_verdict(SYS_unshare, AUDIT_ARCH_X86_64, {}));
        CHECK_FALSE(filter->supervised_verdict(SYS_personality, AUDIT_ARCH_I386, {}));

        // An errno rule is answered with its errno; any call no rule matches, with the default.
        SeccompPolicy errno_policy;
        errno_policy.supervised_syscalls = {"mbind"};
        errno_policy.rules = {{"mbind",
                               {SeccompAction::Kind::errno_, EPERM},
                               {{SeccompArgCondition::Op::gt, 1, 4096, 0}}}};
        const auto errno_filter = SeccompFilter::compile(errno_policy);
        CHECK(is_errno(
            *errno_filter->supervised_verdict(SYS_mbind, AUDIT_ARCH_X86_64, {0, 8192, 0, 0, 0, 0}),
            EPERM));
        CHECK(is_allow(*errno_filter->supervised_verdict(SYS_mbind, AUDIT_ARCH_X86_64,
                                                         {0, 4096, 0, 0, 0, 0})));
        // Rules that only repeat the default leave nothing to supervise.
        errno_policy.rules = {{"mbind", {SeccompAction::Kind::allow, 0}, {}}};
        CHECK_FALSE(SeccompFilter::compile(errno_policy)
                        ->supervised_verdict(SYS_mbind, AUDIT_ARCH_X86_64, {}));
    }
    SUBCASE("supervised syscalls the supervisor could not answer alone are refused") {
        SeccompPolicy policy;
        policy.supervised_syscalls = {"close"};
        CHECK_THROWS_WITH_AS(SeccompFilter::compile(policy),
                             doctest::Contains("the sandbox's own setup calls it"), SetupError);
        policy.supervised_syscalls = {"socket"};
        CHECK_THROWS_WITH_AS(SeccompFilter::compile(policy),
                             doctest::Contains("socket calls are reported"), SetupError);
        policy.supervised_syscalls = {"no_such_call"};
        CHECK_THROWS_WITH_AS(SeccompFilter::compile(policy),
                             doctest::Contains("unknown syscall 'no_such_call'"), SetupError);
        policy.supervised_syscalls = {"mbind"};
        policy.rules = {
            {"mbind", {SeccompAction::Kind::kill, 0}, {{SeccompArgCondition::Op::eq, 1, 1, 0}}},
            {"mbind",
             {SeccompAction::Kind::errno_, EPERM},
             {{SeccompArgCondition::Op::eq, 1, 2, 0}}}};
        CHECK_THROWS_WITH_AS(SeccompFilter::compile(policy),
                             doctest::Contains("must all have one action"), SetupError);
        policy.rules = {{"mbind", {SeccompAction::Kind::errno_, 0}, {}}};
        CHECK_THROWS_WITH_AS(SeccompFilter::compile(policy),
                             doctest::Contains("errno 0 is not in 1..4095"), SetupError);
        // Names of other architectures' calls are skipped, as in rules.
        policy.rules.clear();
        policy.supervised_syscalls = {"socketcall"};
        CHECK(SeccompFilter::compile(policy)->instruction_count() > 0);
    }
    SUBCASE("an errno for a call of the sandbox's own setup is refused; a kill is not") {
        // pid 1 installs the filter before the program starts (docs/sandbox.md).
        for (const std::string& own : isolate::sandbox_own_syscalls()) {
            CAPTURE(own);
            SeccompPolicy policy;
            policy.rules = {{own, {SeccompAction::Kind::errno_, EPERM}, {}}};
            const std::string expected = own == "sendmsg" ? "hands the seccomp listener over"
                                                          : "the sandbox's own setup calls " + own;
            CHECK_THROWS_WITH_AS(SeccompFilter::compile(policy),
                                 doctest::Contains(expected.c_str()), SetupError);
            policy.rules = {{own, {SeccompAction::Kind::kill, 0}, {}}};
            if (own == "sendmsg") {
                // pid 1 hands the listener over with it, before anyone listens.
                CHECK_THROWS_WITH_AS(SeccompFilter::compile(policy),
                                     doctest::Contains("hands the seccomp listener over"),
                                     SetupError);
            } else {
                CHECK(SeccompFilter::compile(policy)->instruction_count() > 0);
            }
        }
        // An errno for anything else is fine (default.json's clone3, io_uring, AF_VSOCK).
        CHECK(SeccompFilter::compile(default_policy())->instruction_count() > 0);
        // With an errno default, each must be allowed outright.
        SeccompPolicy strict;
        strict.default_action = {SeccompAction::Kind::errno_, EPERM};
        CHECK_THROWS_WITH_AS(SeccompFilter::compile(strict),
                             doctest::Contains("the default action is not allow"), SetupError);
        // With a kill default, only the listener's handover must be allowed outright.
        strict.default_action = {SeccompAction::Kind::kill, 0};
        CHECK_THROWS_WITH_AS(SeccompFilter::compile(strict),
                             doctest::Contains("calls sendmsg under the filter"), SetupError);
        strict.rules = {{"sendmsg", {SeccompAction::Kind::allow, 0}, {}}};
        CHECK(SeccompFilter::compile(strict)->instruction_count() > 0);
    }
    SUBCASE("policies libseccomp would misread are refused") {
        SeccompPolicy policy;
        policy.rules = {{"ioctl", {SeccompAction::Kind::kill, 0}, {}},
                        {"ioctl",
                         {SeccompAction::Kind::errno_, EPERM},
                         {{SeccompArgCondition::Op::eq, 1, 0x5412, 0}}}};
        CHECK_CONTAINS(error_of<SetupError>([&] { SeccompFilter::compile(policy); }),
                       "rule 1 (ioctl) is conditional but rule 0 already covers 'ioctl'");

        policy.rules = {{"ioctl",
                         {SeccompAction::Kind::kill, 0},
                         {{SeccompArgCondition::Op::eq, 1, 0x5412, 0}}},
                        {"ioctl",
                         {SeccompAction::Kind::errno_, EPERM},
                         {{SeccompArgCondition::Op::eq, 1, 0x5412, 0}}}};
        CHECK_CONTAINS(error_of<SetupError>([&] { SeccompFilter::compile(policy); }),
                       "rule 1 (ioctl): another rule has the same conditions");

        policy.rules = {{"read", {SeccompAction::Kind::errno_, 0}, {}}};
        CHECK_CONTAINS(error_of<SetupError>([&] { SeccompFilter::compile(policy); }),
                       "errno 0 is not in 1..4095");

        policy.rules = {
            {"read", {SeccompAction::Kind::kill, 0}, {{SeccompArgCondition::Op::eq, 6, 0, 0}}}};
        CHECK_CONTAINS(error_of<SetupError>([&] { SeccompFilter::compile(policy); }),
                       "argument index 6 is not in 0..5");
    }
}

TEST_CASE("syscall_name") {
    CHECK(isolate::syscall_name(SYS_mount) == "mount");
    CHECK(isolate::syscall_name(SYS_unshare, AUDIT_ARCH_X86_64) == "unshare");
    CHECK(isolate::syscall_name(20, AUDIT_ARCH_I386) == "getpid");
    CHECK(isolate::syscall_name(99999) == "syscall 99999");
    CHECK(isolate::syscall_name(1, 0x1234) == "syscall 1 (arch 0x1234)");
}

// ---- On the real kernel: the compiled default program, installed in a forked child. ----

namespace {

// Kills and reaps the child whatever the test's outcome.
class Child {
  public:
    explicit Child(pid_t pid) : pid_(pid) {}
    ~Child() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            wait();
        }
    }
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;

    pid_t pid() const { return pid_; }
    int wait() {
        int status = 0;
        while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
        pid_ = -1;
        return status;
    }

  private:
    pid_t pid_;
};

// Runs in the forked child: only async-signal-safe calls, exit codes instead of checks.
// One byte and room for one descriptor, as send_fd and receive_fd exchange them.
struct FdMessage {
    char byte = 0;
    iovec iov{&byte, 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};

    FdMessage() {
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
    }
    FdMessage(const FdMessage&) = delete;
    FdMessage& operator=(const FdMessage&) = delete;
};

// Passes `fd` over a unix socket with SCM_RIGHTS; async-signal-safe, for a forked child.
bool send_fd(int sock, int fd) {
    FdMessage m;
    cmsghdr* cmsg = CMSG_FIRSTHDR(&m.msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
    return sendmsg(sock, &m.msg, 0) == 1;
}

// The descriptor send_fd passed, or an invalid one.
isolate::UniqueFd receive_fd(int sock) {
    FdMessage m;
    if (recvmsg(sock, &m.msg, MSG_CMSG_CLOEXEC) != 1) return {};
    const cmsghdr* cmsg = CMSG_FIRSTHDR(&m.msg);
    if (cmsg == nullptr || cmsg->cmsg_type != SCM_RIGHTS) return {};
    int fd = -1;
    std::memcpy(&fd, CMSG_DATA(cmsg), sizeof fd);
    return isolate::UniqueFd(fd);
}

void install_in_child(const SeccompFilter& filter, unsigned flags, int& listener) {
    // SIGSYS dumps core by default; the test does not want core files.
    const rlimit no_core{0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) _exit(10);
    listener =
        static_cast<int>(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, filter.program()));
    if (listener < 0) _exit(11);
}

std::string describe_status(int status) {
    if (WIFEXITED(status)) return "exited with " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return std::string("killed by ") + strsignal(WTERMSIG(status));
    return "status " + std::to_string(status);
}

// A forked child under `filter` whose listener this process holds, as the supervisor does.
// `body` runs in the child after the hand-over and must end in _exit.
class ListenedChild {
  public:
    template <typename Body>
    ListenedChild(const SeccompFilter& filter, Body body) {
        int sv[2];
        REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        isolate::UniqueFd parent_end(sv[0]), child_end(sv[1]);
        const pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            int listener = -1;
            install_in_child(filter, SECCOMP_FILTER_FLAG_NEW_LISTENER, listener);
            if (!send_fd(sv[1], listener)) _exit(12);
            close(listener);
            body();
        }
        child_.emplace(pid);
        child_end.reset();
        listener_ = receive_fd(parent_end.get());
        if (!listener_) FAIL("child sent no listener: " << describe_status(child_->wait()));
    }

    pid_t pid() const { return child_->pid(); }
    int listener() const { return listener_.get(); }
    int wait() { return child_->wait(); }
    // The next notification, within 10 s.
    seccomp_notif next() {
        pollfd pfd{listener_.get(), POLLIN, 0};
        REQUIRE_MESSAGE(poll(&pfd, 1, 10'000) == 1, "no notification within 10 s");
        seccomp_notif notif{};  // the kernel insists on a zeroed buffer
        REQUIRE(ioctl(listener_.get(), SECCOMP_IOCTL_NOTIF_RECV, &notif) == 0);
        return notif;
    }

    // As when the supervisor stops listening.
    void close_listener() { listener_.reset(); }

  private:
    std::optional<Child> child_;
    isolate::UniqueFd listener_;
};

}  // namespace

TEST_CASE("kernel: a blocked syscall reaches the supervisor as a notification") {
    const auto filter = SeccompFilter::compile(default_policy());
    ListenedChild child(*filter, [] {
        // Allowed calls must go through; had either been blocked, the parent would see its
        // notification instead of unshare's.
        if (syscall(SYS_getpid) <= 0) _exit(14);
        syscall(SYS_unshare, 0);  // blocks until the parent kills us
        _exit(15);
    });
    const seccomp_notif notif = child.next();
    CHECK(notif.pid == static_cast<__u32>(child.pid()));
    CHECK(notif.data.arch == AUDIT_ARCH_X86_64);
    CHECK(isolate::syscall_name(notif.data.nr) == "unshare");
    CHECK(isolate::syscall_name(notif.data.nr, notif.data.arch) == "unshare");

    ::kill(child.pid(), SIGKILL);
    const int status = child.wait();
    CHECK_MESSAGE((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL), describe_status(status));
}

TEST_CASE("kernel: a supervised call is reported, and runs with the supervisor's leave") {
    const auto filter = SeccompFilter::compile(default_policy());
    ListenedChild child(*filter, [] {
        // The query returns the persona, which the supervisor's leave lets the kernel read.
        if (syscall(SYS_personality, 0xffffffffUL) != 0) _exit(13);
        syscall(SYS_personality, 0x0040000UL);  // ADDR_NO_RANDOMIZE: blocks until killed
        _exit(15);
    });
    auto answer = [&](const seccomp_notif& notif) {
        std::array<std::uint64_t, 6> args;
        std::copy(std::begin(notif.data.args), std::end(notif.data.args), args.begin());
        return filter->supervised_verdict(static_cast<int>(notif.data.nr), notif.data.arch, args);
    };
    seccomp_notif notif = child.next();
    CHECK(isolate::syscall_name(notif.data.nr) == "personality");
    auto verdict = answer(notif);
    REQUIRE(verdict);
    REQUIRE(is_allow(*verdict));
    seccomp_notif_resp response{};
    response.id = notif.id;
    response.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    REQUIRE(ioctl(child.listener(), SECCOMP_IOCTL_NOTIF_SEND, &response) == 0);

    notif = child.next();
    CHECK(isolate::syscall_name(notif.data.nr) == "personality");
    CHECK(notif.data.args[0] == 0x0040000);
    verdict = answer(notif);
    REQUIRE(verdict);
    CHECK(is_kill(*verdict));
    ::kill(child.pid(), SIGKILL);
    const int status = child.wait();
    CHECK_MESSAGE((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL), describe_status(status));
}

// Answers a socket report as the supervisor does: with the filter's verdict.
void answer_report(const SeccompFilter& filter, int listener, const seccomp_notif& notif) {
    const auto verdict =
        filter.socket_verdict(static_cast<int>(notif.data.nr), notif.data.arch, notif.data.args[0]);
    REQUIRE(verdict);
    REQUIRE(verdict->kind != SeccompAction::Kind::kill);
    seccomp_notif_resp response{};
    response.id = notif.id;
    if (verdict->kind == SeccompAction::Kind::allow)
        response.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    else
        response.error = -verdict->errno_value;
    REQUIRE(ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &response) == 0);
}

TEST_CASE("kernel: every socket but a unix one is reported, and gets the policy's verdict") {
    const auto filter = SeccompFilter::compile(default_policy());
    REQUIRE(filter->reports_sockets());
    ListenedChild child(*filter, [] {
        // A unix socket is not reported: had it been, the parent would see it first.
        if (syscall(SYS_socket, AF_UNIX, SOCK_DGRAM, 0) < 0) _exit(13);
        int pair[2];
        if (syscall(SYS_socketpair, AF_UNIX, SOCK_STREAM, 0, pair) != 0) _exit(14);
        // High bits in the domain do not hide it (the kernel reads an int).
        if (syscall(SYS_socket, 0xffffffff'00000000 | AF_INET6, SOCK_DGRAM, 0) < 0) _exit(15);
        // Not inet, yet reported: whatever the family may do inside the kernel.
        if (syscall(SYS_socket, AF_NETLINK, SOCK_RAW, 0 /* NETLINK_ROUTE */) < 0) _exit(16);
        // Refused by the policy, through the supervisor.
        if (syscall(SYS_socketpair, AF_VSOCK, SOCK_STREAM, 0, pair) == 0 || errno != EAFNOSUPPORT)
            _exit(17);
        _exit(0);
    });
    for (const auto& [nr, family] :
         {std::pair{SYS_socket, AF_INET6}, std::pair{SYS_socket, AF_NETLINK},
          std::pair{SYS_socketpair, AF_VSOCK}}) {
        CAPTURE(family);
        const seccomp_notif notif = child.next();
        CHECK(notif.data.nr == nr);
        CHECK((notif.data.args[0] & 0xffffffff) == static_cast<std::uint64_t>(family));
        answer_report(*filter, child.listener(), notif);
    }
    const int status = child.wait();
    CHECK_MESSAGE((WIFEXITED(status) && WEXITSTATUS(status) == 0), describe_status(status));
}

TEST_CASE("kernel: a report nobody answers fails with ENOSYS and makes nothing") {
    const auto filter = SeccompFilter::compile(default_policy());
    ListenedChild child(*filter, [] {
        // AF_UNIX, but a high bit makes the 64-bit comparison report it.
        const long fd = syscall(SYS_socket, 0x1'00000000 | AF_UNIX, SOCK_DGRAM, 0);
        _exit(fd < 0 && errno == ENOSYS ? 0 : 1);
    });
    const seccomp_notif notif = child.next();
    CHECK(notif.data.args[0] == (0x1'00000000 | AF_UNIX));
    child.close_listener();
    const int status = child.wait();
    CHECK_MESSAGE((WIFEXITED(status) && WEXITSTATUS(status) == 0), describe_status(status));
}

namespace {

// What socket(domain, SOCK_DGRAM, 0) comes to under `filter`, with this process in the
// supervisor's place (reports answered with their verdict, any other notification a kill):
// "made", the errno's name, or "killed".
std::string socket_outcome(const SeccompFilter& filter, std::uint64_t domain) {
    ListenedChild child(filter, [domain] {
        const long fd = syscall(SYS_socket, domain, SOCK_DGRAM, 0);
        _exit(fd >= 0 ? 0 : errno);
    });
    for (;;) {
        pollfd pfd{child.listener(), POLLIN, 0};
        REQUIRE_MESSAGE(poll(&pfd, 1, 10'000) == 1, "neither a notification nor an exit");
        if (!(pfd.revents & POLLIN)) break;  // POLLHUP: the child is gone
        seccomp_notif notif{};
        if (ioctl(child.listener(), SECCOMP_IOCTL_NOTIF_RECV, &notif) != 0) break;
        const auto verdict = filter.socket_verdict(static_cast<int>(notif.data.nr), notif.data.arch,
                                                   notif.data.args[0]);
        if (!verdict || verdict->kind == SeccompAction::Kind::kill) {
            ::kill(child.pid(), SIGKILL);
            child.wait();
            return "killed";
        }
        answer_report(filter, child.listener(), notif);
    }
    const int status = child.wait();
    if (!WIFEXITED(status)) return describe_status(status);
    return WEXITSTATUS(status) == 0 ? "made" : strerrorname_np(WEXITSTATUS(status));
}

}  // namespace

// The filter leaves a reporting profile's socket rules to the supervisor; what a program
// gets must not change.
TEST_CASE("kernel: socket calls come to the same with reports as with the rules in the filter") {
    SeccompPolicy policy = default_policy();  // AF_VSOCK: EAFNOSUPPORT
    auto family_rule = [](SeccompAction action, int family) {
        return SeccompRule{"socket",
                           action,
                           {{SeccompArgCondition::Op::masked_eq, 0,
                             static_cast<std::uint64_t>(family), 0xffffffff}}};
    };
    policy.rules.push_back(family_rule({SeccompAction::Kind::kill, 0}, AF_PACKET));
    policy.rules.push_back(family_rule({SeccompAction::Kind::errno_, EACCES}, AF_INET6));
    // A no-op allow beside an errno for the same family: the errno holds either way.
    policy.rules.push_back(family_rule({SeccompAction::Kind::allow, 0}, AF_NETLINK));
    policy.rules.push_back(family_rule({SeccompAction::Kind::errno_, EPERM}, AF_NETLINK));
    const auto reporting = SeccompFilter::compile(policy, true);
    const auto in_filter = SeccompFilter::compile(policy, false);
    REQUIRE(reporting->reports_sockets());
    REQUIRE_FALSE(in_filter->reports_sockets());
    const std::pair<int, const char*> expected[] = {
        {AF_UNIX, "made"},     {AF_INET, "made"},     {AF_INET6, "EACCES"},
        {AF_NETLINK, "EPERM"}, {AF_PACKET, "killed"}, {AF_VSOCK, "EAFNOSUPPORT"}};
    for (const auto& [family, outcome] : expected) {
        for (const std::uint64_t high : {0ull, 0xffffffff'00000000ull}) {
            CAPTURE(family);
            CAPTURE(high);
            CHECK(socket_outcome(*in_filter, high | family) == outcome);
            CHECK(socket_outcome(*reporting, high | family) == outcome);
        }
    }
}

namespace {

long int80_getpid() {
    long ret = 20;  // __NR_getpid on i386
    // int $0x80 from 64-bit code zeroes r8-r11.
    asm volatile("int $0x80" : "+a"(ret) : : "r8", "r9", "r10", "r11", "memory");
    return ret;
}

}  // namespace

TEST_CASE("kernel: non-native ABIs are killed") {
    const auto filter = SeccompFilter::compile(default_policy());

    SUBCASE("i386 int 0x80") {
        // Without the filter first: a kernel booted with ia32_emulation=0 (or without
        // IA32_EMULATION) refuses int 0x80 by itself and there is nothing to test.
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            // Such a kernel answers with SIGSEGV, which doctest's handler would report as a
            // crash of this test case.
            ::signal(SIGSEGV, SIG_DFL);
            _exit(int80_getpid() == syscall(SYS_getpid) ? 0 : 1);
        }
        const int baseline = Child(pid).wait();
        if (!(WIFEXITED(baseline) && WEXITSTATUS(baseline) == 0)) {
            MESSAGE("int 0x80 does not work on this kernel (" << describe_status(baseline)
                                                              << "); skipped");
            return;
        }

        pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            int unused = -1;
            install_in_child(*filter, 0, unused);
            int80_getpid();
            _exit(0);
        }
        const int status = Child(pid).wait();
        CHECK_MESSAGE((WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS), describe_status(status));
    }

    SUBCASE("x32") {
        const pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            int unused = -1;
            install_in_child(*filter, 0, unused);
            const long r = syscall(SYS_getpid | 0x40000000 /* __X32_SYSCALL_BIT */);
            _exit(r == -1 ? 2 : 3);
        }
        const int status = Child(pid).wait();
        // seccomp sees the number before the kernel decides whether x32 exists, so the
        // filter kills the process whether or not the kernel has CONFIG_X86_X32_ABI; a
        // -1/ENOSYS here would mean the filter let the call through.
        CHECK_MESSAGE((WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS), describe_status(status));
    }
}

TEST_CASE("kernel: AF_VSOCK sockets are refused with EAFNOSUPPORT") {
    // The filter's own rule; with socket reports the supervisor refuses them (tested above).
    const auto filter = SeccompFilter::compile(default_policy(), false);
    // Exit code 0: the socket was made; 1: EAFNOSUPPORT; 2: anything else.
    auto try_vsock = [&](bool filtered) {
        const pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            if (filtered) {
                int unused = -1;
                install_in_child(*filter, 0, unused);
            }
            const long fd = syscall(SYS_socket, 0xffffffff'00000000 | AF_VSOCK, SOCK_STREAM, 0);
            _exit(fd >= 0 ? 0 : errno == EAFNOSUPPORT ? 1 : 2);
        }
        return Child(pid).wait();
    };
    const int baseline = try_vsock(false);
    if (!(WIFEXITED(baseline) && WEXITSTATUS(baseline) == 0)) {
        MESSAGE("this kernel has no vsock (" << describe_status(baseline) << "); skipped");
        return;
    }
    const int status = try_vsock(true);
    CHECK_MESSAGE((WIFEXITED(status) && WEXITSTATUS(status) == 1), describe_status(status));
}
