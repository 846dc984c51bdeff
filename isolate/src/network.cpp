// The sandbox's network namespace is new and empty; only lo is up, so programs can talk to
// themselves but never to the host's loopback.

#include "network.h"

#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "child.h"

namespace isolate {

int set_loopback_up() noexcept {
    int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno;
    ifreq request{};
    std::strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
    int error = 0;
    if (::ioctl(fd, SIOCGIFFLAGS, &request) != 0) {
        error = errno;
    } else {
        request.ifr_flags |= IFF_UP | IFF_RUNNING;
        if (::ioctl(fd, SIOCSIFFLAGS, &request) != 0) error = errno;
    }
    ::close(fd);
    return error;
}

bool bring_up_loopback(ChildFailure& failure) noexcept {
    if (const int error = set_loopback_up(); error != 0) {
        errno = error;
        return fail(failure, ChildStep::loopback_up);
    }
    return true;
}

}  // namespace isolate
