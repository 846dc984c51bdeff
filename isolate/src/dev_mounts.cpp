#include "dev_mounts.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <linux/magic.h>

#include "isolate/error.h"
#include "isolate/unique_fd.h"

namespace isolate {
namespace {

struct DeviceNode {
    const char* name;
    unsigned major, minor;
};
// The memory devices every program may use; their numbers are fixed kernel ABI.
constexpr DeviceNode kDevices[] = {
    {"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}};

constexpr const char* kLinks[][2] = {{"/proc/self/fd", "fd"},
                                     {"/proc/self/fd/0", "stdin"},
                                     {"/proc/self/fd/1", "stdout"},
                                     {"/proc/self/fd/2", "stderr"}};

std::string fd_path(int fd) {
    return "/proc/self/fd/" + std::to_string(fd);
}

// Fills the freshly mounted tmpfs at `dir` (a descriptor of its root). Modes are set
// explicitly: mknodat and mkdirat are subject to this process's umask.
void populate(int dir) {
    for (const DeviceNode& node : kDevices) {
        if (::mknodat(dir, node.name, S_IFCHR | 0666, makedev(node.major, node.minor)) != 0)
            throw_errno(std::string("mknod /dev/") + node.name);
        if (::fchmodat(dir, node.name, 0666, 0) != 0)
            throw_errno(std::string("chmod /dev/") + node.name);
    }
    for (const auto& link : kLinks) {
        if (::symlinkat(link[0], dir, link[1]) != 0)
            throw_errno(std::string("symlink /dev/") + link[1]);
    }
    // Each run mounts its own tmpfs here.
    if (::mkdirat(dir, "shm", 0755) != 0) throw_errno("mkdir /dev/shm");
    if (::fchmodat(dir, "shm", 0755, 0) != 0) throw_errno("chmod /dev/shm");
}

// Unmounts what equip() mounted unless it got to the end.
class MountRollback {
  public:
    explicit MountRollback(std::string path) : path_(std::move(path)) {}
    MountRollback(const MountRollback&) = delete;
    MountRollback& operator=(const MountRollback&) = delete;
    ~MountRollback() {
        if (!path_.empty()) ::umount2(path_.c_str(), MNT_DETACH);
    }
    void keep() { path_.clear(); }

  private:
    std::string path_;
};

}  // namespace

void enter_own_mount_namespace() {
    static std::mutex mutex;
    static bool entered = false;
    std::lock_guard lock(mutex);
    if (entered) return;
    // CLONE_NEWNS implies unsharing the filesystem context, which threads share.
    if (::unshare(CLONE_NEWNS) != 0)
        throw_errno(
            "unshare(CLONE_NEWNS) (the first isolate::Sandbox must be made before the "
            "process starts threads)");
    // Until this succeeds, mounts made here could still propagate to the host: not entered,
    // so every later call fails too (or gets it right) instead of mounting anything.
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0)
        throw_errno("make this process's mounts a slave of the host's");
    entered = true;
}

DevMounts::DevMounts() {
    enter_own_mount_namespace();
}

DevMounts& DevMounts::instance() {
    static DevMounts mounts;
    return mounts;
}

DirectoryIdentity DevMounts::equip(const std::string& dev_dir) {
    std::lock_guard lock(mutex_);
    struct stat now {};
    if (::lstat(dev_dir.c_str(), &now) != 0) throw_errno("stat " + dev_dir);
    if (auto it = mounted_.find(dev_dir); it != mounted_.end()) {
        if (it->second == DirectoryIdentity::of(now)) return it->second;
        mounted_.erase(it);  // the rootfs was replaced: its new /dev is a plain directory
    }
    if (!S_ISDIR(now.st_mode)) throw SetupError(dev_dir + " is not a directory");

    // Mount on exactly the directory just looked at, not on whatever the path names later.
    UniqueFd target(::open(dev_dir.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!target) throw_errno("open " + dev_dir);
    if (::mount("tmpfs", fd_path(target.get()).c_str(), "tmpfs", MS_NOSUID | MS_NOEXEC,
                "size=65536,nr_inodes=32,mode=0755") != 0)
        throw_errno("mount the sandbox's /dev on " + dev_dir);
    MountRollback rollback(dev_dir);

    UniqueFd root(::open(dev_dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!root) throw_errno("open the new " + dev_dir);
    struct statfs fs {};
    struct stat mounted {};
    if (::fstatfs(root.get(), &fs) != 0 || ::fstat(root.get(), &mounted) != 0)
        throw_errno("stat the new " + dev_dir);
    if (fs.f_type != TMPFS_MAGIC || mounted.st_dev == now.st_dev)
        throw SetupError(dev_dir + " changed while its /dev was mounted");
    populate(root.get());
    // MS_BIND: change only this mount's flags. Read-only from here on, so every sandbox's
    // copy of it is locked read-only.
    if (::mount(nullptr, fd_path(root.get()).c_str(), nullptr,
                MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC, nullptr) != 0)
        throw_errno("remount " + dev_dir + " read-only");

    rollback.keep();
    const DirectoryIdentity identity = DirectoryIdentity::of(mounted);
    mounted_[dev_dir] = identity;
    return identity;
}

}  // namespace isolate
