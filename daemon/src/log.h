#pragma once

// Structured logs on stderr: one logfmt line per event (`level=info event=request id=42 ...`).
// Under systemd (JOURNAL_STREAM set) each line starts with a syslog priority prefix such as
// "<6>" so journald files it at the right level, and the timestamp is left to journald.

#include <cstdint>
#include <iosfwd>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sandboxd {

enum class LogLevel { error = 3, warning = 4, info = 6, debug = 7 };

// The fields of one line, in the order added. Values are quoted when they need it.
class LogFields {
  public:
    LogFields& add(std::string_view key, std::string_view value);
    LogFields& add(std::string_view key, const char* value) {
        return add(key, std::string_view(value));
    }
    LogFields& add(std::string_view key, const std::string& value) {
        return add(key, std::string_view(value));
    }
    LogFields& add(std::string_view key, double value);
    LogFields& add(std::string_view key, std::int64_t value);
    LogFields& add(std::string_view key, std::uint64_t value);
    LogFields& add(std::string_view key, int value) { return add(key, std::int64_t{value}); }
    LogFields& add(std::string_view key, unsigned value) { return add(key, std::uint64_t{value}); }
    const std::string& text() const { return text_; }

  private:
    std::string text_;
};

class Log {
  public:
    // `journald`: write priority prefixes instead of timestamps. Lines below `threshold`
    // (in importance) are not written.
    Log(std::ostream& out, bool journald, LogLevel threshold = LogLevel::info);
    // Reads JOURNAL_STREAM to decide.
    static bool under_journald();

    void write(LogLevel level, std::string_view event, const LogFields& fields = {});

  private:
    std::mutex mutex_;
    std::ostream& out_;
    bool journald_;
    LogLevel threshold_;
};

}  // namespace sandboxd
