// The sandbox's filesystem: the rootfs read-only (with the /dev this process mounted in it),
// fresh /proc, tmpfs for /dev/shm, /tmp and the working directory, then pivot_root so the
// host's tree is gone. With a mount template (mount_template.h) the first and last parts were
// done once for the shape, and pid 1 starts with the template's copy as its root.

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "child.h"

namespace isolate {
namespace {

// A remount inside a user namespace must keep the flags the host locked on that mount
// (nosuid, noexec, nodev, atime) or the kernel refuses it with EPERM.
unsigned long locked_flags(const char* path) noexcept {
    // statfs, not glibc's statvfs: the latter may fall back to parsing /proc/mounts.
    struct statfs info {};
    if (::statfs(path, &info) != 0) return 0;
    unsigned long flags = 0;
    if (info.f_flags & ST_NOSUID) flags |= MS_NOSUID;
    if (info.f_flags & ST_NODEV) flags |= MS_NODEV;
    if (info.f_flags & ST_NOEXEC) flags |= MS_NOEXEC;
    if (info.f_flags & ST_NOATIME) flags |= MS_NOATIME;
    if (info.f_flags & ST_NODIRATIME) flags |= MS_NODIRATIME;
    if (info.f_flags & ST_RELATIME) flags |= MS_RELATIME;
    return flags;
}

bool bind_readonly(const char* source, const char* target, ChildStep bind_step,
                   ChildStep remount_step, int index, ChildFailure& failure) noexcept {
    if (::mount(source, target, nullptr, MS_BIND | MS_REC, nullptr) != 0)
        return fail(failure, bind_step, index);
    unsigned long flags =
        MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | locked_flags(target);
    if (::mount(nullptr, target, nullptr, flags, nullptr) != 0)
        return fail(failure, remount_step, index);
    return true;
}

bool mount_tmpfs(const char* target, const std::string& options, ChildStep step,
                 ChildFailure& failure) noexcept {
    if (::mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) != 0)
        return fail(failure, step);
    return true;
}

// Whether `path` is the directory the supervisor saw; errno ESTALE if it is another one.
bool is_same_directory(const char* path, const DirectoryIdentity& seen) noexcept {
    struct stat st {};
    if (::stat(path, &st) != 0) return false;
    if (DirectoryIdentity::of(st) == seen) return true;
    errno = ESTALE;
    return false;
}

// /dev came with the rootfs's recursive bind (dev_mounts.h); only /dev/shm is per run. A
// rootfs replaced since the supervisor looked would bring a bare /dev: refuse to run on it.
bool mount_dev_shm(const ChildPlan& plan, ChildFailure& failure) noexcept {
    if (!is_same_directory(plan.dev_dir.c_str(), plan.dev_identity))
        return fail(failure, ChildStep::check_dev);
    return mount_tmpfs(plan.dev_shm_dir.c_str(), plan.shm_options, ChildStep::mount_dev_shm,
                       failure);
}

// pivot_root into plan.rootfs and detach the old root.
bool enter_rootfs(const ChildPlan& plan, ChildFailure& failure) noexcept {
    // pivot_root(".", ".") stacks the old root under the new one; detaching it leaves no
    // path back to the host's tree.
    if (::chdir(plan.rootfs.c_str()) != 0) return fail(failure, ChildStep::pivot_root);
    if (::syscall(SYS_pivot_root, ".", ".") != 0) return fail(failure, ChildStep::pivot_root);
    if (::umount2(".", MNT_DETACH) != 0) return fail(failure, ChildStep::detach_old_root);
    if (::chdir("/") != 0) return fail(failure, ChildStep::detach_old_root);
    return true;
}

// The template's copy must hold the rootfs at "/" and each bind's source at its mountpoint:
// a mountpoint removed or replaced on the host takes its mount out of every namespace, and a
// pid 1 cloned outside any template would see the host's tree.
bool check_mount_template(const ChildPlan& plan, ChildFailure& failure) noexcept {
    if (!is_same_directory("/", plan.rootfs_identity))
        return fail(failure, ChildStep::check_mount_template);
    for (std::size_t i = 0; i < plan.binds.size(); ++i) {
        const PlannedBind& bind = plan.binds[i];
        if (!is_same_directory(bind.inside.c_str(), bind.source_identity))
            return fail(failure, ChildStep::check_mount_template, static_cast<int>(i) + 1);
    }
    return true;
}

}  // namespace

