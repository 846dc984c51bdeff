#include "serve_command.h"

#include <signal.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <mutex>
#include <thread>

#include "config.h"
#include "isolate/error.h"
#include "languages.h"
#include "log.h"
#include "scheduler.h"
#include "server.h"
#include "systemd_notify.h"

namespace sandboxd {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

struct ServeOptions {
    std::string config_file;
    std::string socket, socket_group, seccomp_dir, cgroup_subtree, cgroup_version;
    std::vector<std::string> language_dirs;
    std::optional<unsigned> slots;
    std::optional<std::size_t> queue_size;
    std::optional<std::uint32_t> uid_base;
    std::optional<std::uint64_t> shutdown_grace_ms;
    bool verbose = false;
};

// A slot that fails to build its sandbox ahead usually fails the same way after every job
// (a rootfs gone, a cgroup limit refused), and each of those runs then reports the error
// itself. One warning per new reason is enough to tell the operator; `stats` counts them all.
class PrepareFailureLog {
  public:
    explicit PrepareFailureLog(Log& log) : log_(log) {}

    void report(unsigned slot, const std::string& error) {
        std::lock_guard lock(mutex_);
        ++failures_;
        if (error == last_error_) return;
        last_error_ = error;
        log_.write(LogLevel::warning, "prepare_failed",
                   LogFields().add("slot", slot).add("failures", failures_).add("message", error));
    }

    // The next failure is news again, even for the same reason.
    void recovered() {
        std::lock_guard lock(mutex_);
        last_error_.clear();
    }

  private:
    Log& log_;
    std::mutex mutex_;
    std::string last_error_;
    std::uint64_t failures_ = 0;
};

Config build_config(const ServeOptions& options) {
    Config config = default_config();
    if (!options.config_file.empty()) load_config_file(options.config_file, config);
    if (!options.socket.empty()) config.socket = options.socket;
    if (!options.socket_group.empty()) config.socket_group = options.socket_group;
    if (!options.seccomp_dir.empty()) config.seccomp_dir = options.seccomp_dir;
    if (!options.cgroup_subtree.empty()) config.cgroup_subtree = options.cgroup_subtree;
    if (!options.cgroup_version.empty()) config.cgroup_version = options.cgroup_version;
    if (!options.language_dirs.empty())
        config.language_dirs.assign(options.language_dirs.begin(), options.language_dirs.end());
    if (options.slots) config.slots = *options.slots;
    if (options.queue_size) config.queue_size = *options.queue_size;
    if (options.uid_base) config.uid_base = *options.uid_base;
    if (options.shutdown_grace_ms) config.shutdown_grace_ms = *options.shutdown_grace_ms;
    if (config.slots == 0) config.slots = std::max(1u, std::thread::hardware_concurrency());
    validate_config(config);
    return config;
}

// SIGTERM: stop accepting, answer the queue with shutting_down, let running sandboxes finish
// for the grace period, kill the rest, flush the answers, and return from io.run().
class Shutdown {
  public:
    Shutdown(asio::io_context& io, DaemonServices& services, Server& server)
        : io_(io), services_(services), server_(server), timer_(io) {}

    void begin(int signal) {
        if (services_.shutting_down.exchange(true)) {
            // A second signal: no more grace.
            services_.scheduler.cancel_running();
            return;
        }
        notify_systemd("STOPPING=1\nSTATUS=stopping");
        auto stats = services_.scheduler.stats();
        services_.log.write(LogLevel::info, "shutdown",
                            LogFields()
                                .add("signal", signal == SIGINT ? "SIGINT" : "SIGTERM")
                                .add("running", stats.running)
                                .add("queued", stats.queued)
                                .add("grace_ms", services_.config.shutdown_grace_ms));
        server_.stop_accepting();
        services_.scheduler.stop_accepting();
        deadline_ = Clock::now() + std::chrono::milliseconds(services_.config.shutdown_grace_ms);
        poll_drain();
    }

  private:
    void poll_drain() {
        if (services_.scheduler.wait_idle(std::chrono::milliseconds(0))) {
            server_.close_connections();
            flush_deadline_ = Clock::now() + std::chrono::seconds(1);
            poll_flushed();
            return;
        }
        if (!cancelled_ && Clock::now() >= deadline_) {
            cancelled_ = true;
            services_.log.write(LogLevel::info, "shutdown_kill",
                                LogFields().add("running", services_.scheduler.stats().running));
            services_.scheduler.cancel_running();
        }
        timer_.expires_after(std::chrono::milliseconds(20));
        timer_.async_wait([this](const boost::system::error_code& error) {
            if (!error) poll_drain();
        });
    }

    void poll_flushed() {
        if (server_.connection_count() == 0 || Clock::now() >= flush_deadline_) {
            io_.stop();
            return;
        }
        timer_.expires_after(std::chrono::milliseconds(10));
        timer_.async_wait([this](const boost::system::error_code& error) {
            if (!error) poll_flushed();
        });
    }

