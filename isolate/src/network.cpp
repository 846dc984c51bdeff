// The sandbox's network namespace is new and empty; only lo is brought up, so programs can
// talk to themselves but never to the host's loopback.

#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "child.h"

namespace isolate {

bool bring_up_loopback(ChildFailure& failure) noexcept {
    int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail(failure, ChildStep::loopback_up);
    ifreq request{};
    std::strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
    bool ok = ::ioctl(fd, SIOCGIFFLAGS, &request) == 0;
    if (ok) {
        request.ifr_flags |= IFF_UP | IFF_RUNNING;
        ok = ::ioctl(fd, SIOCSIFFLAGS, &request) == 0;
    }
    if (!ok) fail(failure, ChildStep::loopback_up);
    ::close(fd);
    return ok;
}

}  // namespace isolate
