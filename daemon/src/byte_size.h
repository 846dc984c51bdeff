#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace sandboxd {

// "268435456", "256M", "256MiB", "1G", "512k": binary units. nullopt if malformed or too big.
std::optional<std::uint64_t> parse_byte_size(std::string_view text);

}  // namespace sandboxd
