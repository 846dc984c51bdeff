#include "seccomp_profile.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace sandboxd {
namespace {

namespace fs = std::filesystem;
using isolate::SeccompAction;
using isolate::SeccompArgCondition;
using isolate::SeccompPolicy;
using isolate::SeccompRule;
using nlohmann::json;

// Profiles are a few KiB; the cap only stops a mistyped path (a device, a log) from being
// slurped into memory.
constexpr std::uintmax_t max_profile_size = 1 << 20;

// Highest errno the kernel's syscall return convention can carry.
constexpr unsigned long max_errno = 4095;

constexpr std::array<std::pair<std::string_view, int>, 8> errno_names{{
    {"EPERM", EPERM},
    {"ENOSYS", ENOSYS},
    {"EACCES", EACCES},
    {"EINVAL", EINVAL},
    {"ENOTSUP", ENOTSUP},
    {"EOPNOTSUPP", EOPNOTSUPP},
    {"EAFNOSUPPORT", EAFNOSUPPORT},
    {"ENOENT", ENOENT},
}};

constexpr std::array<std::pair<std::string_view, SeccompArgCondition::Op>, 7> op_names{{
    {"eq", SeccompArgCondition::Op::eq},
    {"ne", SeccompArgCondition::Op::ne},
    {"lt", SeccompArgCondition::Op::lt},
    {"le", SeccompArgCondition::Op::le},
    {"gt", SeccompArgCondition::Op::gt},
    {"ge", SeccompArgCondition::Op::ge},
    {"masked_eq", SeccompArgCondition::Op::masked_eq},
}};

std::string hex(std::uint64_t v) {
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v, 16);
    (void)ec;
    return "0x" + std::string(buf, end);
}

// Everything needed to report an error at the right place.
class Context {
  public:
    explicit Context(std::string name) : name_(std::move(name)) {}

    [[noreturn]] void fail(const std::string& where, const std::string& problem) const {
        std::string msg = "seccomp profile " + name_ + ": ";
        if (!where.empty()) msg += where + ": ";
        throw SeccompProfileError(msg + problem);
    }

    const std::string& name() const { return name_; }

  private:
    std::string name_;
};

void check_keys(const Context& ctx, const std::string& where, const json& object,
                std::initializer_list<std::string_view> allowed) {
    for (const auto& [key, value] : object.items()) {
        if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
        std::string expected;
        for (std::string_view a : allowed) {
            if (!expected.empty()) expected += ", ";
            expected += a;
        }
        ctx.fail(where, "unknown key '" + key + "' (expected one of: " + expected + ")");
    }
}

const json& require(const Context& ctx, const std::string& where, const json& object,
                    const char* key) {
    auto it = object.find(key);
    if (it == object.end()) ctx.fail(where, std::string("missing key '") + key + "'");
    return *it;
}

std::string join(const std::string& where, const std::string& key) {
    return where.empty() ? key : where + "." + key;
}

const std::string& as_string(const Context& ctx, const std::string& where, const json& j) {
    if (!j.is_string()) ctx.fail(where, std::string("expected a string, got ") + j.type_name());
    return j.get_ref<const std::string&>();
}

// A JSON unsigned integer, or a string "0x..." so masks and ioctl numbers stay readable.
std::uint64_t as_u64(const Context& ctx, const std::string& where, const json& j) {
    if (j.is_number_unsigned()) return j.get<std::uint64_t>();
    if (j.is_string()) {
        const std::string& s = j.get_ref<const std::string&>();
        if (s.size() > 2 && s.size() <= 18 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
            std::uint64_t v = 0;
            auto [end, ec] = std::from_chars(s.data() + 2, s.data() + s.size(), v, 16);
            if (ec == std::errc() && end == s.data() + s.size()) return v;
        }
        ctx.fail(where, "'" + s + "' is not a hexadecimal number like \"0x5412\"");
    }
    if (j.is_number_integer()) ctx.fail(where, "must not be negative");
    ctx.fail(where, std::string("expected an unsigned integer or a \"0x...\" string, got ") +
                        j.type_name());
}

