#pragma once

// A directory as the kernel tells it apart: by device and inode. A path may name another
// directory once the old one is removed and made again, and what was mounted on the old one,
// or what a namespace copied of it, stays with the old one.

#include <sys/stat.h>
#include <sys/types.h>

namespace isolate {

struct DirectoryIdentity {
    dev_t device = 0;
    ino_t inode = 0;

    static DirectoryIdentity of(const struct stat& st) noexcept { return {st.st_dev, st.st_ino}; }
    bool operator==(const DirectoryIdentity&) const = default;
};

}  // namespace isolate
