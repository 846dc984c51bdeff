#include "languages.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "seccomp_profile.h"

namespace sandboxd {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Thrown while reading one definition; becomes that language's start-up warning.
struct DefinitionError {
    std::string message;
};

[[noreturn]] void fail(std::string message) {
    throw DefinitionError{std::move(message)};
}

json read_json_file(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) fail("cannot read " + file.string());
    std::stringstream text;
    text << in.rdbuf();
    json doc = json::parse(text.str(), nullptr, false);
    if (doc.is_discarded() || !doc.is_object()) fail(file.string() + " is not a JSON object");
    return doc;
}

std::string string_field(const json& doc, const char* key, bool required = true) {
    auto it = doc.find(key);
    if (it == doc.end() || it->is_null()) {
        if (required) fail(std::string("\"") + key + "\" is missing");
        return "";
    }
    if (!it->is_string() || it->get<std::string>().empty())
        fail(std::string("\"") + key + "\" must be a non-empty string");
    return it->get<std::string>();
}

std::vector<std::string> string_list(const json& value, const char* key, bool allow_empty) {
    if (!value.is_array()) fail(std::string("\"") + key + "\" must be an array of strings");
    std::vector<std::string> out;
    for (const auto& item : value) {
        if (!item.is_string() || item.get<std::string>().empty())
            fail(std::string("\"") + key + "\" must hold non-empty strings");
        out.push_back(item.get<std::string>());
    }
    if (out.empty() && !allow_empty) fail(std::string("\"") + key + "\" must not be empty");
    return out;
}

// Names that go into paths and the protocol: lower-case words, no separators.
bool plain_name(std::string_view name) {
    return !name.empty() && name.size() <= 64 && name[0] != '.' &&
           std::all_of(name.begin(), name.end(), [](char c) {
               return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '-' ||
                      c == '_' || c == '.';
           });
}

// A path relative to the working directory that stays inside it.
bool plain_relative_path(std::string_view path) {
    if (path.empty() || path.front() == '/' || path.back() == '/') return false;
    std::size_t start = 0;
    while (start <= path.size()) {
        std::size_t end = path.find('/', start);
        if (end == std::string_view::npos) end = path.size();
        std::string_view part = path.substr(start, end - start);
        if (part.empty() || part == "." || part == "..") return false;
        start = end + 1;
    }
    return true;
}

std::string read_version(const fs::path& dir) {
    const fs::path manifest = dir / "manifest.json";
    if (!fs::exists(manifest))
        fail("no manifest.json (the rootfs builder writes it with the real version)");
    json doc = read_json_file(manifest);
    return string_field(doc, "version");
}