SeccompAction parse_action(const Context& ctx, const std::string& where, const json& j) {
    const std::string& s = as_string(ctx, where, j);
    if (s == "allow") return {SeccompAction::Kind::allow, 0};
    if (s == "kill") return {SeccompAction::Kind::kill, 0};
    if (s.starts_with("errno:")) {
        const std::string_view arg = std::string_view(s).substr(6);
        if (!arg.empty() &&
            std::all_of(arg.begin(), arg.end(), [](char c) { return c >= '0' && c <= '9'; })) {
            unsigned long n = 0;
            auto [end, ec] = std::from_chars(arg.data(), arg.data() + arg.size(), n);
            if (ec != std::errc() || end != arg.data() + arg.size() || n < 1 || n > max_errno)
                ctx.fail(where,
                         "errno number in '" + s + "' is not in 1.." + std::to_string(max_errno));
            return {SeccompAction::Kind::errno_, static_cast<int>(n)};
        }
        for (const auto& [name, value] : errno_names)
            if (name == arg) return {SeccompAction::Kind::errno_, value};
        std::string known;
        for (const auto& [name, value] : errno_names)
            known += (known.empty() ? "" : ", ") + std::string(name);
        ctx.fail(where, "unknown errno name '" + std::string(arg) + "' in '" + s +
                            "' (known: " + known + ", or a number)");
    }
    ctx.fail(where, "unknown action '" + s +
                        "' (expected \"allow\", \"kill\", \"errno:<NAME>\" or \"errno:<number>\")");
}

SeccompArgCondition parse_condition(const Context& ctx, const std::string& where, const json& j) {
    if (!j.is_object()) ctx.fail(where, std::string("expected an object, got ") + j.type_name());
    check_keys(ctx, where, j, {"index", "op", "value", "mask"});

    SeccompArgCondition c;
    const json& index = require(ctx, where, j, "index");
    if (!index.is_number_unsigned())
        ctx.fail(join(where, "index"),
                 std::string("expected an integer 0..5, got ") +
                     (index.is_number_integer() ? "a negative number" : index.type_name()));
    if (index.get<std::uint64_t>() > 5)
        ctx.fail(join(where, "index"), std::to_string(index.get<std::uint64_t>()) +
                                           " is not in 0..5 (syscalls have six arguments)");
    c.arg = index.get<unsigned>();

    const std::string& op = as_string(ctx, join(where, "op"), require(ctx, where, j, "op"));
    auto found = std::find_if(op_names.begin(), op_names.end(),
                              [&](const auto& p) { return p.first == op; });
    if (found == op_names.end())
        ctx.fail(join(where, "op"),
                 "unknown op '" + op + "' (expected eq, ne, lt, le, gt, ge or masked_eq)");
    c.op = found->second;

    c.value = as_u64(ctx, join(where, "value"), require(ctx, where, j, "value"));
    if (c.op == SeccompArgCondition::Op::masked_eq) {
        c.mask = as_u64(ctx, join(where, "mask"), require(ctx, where, j, "mask"));
        if ((c.value & ~c.mask) != 0)
            ctx.fail(where, "value " + hex(c.value) + " has bits outside mask " + hex(c.mask) +
                                ", so the rule could never match");
    } else if (j.contains("mask")) {
        ctx.fail(join(where, "mask"), "only op masked_eq takes a mask");
    }
    return c;
}

// Base names are plain file stems so a profile cannot reach outside its directory.
bool valid_base_name(const std::string& s) {
    return !s.empty() && s.front() != '.' && std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '-' || c == '.';
    });
}

bool valid_syscall_name(const std::string& s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    });
}

json parse_json(const Context& ctx, std::string_view text) {
    // nlohmann keeps the last of repeated keys; in a security policy a silently dropped
    // "action" is a trap, so repeated keys are an error.
    std::vector<std::set<std::string>> open_objects;
    std::string duplicate;
    auto callback = [&](int, json::parse_event_t event, json& parsed) {
        switch (event) {
            case json::parse_event_t::object_start:
                open_objects.emplace_back();
                break;
            case json::parse_event_t::object_end:
                if (!open_objects.empty()) open_objects.pop_back();
                break;
            case json::parse_event_t::key:
                if (!open_objects.empty() &&
                    !open_objects.back().insert(parsed.get<std::string>()).second &&
                    duplicate.empty())
                    duplicate = parsed.get<std::string>();
                break;
            default:
                break;
        }
        return true;
    };
    json doc;
    try {
        doc = json::parse(text, callback);
    } catch (const json::parse_error& e) {
        ctx.fail("", std::string("invalid JSON: ") + e.what());
    }
    if (!duplicate.empty()) ctx.fail("", "key '" + duplicate + "' appears twice in one object");
    return doc;
}

