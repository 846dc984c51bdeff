#include "cgroup/cgroup_fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <memory>
#include <thread>

#include "isolate/error.h"

namespace isolate::cgroup::fs {

namespace {

std::string_view trim(std::string_view s) {
    const auto first = s.find_first_not_of(" \t\n");
    if (first == std::string_view::npos) return {};
    const auto last = s.find_last_not_of(" \t\n");
    return s.substr(first, last - first + 1);
}

std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> parts;
    std::size_t start = 0;
    while (true) {
        const auto pos = s.find(sep, start);
        parts.push_back(s.substr(start, pos == std::string_view::npos ? pos : pos - start));
        if (pos == std::string_view::npos) return parts;
        start = pos + 1;
    }
}

template <typename F>
void for_each_line(std::string_view content, F&& f) {
    while (!content.empty()) {
        const auto nl = content.find('\n');
        f(content.substr(0, nl));
        if (nl == std::string_view::npos) break;
        content.remove_prefix(nl + 1);
    }
}

// mountinfo escapes space, tab, newline and backslash in paths as \ooo.
std::string unescape_octal(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 3 < s.size() &&
            std::all_of(s.begin() + i + 1, s.begin() + i + 4,
                        [](char c) { return c >= '0' && c <= '7'; })) {
            out.push_back(
                static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
            i += 3;
        } else {
            out.push_back(s[i]);
        }
    }
    return out;
}

struct DirCloser {
    void operator()(DIR* d) const noexcept { ::closedir(d); }
};

}  // namespace

Dir open_dir(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        const int err = errno;
        throw_errno("open " + path.string(), err);
    }
    return Dir{UniqueFd(fd), path};
}

Dir open_subdir(const Dir& parent, const std::string& name, int* err) noexcept {
    const int fd = ::openat(parent.fd.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        if (err) *err = errno;
        return Dir{UniqueFd(), parent.path / name};
    }
    if (err) *err = 0;
    return Dir{UniqueFd(fd), parent.path / name};
}

int make_subdir(const Dir& parent, const std::string& name) noexcept {
    return ::mkdirat(parent.fd.get(), name.c_str(), 0755) == 0 ? 0 : errno;
}

