#include "protocol.h"

#include <algorithm>
#include <exception>
#include <initializer_list>
#include <iterator>
#include <numeric>

#include "encoding.h"

namespace sandboxd::protocol {
namespace {

using nlohmann::json;

// Thrown by the validators below and caught in parse_request only: it keeps every check a
// single line instead of threading an error value through each level.
struct BadRequest {
    std::string message;
};

[[noreturn]] void fail(std::string message) {
    throw BadRequest{std::move(message)};
}

std::string dump(const json& value) {
    // Never throws on bytes that are not UTF-8: they become U+FFFD.
    return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Client text inside an error message: escaped, so NULs and newlines stay visible and the
// line stays one line, and cut so a 16 MiB key does not come back as a 16 MiB message.
std::string quote(std::string_view text) {
    constexpr std::size_t max_bytes = 64;
    const bool cut = text.size() > max_bytes;
    if (cut) {
        std::size_t n = max_bytes;
        while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
        text = text.substr(0, n);
    }
    std::string out = dump(json(std::string(text)));
    if (cut) out += "...";
    return out;
}

std::string indexed(std::string_view name, std::size_t index) {
    return std::string(name) + "[" + std::to_string(index) + "]";
}

// The LimitOverrides keys a client may send, with where each lands in isolate::Limits.
struct IntegerLimit {
    const char* key;
    std::optional<std::uint64_t> LimitOverrides::*override;
    std::uint64_t isolate::Limits::*limit;
};

constexpr IntegerLimit integer_limits[] = {
    {"wall_time_ms", &LimitOverrides::wall_time_ms, &isolate::Limits::wall_time_ms},
    {"cpu_time_ms", &LimitOverrides::cpu_time_ms, &isolate::Limits::cpu_time_ms},
    {"memory_bytes", &LimitOverrides::memory_bytes, &isolate::Limits::memory_bytes},
    {"max_processes", &LimitOverrides::max_processes, &isolate::Limits::max_processes},
    {"max_output_bytes", &LimitOverrides::max_output_bytes, &isolate::Limits::max_output_bytes},
    {"max_file_bytes", &LimitOverrides::max_file_bytes, &isolate::Limits::max_file_bytes},
};

constexpr const char* limit_keys =
    "wall_time_ms, cpu_time_ms, memory_bytes, max_processes, max_output_bytes, max_file_bytes, "
    "cpus";

// A cheap, non-recursive bound on nesting before any parser sees the line. Exact for valid
// JSON; for invalid JSON it may be off, but then the parser rejects the line anyway.
bool nesting_exceeds(std::string_view text, std::size_t limit) {
    std::size_t depth = 0;
    bool in_string = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (in_string) {
            if (c == '\\')
                ++i;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > limit) return true;
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
    return false;
}

// Walks a line that failed to parse, to recover the top-level "id" seen before the failure
// (so a pipelining client can match the error to its request) and the parser's message.
class IdScanner final : public nlohmann::json_sax<json> {
  public:
    RequestId id;
    std::string error;

    bool null() override { return scalar(json()); }
    bool boolean(bool) override { return scalar(json()); }
    bool number_integer(number_integer_t value) override { return scalar(json(value)); }
    bool number_unsigned(number_unsigned_t value) override { return scalar(json(value)); }
    bool number_float(number_float_t value, const string_t&) override {
        return scalar(json(value));
    }
    bool string(string_t& value) override { return scalar(json(value)); }
    bool binary(binary_t&) override { return scalar(json()); }
    bool key(string_t& name) override {
        expecting_id_ = depth_ == 1 && name == "id";
        return true;
    }
    bool start_object(std::size_t) override { return open(); }
    bool start_array(std::size_t) override { return open(); }
    bool end_object() override { return close(); }
    bool end_array() override { return close(); }
    bool parse_error(std::size_t, const std::string&,
                     const nlohmann::detail::exception& e) override {
        error = e.what();
        // "[json.exception.parse_error.101] parse error at ..." -> "parse error at ...".
        if (auto bracket = error.find("] "); bracket != std::string::npos)
            error.erase(0, bracket + 2);
        return false;
    }

  private:
    std::size_t depth_ = 0;
    bool expecting_id_ = false;

    bool scalar(json value) {
        if (expecting_id_) id = value.is_string() || value.is_number() ? std::move(value) : json();
        expecting_id_ = false;
        return true;
    }
    bool open() {
        if (expecting_id_) id = json();
        expecting_id_ = false;
        return ++depth_ <= max_depth;
    }
    bool close() {
        --depth_;
        return true;
    }
};

IdScanner scan(std::string_view line) {
    IdScanner scanner;
    json::sax_parse(line.begin(), line.end(), &scanner);
    return scanner;
}

// Cuts a parser message that may echo a long token; keeps whole UTF-8 sequences.
std::string shorten(std::string text) {
    constexpr std::size_t max_bytes = 200;
    // The echoed token can end inside a multi-byte character; the position says enough then.
    if (!is_valid_utf8(text)) text.resize(std::min(text.find("; last read"), text.size()));
    if (text.size() <= max_bytes) return text;
    std::size_t n = max_bytes;
    while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
    text.resize(n);
    return text + "...";
}

// The value of an optional key; null counts as absent.
const json* optional_field(const json& object, const char* key) {
    auto it = object.find(key);
    if (it == object.end() || it->is_null()) return nullptr;
    return &*it;
}

const std::string& as_string(const json& value, const std::string& name) {
    if (!value.is_string()) fail(name + " must be a string");
    return value.get_ref<const std::string&>();
}

const std::string& required_string(const json& object, const char* key) {
    const json* value = optional_field(object, key);
    if (!value) fail(std::string(key) + " is required");
    return as_string(*value, key);
}

void require_no_nul(std::string_view text, const std::string& name) {
    if (text.find('\0') != std::string_view::npos) fail(name + " must not contain NUL");
}

void reject_unknown_keys(const json& object, std::initializer_list<std::string_view> known,
                         const std::string& name) {
    for (const auto& [key, value] : object.items()) {
        if (std::find(known.begin(), known.end(), key) == known.end())
            fail(name + " has an unknown key " + quote(key));
    }
}

std::uint64_t as_limit_integer(const json& value, const std::string& name) {
    // "-0" parses as a signed integer; it is still zero.
    if (value.is_number_integer() && !value.is_number_unsigned() && value.get<std::int64_t>() == 0)
        return 0;
    if (!value.is_number_unsigned()) fail(name + " must be a non-negative integer");
    const auto number = value.get<std::uint64_t>();
    if (number > max_limit_value)
        fail(name + " must be at most " + std::to_string(max_limit_value));
    return number;
}

LimitOverrides parse_limits(const json& value, const std::string& name) {
    if (!value.is_object()) fail(name + " must be an object");
    LimitOverrides out;
    for (const auto& [key, field] : value.items()) {
        const std::string path = name + "." + key;
        const auto* integer =
            std::find_if(std::begin(integer_limits), std::end(integer_limits),
                         [&key = key](const IntegerLimit& limit) { return key == limit.key; });
        if (integer != std::end(integer_limits)) {
            if (!field.is_null()) out.*integer->override = as_limit_integer(field, path);
        } else if (key == "cpus") {
            if (field.is_null()) continue;
            if (!field.is_number() || field.get<double>() < 0)
                fail(path + " must be a non-negative number");
            out.cpus = field.get<double>() + 0.0;  // -0.0 becomes 0
        } else {
            // A typo must not silently fall back to the default.
            fail(name + " has an unknown key " + quote(key) + "; the keys are " + limit_keys);
        }
    }
    return out;
}

// Empty if `path` is a usable relative path, else why not (completes "files[i].path ...").
std::string path_problem(std::string_view path) {
    if (path.empty()) return "must not be empty";
    if (path.find('\0') != std::string_view::npos) return "must not contain NUL";
    if (path.size() > max_path_bytes)
        return "must be at most " + std::to_string(max_path_bytes) + " bytes";
    if (path.front() == '/') return "must be relative";
    std::size_t start = 0;
    while (true) {
        const std::size_t slash = std::min(path.find('/', start), path.size());
        const std::string_view component = path.substr(start, slash - start);
        if (component.empty()) return "must not contain an empty component";
        if (component == ".") return "must not contain a '.' component";
        if (component == "..") return "must not contain '..'";
        if (component.size() > max_component_bytes)
            return "must not have a component longer than " + std::to_string(max_component_bytes) +
                   " bytes";
        if (slash == path.size()) return {};
        start = slash + 1;
    }
}

// Two files at one path, or a file that another file needs as its directory, cannot both be
// created; rejecting them here keeps that from surfacing as a sandbox failure later.
void reject_conflicting_paths(const std::vector<InputFile>& files) {
    std::vector<std::size_t> order(files.size());
    std::iota(order.begin(), order.end(), 0);
    // With '/' ordered before every other byte, a path sorts directly before the paths it is
    // the directory of (and its duplicates), so comparing neighbours finds every conflict.
    auto rank = [](char c) { return c == '/' ? 0 : static_cast<unsigned char>(c) + 1; };
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
        const std::string& x = files[a].path;
        const std::string& y = files[b].path;
        if (std::lexicographical_compare(x.begin(), x.end(), y.begin(), y.end(),
                                         [&](char p, char q) { return rank(p) < rank(q); }))
            return true;
        return x == y && a < b;
    });
    for (std::size_t k = 1; k < order.size(); ++k) {
        const std::size_t first = order[k - 1], second = order[k];
        const std::string& dir = files[first].path;
        const std::string& path = files[second].path;
        if (path == dir)
            fail(indexed("files", second) + ".path " + quote(path) + " duplicates " +
                 indexed("files", first) + ".path");
        if (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
            path[dir.size()] == '/')
            fail(indexed("files", std::max(first, second)) + ".path: " + quote(path) +
                 " would be inside " + quote(dir) + ", which is also a file");
    }
}

std::vector<InputFile> parse_files(const json& value) {
    if (!value.is_array()) fail("files must be an array");
    if (value.size() > max_files)
        fail("files must have at most " + std::to_string(max_files) + " entries");
    std::vector<InputFile> files;
    files.reserve(value.size());
    for (std::size_t i = 0; i < value.size(); ++i) {
        const json& entry = value[i];
        const std::string name = indexed("files", i);
        if (!entry.is_object()) fail(name + " must be an object");
        // Unlike at the top level, a misspelt key here ("encodign") would change the file.
        reject_unknown_keys(entry, {"path", "content", "encoding"}, name);

        const json* path = optional_field(entry, "path");
        if (!path) fail(name + ".path is required");
        InputFile file;
        file.path = as_string(*path, name + ".path");
        if (std::string problem = path_problem(file.path); !problem.empty())
            fail(name + ".path " + problem);

        const json* content = optional_field(entry, "content");
        if (!content) fail(name + ".content is required");
        const std::string& text = as_string(*content, name + ".content");

        std::string encoding = "utf8";
        if (const json* e = optional_field(entry, "encoding"))
            encoding = as_string(*e, name + ".encoding");
        if (encoding == "utf8") {
            file.content = text;
        } else if (encoding == "base64") {
            std::optional<std::string> bytes = base64_decode(text);
            if (!bytes)
                fail(name + ".content is not valid base64 (RFC 4648, padded, no whitespace)");
            file.content = std::move(*bytes);
        } else {
            fail(name + ".encoding must be \"utf8\" or \"base64\"");
        }
        files.push_back(std::move(file));
    }
    reject_conflicting_paths(files);
    return files;
}

std::vector<std::string> parse_args(const json& value) {
    if (!value.is_array()) fail("args must be an array of strings");
    std::vector<std::string> args;
    args.reserve(value.size());
    for (std::size_t i = 0; i < value.size(); ++i) {
        const std::string name = indexed("args", i);
        const std::string& arg = as_string(value[i], name);
        // execve cannot pass a NUL inside an argument; it would silently cut it.
        require_no_nul(arg, name);
        args.push_back(arg);
    }
    return args;
}

std::vector<std::pair<std::string, std::string>> parse_env(const json& value) {
    if (!value.is_object()) fail("env must be an object of strings");
    std::vector<std::pair<std::string, std::string>> env;
    env.reserve(value.size());
    for (const auto& [key, field] : value.items()) {
        if (key.empty()) fail("env keys must not be empty");
        const std::string name = "env[" + quote(key) + "]";
        if (key.find('=') != std::string::npos) fail(name + ": the key must not contain '='");
        if (key.find('\0') != std::string::npos) fail(name + ": the key must not contain NUL");
        const std::string& text = as_string(field, name);
        require_no_nul(text, name);
        env.emplace_back(key, text);
    }
    return env;
}

std::vector<TestCase> parse_tests(const json& value) {
    if (!value.is_array()) fail("tests must be an array");
    if (value.empty()) fail("tests must not be empty");
    if (value.size() > max_tests)
        fail("tests must have at most " + std::to_string(max_tests) + " entries");
    std::vector<TestCase> tests;
    tests.reserve(value.size());
    for (std::size_t i = 0; i < value.size(); ++i) {
        const json& entry = value[i];
        const std::string name = indexed("tests", i);
        if (!entry.is_object()) fail(name + " must be an object");
        reject_unknown_keys(entry, {"stdin", "limits"}, name);
        TestCase test;
        if (const json* in = optional_field(entry, "stdin"))
            test.stdin_data = as_string(*in, name + ".stdin");
        if (const json* limits = optional_field(entry, "limits"))
            test.limits = parse_limits(*limits, name + ".limits");
        tests.push_back(std::move(test));
    }
    return tests;
}

ExecuteRequest parse_execute(const json& request) {
    ExecuteRequest out;
    out.language = required_string(request, "language");
    if (out.language.empty()) fail("language must be a non-empty string");
    out.code = required_string(request, "code");
    if (const json* v = optional_field(request, "files")) out.files = parse_files(*v);
    if (const json* v = optional_field(request, "stdin")) out.stdin_data = as_string(*v, "stdin");
    if (const json* v = optional_field(request, "args")) out.args = parse_args(*v);
    if (const json* v = optional_field(request, "env")) out.env = parse_env(*v);
    if (const json* v = optional_field(request, "limits")) out.limits = parse_limits(*v, "limits");
    if (const json* v = optional_field(request, "compile_limits"))
        out.compile_limits = parse_limits(*v, "compile_limits");
    if (const json* v = optional_field(request, "tests")) out.tests = parse_tests(*v);
    return out;
}

Error bad_request(RequestId id, std::string message) {
    return Error{std::move(id), ErrorCode::bad_request, std::move(message)};
}

RequestId usable_id(const RequestId& id) {
    return id.is_string() || id.is_number() ? id : json();
}

}  // namespace

