#pragma once

#include <stdexcept>
#include <string>

namespace isolate {

// A host-side setup failure. Sandbox::run turns it into Status::internal_error;
// nothing ever runs after one is thrown.
class SetupError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// Throws SetupError("<what>: <strerror(errno)>").
[[noreturn]] void throw_errno(const std::string& what);
[[noreturn]] void throw_errno(const std::string& what, int err);

}  // namespace isolate
