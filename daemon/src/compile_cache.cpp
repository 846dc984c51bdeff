#include "compile_cache.h"

#include <openssl/evp.h>

#include <cstdio>
#include <stdexcept>

namespace sandboxd {
namespace {

// Feeds length-prefixed fields, so ("ab", "c") and ("a", "bc") hash differently.
class Digest {
  public:
    Digest() : context_(EVP_MD_CTX_new()) {
        if (!context_ || EVP_DigestInit_ex(context_, EVP_sha256(), nullptr) != 1)
            throw std::runtime_error("SHA-256 is not available");
    }
    ~Digest() { EVP_MD_CTX_free(context_); }
    Digest(const Digest&) = delete;
    Digest& operator=(const Digest&) = delete;

    Digest& add(std::string_view bytes) {
        std::uint64_t size = bytes.size();
        EVP_DigestUpdate(context_, &size, sizeof size);
        EVP_DigestUpdate(context_, bytes.data(), bytes.size());
        return *this;
    }
    Digest& add(std::uint64_t number) { return add(std::to_string(number)); }
    Digest& add(const std::vector<std::string>& items) {
        add(static_cast<std::uint64_t>(items.size()));
        for (const auto& item : items) add(item);
        return *this;
    }

    std::string hex() {
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned int length = 0;
        if (EVP_DigestFinal_ex(context_, digest, &length) != 1)
            throw std::runtime_error("SHA-256 failed");
        std::string out;
        char byte[3];
        for (unsigned int i = 0; i < length; ++i) {
            std::snprintf(byte, sizeof byte, "%02x", digest[i]);
            out += byte;
        }
        return out;
    }

  private:
    EVP_MD_CTX* context_;
};

std::uint64_t size_of(const CachedCompile& entry) {
    std::uint64_t bytes = entry.outcome.dump().size();
    for (const auto& file : entry.artifacts) bytes += file.path.size() + file.content.size();
    return bytes;
}

}  // namespace

CompileCache::CompileCache(std::uint64_t capacity_bytes) : capacity_bytes_(capacity_bytes) {
    stats_.capacity_bytes = capacity_bytes;
}

std::string CompileCache::key_for(const Language& language, const protocol::ExecuteRequest& request,
                                  const isolate::Limits& limits) {
    Digest digest;
    digest.add("sandboxd compile cache v1").add(language.name).add(language.version);
    digest.add(expand_argv(*language.compile, limits.memory_bytes)).add(language.env);
    digest.add(language.artifacts).add(language.rootfs.string());
    digest.add(language.source_file).add(request.code);
    digest.add(static_cast<std::uint64_t>(request.files.size()));
    for (const auto& file : request.files) digest.add(file.path).add(file.content);
    digest.add(limits.wall_time_ms).add(limits.cpu_time_ms).add(limits.memory_bytes);
    digest.add(limits.max_processes).add(limits.max_output_bytes).add(limits.max_file_bytes);
    digest.add(std::to_string(limits.cpus)).add(limits.tmpfs_bytes).add(limits.stack_bytes);
    digest.add(limits.open_files);
    return digest.hex();
}

std::shared_ptr<const CachedCompile> CompileCache::find(const std::string& key) {
    std::lock_guard lock(mutex_);
    auto it = by_key_.find(key);
    if (it == by_key_.end()) {
        ++stats_.misses;
        return nullptr;
    }
    ++stats_.hits;
    by_recency_.splice(by_recency_.begin(), by_recency_, it->second);
    return it->second->value;
}

void CompileCache::insert(const std::string& key, CachedCompile entry) {
    const std::uint64_t bytes = size_of(entry) + key.size();
    if (bytes > capacity_bytes_) return;
    auto value = std::make_shared<const CachedCompile>(std::move(entry));
    std::lock_guard lock(mutex_);
    if (by_key_.count(key)) return;  // another slot compiled the same thing meanwhile
    while (stats_.bytes + bytes > capacity_bytes_ && !by_recency_.empty()) {
        stats_.bytes -= by_recency_.back().bytes;
        by_key_.erase(by_recency_.back().key);
        by_recency_.pop_back();
        ++stats_.evictions;
    }
    by_recency_.push_front({key, std::move(value), bytes});
    by_key_[key] = by_recency_.begin();
    stats_.bytes += bytes;
}

CompileCache::Stats CompileCache::stats() const {
    std::lock_guard lock(mutex_);
    Stats stats = stats_;
    stats.entries = by_key_.size();
    return stats;
}

}  // namespace sandboxd