const char* to_string(ErrorCode code) {
    switch (code) {
        case ErrorCode::bad_request:
            return "bad_request";
        case ErrorCode::unknown_op:
            return "unknown_op";
        case ErrorCode::unknown_language:
            return "unknown_language";
        case ErrorCode::limit_too_high:
            return "limit_too_high";
        case ErrorCode::too_large:
            return "too_large";
        case ErrorCode::busy:
            return "busy";
        case ErrorCode::shutting_down:
            return "shutting_down";
        case ErrorCode::internal:
            return "internal";
    }
    return "internal";
}

std::variant<Request, Error> parse_request(std::string_view line) {
    RequestId id;
    try {
        // nlohmann rejects these too, but its message would not say why.
        if (!is_valid_utf8(line)) return bad_request(nullptr, "the request is not valid UTF-8");
        if (nesting_exceeds(line, max_depth))
            return bad_request(scan(line).id, "the request nests arrays and objects deeper than " +
                                                  std::to_string(max_depth) + " levels");
        json request = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
        if (request.is_discarded()) {
            IdScanner scanner = scan(line);
            if (scanner.error.empty()) scanner.error = "syntax error";
            return bad_request(std::move(scanner.id), "invalid JSON: " + shorten(scanner.error));
        }
        if (!request.is_object()) return bad_request(nullptr, "the request must be a JSON object");

        if (const json* v = optional_field(request, "id")) {
            if (!v->is_string() && !v->is_number())
                return bad_request(nullptr, "id must be a string or a number");
            id = *v;
        }

        const json* op_field = optional_field(request, "op");
        if (!op_field) fail("op is required");
        const std::string& op = as_string(*op_field, "op");
        if (op == "ping") return Request{std::move(id), PingRequest{}};
        if (op == "languages") return Request{std::move(id), LanguagesRequest{}};
        if (op == "stats") return Request{std::move(id), StatsRequest{}};
        if (op == "execute") {
            ExecuteRequest execute = parse_execute(request);
            return Request{std::move(id), std::move(execute)};
        }
        return Error{std::move(id), ErrorCode::unknown_op,
                     "unknown op " + quote(op) + "; the ops are ping, languages, execute, stats"};
    } catch (BadRequest& e) {
        return bad_request(std::move(id), std::move(e.message));
    } catch (const std::exception& e) {
        return Error{std::move(id), ErrorCode::internal,
                     std::string("could not parse the request: ") + e.what()};
    }
}