std::string read_profile(const Context& ctx, const fs::path& file) {
    std::error_code ec;
    const auto status = fs::status(file, ec);
    if (ec) ctx.fail("", "cannot read: " + ec.message());
    if (!fs::is_regular_file(status)) ctx.fail("", "not a regular file");
    const std::uintmax_t size = fs::file_size(file, ec);
    if (ec) ctx.fail("", "cannot read: " + ec.message());
    if (size > max_profile_size) ctx.fail("", "larger than 1 MiB");
    std::ifstream in(file, std::ios::binary);
    if (!in) ctx.fail("", std::string("cannot open: ") + std::strerror(errno));
    std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    if (in.bad()) ctx.fail("", "read error");
    return text;
}

SeccompPolicy load_file(const fs::path& file, std::vector<fs::path>& chain);

// `chain` holds the canonical paths of the profiles being loaded, outermost first.
SeccompPolicy parse_profile(const Context& ctx, std::string_view text, const fs::path& dir,
                            std::vector<fs::path>& chain) {
    const json doc = parse_json(ctx, text);
    if (!doc.is_object())
        ctx.fail("", std::string("expected a JSON object at top level, got ") + doc.type_name());
    check_keys(ctx, "", doc,
               {"description", "base", "default_action", "supervised_syscalls", "rules"});

    if (auto it = doc.find("description"); it != doc.end()) as_string(ctx, "description", *it);

    SeccompPolicy policy;  // default_action allow, no rules
    if (auto it = doc.find("base"); it != doc.end()) {
        const std::string& base = as_string(ctx, "base", *it);
        if (!valid_base_name(base))
            ctx.fail("base", "'" + base +
                                 "' is not a profile name (letters, digits, '_', '-', '.'; "
                                 "the file <name>.json in the same directory)");
        const fs::path base_file = dir / (base + ".json");
        std::error_code ec;
        const fs::path canonical = fs::canonical(base_file, ec);
        // A missing file is reported by load_file; only an existing one can close a cycle.
        if (!ec && std::find(chain.begin(), chain.end(), canonical) != chain.end()) {
            std::string cycle;
            for (const fs::path& p : chain) cycle += p.filename().string() + " -> ";
            ctx.fail("base", "cycle in base profiles: " + cycle + canonical.filename().string());
        }
        try {
            policy = load_file(base_file, chain);
        } catch (const SeccompProfileError& e) {
            throw SeccompProfileError(std::string(e.what()) + " (base of " + ctx.name() + ")");
        }
    }
    // Without its own default_action a profile inherits its base's: resetting to "allow" would
    // silently open every syscall an allow-list base meant to close.
    if (auto it = doc.find("default_action"); it != doc.end())
        policy.default_action = parse_action(ctx, "default_action", *it);

    // Added to the base's: which calls the supervisor checks is a matter of speed, and the
    // rules stay whatever the profiles say.
    if (auto it = doc.find("supervised_syscalls"); it != doc.end()) {
        if (!it->is_array())
            ctx.fail("supervised_syscalls",
                     std::string("expected an array of syscall names, got ") + it->type_name());
        std::set<std::string> listed;
        for (std::size_t k = 0; k < it->size(); ++k) {
            const std::string where = "supervised_syscalls[" + std::to_string(k) + "]";
            const std::string& name = as_string(ctx, where, (*it)[k]);
            if (!valid_syscall_name(name)) ctx.fail(where, "'" + name + "' is not a syscall name");
            if (!listed.insert(name).second) ctx.fail(where, "'" + name + "' is listed twice");
        }
        policy.supervised_syscalls.merge(listed);
    }

    const json& rules = require(ctx, "", doc, "rules");
    if (!rules.is_array())
        ctx.fail("rules", std::string("expected an array, got ") + rules.type_name());

    struct Seen {
        std::size_t rule;
        bool unconditional;
    };
    std::map<std::string, Seen> seen;  // syscalls this profile has rules for
    std::vector<SeccompRule> own;
    for (std::size_t i = 0; i < rules.size(); ++i) {
        const std::string where = "rules[" + std::to_string(i) + "]";
        const json& rule = rules[i];
        if (!rule.is_object())
            ctx.fail(where, std::string("expected an object, got ") + rule.type_name());
        check_keys(ctx, where, rule, {"syscalls", "action", "args", "comment"});
        if (auto it = rule.find("comment"); it != rule.end())
            as_string(ctx, join(where, "comment"), *it);

        const SeccompAction action =
            parse_action(ctx, join(where, "action"), require(ctx, where, rule, "action"));

        std::vector<SeccompArgCondition> conditions;
        if (auto it = rule.find("args"); it != rule.end()) {
            if (!it->is_array())
                ctx.fail(join(where, "args"),
                         std::string("expected an array, got ") + it->type_name());
            std::map<unsigned, std::size_t> compared;  // argument index -> args[] position
            for (std::size_t k = 0; k < it->size(); ++k) {
                const std::string arg_where = where + ".args[" + std::to_string(k) + "]";
                conditions.push_back(parse_condition(ctx, arg_where, (*it)[k]));
                auto [prev, fresh] = compared.emplace(conditions.back().arg, k);
                if (!fresh)
                    ctx.fail(arg_where,
                             "argument " + std::to_string(conditions.back().arg) +
                                 " is already compared in args[" + std::to_string(prev->second) +
                                 "]; libseccomp allows one comparison per argument and rule, "
                                 "use several rules instead");
            }
        }

        const json& syscalls = require(ctx, where, rule, "syscalls");
        if (!syscalls.is_array() || syscalls.empty())
            ctx.fail(join(where, "syscalls"),
                     std::string("expected a non-empty array of syscall names, got ") +
                         (syscalls.is_array() ? "an empty array" : syscalls.type_name()));
        for (std::size_t k = 0; k < syscalls.size(); ++k) {
            const std::string name_where = where + ".syscalls[" + std::to_string(k) + "]";
            const std::string& name = as_string(ctx, name_where, syscalls[k]);
            if (!valid_syscall_name(name))
                ctx.fail(name_where, "'" + name + "' is not a syscall name");
            const bool unconditional = conditions.empty();
            auto [it, fresh] = seen.emplace(name, Seen{i, unconditional});
            if (!fresh) {
                // Only several conditional rules may share a syscall: any other repetition
                // inside one profile has no single obvious meaning.
                if (it->second.rule == i)
                    ctx.fail(name_where, "'" + name + "' is listed twice in this rule");
                if (unconditional || it->second.unconditional)
                    ctx.fail(name_where, "'" + name + "' already has a rule in this profile (" +
                                             "rules[" + std::to_string(it->second.rule) +
                                             "]); only conditional rules may repeat a syscall");
            }
            own.push_back(SeccompRule{name, action, conditions});
        }
    }

    // The profile's rules for a syscall replace whatever its base said about that syscall.
    std::erase_if(policy.rules,
                  [&](const SeccompRule& r) { return seen.find(r.syscall) != seen.end(); });
    policy.rules.insert(policy.rules.end(), std::make_move_iterator(own.begin()),
                        std::make_move_iterator(own.end()));
    return policy;
}

SeccompPolicy load_file(const fs::path& file, std::vector<fs::path>& chain) {
    const Context ctx("'" + file.string() + "'");
    const std::string text = read_profile(ctx, file);

    std::error_code ec;
    const fs::path canonical = fs::canonical(file, ec);
    if (ec) ctx.fail("", "cannot resolve path: " + ec.message());
    chain.push_back(canonical);
    SeccompPolicy policy = parse_profile(ctx, text, file.parent_path(), chain);
    chain.pop_back();
    return policy;
}

}  // namespace

isolate::SeccompPolicy load_seccomp_profile(const std::filesystem::path& file) {
    std::vector<fs::path> chain;
    return load_file(file, chain);
}

isolate::SeccompPolicy parse_seccomp_profile(std::string_view json,
                                             const std::filesystem::path& dir_for_includes) {
    std::vector<fs::path> chain;
    return parse_profile(Context("(inline)"), json, dir_for_includes, chain);
}

}  // namespace sandboxd
