#pragma once

// Language definitions, loaded once at start-up. Each language is one directory:
//   <language_dir>/<name>/language.json   the definition (docs/languages.md)
//   <language_dir>/<name>/manifest.json   written by the rootfs builder: the real version
//   <language_dir>/<name>/root/           its root filesystem
// A broken or missing one is a start-up warning and is left out; it never stops the daemon.

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config.h"
#include "isolate/run_spec.h"
#include "isolate/seccomp.h"

namespace sandboxd {

struct Language {
    std::string name;
    std::vector<std::string> aliases;
    std::string version;
    std::string source_file;
    // Argv entries may hold {memory_mb}: the step's memory limit in MiB (JVM heap flags).
    std::optional<std::vector<std::string>> compile;
    std::vector<std::string> artifacts;  // what compile leaves in the working directory for run
    std::vector<std::string> run;
    std::vector<std::string> env;  // KEY=VALUE
    std::filesystem::path rootfs;
    std::vector<isolate::BindMount> binds;  // operator-chosen host directories (host rootfs)
    protocol::LimitPolicy run_limits;       // the daemon's, with this language's adjustments
    protocol::LimitPolicy compile_limits;
    std::string seccomp_profile;
    std::shared_ptr<const isolate::SeccompFilter> seccomp;
};

class LanguageTable {
  public:
    // Loads every <dir>/<name>/language.json of config.language_dirs. Problems go to
    // `warnings`, one line each, naming the file and what is wrong.
    static LanguageTable load(const Config& config, std::vector<std::string>& warnings);

    // By name or alias; nullptr when absent.
    const Language* find(std::string_view name_or_alias) const;
    const std::vector<Language>& all() const { return languages_; }

  private:
    std::vector<Language> languages_;  // sorted by name
};

// Replaces {memory_mb} in each argument.
std::vector<std::string> expand_argv(const std::vector<std::string>& argv,
                                     std::uint64_t memory_bytes);

}  // namespace sandboxd
