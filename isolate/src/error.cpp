#include "isolate/error.h"

#include <cerrno>
#include <cstring>

namespace isolate {

void throw_errno(const std::string& what) {
    throw_errno(what, errno);
}

void throw_errno(const std::string& what, int err) {
    throw SetupError(what + ": " + std::strerror(err));
}

}  // namespace isolate
