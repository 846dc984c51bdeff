#pragma once

// Small file-level helpers shared by the v1 and v2 backends. Everything works on directory
// fds so a run's files stay reachable by fd even if paths change, and errors carry the
// path so an operator can tell which control file refused which value.

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "isolate/unique_fd.h"

namespace isolate::cgroup::fs {

// An open directory and the path it was opened by (for messages only).
struct Dir {
    UniqueFd fd;
    std::filesystem::path path;

    bool valid() const noexcept { return fd.valid(); }
};

// Opens a directory O_RDONLY|O_DIRECTORY|O_CLOEXEC (O_RDONLY rather than O_PATH so the
// fd is also accepted by clone3(CLONE_INTO_CGROUP)). Throws SetupError.
Dir open_dir(const std::filesystem::path& path);
// Same, relative to `parent`. Returns an invalid Dir and sets *err on failure.
Dir open_subdir(const Dir& parent, const std::string& name, int* err) noexcept;
// mkdir parent/name; returns 0 or the errno.
int make_subdir(const Dir& parent, const std::string& name) noexcept;
// Names of the directories directly below dir (no "." or ".."). Empty on error.
std::vector<std::string> list_subdirs(const Dir& dir);

bool exists_at(int dirfd, const char* name) noexcept;
// Opens a control file for repeated pread()s. Returns an invalid fd if it cannot be opened.
UniqueFd open_file_at(int dirfd, const char* name, int flags) noexcept;
// Throwing variant: SetupError("open <path>/<name>: <strerror>").
UniqueFd open_file(const Dir& dir, const char* name, int flags);

// pread(2) from offset 0, again after EINTR.
ssize_t pread_from_start(int fd, void* buf, std::size_t size) noexcept;
// Reads a whole file from offset 0. Return 0 or the errno.
int try_pread_all(int fd, std::string& out);
// The same for a control file one show() call writes whole: every cgroup file but the task
// lists (cgroup.procs, tasks). The kernel hands such a file over in one read when it fits
// the buffer, so a read that leaves the buffer short is the end: one pread instead of two.
int try_pread_value(int fd, std::string& out);
// Whether a task list (cgroup.procs, tasks) lists no task: its first read from offset 0
// returns nothing exactly then. Returns 0 (and sets *empty) or the errno.
int try_task_list_empty(int fd, bool* empty) noexcept;
int try_read_file_at(int dirfd, const char* name, std::string& out);
// Throwing variants: SetupError("read <path>/<name>: <strerror>").
std::string read_file_at(const Dir& dir, const char* name);

// Writes `value` with a single write(2), as cgroupfs needs. Returns 0 or the errno.
int try_write_file_at(int dirfd, const char* name, std::string_view value) noexcept;
// SetupError("cannot write "<value>" to <path>/<name>: <strerror>").
void write_file_at(const Dir& dir, const char* name, std::string_view value);
// The same through a control file kept open (`name`, in `dir`, is for the message), at
// offset 0: one pwrite(2).
void write_open_file(int fd, const Dir& dir, const char* name, std::string_view value);

std::optional<std::uint64_t> parse_u64(std::string_view text);
// The value of `key` in a flat-keyed file ("key value" lines: cpu.stat, memory.events,
// memory.oom_control, ...).
std::optional<std::uint64_t> find_key_u64(std::string_view content, std::string_view key);
// cgroup.procs / tasks: one pid per line.
std::vector<pid_t> parse_pids(std::string_view content);
// Whitespace-separated words (cgroup.controllers, cgroup.subtree_control).
bool has_word(std::string_view content, std::string_view word);

// Throws SetupError unless `name` is one plain path component (what: "run name", ...).
void check_name(const std::string& name, const char* what);

// SIGKILLs every process listed in dir's cgroup.procs. Each pid is pinned with a pidfd and
// checked to be still listed before the signal, so a pid that exited and was reused by
// someone else in the meantime is never hit. Returns how many were listed.
std::size_t kill_listed(int dirfd) noexcept;
// True when dir's cgroup.procs lists nobody (or cannot be read: the cgroup is gone).
bool procs_empty(int dirfd) noexcept;

// One line of /proc/<pid>/cgroup: "id:controllers:path".
struct ProcCgroupEntry {
    int hierarchy_id = -1;
    std::vector<std::string> controllers;  // empty for the v2 entry ("0::/path")
    std::string path;
};
std::vector<ProcCgroupEntry> parse_proc_cgroup(std::string_view content);

// One line of /proc/<pid>/mountinfo (octal escapes in paths decoded).
struct MountEntry {
    std::string root;  // the directory of the filesystem that is mounted
    std::filesystem::path mount_point;
    std::string fstype;
    std::vector<std::string> super_options;
};
std::vector<MountEntry> parse_mountinfo(std::string_view content);

// Sleeps that start at 1 ms and grow to 50 ms, for polling the kernel's asynchronous
// cgroup teardown without burning CPU or adding latency to the common quick case.
class Backoff {
  public:
    explicit Backoff(std::chrono::milliseconds budget);
    bool expired() const;
    // Sleeps once unless the budget is spent; returns false when it is.
    bool sleep();

  private:
    std::chrono::steady_clock::time_point deadline_;
    std::chrono::milliseconds step_{1};
};

// rmdir parent/name, retrying on EBUSY (tasks still leaving) until the backoff expires.
// ENOENT counts as success. Returns 0 or the last errno.
int rmdir_retry(const Dir& parent, const std::string& name, Backoff& backoff) noexcept;
// Removes parent/name and every cgroup directory below it, deepest first, each with
// rmdir_retry. Killing the tasks inside is the caller's job. Returns 0 or the first errno.
int remove_tree(const Dir& parent, const std::string& name, Backoff& backoff) noexcept;

// Takes an exclusive lock (flock) on the subtree `dir` for as long as the returned
// descriptor is open, waiting up to `wait` for an instance that is still exiting. The
// subtree's leftovers are cleaned up as a dead instance's, so two live daemons must never
// share one. Throws SetupError naming the subtree if another holder keeps it.
UniqueFd lock_subtree(const Dir& dir, std::chrono::milliseconds wait);
// Long enough for a killed instance's last processes to exit and drop the lock.
inline constexpr std::chrono::milliseconds kSubtreeLockWait{2000};

}  // namespace isolate::cgroup::fs