    asio::io_context& io_;
    DaemonServices& services_;
    Server& server_;
    asio::steady_timer timer_;
    Clock::time_point deadline_, flush_deadline_;
    bool cancelled_ = false;
};

int serve(const ServeOptions& options) {
    Log log(std::cerr, Log::under_journald(), options.verbose ? LogLevel::debug : LogLevel::info);
    Config config;
    try {
        config = build_config(options);
    } catch (const std::exception& error) {
        log.write(LogLevel::error, "config_error", LogFields().add("message", error.what()));
        return 2;
    }

    try {
        isolate::cgroup::BackendOptions cgroup_options;
        cgroup_options.subtree = config.cgroup_subtree;
        cgroup_options.force = config.cgroup_version;
        isolate::SandboxConfig sandbox_config;
        sandbox_config.uid_base = config.uid_base;
        sandbox_config.slots = config.slots;
        // Enough for every slot to start its next run without waiting, within reason.
        sandbox_config.prepared_netns = std::min(config.slots, 8u) + 1;
        sandbox_config.keep_clean_netns = config.keep_clean_network_namespaces;
        sandbox_config.pin_slots = config.pin_slots;
        // Requests usually come in runs of the same language and limits: build each slot's
        // next sandbox while it waits (docs/performance.md).
        sandbox_config.prepare_ahead = true;
        isolate::Sandbox sandbox(sandbox_config, isolate::cgroup::detect_backend(cgroup_options));

        std::vector<std::string> warnings;
        LanguageTable languages = LanguageTable::load(config, warnings);
        for (const auto& warning : warnings)
            log.write(LogLevel::warning, "language_skipped", LogFields().add("message", warning));
        if (languages.all().empty())
            log.write(LogLevel::warning, "no_languages",
                      LogFields().add("message",
                                      "no language is installed; execute will answer "
                                      "unknown_language (see scripts/build-rootfs)"));

        asio::io_context io;
        PrepareFailureLog prepare_failures(log);
        Scheduler scheduler(
            config.slots, config.queue_size,
            [&](unsigned slot) {
                auto outcome = sandbox.prepare_slot(slot);
                using Kind = isolate::Sandbox::PrepareOutcome::Kind;
                if (outcome.kind == Kind::failed) prepare_failures.report(slot, outcome.error);
                if (outcome.kind == Kind::built) prepare_failures.recovered();
            },
            [&](unsigned slot) {
                if (!sandbox.pin_current_thread(slot))
                    log.write(LogLevel::warning, "pin_failed",
                              LogFields()
                                  .add("slot", slot)
                                  .add("message",
                                       std::string("sched_setaffinity: ") + std::strerror(errno)));
            });
        CompileCache compile_cache(config.compile_cache_bytes);
        DaemonServices services{config, languages, sandbox, scheduler, compile_cache, log};
        Server server(io, services);
        server.listen();
        server.start_accepting();

        Shutdown shutdown(io, services, server);
        asio::signal_set signals(io, SIGTERM, SIGINT);
        std::function<void()> wait_signal = [&] {
            signals.async_wait([&](const boost::system::error_code& error, int signal) {
                if (error) return;
                shutdown.begin(signal);
                wait_signal();
            });
        };
        wait_signal();

        std::string names;
        for (const auto& language : languages.all())
            names += (names.empty() ? "" : ",") + language.name;
        log.write(LogLevel::info, "ready",
                  LogFields()
                      .add("version", SANDBOXD_VERSION)
                      .add("socket", config.socket.string())
                      .add("slots", config.slots)
                      .add("queue_size", static_cast<std::uint64_t>(config.queue_size))
                      .add("cgroup", sandbox.cgroups().name())
                      .add("languages", names.empty() ? "-" : names));
        notify_systemd("READY=1\nSTATUS=accepting requests on " + config.socket.string());
        io.run();
        log.write(LogLevel::info, "stopped",
                  LogFields().add("completed", scheduler.stats().completed));
        return 0;
    } catch (const std::exception& error) {
        log.write(LogLevel::error, "startup_failed", LogFields().add("message", error.what()));
        return 1;
    }
}

}  // namespace

void add_serve_options(CLI::App& app, int& exit_code) {
    auto options = std::make_shared<ServeOptions>();
    app.add_option("--config", options->config_file,
                   "Configuration file (JSON; see docs/configuration.md)")
        ->check(CLI::ExistingFile);
    app.add_option("--socket", options->socket,
                   "Unix socket path (default /run/sandboxd/sandboxd.sock)");
    app.add_option("--socket-group", options->socket_group,
                   "Group that owns the socket (mode 0660)");
    app.add_option("--slots", options->slots, "Sandboxes that run at once (default: cores)");
    app.add_option("--queue-size", options->queue_size, "Requests that may wait for a slot");
    app.add_option("--language-dir", options->language_dirs,
                   "Directory of language definitions (repeatable; replaces the configured ones)");
    app.add_option("--seccomp-dir", options->seccomp_dir, "Directory of seccomp profiles");
    app.add_option("--uid-base", options->uid_base, "First host uid of the sandboxes");
    app.add_option("--cgroup-subtree", options->cgroup_subtree, "cgroup directory below our own");
    app.add_option("--cgroup-version", options->cgroup_version, "Insist on v1 or v2")
        ->check(CLI::IsMember({"v1", "v2"}));
    app.add_option("--shutdown-grace-ms", options->shutdown_grace_ms,
                   "How long running sandboxes may finish after SIGTERM");
    app.add_flag("--verbose", options->verbose, "Also log connections (debug level)");
    app.callback([options, &exit_code] { exit_code = serve(*options); });
}

}  // namespace sandboxd
