#include "systemd_notify.h"

#include <systemd/sd-daemon.h>

namespace sandboxd {

void notify_systemd(const std::string& state) {
    // 0: keep NOTIFY_SOCKET, so STOPPING=1 can follow READY=1 later.
    ::sd_notify(0, state.c_str());
}

}  // namespace sandboxd
