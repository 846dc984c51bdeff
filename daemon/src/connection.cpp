#include "connection.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include "executor.h"
#include "server.h"

namespace sandboxd {
namespace {

namespace asio = boost::asio;
using nlohmann::json;

constexpr std::size_t kReadChunk = 64 * 1024;
// A client that pipelines without reading its answers stops being read past this much
// unwritten output, so it cannot make the daemon buffer without bound.
constexpr std::size_t kOutboxHighWater = 32u << 20;
constexpr auto kHangUpPoll = std::chrono::milliseconds(100);

double elapsed_ms(std::chrono::steady_clock::time_point since) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - since)
        .count();
}

const char* op_name(const protocol::Request& request) {
    struct Names {
        const char* operator()(const protocol::PingRequest&) const { return "ping"; }
        const char* operator()(const protocol::LanguagesRequest&) const { return "languages"; }
        const char* operator()(const protocol::ExecuteRequest&) const { return "execute"; }
        const char* operator()(const protocol::StatsRequest&) const { return "stats"; }
    };
    return std::visit(Names{}, request.body);
}

json languages_body(const LanguageTable& table) {
    json list = json::array();
    for (const auto& language : table.all())
        list.push_back({{"name", language.name},
                        {"version", language.version},
                        {"aliases", language.aliases},
                        {"compiled", language.compile.has_value()},
                        {"source_file", language.source_file}});
    return {{"languages", std::move(list)}};
}

json compile_cache_stats(const CompileCache& cache) {
    CompileCache::Stats stats = cache.stats();
    return {{"entries", stats.entries},
            {"bytes", stats.bytes},
            {"capacity_bytes", stats.capacity_bytes},
            {"hits", stats.hits},
            {"misses", stats.misses},
            {"evictions", stats.evictions}};
}

json prepared_stats(const isolate::Sandbox& sandbox) {
    auto stats = sandbox.prepared_stats();
    return {{"used", stats.used}, {"discarded", stats.discarded}, {"failed", stats.failed}};
}

json netns_stats(const isolate::Sandbox& sandbox) {
    auto stats = sandbox.netns_stats();
    return {{"kept", stats.kept},
            {"replaced", stats.replaced},
            {"kept_unix_only", stats.kept_unix_only}};
}

json mount_namespace_stats(const isolate::Sandbox& sandbox) {
    auto stats = sandbox.mount_namespace_stats();
    return {{"released", stats.released},
            {"closed_by_slot", stats.closed_by_slot},
            {"freed_by_pid1", stats.freed_by_pid1}};
}

json cgroup_reuse_stats(const isolate::Sandbox& sandbox) {
    auto stats = sandbox.cgroups().reuse_stats();
    return {{"made", stats.made}, {"reused", stats.reused}};
}

json stats_body(const DaemonServices& services, std::size_t connections) {
    Scheduler::Stats stats = services.scheduler.stats();
    auto uptime = std::chrono::duration_cast<std::chrono::seconds>(
        std::chrono::steady_clock::now() - services.started);
    return {{"running", stats.running},
            {"queued", stats.queued},
            {"completed", stats.completed},
            {"slots", stats.slots},
            {"cgroup", services.sandbox.cgroups().name()},
            {"uptime_s", uptime.count()},
            {"queue_capacity", stats.queue_capacity},
            {"rejected_busy", stats.rejected_busy},
            {"connections", connections},
            {"requests", services.requests.load()},
            {"languages", services.languages.all().size()},
            {"compile_cache", compile_cache_stats(services.compile_cache)},
            {"prepared_sandboxes", prepared_stats(services.sandbox)},
            {"network_namespaces", netns_stats(services.sandbox)},
            {"mount_namespaces", mount_namespace_stats(services.sandbox)},
            {"cgroup_reuse", cgroup_reuse_stats(services.sandbox)},
            {"version", SANDBOXD_VERSION}};
}

}  // namespace

Connection::Connection(asio::local::stream_protocol::socket socket, Server& server,
                       DaemonServices& services)
    : socket_(std::move(socket)),
      hang_up_timer_(socket_.get_executor()),
      server_(server),
      services_(services),
      chunk_(new char[kReadChunk]),
      socket_fd_(socket_.native_handle()) {
    ucred credentials{};
    socklen_t length = sizeof credentials;
    if (::getsockopt(socket_.native_handle(), SOL_SOCKET, SO_PEERCRED, &credentials, &length) ==
        0) {
        peer_.pid = credentials.pid;
        peer_.uid = credentials.uid;
        peer_.gid = credentials.gid;
    }
}