std::variant<isolate::Limits, Error> resolve_limits(const LimitOverrides& overrides,
                                                    const LimitPolicy& policy, const RequestId& id,
                                                    std::string_view field_name) {
    auto too_high = [&](const char* key, const std::string& value, const std::string& maximum) {
        return Error{id, ErrorCode::limit_too_high,
                     std::string(field_name) + "." + key + ": " + value + " is above the maximum " +
                         maximum};
    };
    isolate::Limits out = policy.defaults;
    for (const IntegerLimit& limit : integer_limits) {
        const std::optional<std::uint64_t>& value = overrides.*limit.override;
        if (!value) continue;
        const std::uint64_t maximum = policy.maxima.*limit.limit;
        if (*value > maximum)
            return too_high(limit.key, std::to_string(*value), std::to_string(maximum));
        out.*limit.limit = *value;
    }
    if (overrides.cpus) {
        const double cpus = *overrides.cpus;
        const double maximum = policy.maxima.cpus;
        // 0 asks for no rate cap at all, which is more than any finite maximum.
        if (maximum > 0 && (cpus == 0 || cpus > maximum))
            return too_high("cpus", cpus == 0 ? "0 (no rate cap)" : dump(json(cpus)),
                            dump(json(maximum)));
        out.cpus = cpus;
    }
    return out;
}

