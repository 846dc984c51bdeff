#include "language_guess.h"

#include <array>
#include <utility>

namespace sandboxctl {
namespace {

constexpr std::array<std::pair<std::string_view, std::string_view>, 12> kExtensions{{
    {".py", "python"},
    {".sh", "bash"},
    {".bash", "bash"},
    {".c", "c"},
    {".cpp", "cpp"},
    {".cc", "cpp"},
    {".cxx", "cpp"},
    {".go", "go"},
    {".js", "javascript"},
    {".mjs", "javascript"},
    {".java", "java"},
    {".rs", "rust"},
}};

}  // namespace

std::optional<std::string> guess_language(std::string_view file) {
    // Only the last path component counts: "dir.py/script" has no extension.
    auto slash = file.rfind('/');
    std::string_view name = slash == std::string_view::npos ? file : file.substr(slash + 1);
    auto dot = name.rfind('.');
    // A leading dot marks a hidden file (".bashrc"), not an extension.
    if (dot == std::string_view::npos || dot == 0) return std::nullopt;
    std::string_view extension = name.substr(dot);
    for (const auto& [known, language] : kExtensions) {
        if (known == extension) return std::string(language);
    }
    return std::nullopt;
}

std::string known_extensions() {
    std::string list;
    for (const auto& entry : kExtensions) {
        if (!list.empty()) list += ", ";
        list += entry.first;
    }
    return list;
}

}  // namespace sandboxctl
