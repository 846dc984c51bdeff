#include "commands.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ostream>

#include "byte_size.h"
#include "encoding.h"
#include "language_guess.h"

namespace sandboxctl {
namespace {

using Clock = std::chrono::steady_clock;

std::string read_fd(int fd, const std::string& name) {
    std::string content;
    char chunk[65536];
    for (;;) {
        ssize_t got = ::read(fd, chunk, sizeof chunk);
        if (got == 0) return content;
        if (got < 0) {
            if (errno == EINTR) continue;
            throw ClientError("cannot read " + name + ": " + std::strerror(errno));
        }
        content.append(chunk, static_cast<std::size_t>(got));
    }
}

// "-" is our own stdin, so a program or its input can be piped in.
std::string read_input(const std::string& path) {
    if (path == "-") return read_fd(STDIN_FILENO, "standard input");
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw ClientError("cannot read " + path + ": " + std::strerror(errno));
    try {
        std::string content = read_fd(fd, path);
        ::close(fd);
        return content;
    } catch (...) {
        ::close(fd);
        throw;
    }
}

void require_utf8(const std::string& text, const std::string& what) {
    if (!sandboxd::is_valid_utf8(text))
        throw ClientError(what + " is not valid UTF-8; the protocol carries it as text");
}

std::uint64_t size_option(const std::string& option, const std::string& value) {
    auto parsed = sandboxd::parse_byte_size(value);
    if (!parsed)
        throw ClientError(option + ": not a size: '" + value +
                          "' (use bytes or a binary size like 512K, 256M, 1G)");
    return *parsed;
}

std::string format_ms(double ms) {
    char text[64];
    std::snprintf(text, sizeof text, "%.1f ms", ms);
    return text;
}

std::string one_line(std::string text) {
    std::replace(text.begin(), text.end(), '\n', ' ');
    while (!text.empty() && text.back() == ' ') text.pop_back();
    return text;
}

bool response_ok(const Json& response) {
    auto ok = response.find("ok");
    return ok != response.end() && ok->is_boolean() && ok->get<bool>();
}

std::string dump_request(const Json& request) {
    try {
        return request.dump();
    } catch (const Json::exception& error) {
        // Every text field was checked already; this catches whatever slipped past.
        throw ClientError(std::string("cannot encode the request: ") + error.what());
    }
}

// One request on a fresh connection; returns the raw matching response line and its parse.
struct Answer {
    std::string line;
    Json json;
    Clock::duration round_trip{};
};

Answer ask(const GlobalOptions& global, Json request) {
    std::string id = make_request_id();
    request["id"] = id;
    std::string line = dump_request(request);
    Connection connection(global.socket_path, std::chrono::milliseconds(global.timeout_ms));
    auto start = Clock::now();
    Answer answer;
    answer.line = connection.request(line, id);
    answer.round_trip = Clock::now() - start;
    // Connection::request only returns lines that parsed as objects.
    answer.json = Json::parse(answer.line);
    return answer;
}

void write_bytes(std::ostream& stream, const std::string& bytes) {
    stream.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string decode_stream(const Json& outcome, const char* key, bool base64) {
    auto found = outcome.find(key);
    if (found == outcome.end() || found->is_null()) return {};
    const std::string& text = found->get_ref<const std::string&>();
    if (!base64) return text;
    auto decoded = sandboxd::base64_decode(text);
    if (!decoded) throw ClientError(std::string("sandboxd sent invalid base64 in ") + key);
    return *decoded;
}

template <typename T>
std::optional<T> optional_field(const Json& object, const char* key) {
    auto found = object.find(key);
    if (found == object.end() || found->is_null()) return std::nullopt;
    return found->get<T>();
}

// A simple padded table; the last column is not padded so lines have no trailing blanks.
void print_table(std::ostream& out, const std::vector<std::vector<std::string>>& rows) {
    std::vector<std::size_t> widths;
    for (const auto& row : rows) {
        widths.resize(std::max(widths.size(), row.size()));
        for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
    }
    for (const auto& row : rows) {
        std::string line;
        for (std::size_t i = 0; i < row.size(); ++i) {
            line += row[i];
            if (i + 1 < row.size()) line.append(widths[i] - row[i].size() + 2, ' ');
        }
        out << line << '\n';
    }
}

// For list/info commands: the raw line with --json, else an error message for ok:false.
// Returns an exit code when the command is finished, nullopt when it should go on.
std::optional<int> finish_early(const Answer& answer, bool json, std::ostream& out,
                                std::ostream& err) {
    if (json) {
        out << answer.line << '\n';
        out.flush();
        return response_ok(answer.json) ? 0 : kExitClientError;
    }
    if (!response_ok(answer.json)) {
        err << error_response_message(answer.json) << '\n';
        return kExitClientError;
    }
    return std::nullopt;
}

}  // namespace

std::string make_request_id() {
    auto ticks = Clock::now().time_since_epoch().count();
    return "sandboxctl-" + std::to_string(::getpid()) + "-" + std::to_string(ticks);
}

Json build_execute_request(const RunOptions& options, const std::string& id) {
    if (options.file == "-" && options.stdin_file == "-")
        throw ClientError("the program and --stdin cannot both come from standard input");

    std::string language = options.language;
    if (language.empty()) {
        if (options.file == "-")
            throw ClientError("a program read from standard input needs --lang NAME");
        auto guessed = guess_language(options.file);
        if (!guessed)
            throw ClientError("cannot guess the language of " + options.file +
                              " from its extension (known: " + known_extensions() +
                              "); pass --lang NAME (`sandboxctl languages` lists them)");
        language = *guessed;
    }
    require_utf8(language, "--lang");

    Json request = Json::object();
    request["id"] = id;
    request["op"] = "execute";
    request["language"] = language;
    std::string code = read_input(options.file);
    require_utf8(code, options.file == "-" ? "the program on standard input" : options.file);
    request["code"] = std::move(code);

    if (!options.stdin_file.empty()) {
        std::string input = read_input(options.stdin_file);
        require_utf8(input, "--stdin " + options.stdin_file);
        request["stdin"] = std::move(input);
    }
    if (!options.args.empty()) {
        for (const auto& arg : options.args) require_utf8(arg, "--arg '" + arg + "'");
        request["args"] = options.args;
    }
    if (!options.files.empty()) {
        Json files = Json::array();
        for (const auto& spec : options.files) {
            auto at = spec.find('=');
            if (at == std::string::npos || at == 0 || at + 1 == spec.size())
                throw ClientError("--file wants INSIDE=HOSTPATH, got '" + spec + "'");
            std::string inside = spec.substr(0, at);
            require_utf8(inside, "--file path '" + inside + "'");
            // base64 always: host files may be binary, and it costs the daemon nothing.
            files.push_back({{"path", inside},
                             {"content", sandboxd::base64_encode(read_input(spec.substr(at + 1)))},
                             {"encoding", "base64"}});
        }
        request["files"] = std::move(files);
    }

    Json limits = Json::object();
    if (options.wall_time_ms) limits["wall_time_ms"] = *options.wall_time_ms;
    if (options.cpu_time_ms) limits["cpu_time_ms"] = *options.cpu_time_ms;
    if (!options.memory.empty()) limits["memory_bytes"] = size_option("--memory", options.memory);
    if (options.max_processes) limits["max_processes"] = *options.max_processes;
    if (!options.output.empty())
        limits["max_output_bytes"] = size_option("--output", options.output);
    // Absent keys take the daemon's configured defaults, so only what the user set is sent.
    if (!limits.empty()) request["limits"] = std::move(limits);
    return request;
}

std::optional<int> signal_number(const Json& signal) {
    if (signal.is_number_integer()) {
        auto number = signal.get<std::int64_t>();
        if (number > 0 && number < NSIG) return static_cast<int>(number);
        return std::nullopt;
    }
    if (!signal.is_string()) return std::nullopt;
    std::string name = signal.get<std::string>();
    if (name.rfind("SIG", 0) == 0) name.erase(0, 3);
    for (int number = 1; number < NSIG; ++number) {
        const char* abbreviation = ::sigabbrev_np(number);
        if (abbreviation != nullptr && name == abbreviation) return number;
    }
    return std::nullopt;
}

Outcome parse_outcome(const Json& json) {
    if (!json.is_object())
        throw ClientError("malformed response from sandboxd: outcome is not an object");
    Outcome outcome;
    try {
        outcome.status = json.at("status").get<std::string>();
        outcome.exit_code = optional_field<std::int64_t>(json, "exit_code");
        if (auto signal = json.find("signal"); signal != json.end() && !signal->is_null()) {
            outcome.signal_number = signal_number(*signal);
            if (signal->is_string()) {
                outcome.signal = signal->get<std::string>();
            } else if (outcome.signal_number) {
                // Real-time signals have no abbreviation.
                const char* name = ::sigabbrev_np(*outcome.signal_number);
                outcome.signal = name != nullptr
                                     ? std::string("SIG") + name
                                     : "signal " + std::to_string(*outcome.signal_number);
            }
        }
        bool base64 = optional_field<std::string>(json, "encoding").value_or("utf8") == "base64";
        outcome.stdout_bytes = decode_stream(json, "stdout", base64);
        outcome.stderr_bytes = decode_stream(json, "stderr", base64);
        outcome.stdout_truncated = optional_field<bool>(json, "stdout_truncated").value_or(false);
        outcome.stderr_truncated = optional_field<bool>(json, "stderr_truncated").value_or(false);
        outcome.cpu_time_ms = optional_field<double>(json, "cpu_time_ms");
        outcome.wall_time_ms = optional_field<double>(json, "wall_time_ms");
        outcome.memory_bytes = optional_field<std::uint64_t>(json, "memory_bytes");
        outcome.message = optional_field<std::string>(json, "message").value_or("");
    } catch (const Json::exception& error) {
        throw ClientError(std::string("malformed response from sandboxd: ") + error.what());
    }
    return outcome;
}

ExecuteResult parse_execute_response(const Json& response) {
    ExecuteResult result;
    try {
        result.status = response.at("status").get<std::string>();
    } catch (const Json::exception& error) {
        throw ClientError(std::string("malformed response from sandboxd: ") + error.what());
    }
    if (auto compile = response.find("compile"); compile != response.end() && !compile->is_null())
        result.compile = parse_outcome(*compile);
    if (auto run = response.find("run"); run != response.end() && !run->is_null())
        result.run = parse_outcome(*run);
    if (auto tests = response.find("tests"); tests != response.end() && !tests->is_null()) {
        if (!tests->is_array())
            throw ClientError("malformed response from sandboxd: tests is not an array");
        for (const auto& test : *tests) result.tests.push_back(parse_outcome(test));
    }
    if (result.status == "compile_error") {
        if (!result.compile)
            throw ClientError("malformed response from sandboxd: compile_error without compile");
    } else if (!result.run && result.tests.empty()) {
        throw ClientError("malformed response from sandboxd: neither run nor tests");
    }
    return result;
}

int exit_code_for(const Outcome& outcome) {
    const std::string& status = outcome.status;
    if (status == "ok") return 0;
    if (status == "runtime_error") {
        // runtime_error means a non-zero exit; a missing or odd code still must not read as 0.
        if (outcome.exit_code && *outcome.exit_code > 0 && *outcome.exit_code <= 255)
            return static_cast<int>(*outcome.exit_code);
        return 1;
    }
    if (status == "signaled")
        return outcome.signal_number ? 128 + *outcome.signal_number : kExitClientError;
    if (status == "time_limit" || status == "wall_time_limit") return kExitTimeLimit;
    if (status == "memory_limit") return kExitMemoryLimit;
    // syscall_blocked counts as a limit (the sandbox's policy), not as the program's signal.
    if (status == "output_limit" || status == "file_size_limit" || status == "syscall_blocked")
        return kExitOtherLimit;
    // internal_error, and statuses newer than this client (e.g. cancelled).
    return kExitClientError;
}

int exit_code_for(const ExecuteResult& result) {
    if (result.status == "compile_error") return kExitCompileError;
    if (result.run) return exit_code_for(*result.run);
    // The overall status is the first test status that is not ok; that test decides.
    for (const auto& test : result.tests) {
        if (test.status != "ok") return exit_code_for(test);
    }
    return result.status == "ok" ? 0 : kExitClientError;
}

std::string format_bytes(std::uint64_t bytes) {
    if (bytes < 1024) return std::to_string(bytes) + " B";
    const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
    double value = static_cast<double>(bytes) / 1024;
    std::size_t unit = 0;
    while (value >= 1024 && unit + 1 < std::size(units)) {
        value /= 1024;
        ++unit;
    }
    char text[64];
    std::snprintf(text, sizeof text, "%.1f %s", value, units[unit]);
    return text;
}

std::string format_outcome(const Outcome& outcome) {
    std::vector<std::string> parts{outcome.status};
    if (outcome.exit_code) {
        parts.push_back("exit " + std::to_string(*outcome.exit_code));
    } else if (outcome.signal) {
        parts.push_back(*outcome.signal);
    }
    if (outcome.cpu_time_ms) parts.push_back("cpu " + format_ms(*outcome.cpu_time_ms));
    if (outcome.wall_time_ms) parts.push_back("wall " + format_ms(*outcome.wall_time_ms));
    if (outcome.memory_bytes) parts.push_back("mem " + format_bytes(*outcome.memory_bytes));
    if (outcome.stdout_truncated) parts.push_back("stdout truncated");
    if (outcome.stderr_truncated) parts.push_back("stderr truncated");
    std::string line;
    for (const auto& part : parts) {
        if (!line.empty()) line += "  ";
        line += part;
    }
    std::string message = one_line(outcome.message);
    if (outcome.status != "ok" && !message.empty()) line += "  (" + message + ")";
    return line;
}

std::vector<std::string> verdict_lines(const ExecuteResult& result) {
    const std::string prefix = "[sandboxd] ";
    std::vector<std::string> lines;
    if (result.status == "compile_error") {
        lines.push_back(prefix + "compile_error" +
                        (result.compile ? "  compiler " + format_outcome(*result.compile) : ""));
        return lines;
    }
    std::string compile_time;
    if (result.compile && result.compile->wall_time_ms)
        compile_time = "  compile " + format_ms(*result.compile->wall_time_ms);
    if (result.run) {
        lines.push_back(prefix + format_outcome(*result.run) + compile_time);
        return lines;
    }
    std::size_t passed = 0;
    for (std::size_t i = 0; i < result.tests.size(); ++i) {
        const Outcome& test = result.tests[i];
        if (test.status == "ok") ++passed;
        lines.push_back(prefix + "test " + std::to_string(i + 1) + ": " + format_outcome(test));
    }
    lines.push_back(prefix + result.status + "  " + std::to_string(passed) + "/" +
                    std::to_string(result.tests.size()) + " tests ok" + compile_time);
    return lines;
}

std::string error_response_message(const Json& response) {
    auto error = response.find("error");
    if (error == response.end() || !error->is_object())
        return "sandboxd: request failed without an error object: " + response.dump();
    auto text = [&](const char* key) {
        auto found = error->find(key);
        return found != error->end() && found->is_string() ? found->get<std::string>()
                                                           : std::string("?");
    };
    return "sandboxd: " + text("code") + ": " + text("message");
}

int run_command(const GlobalOptions& global, const RunOptions& options, std::ostream& out,
                std::ostream& err) {
    try {
        std::string id = make_request_id();
        std::string line = dump_request(build_execute_request(options, id));
        Connection connection(global.socket_path, std::chrono::milliseconds(global.timeout_ms));
        std::string response_line = connection.request(line, id);
        Json response = Json::parse(response_line);
        if (options.json) {
            out << response_line << '\n';
            out.flush();
            return response_ok(response) ? 0 : kExitClientError;
        }
        if (!response_ok(response)) {
            err << error_response_message(response) << '\n';
            return kExitClientError;
        }
        ExecuteResult result = parse_execute_response(response);
        if (result.status == "compile_error") {
            write_bytes(err, result.compile->stdout_bytes);
            write_bytes(err, result.compile->stderr_bytes);
        } else if (result.run) {
            write_bytes(out, result.run->stdout_bytes);
            write_bytes(err, result.run->stderr_bytes);
        } else {
            for (const auto& test : result.tests) {
                write_bytes(out, test.stdout_bytes);
                out.flush();
                write_bytes(err, test.stderr_bytes);
            }
        }
        // The verdict must come after all of the program's output, also on a shared tty.
        out.flush();
        if (!options.quiet) {
            for (const auto& verdict : verdict_lines(result)) err << verdict << '\n';
        }
        err.flush();
        return exit_code_for(result);
    } catch (const ClientError& error) {
        err << error.what() << '\n';
        return kExitClientError;
    }
}

int languages_command(const GlobalOptions& global, bool json, std::ostream& out,
                      std::ostream& err) {
    try {
        Answer answer = ask(global, {{"op", "languages"}});
        if (auto code = finish_early(answer, json, out, err)) return *code;
        auto languages = answer.json.find("languages");
        if (languages == answer.json.end() || !languages->is_array())
            throw ClientError("malformed response from sandboxd: no languages array");
        std::vector<std::vector<std::string>> rows{{"NAME", "VERSION", "ALIASES", "COMPILED"}};
        try {
            for (const auto& language : *languages) {
                std::string aliases;
                for (const auto& alias : language.value("aliases", Json::array())) {
                    if (!aliases.empty()) aliases += ",";
                    aliases += alias.get<std::string>();
                }
                rows.push_back({language.at("name").get<std::string>(),
                                language.value("version", std::string("-")),
                                aliases.empty() ? "-" : aliases,
                                language.value("compiled", false) ? "yes" : "no"});
            }
        } catch (const Json::exception& error) {
            throw ClientError(std::string("malformed response from sandboxd: ") + error.what());
        }
        print_table(out, rows);
        return 0;
    } catch (const ClientError& error) {
        err << error.what() << '\n';
        return kExitClientError;
    }
}

int stats_command(const GlobalOptions& global, bool json, std::ostream& out, std::ostream& err) {
    try {
        Answer answer = ask(global, {{"op", "stats"}});
        if (auto code = finish_early(answer, json, out, err)) return *code;
        for (const auto& [key, value] : answer.json.items()) {
            if (key == "id" || key == "ok") continue;
            out << key << ": " << (value.is_string() ? value.get<std::string>() : value.dump())
                << '\n';
        }
        return 0;
    } catch (const ClientError& error) {
        err << error.what() << '\n';
        return kExitClientError;
    }
}

int ping_command(const GlobalOptions& global, bool json, std::ostream& out, std::ostream& err) {
    try {
        Answer answer = ask(global, {{"op", "ping"}});
        if (auto code = finish_early(answer, json, out, err)) return *code;
        auto version = answer.json.find("version");
        double ms = std::chrono::duration<double, std::milli>(answer.round_trip).count();
        char round_trip[64];
        std::snprintf(round_trip, sizeof round_trip, "%.2f ms", ms);
        out << "sandboxd "
            << (version != answer.json.end() && version->is_string() ? version->get<std::string>()
                                                                     : std::string("?"))
            << " (round trip " << round_trip << ")\n";
        return 0;
    } catch (const ClientError& error) {
        err << error.what() << '\n';
        return kExitClientError;
    }
}

}  // namespace sandboxctl