void Connection::start() {
    LogFields fields;
    fields.add("peer_uid", peer_.uid).add("peer_gid", peer_.gid).add("peer_pid", peer_.pid);
    if (!peer_allowed()) {
        services_.log.write(LogLevel::warning, "peer_refused",
                            fields.add("reason", "uid and gid are not in the allowlist"));
        close();
        return;
    }
    services_.log.write(LogLevel::debug, "connect", fields);
    {
        std::lock_guard lock(answer_mutex_);
        direct_writes_ = true;
    }
    read_more();
}

bool Connection::peer_allowed() const {
    const Config& config = services_.config;
    if (config.allowed_uids.empty() && config.allowed_gids.empty()) return true;
    return std::count(config.allowed_uids.begin(), config.allowed_uids.end(), peer_.uid) > 0 ||
           std::count(config.allowed_gids.begin(), config.allowed_gids.end(), peer_.gid) > 0;
}

void Connection::read_more() {
    if (reading_ || closed_ || input_ended_ || close_after_flush_) return;
    if (outbox_bytes_ > kOutboxHighWater) return;  // write_next() resumes us
    reading_ = true;
    socket_.async_read_some(
        asio::buffer(chunk_.get(), kReadChunk),
        [self = shared_from_this()](const boost::system::error_code& error, std::size_t bytes) {
            self->reading_ = false;
            if (self->closed_) return;
            if (error) {
                if (error == asio::error::eof)
                    self->on_end_of_input();
                else
                    self->abandon(error.message());
                return;
            }
            self->on_read(bytes);
        });
}

void Connection::on_read(std::size_t bytes) {
    input_.append(chunk_.get(), bytes);
    const std::size_t limit = services_.config.max_request_bytes;
    std::size_t line_start = 0;
    for (;;) {
        std::size_t newline = input_.find('\n', std::max(scanned_, line_start));
        if (newline == std::string::npos) break;
        if (newline - line_start > limit) break;  // reported as too_large below
        handle_line(std::string_view(input_).substr(line_start, newline - line_start));
        line_start = newline + 1;
        if (closed_ || close_after_flush_) return;
    }
    input_.erase(0, line_start);
    scanned_ = input_.size();
    // Whether or not its '\n' has arrived, a line past the limit ends the connection.
    std::size_t first_newline = input_.find('\n');
    std::size_t line_length = first_newline == std::string::npos ? input_.size() : first_newline;
    if (line_length > limit) {
        send_error({nullptr, protocol::ErrorCode::too_large,
                    "request line is longer than max_request_bytes (" + std::to_string(limit) +
                        " bytes); closing the connection"},
                   "");
        input_.clear();
        close_when_flushed();
        return;
    }
    read_more();
}

void Connection::on_end_of_input() {
    {
        std::lock_guard lock(answer_mutex_);
        input_ended_ = true;
    }
    if (!input_.empty()) {
        // A last request without its '\n' is still a request.
        std::string last = std::move(input_);
        input_.clear();
        if (last.size() <= services_.config.max_request_bytes) handle_line(last);
    }
    if (nothing_in_flight()) {
        close_when_flushed();
        return;
    }
    // EOF is either a full close (nobody will read our answers: stop its work now) or a
    // half-close (`shutdown(SHUT_WR)`, still waiting for answers). Only a full close
    // raises POLLHUP on a unix stream socket.
    if (peer_hung_up())
        abandon("client disconnected");
    else
        watch_for_hang_up();
}

bool Connection::peer_hung_up() {
    pollfd fd{socket_.native_handle(), 0, 0};
    return ::poll(&fd, 1, 0) == 1 && (fd.revents & (POLLHUP | POLLERR)) != 0;
}

void Connection::watch_for_hang_up() {
    hang_up_timer_.expires_after(kHangUpPoll);
    hang_up_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& error) {
        if (error || self->closed_) return;
        if (self->peer_hung_up())
            self->abandon("client disconnected");
        else if (self->nothing_in_flight())
            self->close_when_flushed();
        else
            self->watch_for_hang_up();
    });
}

