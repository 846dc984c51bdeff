#include "server.h"

#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/strand.hpp>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "connection.h"

namespace sandboxd {
namespace {

namespace asio = boost::asio;
using stream = asio::local::stream_protocol;

std::runtime_error socket_error(const std::string& what, int error) {
    return std::runtime_error(what + ": " + std::strerror(error));
}

// Whether a daemon answers on `path`: a stale file from a killed daemon refuses connections.
bool someone_listens(const std::filesystem::path& path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
    bool live = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
    ::close(fd);
    return live;
}

}  // namespace

Server::Server(asio::io_context& io, DaemonServices& services)
    : io_(io), services_(services), acceptor_(io) {}

Server::~Server() {
    stop_accepting();
}

void Server::listen() {
    const std::filesystem::path& path = services_.config.socket;
    // The directory is created for the default /run/sandboxd; an existing one is left as is.
    std::error_code ec;
    if (!std::filesystem::exists(path.parent_path(), ec)) {
        if (::mkdir(path.parent_path().c_str(), 0755) != 0 && errno != EEXIST)
            throw socket_error("cannot create " + path.parent_path().string(), errno);
    }
    struct stat existing {};
    if (::lstat(path.c_str(), &existing) == 0) {
        if (!S_ISSOCK(existing.st_mode))
            throw std::runtime_error(path.string() +
                                     " exists and is not a socket; not replacing it");
        if (someone_listens(path))
            throw std::runtime_error("another sandboxd is already listening on " + path.string());
        if (::unlink(path.c_str()) != 0)
            throw socket_error("cannot remove stale socket " + path.string(), errno);
    }

    gid_t group = static_cast<gid_t>(-1);
    if (!services_.config.socket_group.empty()) {
        struct group* entry = ::getgrnam(services_.config.socket_group.c_str());
        if (!entry) throw std::runtime_error("no such group: " + services_.config.socket_group);
        group = entry->gr_gid;
    }

    // Bound under a umask that leaves it unreachable until chmod/chown set the real access.
    mode_t old_mask = ::umask(0177);
    boost::system::error_code error;
    acceptor_.open(stream(), error);
    if (!error) acceptor_.bind(stream::endpoint(path.string()), error);
    ::umask(old_mask);
    if (error) throw std::runtime_error("cannot bind " + path.string() + ": " + error.message());
    socket_file_ours_ = true;
    if (::chown(path.c_str(), static_cast<uid_t>(-1), group) != 0)
        throw socket_error("cannot set the group of " + path.string(), errno);
    if (::chmod(path.c_str(), 0660) != 0)
        throw socket_error("cannot chmod " + path.string(), errno);
    acceptor_.listen(asio::socket_base::max_listen_connections, error);
    if (error)
        throw std::runtime_error("cannot listen on " + path.string() + ": " + error.message());
}

void Server::start_accepting() {
    accept_next();
}

void Server::accept_next() {
    if (!acceptor_.is_open()) return;
    // Each connection gets its own strand: its handlers never run concurrently, whatever
    // number of threads runs the io_context.
    acceptor_.async_accept(asio::make_strand(io_), [this](const boost::system::error_code& error,
                                                          stream::socket socket) {
        if (error == asio::error::operation_aborted || !acceptor_.is_open()) return;
        if (!error) {
            auto connection = std::make_shared<Connection>(std::move(socket), *this, services_);
            {
                std::lock_guard lock(connections_mutex_);
                connections_.insert(connection);
            }
            asio::post(connection->executor(), [connection] { connection->start(); });
        } else {
            services_.log.write(LogLevel::warning, "accept_failed",
                                LogFields().add("error", error.message()));
        }
        accept_next();
    });
}

void Server::stop_accepting() {
    boost::system::error_code ignored;
    if (acceptor_.is_open()) acceptor_.close(ignored);
    if (socket_file_ours_) {
        ::unlink(services_.config.socket.c_str());
        socket_file_ours_ = false;
    }
}

void Server::close_connections() {
    std::set<std::shared_ptr<Connection>> current;
    {
        std::lock_guard lock(connections_mutex_);
        current = connections_;
    }
    for (const auto& connection : current)
        asio::post(connection->executor(), [connection] { connection->close_when_flushed(); });
}

std::size_t Server::connection_count() const {
    std::lock_guard lock(connections_mutex_);
    return connections_.size();
}

void Server::forget(Connection* connection) {
    std::lock_guard lock(connections_mutex_);
    for (auto it = connections_.begin(); it != connections_.end(); ++it) {
        if (it->get() == connection) {
            connections_.erase(it);
            return;
        }
    }
}

}  // namespace sandboxd
