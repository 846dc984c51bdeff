#include "child_plan.h"

namespace isolate {

const char* to_string(ChildStep step) {
    switch (step) {
        case ChildStep::wait_for_go:
            return "wait for the supervisor";
        case ChildStep::reset_signals:
            return "reset signal dispositions";
        case ChildStep::join_cgroup:
            return "join the run's cgroup";
        case ChildStep::cgroup_namespace:
            return "create the cgroup namespace";
        case ChildStep::make_mounts_private:
            return "make mounts private";
        case ChildStep::bind_rootfs:
            return "bind-mount the rootfs";
        case ChildStep::remount_rootfs_readonly:
            return "remount the rootfs read-only";
        case ChildStep::bind_extra:
            return "bind-mount an extra directory";
        case ChildStep::remount_extra_readonly:
            return "remount an extra directory read-only";
        case ChildStep::set_groups:
            return "clear supplementary groups";
        case ChildStep::set_gid:
            return "set the gid";
        case ChildStep::set_uid:
            return "set the uid";
        case ChildStep::keep_capabilities:
            return "keep capabilities across setuid";
        case ChildStep::mount_proc:
            return "mount /proc";
        case ChildStep::protect_proc_sys:
            return "make /proc/sys read-only";
        case ChildStep::check_dev:
            return "find the sandbox's /dev in the rootfs";
        case ChildStep::mount_dev_shm:
            return "mount /dev/shm";
        case ChildStep::mount_tmp:
            return "mount /tmp";
        case ChildStep::mount_workdir:
            return "mount the working directory";
        case ChildStep::pivot_root:
            return "pivot_root";
        case ChildStep::detach_old_root:
            return "detach the old root";
        case ChildStep::open_mount_template:
            return "open the mount template's namespace";
        case ChildStep::check_mount_template:
            return "find the rootfs and binds in the mount template";
        case ChildStep::open_workdir:
            return "open the working directory";
        case ChildStep::create_input_dir:
            return "create an input directory";
        case ChildStep::write_input_file:
            return "write an input file";
        case ChildStep::set_hostname:
            return "set the hostname";
        case ChildStep::loopback_up:
            return "bring up lo";
        case ChildStep::drop_capabilities:
            return "drop capabilities";
        case ChildStep::no_new_privs:
            return "set no_new_privs";
        case ChildStep::fork_program:
            return "fork the program";
        case ChildStep::program_setsid:
            return "start a session";
        case ChildStep::program_stdio:
            return "connect stdin, stdout and stderr";
        case ChildStep::program_chdir:
            return "enter the working directory";
        case ChildStep::program_rlimit:
            return "set resource limits";
        case ChildStep::program_signals:
            return "reset signal handling";
        case ChildStep::program_affinity:
            return "give the program its CPUs";
        case ChildStep::install_seccomp:
            return "install the seccomp filter";
        case ChildStep::announce_exec:
            return "tell the supervisor the program starts";
        case ChildStep::send_listener:
            return "hand over the seccomp listener";
        case ChildStep::program_exec:
            return "execve";
        case ChildStep::collect_file:
            return "collect a file";
    }
    return "unknown step";
}

}  // namespace isolate
