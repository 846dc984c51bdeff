#include "connection.h"

#include <grp.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>
#include <functional>
#include <optional>

namespace sandboxctl {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using local_socket = asio::local::stream_protocol;

// Outputs are capped by the daemon's max_output_bytes, so a response this large means the
// peer is not sandboxd (or is broken); refusing it beats exhausting memory.
constexpr std::size_t kMaxResponseBytes = std::size_t{1} << 30;

std::string abbreviate(const std::string& text) {
    constexpr std::size_t kShown = 200;
    return text.size() <= kShown ? text : text.substr(0, kShown) + "...";
}

}  // namespace

std::string connect_error_message(const std::string& socket_path, int error) {
    const std::string head = "cannot connect to " + socket_path + ": ";
    switch (error) {
        case ENOENT:
        case ECONNREFUSED:
            return head + "is sandboxd running?\n(" + std::strerror(error) + ")";
        case EACCES:
        case EPERM: {
            std::string group = "the socket's group";
            struct stat info {};
            if (::stat(socket_path.c_str(), &info) == 0) {
                if (const struct group* entry = ::getgrgid(info.st_gid))
                    group = std::string("the socket's group (") + entry->gr_name + ")";
            }
            return head + "permission denied\n" + group +
                   " must include you; ask an administrator to add you to it, then log in again";
        }
        case ENAMETOOLONG:
            return head + "the path is longer than a unix socket address allows (" +
                   std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " bytes)";
        default:
            return head + std::strerror(error);
    }
}

bool response_matches(const Json& response, const Json& id) {
    if (!response.is_object()) return false;
    auto found = response.find("id");
    if (found != response.end() && *found == id) return true;
    auto ok = response.find("ok");
    bool is_error = ok != response.end() && ok->is_boolean() && !ok->get<bool>();
    return is_error && (found == response.end() || found->is_null());
}

Connection::Connection(const std::string& socket_path, std::chrono::milliseconds timeout)
    : socket_path_(socket_path),
      timeout_(timeout),
      deadline_(timeout.count() > 0 ? Clock::now() + timeout : Clock::time_point::max()),
      socket_(io_) {
    local_socket::endpoint endpoint;
    try {
        endpoint = local_socket::endpoint(socket_path);
    } catch (const boost::system::system_error& error) {
        throw ClientError(connect_error_message(socket_path, error.code().value()));
    }
    bool done = false;
    error_code result;
    socket_.async_connect(endpoint, [&](const error_code& error) {
        result = error;
        done = true;
    });
    if (!run_until_done(done)) throw_timeout();
    if (result) throw ClientError(connect_error_message(socket_path, result.value()));
}

void Connection::throw_timeout() const {
    throw ClientError("sandboxd at " + socket_path_ + " did not answer within " +
                      std::to_string(timeout_.count()) + " ms (see --timeout-ms)");
}

bool Connection::run_until_done(const bool& done) {
    io_.restart();
    while (!done) {
        std::size_t ran =
            deadline_ == Clock::time_point::max() ? io_.run_one() : io_.run_one_until(deadline_);
        if (ran == 0) break;
    }
    if (done) return true;
    // The pending handlers reference the caller's locals: closing the socket makes them
    // complete (aborted) now, while those locals still exist.
    error_code ignored;
    socket_.close(ignored);
    io_.restart();
    io_.run();
    return false;
}

std::string Connection::request(const std::string& request, const Json& id) {
    const std::string line = request + "\n";
    bool write_done = false;
    bool done = false;
    error_code write_error;
    error_code read_error;
    std::optional<std::string> answer;
    std::string protocol_error;

    // Reading starts together with writing: the daemon may answer an oversized line with
    // too_large and close before it has read all of it, and that answer is what the user
    // needs to see rather than EPIPE.
    asio::async_write(socket_, asio::buffer(line), [&](const error_code& error, std::size_t) {
        write_error = error;
        write_done = true;
    });
    std::function<void()> read_line = [&] {
        asio::async_read_until(socket_, asio::dynamic_buffer(buffer_, kMaxResponseBytes), '\n',
                               [&](const error_code& error, std::size_t length) {
                                   if (error) {
                                       read_error = error;
                                       done = true;
                                       return;
                                   }
                                   std::string response = buffer_.substr(0, length - 1);
                                   buffer_.erase(0, length);
                                   Json parsed = Json::parse(response, nullptr, false);
                                   if (parsed.is_discarded() || !parsed.is_object()) {
                                       protocol_error =
                                           "sandboxd sent a line that is not a JSON object: " +
                                           abbreviate(response);
                                       done = true;
                                   } else if (response_matches(parsed, id)) {
                                       answer = std::move(response);
                                       done = true;
                                   } else {
                                       read_line();
                                   }
                               });
    };
    read_line();
    if (!run_until_done(done)) throw_timeout();
    if (!write_done) {
        // Answered before the whole request was sent (an error); the rest is moot, and the
        // write handler must not outlive this frame.
        error_code ignored;
        socket_.cancel(ignored);
        io_.restart();
        io_.run();
    }

    if (answer) return *answer;
    if (!protocol_error.empty()) throw ClientError(protocol_error);
    if (read_error == asio::error::not_found)
        throw ClientError("sandboxd sent a response line longer than " +
                          std::to_string(kMaxResponseBytes) + " bytes");
    if (read_error == asio::error::eof) {
        if (write_error)
            throw ClientError("lost the connection to sandboxd while sending the request: " +
                              write_error.message());
        throw ClientError("sandboxd closed the connection without answering");
    }
    throw ClientError("lost the connection to sandboxd: " + read_error.message());
}

}  // namespace sandboxctl
