#include "log.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <ostream>

namespace sandboxd {
namespace {

const char* level_name(LogLevel level) {
    switch (level) {
        case LogLevel::error:
            return "error";
        case LogLevel::warning:
            return "warning";
        case LogLevel::info:
            return "info";
        case LogLevel::debug:
            return "debug";
    }
    return "info";
}

bool needs_quotes(std::string_view value) {
    if (value.empty()) return true;
    for (unsigned char c : value)
        if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c >= 0x7f) return true;
    return false;
}

// Quoted with the escapes that keep one event on one line whatever a client sent.
void append_value(std::string& out, std::string_view value) {
    if (!needs_quotes(value)) {
        out += value;
        return;
    }
    out += '"';
    for (unsigned char c : value) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c == '\n') {
            out += "\\n";
        } else if (c < ' ' || c == 0x7f) {
            char escaped[8];
            std::snprintf(escaped, sizeof escaped, "\\x%02x", c);
            out += escaped;
        } else {
            out += static_cast<char>(c);
        }
    }
    out += '"';
}

std::string timestamp() {
    auto now = std::chrono::system_clock::now();
    std::time_t seconds = std::chrono::system_clock::to_time_t(now);
    auto millis =
        std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
    std::tm utc{};
    ::gmtime_r(&seconds, &utc);
    char text[96];
    std::snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900,
                  utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                  static_cast<int>(millis.count()));
    return text;
}

}  // namespace

LogFields& LogFields::add(std::string_view key, std::string_view value) {
    text_ += ' ';
    text_ += key;
    text_ += '=';
    append_value(text_, value);
    return *this;
}

LogFields& LogFields::add(std::string_view key, double value) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f", value);
    return add(key, std::string_view(text));
}

LogFields& LogFields::add(std::string_view key, std::int64_t value) {
    return add(key, std::string_view(std::to_string(value)));
}

LogFields& LogFields::add(std::string_view key, std::uint64_t value) {
    return add(key, std::string_view(std::to_string(value)));
}

Log::Log(std::ostream& out, bool journald, LogLevel threshold)
    : out_(out), journald_(journald), threshold_(threshold) {}

bool Log::under_journald() {
    return std::getenv("JOURNAL_STREAM") != nullptr;
}

void Log::write(LogLevel level, std::string_view event, const LogFields& fields) {
    if (static_cast<int>(level) > static_cast<int>(threshold_)) return;
    std::string line;
    if (journald_)
        line = "<" + std::to_string(static_cast<int>(level)) + ">";
    else
        line = "ts=" + timestamp() + " ";
    line += "level=";
    line += level_name(level);
    line += " event=";
    line += event;
    line += fields.text();
    line += '\n';
    std::lock_guard lock(mutex_);
    out_ << line << std::flush;
}

}  // namespace sandboxd
