#pragma once

// One mount namespace per sandbox shape (rootfs and binds) whose root is that shape's
// filesystem: the rootfs and the operator's binds read-only, with the /dev of dev_mounts.h,
// and nothing of the host's tree. Each slot's spawner thread enters it before it clones pid 1
// (InitSpawner), so a run's new mount namespace is a copy of these few mounts instead of the
// host's whole table, and pid 1 skips binding the rootfs, the pivot_root, and detaching the
// host's tree, whose unmount waited for an RCU grace period on every run.
//
// A template outlives the runs that copy it, so nothing a run does may reach it:
// - its mounts are private, so no mount or unmount in a run's copy propagates back;
// - a run's copy belongs to the run's user namespace, which locks every copied mount and
//   its read-only flag (the rootfs is read-only for pid 1 too, not only for the program);
// - the proc it holds at /proc, which the kernel requires before a user namespace may mount
//   a proc of its own, is that of an empty pid namespace, under the run's proc.
// And it must show what a fresh bind would: see get() for when it is rebuilt, and
// mounts.cpp for what pid 1 checks in its copy before it mounts anything.

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "child_plan.h"
#include "isolate/unique_fd.h"

namespace isolate {

class MountTemplates {
  public:
    // Throws SetupError if it cannot watch this process's mount table.
    MountTemplates();

    // The mount namespace for the shape of `plan` (from make_sandbox_plan, host paths), built
    // on first use and again when the rootfs, its /dev, a bind's source or a mountpoint was
    // replaced since (a directory removed and made again is a new one: the template would
    // still show the old), or when anything was mounted or unmounted in this process's mount
    // namespace (a private copy would not follow it). Throws SetupError.
    std::shared_ptr<const UniqueFd> get(const ChildPlan& plan);

  private:
    bool mount_table_changed() const noexcept;

    // The directories a template holds: the rootfs, its /dev, its /proc, then each bind's
    // source and mountpoint.
    using Identities = std::vector<DirectoryIdentity>;
    struct Template {
        std::string shape;
        Identities identities;
        // Those directories, held open (O_PATH) while the template lives: one removed and made
        // again could otherwise get the freed inode number back and pass for the one the
        // template holds, whose mount the removal took out of it.
        std::vector<UniqueFd> pins;
        std::shared_ptr<const UniqueFd> mount_ns;
        std::uint64_t last_used;
    };

    // The daemon's shapes are its languages', but the library takes any rootfs and binds:
    // the least recently used template goes when there would be more.
    static constexpr std::size_t kMaxTemplates = 16;

    UniqueFd mount_table_;  // this process's /proc/thread-self/mountinfo
    std::mutex mutex_;
    std::vector<Template> templates_;
    std::uint64_t uses_ = 0;
};

}  // namespace isolate