Language load_language(
    const fs::path& dir, const Config& config,
    std::map<std::string, std::shared_ptr<const isolate::SeccompFilter>>& filters) {
    const fs::path file = dir / "language.json";
    const json doc = read_json_file(file);
    static const std::set<std::string> known = {
        "name", "aliases", "source_file",    "compile",         "artifacts", "run",
        "env",  "limits",  "compile_limits", "seccomp_profile", "binds"};
    for (const auto& [key, value] : doc.items()) {
        (void)value;
        if (!known.count(key)) fail("unknown key \"" + key + "\"");
    }

    Language language;
    language.name = string_field(doc, "name");
    if (!plain_name(language.name)) fail("\"name\" must be a plain lower-case name");
    if (doc.contains("aliases")) language.aliases = string_list(doc["aliases"], "aliases", true);
    for (const auto& alias : language.aliases)
        if (!plain_name(alias)) fail("alias \"" + alias + "\" must be a plain lower-case name");
    language.source_file = string_field(doc, "source_file");
    if (!plain_relative_path(language.source_file))
        fail("\"source_file\" must be a relative path inside the working directory");
    if (doc.contains("compile") && !doc["compile"].is_null())
        language.compile = string_list(doc["compile"], "compile", false);
    if (doc.contains("artifacts"))
        language.artifacts = string_list(doc["artifacts"], "artifacts", true);
    for (const auto& artifact : language.artifacts)
        if (!plain_relative_path(artifact))
            fail("artifact \"" + artifact + "\" is not a plain path");
    if (language.compile && language.artifacts.empty())
        fail("a compiled language needs \"artifacts\": what the run step gets from compile");
    if (!doc.contains("run")) fail("\"run\" is missing");
    language.run = string_list(doc["run"], "run", false);

    if (doc.contains("env")) {
        if (!doc["env"].is_object()) fail("\"env\" must be an object of strings");
        for (const auto& [key, value] : doc["env"].items()) {
            if (!value.is_string() || key.empty() || key.find('=') != std::string::npos)
                fail("\"env\" must map names to strings");
            language.env.push_back(key + "=" + value.get<std::string>());
        }
    }
    if (doc.contains("binds")) {
        if (!doc["binds"].is_array()) fail("\"binds\" must be an array");
        for (const auto& bind : doc["binds"]) {
            if (!bind.is_object()) fail("each bind is {\"source\": ..., \"target\": ...}");
            std::string source = string_field(bind, "source");
            std::string target = string_field(bind, "target");
            if (source[0] != '/' || target[0] != '/') fail("bind paths must be absolute");
            language.binds.push_back({source, target});
        }
    }

    language.run_limits = config.run_limits;
    language.compile_limits = config.compile_limits;
    try {
        if (doc.contains("limits"))
            apply_limit_adjustments(doc["limits"], file.string() + ": limits", language.run_limits);
        if (doc.contains("compile_limits"))
            apply_limit_adjustments(doc["compile_limits"], file.string() + ": compile_limits",
                                    language.compile_limits);
    } catch (const ConfigError& error) {
        fail(error.what());
    }

    language.seccomp_profile = doc.contains("seccomp_profile")
                                   ? string_field(doc, "seccomp_profile")
                                   : std::string("default");
    if (!plain_name(language.seccomp_profile)) fail("\"seccomp_profile\" must be a profile name");
    auto& filter = filters[language.seccomp_profile];
    if (!filter) {
        try {
            // Reporting sockets only serves namespaces kept from run to run.
            filter = isolate::SeccompFilter::compile(
                load_seccomp_profile(config.seccomp_dir / (language.seccomp_profile + ".json")),
                config.keep_clean_network_namespaces);
        } catch (const std::exception& error) {
            filters.erase(language.seccomp_profile);
            fail("seccomp profile \"" + language.seccomp_profile + "\": " + error.what());
        }
    }
    language.seccomp = filter;

    language.rootfs = dir / "root";
    for (const char* needed : {"", "proc", "dev", "tmp", "box"})
        if (!fs::is_directory(language.rootfs / needed))
            fail("rootfs " + (language.rootfs / needed).string() + " is not a directory");
    language.version = read_version(dir);
    return language;
}

}  // namespace

LanguageTable LanguageTable::load(const Config& config, std::vector<std::string>& warnings) {
    LanguageTable table;
    std::map<std::string, std::shared_ptr<const isolate::SeccompFilter>> filters;
    std::set<std::string> taken;
    for (const auto& base : config.language_dirs) {
        std::error_code ec;
        if (!fs::is_directory(base, ec)) {
            warnings.push_back("language directory " + base.string() + " does not exist");
            continue;
        }
        std::vector<fs::path> dirs;
        for (const auto& entry : fs::directory_iterator(base, ec))
            if (entry.is_directory() && fs::exists(entry.path() / "language.json"))
                dirs.push_back(entry.path());
        std::sort(dirs.begin(), dirs.end());
        for (const auto& dir : dirs) {
            try {
                Language language = load_language(dir, config, filters);
                std::vector<std::string> names = language.aliases;
                names.push_back(language.name);
                for (const auto& name : names)
                    if (taken.count(name)) fail("name or alias \"" + name + "\" is already taken");
                taken.insert(names.begin(), names.end());
                table.languages_.push_back(std::move(language));
            } catch (const DefinitionError& error) {
                warnings.push_back("language " + dir.string() + " left out: " + error.message);
            } catch (const std::exception& error) {
                warnings.push_back("language " + dir.string() + " left out: " + error.what());
            }
        }
    }
    std::sort(table.languages_.begin(), table.languages_.end(),
              [](const Language& a, const Language& b) { return a.name < b.name; });
    return table;
}

const Language* LanguageTable::find(std::string_view name_or_alias) const {
    for (const auto& language : languages_) {
        if (language.name == name_or_alias) return &language;
        for (const auto& alias : language.aliases)
            if (alias == name_or_alias) return &language;
    }
    return nullptr;
}

std::vector<std::string> expand_argv(const std::vector<std::string>& argv,
                                     std::uint64_t memory_bytes) {
    static constexpr std::string_view placeholder = "{memory_mb}";
    const std::string memory_mb = std::to_string(memory_bytes >> 20);
    std::vector<std::string> out;
    out.reserve(argv.size());
    for (std::string arg : argv) {
        for (auto at = arg.find(placeholder); at != std::string::npos;
             at = arg.find(placeholder, at + memory_mb.size()))
            arg.replace(at, placeholder.size(), memory_mb);
        out.push_back(std::move(arg));
    }
    return out;
}

}  // namespace sandboxd
