#include <cstring>
#include <string>

#include "isolate/error.h"
#include "isolate/run_spec.h"

namespace isolate {

const char* to_string(Status status) {
    switch (status) {
        case Status::memory_limit:
            return "memory_limit";
        case Status::time_limit:
            return "time_limit";
        case Status::wall_time_limit:
            return "wall_time_limit";
        case Status::output_limit:
            return "output_limit";
        case Status::file_size_limit:
            return "file_size_limit";
        case Status::syscall_blocked:
            return "syscall_blocked";
        case Status::signaled:
            return "signaled";
        case Status::runtime_error:
            return "runtime_error";
        case Status::ok:
            return "ok";
        case Status::internal_error:
            return "internal_error";
        case Status::cancelled:
            return "cancelled";
    }
    return "internal_error";
}

std::string signal_name(int signal) {
    if (const char* abbrev = ::sigabbrev_np(signal)) return std::string("SIG") + abbrev;
    return "SIG" + std::to_string(signal);
}

}  // namespace isolate
