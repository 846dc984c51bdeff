#pragma once

// Seccomp profiles: JSON files (format in seccomp-profiles/README.md) turned into an
// isolate::SeccompPolicy. Syscall names are not checked here; SeccompFilter::compile does
// that, because only libseccomp knows which names exist.

#include <filesystem>
#include <stdexcept>
#include <string_view>

#include "isolate/seccomp.h"

namespace sandboxd {

// A profile that cannot be read or is malformed: bad JSON, unknown key, wrong type, unknown
// action or errno name, bad comparison, missing or cyclic base. The message names the file,
// the rule index and the problem. Deliberately not an isolate::SetupError: a broken profile is
// a configuration error of the daemon, not a failure of one run.
class SeccompProfileError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// Loads `file` and, first, its base chain ("base": "x" means `<file's dir>/x.json`).
isolate::SeccompPolicy load_seccomp_profile(const std::filesystem::path& file);

// Parses a profile given as text; a "base" is looked up in `dir_for_includes`.
isolate::SeccompPolicy parse_seccomp_profile(std::string_view json,
                                             const std::filesystem::path& dir_for_includes);

}  // namespace sandboxd
