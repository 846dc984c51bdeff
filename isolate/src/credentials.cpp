// Who the sandboxed program is: one unprivileged id inside, no groups, no capabilities.
//
// Raw syscalls on purpose: glibc's setresuid/setgroups broadcast the change to every thread
// it knows of, and this process is a clone of a multithreaded supervisor whose thread list
// it still holds. The broadcast would wait forever for threads that do not exist here.

#include <linux/capability.h>
#include <linux/securebits.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "child.h"

namespace isolate {
namespace {

bool set_capabilities(std::uint32_t low, std::uint32_t high) noexcept {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {{low, low, 0}, {high, high, 0}};
    return ::syscall(SYS_capset, &header, data) == 0;
}

}  // namespace

bool switch_user(const ChildPlan& plan, ChildFailure& failure) noexcept {
    // The supervisor's supplementary groups would otherwise still count on host files.
    if (::syscall(SYS_setgroups, 0, nullptr) != 0) return fail(failure, ChildStep::set_groups);
    if (::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0)
        return fail(failure, ChildStep::keep_capabilities);
    gid_t gid = plan.inside_id;
    uid_t uid = plan.inside_id;
    if (::syscall(SYS_setresgid, gid, gid, gid) != 0) return fail(failure, ChildStep::set_gid);
    if (::syscall(SYS_setresuid, uid, uid, uid) != 0) return fail(failure, ChildStep::set_uid);
    // setresuid may have emptied the effective set; the rest of setup needs it back.
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {};
    if (::syscall(SYS_capget, &header, data) != 0)
        return fail(failure, ChildStep::keep_capabilities);
    if (!set_capabilities(data[0].permitted, data[1].permitted))
        return fail(failure, ChildStep::keep_capabilities);
    return true;
}

bool drop_capabilities(const ChildPlan& plan, ChildFailure& failure) noexcept {
    for (int cap = 0; cap <= plan.last_capability; ++cap) {
        if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL)
            return fail(failure, ChildStep::drop_capabilities, cap);
    }
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0)
        return fail(failure, ChildStep::drop_capabilities);
    // Lock every way back in: no root magic on exec, no ambient raise, no keep-caps.
    unsigned long securebits = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
                               SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED |
                               SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    if (::prctl(PR_SET_SECUREBITS, securebits, 0, 0, 0) != 0)
        return fail(failure, ChildStep::drop_capabilities);
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct empty[2] = {};
    if (::syscall(SYS_capset, &header, empty) != 0)
        return fail(failure, ChildStep::drop_capabilities);
    return true;
}

}  // namespace isolate
