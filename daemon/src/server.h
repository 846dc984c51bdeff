#pragma once

// The socket side of the daemon: a unix stream acceptor and one Connection per client, each
// on its own strand of the one io_context. Requests are parsed and answered on the strand;
// execute work goes to the Scheduler and its answer is posted back to the strand.

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>

#include "compile_cache.h"
#include "config.h"
#include "isolate/sandbox.h"
#include "languages.h"
#include "log.h"
#include "scheduler.h"

namespace sandboxd {

class Connection;

// What every connection shares. Owned by the daemon's main; outlives the Server.
struct DaemonServices {
    const Config& config;
    const LanguageTable& languages;
    isolate::Sandbox& sandbox;
    Scheduler& scheduler;
    CompileCache& compile_cache;
    Log& log;
    std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
    std::atomic<bool> shutting_down{false};
    std::atomic<std::uint64_t> requests{0};
};

class Server {
  public:
    Server(boost::asio::io_context& io, DaemonServices& services);
    ~Server();

    // Binds the socket (mode 0660, the configured group), replacing a stale socket file but
    // never a live daemon's. Throws std::runtime_error with the reason.
    void listen();
    void start_accepting();
    // Closes the acceptor and removes the socket file; existing connections go on.
    void stop_accepting();
    // Closes every connection once its pending answers are written.
    void close_connections();
    std::size_t connection_count() const;

  private:
    friend class Connection;
    void accept_next();
    void forget(Connection* connection);

    boost::asio::io_context& io_;
    DaemonServices& services_;
    boost::asio::local::stream_protocol::acceptor acceptor_;
    bool socket_file_ours_ = false;
    mutable std::mutex connections_mutex_;
    std::set<std::shared_ptr<Connection>> connections_;
};

}  // namespace sandboxd
