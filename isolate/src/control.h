#pragma once

#include <optional>

#include "child_plan.h"
#include "isolate/unique_fd.h"

namespace isolate {

// Sends one message, optionally passing a descriptor. Async-signal-safe: the sandbox's
// child side uses it. Returns false with errno set on failure.
bool send_control(int socket, const ControlMessage& message, int passed_fd = -1) noexcept;

// Blocks until one message arrives on the sandbox's side. True if it is of the `expected`
// type; false on EOF (the supervisor gave up or died), an error or any other message.
// Async-signal-safe.
bool wait_for_control(int socket, ControlType expected) noexcept;

// Receives one message. Returns nullopt on EOF or EAGAIN (errno tells which: 0 for EOF).
// A passed descriptor, if any, lands in *passed_fd (closed if passed_fd is null).
std::optional<ControlMessage> receive_control(int socket, UniqueFd* passed_fd);

}  // namespace isolate
