// The walls: credentials, network, filesystem, devices, IPC, syscalls, processes.

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <linux/nsfs.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/ipc.h>
#include <sys/mount.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "init_spawner.h"
#include "isolate/support.h"

using isolate::Status;

namespace {

std::string field(const std::string& text, const std::string& key) {
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line))
        if (line.rfind(key + ":", 0) == 0) {
            auto value = line.substr(key.size() + 1);
            value.erase(0, value.find_first_not_of(" \t"));
            return value;
        }
    return "<missing>";
}

// Whether this kernel runs i386 system calls (int 0x80) at all, unfiltered. Some virtual
// machines (and ia32_emulation=0) answer them with SIGSEGV.
bool kernel_takes_int80() {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::signal(SIGSEGV, SIG_DFL);  // not doctest's crash handler
        long r = 20;                 // __NR_getpid on i386
        asm volatile("int $0x80" : "+a"(r) : : "r8", "r9", "r10", "r11", "memory");
        ::_exit(r == ::getpid() ? 0 : 1);
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// What `spec` prints when it runs on `rootfs`; the run must end ok.
std::string output_on(const std::string& rootfs, isolate::RunSpec spec) {
    spec.rootfs = rootfs;
    auto result = test::sandbox().run(spec);
    INFO(result.message);
    REQUIRE(result.status == Status::ok);
    return result.stdout_data;
}

}  // namespace

