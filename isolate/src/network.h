#pragma once

namespace isolate {

// Brings lo up in the calling thread's network namespace. Returns 0 or an errno value.
// Async-signal-safe: pid 1 calls it too.
int set_loopback_up() noexcept;

}  // namespace isolate
