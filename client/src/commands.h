#pragma once

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "connection.h"

namespace sandboxctl {

struct GlobalOptions {
    std::string socket_path = kDefaultSocket;
    std::uint64_t timeout_ms = 120000;  // 0: wait forever
};

struct RunOptions {
    std::string file;      // "-": the program comes from our stdin
    std::string language;  // empty: guessed from file's extension
    std::string stdin_file;
    std::optional<std::uint64_t> cpu_time_ms;
    std::optional<std::uint64_t> wall_time_ms;
    std::optional<std::uint64_t> max_processes;
    std::string memory;  // as typed ("256M"); empty: the daemon's default
    std::string output;
    std::vector<std::string> args;
    std::vector<std::string> files;  // "INSIDE=HOSTPATH"
    bool json = false;
    bool quiet = false;
};

// One outcome object of the protocol, with stdout/stderr already decoded to raw bytes.
struct Outcome {
    std::string status;
    std::optional<std::int64_t> exit_code;
    std::optional<std::string> signal;  // "SIGSEGV"
    std::optional<int> signal_number;
    std::string stdout_bytes;
    std::string stderr_bytes;
    bool stdout_truncated = false;
    bool stderr_truncated = false;
    std::optional<double> cpu_time_ms;
    std::optional<double> wall_time_ms;
    std::optional<std::uint64_t> memory_bytes;
    std::string message;
};

struct ExecuteResult {
    std::string status;
    std::optional<Outcome> compile;
    std::optional<Outcome> run;
    std::vector<Outcome> tests;
};

// Exit codes of `sandboxctl run`, documented in its --help footer.
inline constexpr int kExitCompileError = 1;
inline constexpr int kExitClientError = 2;  // also internal_error and error responses
inline constexpr int kExitTimeLimit = 124;
inline constexpr int kExitOtherLimit = 125;
inline constexpr int kExitMemoryLimit = 137;

// Reads FILE, --stdin and every --file; throws ClientError naming what could not be used.
Json build_execute_request(const RunOptions& options, const std::string& id);

// Throws ClientError when an ok:true execute response does not have the protocol's shape.
ExecuteResult parse_execute_response(const Json& response);

Outcome parse_outcome(const Json& outcome);
std::optional<int> signal_number(const Json& signal);

int exit_code_for(const Outcome& outcome);
int exit_code_for(const ExecuteResult& result);

// "ok  exit 0  cpu 11.2 ms  wall 19.8 ms  mem 7.0 MiB"
std::string format_outcome(const Outcome& outcome);
// The "[sandboxd] ..." lines printed on stderr after the program's output.
std::vector<std::string> verdict_lines(const ExecuteResult& result);
std::string format_bytes(std::uint64_t bytes);

// "sandboxd: <code>: <message>" for an ok:false response.
std::string error_response_message(const Json& response);

std::string make_request_id();

// Each returns the process exit code and reports every failure on `err`.
int run_command(const GlobalOptions& global, const RunOptions& options, std::ostream& out,
                std::ostream& err);
int languages_command(const GlobalOptions& global, bool json, std::ostream& out, std::ostream& err);
int stats_command(const GlobalOptions& global, bool json, std::ostream& out, std::ostream& err);
int ping_command(const GlobalOptions& global, bool json, std::ostream& out, std::ostream& err);

}  // namespace sandboxctl
