#include "control.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace isolate {

bool send_control(int socket, const ControlMessage& message, int passed_fd) noexcept {
    iovec iov{const_cast<ControlMessage*>(&message), sizeof message};
    msghdr header{};
    header.msg_iov = &iov;
    header.msg_iovlen = 1;
    alignas(cmsghdr) char space[CMSG_SPACE(sizeof(int))] = {};
    if (passed_fd >= 0) {
        header.msg_control = space;
        header.msg_controllen = sizeof space;
        cmsghdr* cmsg = CMSG_FIRSTHDR(&header);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
        std::memcpy(CMSG_DATA(cmsg), &passed_fd, sizeof(int));
    }
    for (;;) {
        ssize_t sent = ::sendmsg(socket, &header, MSG_NOSIGNAL);
        if (sent == static_cast<ssize_t>(sizeof message)) return true;
        if (sent < 0 && errno == EINTR) continue;
        if (sent >= 0) errno = EMSGSIZE;
        return false;
    }
}

bool wait_for_control(int socket, ControlType expected) noexcept {
    ControlMessage message{};
    for (;;) {
        const ssize_t got = ::recv(socket, &message, sizeof message, 0);
        if (got < 0 && errno == EINTR) continue;
        return got == static_cast<ssize_t>(sizeof message) && message.type == expected;
    }
}

std::optional<ControlMessage> receive_control(int socket, UniqueFd* passed_fd) {
    ControlMessage message{};
    iovec iov{&message, sizeof message};
    msghdr header{};
    header.msg_iov = &iov;
    header.msg_iovlen = 1;
    alignas(cmsghdr) char space[CMSG_SPACE(sizeof(int))] = {};
    header.msg_control = space;
    header.msg_controllen = sizeof space;
    ssize_t got;
    do {
        got = ::recvmsg(socket, &header, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    } while (got < 0 && errno == EINTR);
    if (got <= 0) {
        if (got == 0) errno = 0;
        return std::nullopt;
    }
    UniqueFd received;
    for (cmsghdr* cmsg = CMSG_FIRSTHDR(&header); cmsg; cmsg = CMSG_NXTHDR(&header, cmsg)) {
        if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS &&
            cmsg->cmsg_len >= CMSG_LEN(sizeof(int))) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(cmsg), sizeof fd);
            received.reset(fd);
        }
    }
    // A short or truncated message can only come from a broken child; treat it as garbage.
    if (got != static_cast<ssize_t>(sizeof message) || (header.msg_flags & MSG_TRUNC)) {
        message = ControlMessage{};
        message.type = ControlType::error;
        message.error = EPROTO;
    }
    if (passed_fd) *passed_fd = std::move(received);
    return message;
}

}  // namespace isolate
