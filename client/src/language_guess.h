#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace sandboxctl {

// The language name sandboxd knows for FILE's extension, or nullopt when the extension is
// unknown (or FILE has none).
std::optional<std::string> guess_language(std::string_view file);

// ".py, .sh, ..." in a stable order, for the error that suggests --lang.
std::string known_extensions();

}  // namespace sandboxctl
