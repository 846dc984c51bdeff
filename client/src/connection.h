#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <chrono>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace sandboxctl {

// Responses keep the daemon's key order so `stats` prints them as the daemon wrote them.
using Json = nlohmann::ordered_json;

inline constexpr const char* kDefaultSocket = "/run/sandboxd/sandboxd.sock";

// A failure of the client itself (connection, timeout, unreadable file, malformed
// response). what() is the complete text for stderr; the exit code is always 2.
class ClientError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// The text for a failed connect() (errno value): the wording tells the user what to do.
std::string connect_error_message(const std::string& socket_path, int error);

// One connection to sandboxd. Blocking from the caller's view; internally asynchronous
// only so that every step honours the same deadline (a synchronous Asio read cannot time
// out). Single-threaded: the io_context runs on the caller's thread.
class Connection {
  public:
    using Clock = std::chrono::steady_clock;

    // Connects immediately; throws ClientError. `timeout` covers the connect and every
    // later request() together; zero waits forever.
    Connection(const std::string& socket_path, std::chrono::milliseconds timeout);

    // Sends `request` (one JSON object; "\n" is appended) and returns the raw response line
    // (without "\n") whose id equals `id`. Lines for other ids are skipped. An error
    // response with a null id is taken as the answer too: with one request outstanding it
    // can only be about our line (the daemon could not read its id).
    std::string request(const std::string& request, const Json& id);

  private:
    // Runs the io_context until `done` or the deadline; false on timeout.
    bool run_until_done(const bool& done);

    [[noreturn]] void throw_timeout() const;

    std::string socket_path_;
    std::chrono::milliseconds timeout_;
    Clock::time_point deadline_;
    boost::asio::io_context io_;
    boost::asio::local::stream_protocol::socket socket_;
    std::string buffer_;
};

// Whether `line` (a parsed response) answers the request with `id`; see request().
bool response_matches(const Json& response, const Json& id);

}  // namespace sandboxctl