std::vector<std::string> list_subdirs(const Dir& dir) {
    std::vector<std::string> names;
    // fdopendir takes over the fd it is given, so give it a copy of ours.
    const int fd = ::openat(dir.fd.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return names;
    std::unique_ptr<DIR, DirCloser> d(::fdopendir(fd));
    if (!d) {
        ::close(fd);
        return names;
    }
    while (const dirent* e = ::readdir(d.get())) {
        const std::string_view name = e->d_name;
        if (name == "." || name == "..") continue;
        bool is_dir = e->d_type == DT_DIR;
        if (e->d_type == DT_UNKNOWN) {
            struct stat st {};
            is_dir = ::fstatat(::dirfd(d.get()), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                     S_ISDIR(st.st_mode);
        }
        if (is_dir) names.emplace_back(name);
    }
    return names;
}

bool exists_at(int dirfd, const char* name) noexcept {
    return ::faccessat(dirfd, name, F_OK, 0) == 0;
}

UniqueFd open_file_at(int dirfd, const char* name, int flags) noexcept {
    return UniqueFd(::openat(dirfd, name, flags | O_CLOEXEC));
}

UniqueFd open_file(const Dir& dir, const char* name, int flags) {
    UniqueFd fd = open_file_at(dir.fd.get(), name, flags);
    if (!fd) {
        const int err = errno;
        throw_errno("open " + (dir.path / name).string(), err);
    }
    return fd;
}

int try_pread_all(int fd, std::string& out) {
    out.clear();
    char buf[4096];
    off_t offset = 0;
    while (true) {
        const ssize_t n = ::pread(fd, buf, sizeof buf, offset);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (n == 0) return 0;
        out.append(buf, static_cast<std::size_t>(n));
        offset += n;
    }
}

ssize_t pread_from_start(int fd, void* buf, std::size_t size) noexcept {
    ssize_t n;
    do {
        n = ::pread(fd, buf, size, 0);
    } while (n < 0 && errno == EINTR);
    return n;
}

int try_pread_value(int fd, std::string& out) {
    out.clear();
    char buf[4096];
    const ssize_t n = pread_from_start(fd, buf, sizeof buf);
    if (n < 0) return errno;
    if (static_cast<std::size_t>(n) < sizeof buf) {
        out.assign(buf, static_cast<std::size_t>(n));
        return 0;
    }
    return try_pread_all(fd, out);
}

int try_task_list_empty(int fd, bool* empty) noexcept {
    char byte;
    const ssize_t n = pread_from_start(fd, &byte, 1);
    if (n < 0) return errno;
    *empty = n == 0;
    return 0;
}

int try_read_file_at(int dirfd, const char* name, std::string& out) {
    UniqueFd fd = open_file_at(dirfd, name, O_RDONLY);
    if (!fd) return errno;
    return try_pread_all(fd.get(), out);
}

std::string read_file_at(const Dir& dir, const char* name) {
    std::string out;
    if (const int err = try_read_file_at(dir.fd.get(), name, out); err != 0)
        throw_errno("read " + (dir.path / name).string(), err);
    return out;
}

namespace {

// cgroupfs parses each write(2) as one complete value, so never split it.
int try_pwrite_value(int fd, std::string_view value) noexcept {
    while (true) {
        const ssize_t n = ::pwrite(fd, value.data(), value.size(), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return errno;
        return static_cast<std::size_t>(n) == value.size() ? 0 : EIO;
    }
}

[[noreturn]] void throw_write_error(const Dir& dir, const char* name, std::string_view value,
                                    int err) {
    throw_errno("cannot write \"" + std::string(value) + "\" to " + (dir.path / name).string(),
                err);
}

}  // namespace

int try_write_file_at(int dirfd, const char* name, std::string_view value) noexcept {
    UniqueFd fd = open_file_at(dirfd, name, O_WRONLY);
    if (!fd) return errno;
    return try_pwrite_value(fd.get(), value);
}

void write_file_at(const Dir& dir, const char* name, std::string_view value) {
    if (const int err = try_write_file_at(dir.fd.get(), name, value); err != 0)
        throw_write_error(dir, name, value, err);
}

void write_open_file(int fd, const Dir& dir, const char* name, std::string_view value) {
    if (const int err = try_pwrite_value(fd, value); err != 0)
        throw_write_error(dir, name, value, err);
}

std::optional<std::uint64_t> parse_u64(std::string_view text) {
    text = trim(text);
    std::uint64_t value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
    return value;
}

std::optional<std::uint64_t> find_key_u64(std::string_view content, std::string_view key) {
    std::optional<std::uint64_t> result;
    for_each_line(content, [&](std::string_view line) {
        if (result) return;
        const auto sp = line.find(' ');
        if (sp == std::string_view::npos || line.substr(0, sp) != key) return;
        result = parse_u64(line.substr(sp + 1));
    });
    return result;
}

std::vector<pid_t> parse_pids(std::string_view content) {
    std::vector<pid_t> pids;
    for_each_line(content, [&](std::string_view line) {
        if (const auto v = parse_u64(line); v && *v > 0) pids.push_back(static_cast<pid_t>(*v));
    });
    return pids;
}

bool has_word(std::string_view content, std::string_view word) {
    std::size_t i = 0;
    while (i < content.size()) {
        const auto start = content.find_first_not_of(" \t\n", i);
        if (start == std::string_view::npos) return false;
        auto end = content.find_first_of(" \t\n", start);
        if (end == std::string_view::npos) end = content.size();
        if (content.substr(start, end - start) == word) return true;
        i = end;
    }
    return false;
}

void check_name(const std::string& name, const char* what) {
    if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
        name.find('\0') != std::string::npos || name.size() > 200)
        throw SetupError(std::string("invalid cgroup ") + what + " \"" + name + "\"");
}

std::size_t kill_listed(int dirfd) noexcept {
    try {
        std::string content;
        if (try_read_file_at(dirfd, "cgroup.procs", content) != 0) return 0;
        const auto pids = parse_pids(content);
        if (pids.empty()) return 0;
        std::vector<std::pair<pid_t, UniqueFd>> pinned;
        pinned.reserve(pids.size());
        for (pid_t pid : pids) {
            const long fd = ::syscall(SYS_pidfd_open, pid, 0);
            if (fd >= 0) {
                pinned.emplace_back(pid, UniqueFd(static_cast<int>(fd)));
            } else if (errno == ENOSYS) {
                // Kernels before 5.3: no way to pin, and the cgroup is what vouches for it.
                ::kill(pid, SIGKILL);
            }
        }
        if (pinned.empty() || try_read_file_at(dirfd, "cgroup.procs", content) != 0)
            return pids.size();
        const auto still = parse_pids(content);
        for (const auto& [pid, fd] : pinned)
            if (std::find(still.begin(), still.end(), pid) != still.end())
                ::syscall(SYS_pidfd_send_signal, fd.get(), SIGKILL, nullptr, 0);
        return pids.size();
    } catch (...) {
        return 0;
    }
}

bool procs_empty(int dirfd) noexcept {
    try {
        std::string content;
        if (try_read_file_at(dirfd, "cgroup.procs", content) != 0) return true;
        return parse_pids(content).empty();
    } catch (...) {
        return false;
    }
}

std::vector<ProcCgroupEntry> parse_proc_cgroup(std::string_view content) {
    std::vector<ProcCgroupEntry> entries;
    for_each_line(content, [&](std::string_view line) {
        // The path is last and may itself contain ':', so split only twice.
        const auto c1 = line.find(':');
        if (c1 == std::string_view::npos) return;
        const auto c2 = line.find(':', c1 + 1);
        if (c2 == std::string_view::npos) return;
        ProcCgroupEntry e;
        const auto id = parse_u64(line.substr(0, c1));
        if (!id) return;
        e.hierarchy_id = static_cast<int>(*id);
        const auto controllers = line.substr(c1 + 1, c2 - c1 - 1);
        if (!controllers.empty())
            for (auto c : split(controllers, ',')) e.controllers.emplace_back(c);
        e.path = std::string(line.substr(c2 + 1));
        entries.push_back(std::move(e));
    });
    return entries;
}

std::vector<MountEntry> parse_mountinfo(std::string_view content) {
    std::vector<MountEntry> mounts;
    for_each_line(content, [&](std::string_view line) {
        // id parent major:minor root mount-point options [optional...] - fstype source super
        std::vector<std::string_view> fields;
        for (auto f : split(line, ' '))
            if (!f.empty()) fields.push_back(f);
        const auto dash = std::find(fields.begin(), fields.end(), std::string_view("-"));
        if (fields.size() < 6 || dash == fields.end() || fields.end() - dash < 4) return;
        MountEntry m;
        m.root = unescape_octal(fields[3]);
        m.mount_point = unescape_octal(fields[4]);
        m.fstype = std::string(dash[1]);
        for (auto o : split(dash[3], ',')) m.super_options.emplace_back(o);
        mounts.push_back(std::move(m));
    });
    return mounts;
}

Backoff::Backoff(std::chrono::milliseconds budget)
    : deadline_(std::chrono::steady_clock::now() + budget) {}

bool Backoff::expired() const {
    return std::chrono::steady_clock::now() >= deadline_;
}

bool Backoff::sleep() {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline_) return false;
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(step_, deadline_ - now));
    step_ = std::min(step_ * 2, std::chrono::milliseconds(50));
    return true;
}

