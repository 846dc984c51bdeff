#pragma once

// sd_notify(3) for Type=notify units: READY=1 once the socket accepts, STOPPING=1 at SIGTERM,
// STATUS= for `systemctl status`. A no-op when not started by systemd (NOTIFY_SOCKET unset).

#include <string>

namespace sandboxd {

void notify_systemd(const std::string& state);

}  // namespace sandboxd