std::variant<ExecuteLimits, Error> resolve_execute_limits(const ExecuteRequest& request,
                                                          const LimitPolicy& run_policy,
                                                          const LimitPolicy& compile_policy,
                                                          const RequestId& id) {
    ExecuteLimits out;
    auto compile = resolve_limits(request.compile_limits, compile_policy, id, "compile_limits");
    if (auto* error = std::get_if<Error>(&compile)) return std::move(*error);
    out.compile = std::get<isolate::Limits>(compile);

    auto run = resolve_limits(request.limits, run_policy, id, "limits");
    if (auto* error = std::get_if<Error>(&run)) return std::move(*error);
    out.run = std::get<isolate::Limits>(run);

    if (request.tests) {
        // A test's own limits layer over the request's, still bounded by the same maxima.
        const LimitPolicy test_policy{out.run, run_policy.maxima};
        out.tests.reserve(request.tests->size());
        for (std::size_t i = 0; i < request.tests->size(); ++i) {
            auto test = resolve_limits((*request.tests)[i].limits, test_policy, id,
                                       indexed("tests", i) + ".limits");
            if (auto* error = std::get_if<Error>(&test)) return std::move(*error);
            out.tests.push_back(std::get<isolate::Limits>(test));
        }
    }
    return out;
}

std::string encode_error(const Error& error) {
    const json body = {{"code", to_string(error.code)}, {"message", error.message}};
    // Written by hand so "id" and "ok" come first, where people and log greps look.
    return "{\"id\":" + dump(usable_id(error.id)) + ",\"ok\":false,\"error\":" + dump(body) + "}\n";
}

std::string encode_ok(const RequestId& id, nlohmann::json body) {
    if (!body.is_object())
        return encode_error({id, ErrorCode::internal, "the response body is not a JSON object"});
    body.erase("id");
    body.erase("ok");
    std::string out = "{\"id\":" + dump(usable_id(id)) + ",\"ok\":true";
    if (body.empty()) {
        out += '}';
    } else {
        const std::string rest = dump(body);
        out += ',';
        out.append(rest, 1);  // past its '{'; its '}' closes the whole object
    }
    out += '\n';
    return out;
}

}  // namespace sandboxd::protocol