void Connection::handle_line(std::string_view line) {
    const auto received = Clock::now();
    services_.requests.fetch_add(1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    auto parsed = protocol::parse_request(line);
    if (auto* error = std::get_if<protocol::Error>(&parsed)) {
        send_error(*error, "");
        return;
    }
    auto& request = std::get<protocol::Request>(parsed);
    const char* op = op_name(request);
    if (auto* execute = std::get_if<protocol::ExecuteRequest>(&request.body)) {
        handle_execute(std::move(request.id), std::move(*execute), received);
        return;
    }
    json body;
    if (std::holds_alternative<protocol::PingRequest>(request.body))
        body = {{"version", SANDBOXD_VERSION}};
    else if (std::holds_alternative<protocol::LanguagesRequest>(request.body))
        body = languages_body(services_.languages);
    else
        body = stats_body(services_, server_.connection_count());
    services_.log.write(LogLevel::info, "request",
                        LogFields()
                            .add("id", id_text(request.id))
                            .add("peer_uid", peer_.uid)
                            .add("peer_pid", peer_.pid)
                            .add("op", op)
                            .add("status", "ok")
                            .add("total_ms", elapsed_ms(received)));
    send(protocol::encode_ok(request.id, std::move(body)));
}

void Connection::handle_execute(protocol::RequestId id, protocol::ExecuteRequest request,
                                Clock::time_point received) {
    auto reject = [&](protocol::ErrorCode code, std::string message) {
        send_error({id, code, std::move(message)}, "execute");
    };
    if (services_.shutting_down) {
        reject(protocol::ErrorCode::shutting_down, "sandboxd is shutting down");
        return;
    }
    const Language* language = services_.languages.find(request.language);
    if (!language) {
        reject(protocol::ErrorCode::unknown_language,
               "no language or alias \"" + request.language.substr(0, 64) +
                   "\" is installed (the languages op lists them)");
        return;
    }
    if (auto problem = check_against_language(request, *language)) {
        reject(protocol::ErrorCode::bad_request, *problem);
        return;
    }
    auto limits = protocol::resolve_execute_limits(request, language->run_limits,
                                                   language->compile_limits, id);
    if (auto* error = std::get_if<protocol::Error>(&limits)) {
        send_error(*error, "execute");
        return;
    }

    auto job = std::make_shared<ExecuteJob>(ExecuteJob{
        language, std::move(request), std::move(std::get<protocol::ExecuteLimits>(limits))});
    if (!cancel_token_) cancel_token_ = std::make_shared<CancelToken>();
    const std::uint64_t ticket = next_ticket_++;
    auto self = shared_from_this();

    auto work = [self, job, id, ticket, received](unsigned slot, const CancelToken& token) {
        const double queue_ms = elapsed_ms(received);
        ExecuteSummary summary;
        std::string line;
        try {
            CompileCache* cache = self->services_.config.compile_cache_bytes > 0
                                      ? &self->services_.compile_cache
                                      : nullptr;
            json body = execute(self->services_.sandbox, cache, *job, slot, token.fd(), summary);
            line = protocol::encode_ok(id, std::move(body));
        } catch (const std::exception& error) {
            summary.status = "internal";
            line = protocol::encode_error({id, protocol::ErrorCode::internal,
                                           std::string("execute failed: ") + error.what()});
        }
        const double total_ms = elapsed_ms(received);
        // The answer first: formatting and writing the log line took ~30 us of the request's
        // path. A client may see the answer a moment before the line.
        const auto [sent, strand_needed] = self->finish_from_slot(ticket, line);
        self->services_.log.write(LogLevel::info, "request",
                                  LogFields()
                                      .add("id", self->id_text(id))
                                      .add("peer_uid", self->peer_.uid)
                                      .add("peer_pid", self->peer_.pid)
                                      .add("op", "execute")
                                      .add("language", job->language->name)
                                      .add("status", summary.status)
                                      .add("cpu_ms", summary.cpu_time_ms)
                                      .add("wall_ms", summary.wall_time_ms)
                                      .add("memory_bytes", summary.memory_bytes)
                                      .add("queue_ms", queue_ms)
                                      .add("total_ms", total_ms));
        // Usually the answer is out and nothing is left for the strand: the I/O thread sleeps
        // on instead of waking for nothing (about 20 us of CPU a run).
        if (!strand_needed) return;
        if (sent) line.clear();
        asio::post(self->socket_.get_executor(), [self, line = std::move(line)]() mutable {
            if (line.empty())
                self->write_next();  // whatever the direct write left unsent
            else
                self->send(std::move(line));
            if (self->input_ended_ && self->nothing_in_flight()) self->close_when_flushed();
        });
    };
    auto dropped = [self, id, ticket] {
        asio::post(self->socket_.get_executor(), [self, id, ticket] {
            {
                std::lock_guard lock(self->answer_mutex_);
                self->in_flight_.erase(ticket);
            }
            self->send_error({id, protocol::ErrorCode::shutting_down,
                              "sandboxd is shutting down; the request was not run"},
                             "execute");
        });
    };

    {
        std::lock_guard lock(answer_mutex_);
        in_flight_.insert(ticket);
    }
    const auto admission =
        services_.scheduler.submit(cancel_token_, std::move(work), std::move(dropped));
    if (admission != Scheduler::Admission::accepted) {
        std::lock_guard lock(answer_mutex_);
        in_flight_.erase(ticket);
    }
    switch (admission) {
        case Scheduler::Admission::accepted:
            return;
        case Scheduler::Admission::busy:
            reject(protocol::ErrorCode::busy, "the queue is full (" +
                                                  std::to_string(services_.config.queue_size) +
                                                  " requests waiting); retry later");
            return;
        case Scheduler::Admission::shutting_down:
            reject(protocol::ErrorCode::shutting_down, "sandboxd is shutting down");
            return;
    }
}

void Connection::send_error(const protocol::Error& error, std::string_view op) {
    LogFields fields;
    fields.add("id", id_text(error.id)).add("peer_uid", peer_.uid).add("peer_pid", peer_.pid);
    if (!op.empty()) fields.add("op", op);
    fields.add("status", "error").add("error", protocol::to_string(error.code));
    fields.add("message", error.message.substr(0, 200));
    services_.log.write(LogLevel::info, "request", fields);
    send(protocol::encode_error(error));
}

void Connection::send(std::string line) {
    if (closed_) return;
    outbox_bytes_ += line.size();
    outbox_.push_back(std::move(line));
    write_next();
}

bool Connection::nothing_in_flight() {
    std::lock_guard lock(answer_mutex_);
    return in_flight_.empty();
}

Connection::SlotFinish Connection::finish_from_slot(std::uint64_t ticket, const std::string& line) {
    std::lock_guard lock(answer_mutex_);
    in_flight_.erase(ticket);
    const bool close_now = input_ended_ && in_flight_.empty();
    if (!direct_writes_) return {false, true};
    ssize_t sent;
    do {
        sent = ::send(socket_fd_, line.data(), line.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    const std::size_t written = sent > 0 ? static_cast<std::size_t>(sent) : 0;
    if (written < line.size()) {
        // A full socket or an error: the strand writes the rest (or meets the error and
        // abandons the connection), and nothing else goes out before it.
        direct_writes_ = false;
        direct_unsent_.assign(line, written);
    }
    return {true, written < line.size() || close_now};
}

void Connection::write_next() {
    if (writing_ || closed_) return;
    {
        std::lock_guard lock(answer_mutex_);
        if (!direct_unsent_.empty()) {
            outbox_bytes_ += direct_unsent_.size();
            outbox_.push_front(std::move(direct_unsent_));
            direct_unsent_.clear();
        }
        direct_writes_ = outbox_.empty() && !close_after_flush_;
    }
    if (outbox_.empty()) {
        if (close_after_flush_) {
            close();
            return;
        }
        read_more();
        return;
    }
    writing_ = true;
    asio::async_write(
        socket_, asio::buffer(outbox_.front()),
        [self = shared_from_this()](const boost::system::error_code& error, std::size_t) {
            self->writing_ = false;
            if (self->closed_) return;
            if (error) {
                self->abandon("cannot write to client: " + error.message());
                return;
            }
            self->outbox_bytes_ -= self->outbox_.front().size();
            self->outbox_.pop_front();
            self->write_next();
        });
}

void Connection::close_when_flushed() {
    if (closed_) return;
    close_after_flush_ = true;
    // Through write_next(): a tail a slot thread's write left unsent goes out before the close.
    write_next();
}

void Connection::abandon(std::string_view why) {
    if (closed_) return;
    std::size_t cancelled;
    {
        std::lock_guard lock(answer_mutex_);
        cancelled = in_flight_.size();
    }
    if (cancelled > 0)
        services_.log.write(LogLevel::info, "disconnect",
                            LogFields()
                                .add("peer_uid", peer_.uid)
                                .add("peer_pid", peer_.pid)
                                .add("reason", why)
                                .add("cancelled", static_cast<std::uint64_t>(cancelled)));
    close();
}

void Connection::close() {
    if (closed_) return;
    closed_ = true;
    {
        std::lock_guard lock(answer_mutex_);
        direct_writes_ = false;
        direct_unsent_.clear();
        in_flight_.clear();
    }
    // Work still queued or running for us is cancelled: nobody will read its answer.
    if (cancel_token_) services_.scheduler.withdraw(cancel_token_);
    outbox_.clear();
    outbox_bytes_ = 0;
    boost::system::error_code ignored;
    hang_up_timer_.cancel();
    socket_.shutdown(asio::local::stream_protocol::socket::shutdown_both, ignored);
    socket_.close(ignored);
    server_.forget(this);
}

std::string Connection::id_text(const protocol::RequestId& id) const {
    if (id.is_null()) return "-";
    std::string text = id.is_string() ? id.get<std::string>()
                                      : id.dump(-1, ' ', false, json::error_handler_t::replace);
    if (text.size() > 80) text = text.substr(0, 80) + "...";
    return text;
}

}  // namespace sandboxd
