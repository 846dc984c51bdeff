#pragma once

// Content-addressed cache of successful compiles: the same language (and version), code,
// files, compile command and compile limits give the same artifacts, so a judge that submits
// one program with many test sets compiles it once. Bounded in bytes, least recently used
// entries go first. The key is a SHA-256 over every input, so two different submissions can
// never share an entry.

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "isolate/run_spec.h"
#include "languages.h"
#include "protocol.h"

namespace sandboxd {

struct CachedCompile {
    nlohmann::json outcome;  // the compile outcome as first reported (without "cached")
    std::vector<isolate::InputFile> artifacts;
};

class CompileCache {
  public:
    // capacity_bytes == 0 disables the cache.
    explicit CompileCache(std::uint64_t capacity_bytes);

    // The hex SHA-256 of everything a compile depends on.
    static std::string key_for(const Language& language, const protocol::ExecuteRequest& request,
                               const isolate::Limits& compile_limits);

    std::shared_ptr<const CachedCompile> find(const std::string& key);
    // Entries larger than the whole capacity are not kept.
    void insert(const std::string& key, CachedCompile entry);

    struct Stats {
        std::uint64_t entries = 0, bytes = 0, capacity_bytes = 0;
        std::uint64_t hits = 0, misses = 0, evictions = 0;
    };
    Stats stats() const;

  private:
    struct Entry {
        std::string key;
        std::shared_ptr<const CachedCompile> value;
        std::uint64_t bytes = 0;
    };

    const std::uint64_t capacity_bytes_;
    mutable std::mutex mutex_;
    std::list<Entry> by_recency_;  // front: most recently used
    std::unordered_map<std::string, std::list<Entry>::iterator> by_key_;
    Stats stats_;
};

}  // namespace sandboxd
