#pragma once

// The sandbox's /dev: a small read-only tmpfs holding the harmless device nodes, the
// /proc/self/fd links and an empty shm directory, mounted once per rootfs in this process's
// own mount namespace. Each sandbox's recursive bind of its rootfs then carries it along, so
// a run makes no /dev of its own (only its /dev/shm, a fresh tmpfs).
//
// Made by the host's root, so the nodes are real (a user namespace cannot mknod), owned by
// an id no sandbox maps, and on a mount that is read-only before any sandbox is given it:
// the kernel locks that flag in every sandbox's copy. A sandbox that another slot clones
// while one is being built copies it writable, but under a rootfs that sandbox does not
// use, out of its reach after pivot_root; a sandbox of the same rootfs finds a /dev other
// than the one equip() gave it and pid 1 refuses to run. No run can change what the next
// one finds there, not even a timestamp, unlike binds of the host's own /dev/null.

#include <sys/types.h>

#include <map>
#include <mutex>
#include <string>

#include "directory_identity.h"

namespace isolate {

// Moves this process into a mount namespace of its own, a slave of the one it was in: the
// host's later mounts still show here, and nothing mounted here shows on the host. Kernel
// cleanup then removes every /dev this process mounted when it exits, however it exits.
// Idempotent. Throws SetupError, e.g. once the process has other threads.
void enter_own_mount_namespace();

// One per process, like the mount namespace it mounts in.
class DevMounts {
  public:
    // Enters this process's own mount namespace on first use.
    static DevMounts& instance();

    // Makes `dev_dir`, a rootfs's /dev (an absolute host path, no symlinks), show the
    // sandbox's /dev, unless it already does: the first run on a rootfs, or on one replaced
    // since, mounts it. Returns what the sandbox must find there (pid 1 checks). Thread-safe.
    // Throws SetupError; a failed mount leaves nothing behind.
    DirectoryIdentity equip(const std::string& dev_dir);
    // While the lock lives, no /dev is half built: a copy of this mount namespace made then
    // has every one read-only.
    std::unique_lock<std::mutex> hold_steady() { return std::unique_lock(mutex_); }

  private:
    DevMounts();

    std::mutex mutex_;
    std::map<std::string, DirectoryIdentity> mounted_;
};

}  // namespace isolate
