#pragma once

// One client connection: newline-framed requests in, one response line per request out,
// in completion order (pipelined requests may be answered out of order). Everything here runs
// on the connection's strand, except a slot thread's finishing of its request: it writes the
// answer to the socket itself when nothing else is being written (finish_from_slot) and writes
// the log line; only what it cannot finish (an answer to queue, a connection to close) it
// posts to the strand, so the I/O thread usually sleeps on.

#include <sys/types.h>

#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>

#include "protocol.h"
#include "scheduler.h"

namespace sandboxd {

struct DaemonServices;
class Server;

struct PeerCredentials {
    pid_t pid = 0;
    uid_t uid = static_cast<uid_t>(-1);
    gid_t gid = static_cast<gid_t>(-1);
};

class Connection : public std::enable_shared_from_this<Connection> {
  public:
    Connection(boost::asio::local::stream_protocol::socket socket, Server& server,
               DaemonServices& services);

    void start();
    boost::asio::any_io_executor executor() { return socket_.get_executor(); }
    // Stops reading and closes once every answer so far is written (shutdown).
    void close_when_flushed();

  private:
    using Clock = std::chrono::steady_clock;

    void read_more();
    void on_read(std::size_t bytes);
    void on_end_of_input();
    void handle_line(std::string_view line);
    void handle_execute(protocol::RequestId id, protocol::ExecuteRequest request,
                        Clock::time_point received);
    void send(std::string line);
    // A slot thread's end of request `ticket`, under one lock: drops it from the in-flight set
    // and writes `line` straight to the socket when no write is in flight and nothing is
    // queued, so the answer does not wait for the I/O thread to wake (about 60 us of the
    // request's path). `strand_needed`: the answer is to be queued (not sent), a tail is left
    // unsent (write_next() writes it before anything else), or a half-closed connection is to
    // be closed.
    struct SlotFinish {
        bool sent;
        bool strand_needed;
    };
    SlotFinish finish_from_slot(std::uint64_t ticket, const std::string& line);
    void send_error(const protocol::Error& error, std::string_view op);
    void write_next();
    bool nothing_in_flight();
    // The client is gone: drop its queued work, kill its running sandboxes, close.
    void abandon(std::string_view why);
    void close();
    bool peer_hung_up();
    void watch_for_hang_up();
    bool peer_allowed() const;
    std::string id_text(const protocol::RequestId& id) const;

    boost::asio::local::stream_protocol::socket socket_;
    boost::asio::steady_timer hang_up_timer_;
    Server& server_;
    DaemonServices& services_;
    PeerCredentials peer_;

    std::string input_;
    std::size_t scanned_ = 0;  // input_[0, scanned_) holds no '\n'
    std::unique_ptr<char[]> chunk_;
    bool reading_ = false;
    bool close_after_flush_ = false;
    bool closed_ = false;

    std::deque<std::string> outbox_;
    std::size_t outbox_bytes_ = 0;
    bool writing_ = false;

    // The socket's descriptor, for slot threads, which must not touch socket_ itself. Only
    // written to while direct_writes_ is true, under answer_mutex_: close() clears it first,
    // so a reused descriptor number is never written to.
    const int socket_fd_;
    // Guards what slot threads share with the strand, below. Only the strand writes
    // input_ended_, so the strand may read it without the lock.
    std::mutex answer_mutex_;
    bool direct_writes_ = false;         // open, no write in flight, nothing queued
    std::string direct_unsent_;          // the tail a direct write could not write
    std::set<std::uint64_t> in_flight_;  // the tickets of requests not yet answered
    bool input_ended_ = false;

    std::uint64_t next_ticket_ = 0;
    // One for all of the connection's runs, made with its first execute: they are only ever
    // cancelled together, when it closes, and an eventfd per request cost a call on its path.
    std::shared_ptr<CancelToken> cancel_token_;
};

}  // namespace sandboxd
