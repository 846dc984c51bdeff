#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace sandboxd {

bool is_valid_utf8(std::string_view bytes);
std::string base64_encode(std::string_view bytes);
// Strict RFC 4648 (padding required, no whitespace); nullopt on any invalid input.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace sandboxd