int rmdir_retry(const Dir& parent, const std::string& name, Backoff& backoff) noexcept {
    while (true) {
        if (::unlinkat(parent.fd.get(), name.c_str(), AT_REMOVEDIR) == 0) return 0;
        const int err = errno;
        if (err == ENOENT) return 0;
        if (err != EBUSY || !backoff.sleep()) return err;
    }
}

int remove_tree(const Dir& parent, const std::string& name, Backoff& backoff) noexcept {
    int first_error = 0;
    int err = 0;
    Dir dir = open_subdir(parent, name, &err);
    if (!dir.valid()) return err == ENOENT ? 0 : err;
    for (const auto& child : list_subdirs(dir))
        if (const int e = remove_tree(dir, child, backoff); e != 0 && first_error == 0)
            first_error = e;
    if (const int e = rmdir_retry(parent, name, backoff); e != 0 && first_error == 0)
        first_error = e;
    return first_error;
}

UniqueFd lock_subtree(const Dir& dir, std::chrono::milliseconds wait) {
    // A descriptor of its own: a flock belongs to the open file, and the Dir's may be shared.
    UniqueFd lock(::openat(dir.fd.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!lock.valid()) throw_errno("open " + dir.path.string(), errno);
    Backoff backoff(wait);
    while (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
        const int err = errno;
        if (err == EINTR) continue;
        if (err != EWOULDBLOCK) throw_errno("flock " + dir.path.string(), err);
        if (!backoff.sleep())
            throw SetupError("the cgroup subtree " + dir.path.string() +
                             " is in use by another running sandboxd; give each instance its "
                             "own cgroup_subtree");
    }
    return lock;
}

}  // namespace isolate::cgroup::fs