TEST_CASE("capabilities are empty, NoNewPrivs is 1 and Seccomp is 2 with one filter" *
          doctest::test_suite("vm")) {
    auto result = test::sandbox().run(test::probe({"status"}));
    REQUIRE(result.status == Status::ok);
    for (const char* set : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"})
        CHECK_MESSAGE(field(result.stdout_data, set) == "0000000000000000", set);
    CHECK(field(result.stdout_data, "NoNewPrivs") == "1");
    CHECK(field(result.stdout_data, "Seccomp") == "2");
    // Exactly pid 1's, inherited: none stacked on it, none lost on the way.
    CHECK(field(result.stdout_data, "Seccomp_filters") == "1");
    CHECK(field(result.stdout_data, "Uid") == "1000\t1000\t1000\t1000");
    CHECK(field(result.stdout_data, "Gid") == "1000\t1000\t1000\t1000");
    CHECK(field(result.stdout_data, "Groups") == "");
}

TEST_CASE("the host uid is not 0 and differs between two concurrent runs" *
          doctest::test_suite("vm")) {
    isolate::RunResult first, second;
    auto run_in = [](unsigned slot, isolate::RunResult& out) {
        auto spec = test::command({"/bin/sh", "-c", "cat /proc/self/uid_map; sleep 0.3"});
        spec.slot = slot;
        out = test::sandbox().run(spec);
    };
    std::thread a(run_in, 0, std::ref(first));
    std::thread b(run_in, 1, std::ref(second));
    a.join();
    b.join();
    REQUIRE(first.status == Status::ok);
    REQUIRE(second.status == Status::ok);
    unsigned inside1, host1, count1, inside2, host2, count2;
    REQUIRE(std::sscanf(first.stdout_data.c_str(), "%u %u %u", &inside1, &host1, &count1) == 3);
    REQUIRE(std::sscanf(second.stdout_data.c_str(), "%u %u %u", &inside2, &host2, &count2) == 3);
    CHECK(inside1 == 1000);
    CHECK(count1 == 1);
    CHECK(host1 != 0);
    CHECK(host2 != 0);
    CHECK(host1 != host2);
    CHECK(host1 == test::sandbox().config().uid_base + 0);
    CHECK(host2 == test::sandbox().config().uid_base + 1);
}

TEST_CASE("the same slot cannot run twice at once") {
    isolate::RunResult first;
    std::thread a([&] {
        auto spec = test::probe({"sleep", "500"});
        spec.slot = 5;
        first = test::sandbox().run(spec);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto spec = test::probe({"hello"});
    spec.slot = 5;
    auto second = test::sandbox().run(spec);
    a.join();
    CHECK(first.status == Status::ok);
    CHECK(second.status == Status::internal_error);
    CHECK(second.message.find("slot 5") != std::string::npos);
}

TEST_CASE("only lo exists, it works, and the host's loopback is unreachable" *
          doctest::test_suite("vm")) {
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    REQUIRE(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(listen(listener, 4) == 0);
    REQUIRE(getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    std::string port = std::to_string(ntohs(addr.sin_port));

    auto devices = test::sandbox().run(test::probe({"cat", "/proc/net/dev"}));
    CHECK(devices.stdout_data.find("lo:") != std::string::npos);
    // Header (2 lines) + lo.
    CHECK(std::count(devices.stdout_data.begin(), devices.stdout_data.end(), '\n') == 3);

    auto connect = test::sandbox().run(test::probe({"connect", port}));
    CHECK(connect.stdout_data == "connect: ECONNREFUSED\n");
    auto self = test::sandbox().run(test::probe({"loopback"}));
    CHECK(self.stdout_data == "self-connect ok\n");
    close(listener);
}

TEST_CASE("a host marker file is invisible") {
    std::string marker = "/var/tmp/sbx-marker-" + std::to_string(getpid());
    std::ofstream(marker) << "secret";
    for (const std::string& path :
         {marker, std::string("/proc/1/root") + marker, std::string("/../../..") + marker}) {
        auto result = test::sandbox().run(test::probe({"stat", path}));
        CHECK_MESSAGE(result.status == Status::ok, path);
        // /proc/1 is init's, which is not dumpable: EACCES there.
        CHECK_MESSAGE((result.stdout_data == "ENOENT\n" || result.stdout_data == "EACCES\n"), path);
    }
    auto root = test::sandbox().run(test::probe({"ls", "/"}));
    CHECK(root.stdout_data.find("root") == std::string::npos);
    CHECK(root.stdout_data.find("var") == std::string::npos);
    std::filesystem::remove(marker);
}

TEST_CASE("/ and the bound directories are read-only; /tmp and the workdir are not") {
    auto mounts = test::sandbox().run(test::probe({"cat", "/proc/self/mountinfo"}));
    REQUIRE(mounts.status == Status::ok);
    std::map<std::string, std::string> options;  // mount point -> per-mount options
    std::istringstream in(mounts.stdout_data);
    for (std::string line; std::getline(in, line);) {
        std::istringstream fields(line);
        std::string id, parent, dev, root, point, opts;
        fields >> id >> parent >> dev >> root >> point >> opts;
        options[point] = opts;
    }
    for (const char* point : {"/", "/usr", "/probe", "/proc/sys", "/dev"}) {
        INFO(point, " ", options[point]);
        CHECK(options[point].rfind("ro,", 0) == 0);
        CHECK(options[point].find("nosuid") != std::string::npos);
    }
    for (const char* point : {"/", "/usr", "/probe"})
        CHECK_MESSAGE(options[point].find("nodev") != std::string::npos, point);
    for (const char* point : {"/tmp", "/box", "/dev/shm"})
        CHECK_MESSAGE(options[point].rfind("rw,", 0) == 0, point);
    for (const char* path :
         {"/newfile", "/usr/newfile", "/etc/passwd", "/probe/x", "/dev/newfile"}) {
        auto result = test::sandbox().run(test::probe({"create", path}));
        CHECK_MESSAGE(result.stdout_data != "created\n", path);
    }
    CHECK(test::sandbox().run(test::probe({"create", "/tmp/x"})).stdout_data == "created\n");
    CHECK(test::sandbox().run(test::probe({"create", "/box/x"})).stdout_data == "created\n");
    CHECK(test::sandbox().run(test::probe({"create", "/dev/shm/x"})).stdout_data == "created\n");
    auto sys = test::sandbox().run(test::probe({"create", "/proc/sys/kernel/hostname"}));
    CHECK(sys.stdout_data != "created\n");
}

// Every run of a shape starts from one mount namespace built for the shape and kept
// (mount_template.h): it must show every run the same few mounts, none of the host's,
// whatever the runs before did.
TEST_CASE("every run sees the same few mounts and none of the host's, whatever ran before") {
    auto mounts = [] {
        auto result = test::sandbox().run(test::command({"/bin/cat", "/proc/self/mountinfo"}));
        REQUIRE(result.status == Status::ok);
        // Mount point, root, type and options; not the ids and device numbers, new per run.
        std::vector<std::string> lines;
        std::istringstream in(result.stdout_data);
        for (std::string line; std::getline(in, line);) {
            std::istringstream fields(line);
            std::string id, parent, dev, root, point, options, field, type;
            fields >> id >> parent >> dev >> root >> point >> options;
            while (fields >> field && field != "-") {
            }
            fields >> type;
            lines.push_back(point + " " + root + " " + type + " " + options);
        }
        std::sort(lines.begin(), lines.end());
        return lines;
    };
    const auto first = mounts();
    std::vector<std::string> points;
    for (const auto& line : first) points.push_back(line.substr(0, line.find(' ')));
    // Two procs at /proc: the run's own, on the template's placeholder.
    CHECK(points == std::vector<std::string>{"/", "/box", "/dev", "/dev/shm", "/probe", "/proc",
                                             "/proc", "/proc/sys", "/tmp", "/usr"});

    // A program cannot mount (no capability, and the filter), so what could reach the template
    // is pid 1's own mounts, made afresh in every run's copy; and files left behind.
    for (int run = 0; run < 5; ++run) {
        auto meddle = test::sandbox().run(
            test::command({"/bin/sh", "-c",
                           "echo x > /tmp/left; echo x > /box/left; echo x > /dev/shm/left; "
                           "mkdir /tmp/d /box/d; umount /tmp; mount -t tmpfs none /box/d"}));
        REQUIRE(meddle.status != Status::internal_error);
    }
    CHECK(mounts() == first);
    auto left = test::sandbox().run(test::command({"/bin/ls", "-A", "/tmp", "/box", "/dev/shm"}));
    CHECK(left.stdout_data == "/box:\n\n/dev/shm:\n\n/tmp:\n");
}

TEST_CASE("a rootfs replaced on disk is the one the next run sees") {
    test::TempRootfs root;
    auto marker = [&] { return output_on(root.path(), test::probe({"cat", "/marker"})); };
    std::ofstream(root.path() + "/marker") << "old";
    CHECK(marker() == "old");
    // Same path, new directory: the shape's mount template still holds the old one.
    root.replace(".old");
    std::ofstream(root.path() + "/marker") << "new";
    CHECK(marker() == "new");
}

// A deployment may switch rootfs versions by re-pointing a symlink ("current" -> v2): the
// rootfs is resolved again for every sandbox, not remembered by the path it was given.
TEST_CASE("a rootfs reached through a symlink is the one the symlink points at now") {
    test::TempRootfs first, second;
    std::ofstream(first.path() + "/marker") << "first";
    std::ofstream(second.path() + "/marker") << "second";
    const std::string link = first.path() + ".current";
    std::filesystem::remove(link);
    std::filesystem::create_directory_symlink(first.path(), link);
    auto marker = [&] { return output_on(link, test::probe({"cat", "/marker"})); };
    CHECK(marker() == "first");
    const std::string staged = link + ".new";
    std::filesystem::remove(staged);
    std::filesystem::create_directory_symlink(second.path(), staged);
    std::filesystem::rename(staged, link);  // atomically, as a deployment would
    CHECK(marker() == "second");
    std::filesystem::remove(link);
}

// A template is a private copy of the rootfs's mounts as they were when it was built; the
// host's later mounts and unmounts below a rootfs must still reach the next run. This process
// is in a mount namespace of its own (dev_mounts.h), which stands for the host's here.
TEST_CASE("a mount made or removed below a rootfs after its first run reaches the next run") {
    test::TempRootfs root;
    auto marker = [&] { return output_on(root.path(), test::probe({"cat", "/etc/marker"})); };
    std::ofstream(root.path() + "/etc/marker") << "rootfs";
    CHECK(marker() == "rootfs");
    const std::string etc = root.path() + "/etc";
    REQUIRE(::mount("tmpfs", etc.c_str(), "tmpfs", 0, "size=64k") == 0);
    std::ofstream(etc + "/marker") << "mounted";
    CHECK(marker() == "mounted");
    REQUIRE(::umount2(etc.c_str(), MNT_DETACH) == 0);
    CHECK(marker() == "rootfs");
}

// Removing a directory takes whatever is mounted on it out of every mount namespace, the
// templates' included: a bind's mountpoint made again must get its bind again.
TEST_CASE("a bind's mountpoint removed and made again on the host still gets the bind") {
    test::TempRootfs root;
    auto listing = [&] { return output_on(root.path(), test::command({"/bin/ls", "/probe"})); };
    const std::string first = listing();
    CHECK(first.find("sbx-probe") != std::string::npos);
    std::filesystem::remove(root.path() + "/probe");
    std::filesystem::create_directory(root.path() + "/probe");
    CHECK(listing() == first);
}

namespace {

// The mount namespaces this process holds, other than its own (which each slot's spawner
// thread keeps to return to): the mount templates, owned by this process's user namespace,
// and runs' namespaces, owned by a run's.
struct HeldMountNamespaces {
    int templates = 0;
    int runs = 0;
};

HeldMountNamespaces held_mount_namespaces() {
    const auto own = std::filesystem::read_symlink("/proc/self/ns/mnt");
    struct stat own_user {};
    REQUIRE(::stat("/proc/self/ns/user", &own_user) == 0);
    HeldMountNamespaces held;
    for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
        std::error_code ec;
        auto target = std::filesystem::read_symlink(entry.path(), ec);
        if (ec || target.string().rfind("mnt:[", 0) != 0 || target == own) continue;
        const int fd = std::stoi(entry.path().filename().string());
        const int owner = ::ioctl(fd, NS_GET_USERNS);
        if (owner < 0) continue;  // closed meanwhile
        struct stat user {};
        const bool ours = ::fstat(owner, &user) == 0 && user.st_ino == own_user.st_ino &&
                          user.st_dev == own_user.st_dev;
        ::close(owner);
        ++(ours ? held.templates : held.runs);
    }
    return held;
}

}  // namespace

TEST_CASE("the mount templates kept stay few when every run has a shape of its own") {
    char dir_template[] = "/var/tmp/sbx-shapes-XXXXXX";
    REQUIRE(::mkdtemp(dir_template) != nullptr);
    const std::filesystem::path base = dir_template;
    for (int shape = 0; shape < 24; ++shape) {
        // Each run binds another directory at /etc: another shape, another template.
        const auto source = base / std::to_string(shape);
        std::filesystem::create_directory(source);
        std::filesystem::permissions(source, std::filesystem::perms(0755));
        std::ofstream(source / "shape") << shape;
        isolate::RunSpec spec = test::command({"/bin/cat", "/etc/shape"});
        spec.binds.push_back({source, "/etc"});
        auto result = test::sandbox().run(spec);
        INFO(result.message);
        REQUIRE(result.status == Status::ok);
        CHECK(result.stdout_data == std::to_string(shape));
    }
    const HeldMountNamespaces held = held_mount_namespaces();
    // Templates are used where pid 1 shares our memory.
    if (isolate::InitSpawner::supported()) CHECK(held.templates > 0);
    CHECK(held.templates <= 16);
    std::filesystem::remove_all(base);
}

// A run's mount namespace is held by this process until its pid 1 is reaped, then let go on
// another thread (namespace_releaser.h). It must be let go: each one keeps the run's /tmp and
// working directory, with what the run wrote there.
TEST_CASE("a run's mount namespace is let go once the run is over" * doctest::test_suite("vm")) {
    // Sandboxes of other tests, built ahead and still waiting, hold theirs.
    REQUIRE(test::namespaces_released());
    const int before = held_mount_namespaces().runs;
    const auto stats_before = test::sandbox().mount_namespace_stats();
    if (test::kernel_at_least(6, 11)) {
        // While a run lives, this process holds its mount namespace.
        auto sleeper = test::command({"/bin/sleep", "1"});
        sleeper.slot = 1;
        std::thread run([&] { CHECK(test::sandbox().run(sleeper).status == Status::ok); });
        int during = before;
        for (int attempt = 0; attempt < 100 && during == before; ++attempt) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
            during = held_mount_namespaces().runs;
        }
        run.join();
        CHECK(during == before + 1);
    }
    const auto spec = test::command({"/bin/sh", "-c", "head -c 1048576 /dev/zero > /tmp/fill"});
    for (int run = 0; run < 40; ++run) {
        auto result = test::sandbox().run(spec);
        INFO(result.message);
        REQUIRE(result.status == Status::ok);
    }
    REQUIRE(test::namespaces_released());
    CHECK(held_mount_namespaces().runs <= before);
    const auto after = test::sandbox().mount_namespace_stats();
    if (test::kernel_at_least(6, 11)) {
        CHECK(after.released + after.closed_by_slot >=
              stats_before.released + stats_before.closed_by_slot + 40);
        CHECK(after.freed_by_pid1 == stats_before.freed_by_pid1);
    } else {
        CHECK(after.freed_by_pid1 >= stats_before.freed_by_pid1 + 40);
    }
}

TEST_CASE("/dev holds only the harmless devices, and there is no /sys") {
    auto result = test::sandbox().run(test::probe({"ls", "/dev"}));
    std::vector<std::string> names;
    std::istringstream in(result.stdout_data);
    for (std::string line; std::getline(in, line);) names.push_back(line);
    std::sort(names.begin(), names.end());
    CHECK(names == std::vector<std::string>{"fd", "full", "null", "random", "shm", "stderr",
                                            "stdin", "stdout", "urandom", "zero"});
    for (const char* path : {"/dev/mem", "/dev/kvm", "/dev/sda", "/dev/vda", "/sys/kernel"})
        CHECK_MESSAGE(test::sandbox().run(test::probe({"stat", path})).stdout_data == "ENOENT\n",
                      path);
    auto null =
        test::command({"/bin/sh", "-c", "echo hi > /dev/null && head -c 4 /dev/zero | wc -c"});
    CHECK(test::sandbox().run(null).stdout_data == "4\n");
}

TEST_CASE("no run can change /dev for the next run, or the host's device nodes") {
    // Every run's /dev is the same mount (dev_mounts.h), so anything a run could change there
    // would be a channel to the next. Modes, owners and times of everything in it:
    auto fingerprint = [] {
        auto result = test::sandbox().run(test::command(
            {"/bin/sh", "-c",
             "ls -A /dev && stat -c '%n %f %u %g %t:%T %X %Y %Z %x %y %z' /dev /dev/null "
             "/dev/zero /dev/full /dev/random /dev/urandom /dev/fd /dev/stdin"}));
        REQUIRE(result.status == Status::ok);
        return result.stdout_data;
    };
    struct stat host_before {};
    REQUIRE(::stat("/dev/null", &host_before) == 0);
    const std::string before = fingerprint();

    for (const char* device :
         {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev"}) {
        // Setting the times to "now" needs only write access, which 0666 nodes grant: a bind
        // of the host's own /dev/null would let a run stamp it, and the next run read it.
        CHECK_MESSAGE(test::sandbox().run(test::probe({"touch", device})).stdout_data == "EROFS\n",
                      device);
    }
    auto meddle = test::sandbox().run(test::command(
        {"/bin/sh", "-c",
         "chmod 600 /dev/null; chown 1000 /dev/zero; rm -f /dev/full; mv /dev/random /dev/r; "
         "ln -s /box /dev/link; mkdir /dev/dir; mknod /dev/mem c 1 1; touch /dev/new; "
         "echo x > /dev/stdin.txt; ls -A /dev"}));
    REQUIRE(meddle.status != Status::internal_error);

    CHECK(fingerprint() == before);
    struct stat host_after {};
    REQUIRE(::stat("/dev/null", &host_after) == 0);
    CHECK(host_after.st_mtim.tv_sec == host_before.st_mtim.tv_sec);
    CHECK(host_after.st_mtim.tv_nsec == host_before.st_mtim.tv_nsec);
    CHECK(host_after.st_ctim.tv_sec == host_before.st_ctim.tv_sec);
    CHECK(host_after.st_ctim.tv_nsec == host_before.st_ctim.tv_nsec);
}

TEST_CASE("a rootfs replaced while the sandbox lives gets its /dev at its next run") {
    test::TempRootfs root;
    auto list_dev = [&] { return output_on(root.path(), test::probe({"ls", "/dev"})); };
    const std::string first = list_dev();
    CHECK(first.find("urandom\n") != std::string::npos);
    // The old directory keeps its /dev; the new one has a bare dev/ until its first run.
    root.replace(".old");
    CHECK(list_dev() == first);
}

TEST_CASE("SysV IPC and /dev/shm are private") {
    key_t key = 0x5b0c0000 + (getpid() & 0xffff);
    int id = shmget(key, 4096, IPC_CREAT | 0666);
    REQUIRE(id >= 0);
    std::string shm_file = "/dev/shm/sbx-test-" + std::to_string(getpid());
    std::ofstream(shm_file) << "x";
    CHECK(test::sandbox().run(test::probe({"shmget", std::to_string(key)})).stdout_data ==
          "ENOENT\n");
    CHECK(test::sandbox().run(test::probe({"ls", "/dev/shm"})).stdout_data.empty());
    shmctl(id, IPC_RMID, nullptr);
    std::filesystem::remove(shm_file);
}

TEST_CASE("the hostname and pid namespace are the sandbox's own") {
    CHECK(test::sandbox().run(test::probe({"hostname"})).stdout_data == "sandbox\n");
    // pid 1 is init, the program is its child.
    CHECK(test::sandbox().run(test::probe({"pid"})).stdout_data == "pid 2 ppid 1\n");
}

TEST_CASE("every blocked syscall is refused, and kills name the syscall") {
    const char* killed[] = {"mount",
                            "umount2",
                            "pivot_root",
                            "chroot",
                            "unshare",
                            "setns",
                            "keyctl",
                            "add_key",
                            "request_key",
                            "bpf",
                            "perf_event_open",
                            "userfaultfd",
                            "kexec_load",
                            "kexec_file_load",
                            "init_module",
                            "finit_module",
                            "delete_module",
                            "reboot",
                            "swapon",
                            "swapoff",
                            "acct",
                            "quotactl",
                            "syslog",
                            "settimeofday",
                            "clock_settime",
                            "adjtimex",
                            "clock_adjtime",
                            "open_by_handle_at",
                            "name_to_handle_at",
                            "ptrace"};
    for (const char* name : killed) {
        auto result = test::sandbox().run(test::probe({"syscall", name}));
        CHECK_MESSAGE(result.status == Status::syscall_blocked, name);
        CHECK_MESSAGE(result.message == std::string("blocked syscall: ") + name, name);
        CHECK_MESSAGE(result.stdout_data.empty(), name);
    }
    for (const char* name : {"clone3", "io_uring_setup", "io_uring_enter", "io_uring_register"}) {
        auto result = test::sandbox().run(test::probe({"syscall", name}));
        CHECK_MESSAGE(result.status == Status::ok, name);
        CHECK_MESSAGE(result.stdout_data == std::string(name) + " returned -1 errno ENOSYS\n",
                      name);
    }
    auto allowed = test::sandbox().run(test::probe({"syscall", "getpid"}));
    CHECK(allowed.stdout_data == "getpid returned 2 errno 0\n");
}

TEST_CASE("clone with a namespace flag is blocked; plain fork works") {
    auto clone = test::sandbox().run(test::probe({"clone-newuser"}));
    CHECK(clone.status == Status::syscall_blocked);
    CHECK(clone.message == "blocked syscall: clone");
    auto fork = test::sandbox().run(test::probe({"fork"}));
    CHECK(fork.stdout_data == "child exited 7\n");
}

// The supervisor applies personality's rules (a supervised syscall): it must let the query
// run and end the run for a persona that would weaken the program's own address space.
TEST_CASE("personality: the query runs, another persona is blocked") {
    auto query = test::sandbox().run(test::probe({"personality", "0xffffffff"}));
    CHECK(query.status == Status::ok);
    CHECK(query.stdout_data == "personality returned 0 errno 0\n");
    auto per_linux = test::sandbox().run(test::probe({"personality", "0"}));
    CHECK(per_linux.stdout_data == "personality returned 0 errno 0\n");
    for (const char* persona :
         {"0x0040000" /* ADDR_NO_RANDOMIZE */, "0x0400000" /* READ_IMPLIES_EXEC */}) {
        auto result = test::sandbox().run(test::probe({"personality", persona}));
        CHECK_MESSAGE(result.status == Status::syscall_blocked, persona);
        CHECK_MESSAGE(result.message == "blocked syscall: personality", persona);
        CHECK_MESSAGE(result.stdout_data.empty(), persona);
    }
}

TEST_CASE("TIOCSTI is blocked, also with high bits set in the request") {
    for (const char* variant : {"plain", "high"}) {
        auto result = test::sandbox().run(test::probe({"tiocsti", variant}));
        CHECK_MESSAGE(result.status == Status::syscall_blocked, variant);
        CHECK_MESSAGE(result.message == "blocked syscall: ioctl", variant);
    }
}

TEST_CASE("non-native ABIs (x32, i386) are blocked") {
    auto x32 = test::sandbox().run(test::probe({"x32"}));
    // Killed by the filter, or ENOSYS where the kernel has no x32; never a pid.
    bool refused = x32.status == Status::syscall_blocked ||
                   x32.stdout_data == "x32 returned -1 errno ENOSYS\n";
    CHECK_MESSAGE(refused, x32.stdout_data);
    auto i386 = test::sandbox().run(test::probe({"i386"}));
    // Killed by the filter; where the kernel takes no int 0x80 at all, by its SIGSEGV. Never
    // a pid.
    if (kernel_takes_int80()) {
        CHECK(i386.status == Status::syscall_blocked);
    } else {
        CHECK(i386.status == Status::signaled);
        CHECK(i386.signal == SIGSEGV);
    }
    CHECK(i386.stdout_data.empty());
}

// vsock ignores network namespaces: on a VM it would reach the hypervisor's services.
TEST_CASE("AF_VSOCK sockets cannot be made") {
    auto result = test::sandbox().run(test::probe({"vsock"}));
    CHECK(result.status == Status::ok);
    CHECK(result.stdout_data == "vsock EAFNOSUPPORT\n");
}

// pid 1 installs the filter before it is ready, so its own later calls and those of the
// program's process before execve run under it too. The profile is the program's: the
// supervisor lets the sandbox's own calls through, and still ends the run on the program's.
TEST_CASE("a profile that kills the sandbox's own calls still runs the program, and kills its") {
    isolate::SeccompPolicy policy = test::default_policy();
    // Before the program's execve (setsid, dup2, fchdir, ...) and in pid 1 while and after it
    // runs (wait4, kill, sendmsg, the input file's mkdirat and openat2). Not those the probe
    // itself makes.
    for (const char* name : {"setsid", "dup2", "fchdir", "close_range", "sched_setaffinity",
                             "prctl", "recvfrom", "mkdirat", "openat2", "wait4", "kill"})
        policy.rules.push_back({name, {isolate::SeccompAction::Kind::kill, 0}, {}});
    // clone has conditional rules already; pid 1 starts the program with CLONE_VFORK.
    policy.rules.push_back({"clone",
                            {isolate::SeccompAction::Kind::kill, 0},
                            {{isolate::SeccompArgCondition::Op::masked_eq, 0, CLONE_VFORK,
                              static_cast<std::uint64_t>(CLONE_VFORK)}}});
    const auto filter = isolate::SeccompFilter::compile(policy, true);
    auto spec = test::probe({"hello"});
    spec.seccomp = filter;
    spec.files.push_back({"in/data.txt", "x", false});
    spec.collect = {"in/data.txt"};
    auto result = test::sandbox().run(spec);
    CHECK_MESSAGE(result.status == Status::ok, result.message);
    CHECK(result.stdout_data == test::sandbox().run(test::probe({"hello"})).stdout_data);
    CHECK(result.collected.size() == 1);

    // The same calls from the program: killed and named (wait4 only by its pid, since the
    // program has announced its execve by then).
    for (const char* name : {"setsid", "wait4"}) {
        CAPTURE(name);
        spec = test::probe({"syscall", name});
        spec.seccomp = filter;
        result = test::sandbox().run(spec);
        CHECK(result.status == Status::syscall_blocked);
        CHECK(result.message == std::string("blocked syscall: ") + name);
    }
}

// With socket reports the filter leaves the profile's socket rules to the supervisor, which
// must apply a kill as the filter would.
TEST_CASE("a socket family the profile kills ends the run as a blocked syscall") {
    isolate::SeccompPolicy policy = test::default_policy();
    policy.rules.push_back({"socket",
                            {isolate::SeccompAction::Kind::kill, 0},
                            {{isolate::SeccompArgCondition::Op::masked_eq, 0,
                              static_cast<std::uint64_t>(AF_PACKET), 0xffffffff}}});
    for (const bool reports : {true, false}) {
        CAPTURE(reports);
        auto filter = isolate::SeccompFilter::compile(policy, reports);
        REQUIRE(filter->reports_sockets() == reports);
        auto spec = test::probe({"socket", std::to_string(AF_PACKET)});
        spec.seccomp = filter;
        auto result = test::sandbox().run(spec);
        CHECK(result.status == Status::syscall_blocked);
        CHECK(result.message == "blocked syscall: socket");
        spec = test::probe({"socket", std::to_string(AF_NETLINK)});
        spec.seccomp = filter;
        CHECK(test::sandbox().run(spec).stdout_data ==
              "socket " + std::to_string(AF_NETLINK) + " made\n");
    }
}

TEST_CASE("kill(-1, SIGKILL) inside harms nothing outside") {
    pid_t bystander = fork();
    if (bystander == 0) {
        pause();
        _exit(0);
    }
    REQUIRE(bystander > 0);
    auto result = test::sandbox().run(test::probe({"kill-minus-one"}));
    CHECK(result.status == Status::ok);
    CHECK(result.stdout_data == "kill(-1) returned 0, child killed, still alive\n");
    CHECK(kill(bystander, 0) == 0);
    kill(bystander, SIGKILL);
    waitpid(bystander, nullptr, 0);
}

TEST_CASE("a setsid'd, double-forked sleep is gone once the run returns" *
          doctest::test_suite("vm")) {
    auto spec = test::probe({"daemon", "1000"});
    spec.slot = 7;
    auto result = test::sandbox().run(spec);
    CHECK(result.status == Status::ok);
    CHECK(result.stdout_data == "daemonized\n");
    CHECK(test::processes_of_uid(test::sandbox().config().uid_base + 7).empty());
}

// The daemon's network namespaces come from a pool made ahead of time (netns_pool.h); each
// must still be fresh. The first run checks that the probe sees what it leaves behind.
TEST_CASE("a run's network namespace is fresh: the previous run's sockets and traffic are gone" *
          doctest::test_suite("vm")) {
    auto litter = test::sandbox().run(test::probe({"net-litter"}));
    REQUIRE(litter.status == Status::ok);
    unsigned long tcp = 0, unix_sockets = 0, lo_packets = 0, active_opens = 0;
    REQUIRE(std::sscanf(litter.stdout_data.c_str(),
                        "tcp=%lu unix=%lu lo_packets=%lu active_opens=%lu", &tcp, &unix_sockets,
                        &lo_packets, &active_opens) == 4);
    CHECK(tcp >= 1);  // the client's side in TIME_WAIT
    CHECK(unix_sockets >= 1);
    CHECK(lo_packets > 0);
    CHECK(active_opens >= 1);
    for (int run = 0; run < 3; ++run) {
        auto next = test::sandbox().run(test::probe({"net-traces"}));
        CHECK(next.stdout_data == "tcp=0 unix=0 lo_packets=0 active_opens=0\n");
    }
}

// A slot's sandboxes share a network namespace while runs leave it as it was new
// (netns_pool.h). Each kind of trace that moves none of lo's counters must still make the
// slot drop it; a run whose sockets all died with it must not.
TEST_CASE("a slot keeps its network namespace only while its runs leave no trace in it" *
          doctest::test_suite("vm")) {
    auto& sandbox = test::sandbox();
    auto run = [&](std::vector<std::string> args) {
        auto spec = test::probe(std::move(args));
        spec.slot = 5;
        auto result = sandbox.run(spec);
        REQUIRE(result.status == Status::ok);
        return result.stdout_data;
    };
    const std::string fresh = "unix=0 inet=0 flowlabels=0 sockets=0 lo_packets=0 abstract=free\n";
    run({"hello"});  // if the pool was still empty, this run made its own namespace
    const std::string netns = run({"netns"});
    CHECK(run({"net-state"}) == fresh);
    const auto before = sandbox.netns_stats();
    CHECK(run({"netns"}) == netns);  // nothing was left: the same namespace again
    CHECK(sandbox.netns_stats().kept == before.kept + 1);
    // net-state made no socket but unix ones (the filter reports every other), so only lo's
    // counters and the unix sockets were read for that.
    CHECK(sandbox.netns_stats().kept_unix_only == before.kept_unix_only + 1);

    SUBCASE("sockets that die with the run: kept, and nothing of them is there") {
        auto litter = run({"net-quiet-litter", "sockets"});
        unsigned long unix_sockets = 0, inet = 0, sockets = 0;
        REQUIRE(std::sscanf(litter.c_str(), "unix=%lu inet=%lu flowlabels=0 sockets=%lu",
                            &unix_sockets, &inet, &sockets) == 3);
        CHECK(unix_sockets >= 1);
        CHECK(inet >= 2);
        CHECK(sockets >= 4);
        CHECK(litter.find("lo_packets=0 abstract=held") != std::string::npos);
        const auto littered = sandbox.netns_stats();
        CHECK(run({"netns"}) == netns);
        // Its inet sockets were reported, so every file was read before it was kept.
        CHECK(sandbox.netns_stats().kept == littered.kept + 1);
        CHECK(sandbox.netns_stats().kept_unix_only == littered.kept_unix_only);
        CHECK(run({"net-state"}) == fresh);
    }
    SUBCASE("a filter without socket reports: the full look, then kept") {
        auto spec = test::probe({"net-state"});
        spec.slot = 5;
        spec.seccomp = isolate::SeccompFilter::compile(test::default_policy(), false);
        CHECK(sandbox.run(spec).stdout_data == fresh);
        const auto looked = sandbox.netns_stats();
        CHECK(run({"netns"}) == netns);
        CHECK(sandbox.netns_stats().kept == looked.kept + 1);
        CHECK(sandbox.netns_stats().kept_unix_only == looked.kept_unix_only);
    }
    SUBCASE("a netlink socket alone: reported too, so the full look, then kept") {
        // Some families that are not inet make inet sockets inside the kernel (AF_SMC,
        // AF_RXRPC), so every socket but a unix one counts.
        CHECK(run({"net-quiet-litter", "netlink"}).find("inet=0 ") != std::string::npos);
        const auto littered = sandbox.netns_stats();
        CHECK(run({"netns"}) == netns);
        CHECK(sandbox.netns_stats().kept == littered.kept + 1);
        CHECK(sandbox.netns_stats().kept_unix_only == littered.kept_unix_only);
    }
    SUBCASE("an IPv6 flow label that outlives its socket: replaced") {
        auto litter = run({"net-quiet-litter", "flowlabel"});
        CHECK(litter.find("flowlabels=1 ") != std::string::npos);
        CHECK(litter.find("lo_packets=0 ") != std::string::npos);
        const auto replaced = sandbox.netns_stats().replaced;
        CHECK(run({"netns"}) != netns);
        CHECK(sandbox.netns_stats().replaced == replaced + 1);
        CHECK(run({"net-state"}) == fresh);
    }
    // The one trace that only the IP counters show: it is found only because the run's inet
    // socket was reported.
    SUBCASE("a send that found no route, so only a counter moved: replaced") {
        CHECK(run({"net-quiet-litter", "unreachable"}).find("lo_packets=0 ") != std::string::npos);
        CHECK(run({"netns"}) != netns);
        CHECK(run({"net-state"}) == fresh);
    }
    SUBCASE("a unix socket kept alive by its own descriptor in flight: gone for the next run") {
        // Whether the kernel's collector frees it before the slot looks decides between kept
        // and replaced; either way the next run must not find it.
        CHECK(run({"net-quiet-litter", "unix-cycle"}).find("abstract=held") != std::string::npos);
        CHECK(run({"net-state"}) == fresh);
    }
}

// The start the daemon does not use on x86_64, kept for other architectures: pid 1 as a
// copy-on-write clone of the supervisor, and a network namespace the run makes itself (as
// `sandboxd exec` does). Both must confine as fully as the shared-memory start.
TEST_CASE("with pid 1 as a copy and no prepared namespaces, a run is as confined") {
    isolate::SandboxConfig config;
    config.uid_base = 2'000'000;
    config.prepared_netns = 0;
    config.init_shares_memory = false;
    auto copy = test::own_sandbox("sbx-test-copy-", config);

    auto hello = copy->run(test::probe({"hello"}));
    CHECK(hello.status == Status::ok);
    CHECK(hello.stdout_data == "hello\n");
    CHECK(hello.memory_bytes > 0);
    auto exited = copy->run(test::probe({"exit", "42"}));
    CHECK(exited.status == Status::runtime_error);
    CHECK(exited.exit_code == 42);
    auto status = copy->run(test::probe({"status"}));
    REQUIRE(status.status == Status::ok);
    CHECK(field(status.stdout_data, "CapEff") == "0000000000000000");
    CHECK(field(status.stdout_data, "Seccomp") == "2");
    CHECK(copy->run(test::probe({"pid"})).stdout_data == "pid 2 ppid 1\n");
    CHECK(copy->run(test::probe({"loopback"})).stdout_data == "self-connect ok\n");
    CHECK(copy->run(test::probe({"net-traces"})).stdout_data ==
          "tcp=0 unix=0 lo_packets=0 active_opens=0\n");
    auto devices = copy->run(test::probe({"cat", "/proc/net/dev"}));
    CHECK(std::count(devices.stdout_data.begin(), devices.stdout_data.end(), '\n') == 3);
}