bool mount_host_parts(const ChildPlan& plan, ChildFailure& failure) noexcept {
    // Nothing done here may propagate back to the host's mount namespace (or to the
    // template's, whose mounts are private already).
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
        return fail(failure, ChildStep::make_mounts_private);
    if (plan.in_mount_template) return check_mount_template(plan, failure);
    if (!bind_readonly(plan.rootfs.c_str(), plan.rootfs.c_str(), ChildStep::bind_rootfs,
                       ChildStep::remount_rootfs_readonly, 0, failure))
        return false;
    for (std::size_t i = 0; i < plan.binds.size(); ++i) {
        if (!bind_readonly(plan.binds[i].source.c_str(), plan.binds[i].target.c_str(),
                           ChildStep::bind_extra, ChildStep::remount_extra_readonly,
                           static_cast<int>(i), failure))
            return false;
    }
    return true;
}

bool mount_sandbox_parts(const ChildPlan& plan, ChildFailure& failure) noexcept {
    if (::mount("proc", plan.proc_dir.c_str(), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) !=
        0)
        return fail(failure, ChildStep::mount_proc);
    if (!bind_readonly(plan.proc_sys_dir.c_str(), plan.proc_sys_dir.c_str(),
                       ChildStep::protect_proc_sys, ChildStep::protect_proc_sys, 0, failure))
        return false;
    if (!mount_dev_shm(plan, failure)) return false;
    if (!mount_tmpfs(plan.tmp_dir.c_str(), plan.tmp_options, ChildStep::mount_tmp, failure))
        return false;
    if (!mount_tmpfs(plan.work_dir.c_str(), plan.work_options, ChildStep::mount_workdir, failure))
        return false;

    // The template's root is the rootfs already, with no host tree under it.
    if (plan.in_mount_template) {
        if (::chdir("/") != 0) return fail(failure, ChildStep::pivot_root);
        return true;
    }
    return enter_rootfs(plan, failure);
}

bool build_mount_template(const ChildPlan& plan, ChildFailure& failure) noexcept {
    if (!mount_host_parts(plan, failure)) return false;
    // A user namespace may mount a proc only where one is fully visible already
    // (mount_too_revealing in the kernel), and after the pivot the host's is gone. This one
    // belongs to the builder's own pid namespace, empty once the builder exits; every sandbox
    // mounts its own proc on top of it.
    if (::mount("proc", plan.proc_dir.c_str(), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) !=
        0)
        return fail(failure, ChildStep::mount_proc);
    return enter_rootfs(plan, failure);
}

bool write_input_files(const ChildPlan& plan, int workdir_fd, ChildFailure& failure) noexcept {
    // The working directory is a tmpfs mounted a moment ago and nothing has run in it yet,
    // but resolve beneath it without symlinks anyway, so a bug here cannot escape it.
    for (std::size_t i = 0; i < plan.dirs_to_create.size(); ++i) {
        if (::mkdirat(workdir_fd, plan.dirs_to_create[i].c_str(), 0755) != 0 && errno != EEXIST)
            return fail(failure, ChildStep::create_input_dir, static_cast<int>(i));
    }
    for (std::size_t i = 0; i < plan.files.size(); ++i) {
        const PlannedFile& file = plan.files[i];
        open_how how{};
        how.flags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW;
        how.mode = file.executable ? 0755 : 0644;
        how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
        int fd = static_cast<int>(
            ::syscall(SYS_openat2, workdir_fd, file.path.c_str(), &how, sizeof how));
        if (fd < 0) return fail(failure, ChildStep::write_input_file, static_cast<int>(i));
        const char* data = file.content->data();
        std::size_t left = file.content->size();
        while (left > 0) {
            ssize_t written = ::write(fd, data, left);
            if (written < 0 && errno == EINTR) continue;
            if (written <= 0) {
                if (written == 0) errno = ENOSPC;
                fail(failure, ChildStep::write_input_file, static_cast<int>(i));
                ::close(fd);
                return false;
            }
            data += written;
            left -= static_cast<std::size_t>(written);
        }
        ::close(fd);
    }
    return true;
}

}  // namespace isolate
