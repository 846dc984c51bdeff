// Every language of the per-language rootfs (scripts/build-rootfs), through the real daemon:
// hello world, stdin echo, a runtime error with its exit code, a compile error for compiled
// languages, and a memory-limit case. SBX_ROOTFS_DIR names the built rootfs directory;
// scripts/test sets it after building them.

#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>

#include "harness.h"

using namespace test;
namespace fs = std::filesystem;

namespace {

struct LanguageCase {
    const char* name;
    const char* hello;
    const char* echo;
    const char* exit3;
    const char* compile_error;  // nullptr for interpreted languages
    const char* memory_hog;     // touches far more than 128 MiB
};

const LanguageCase kLanguages[] = {
    {"python", "print('hello')", "import sys\nsys.stdout.write(sys.stdin.read())",
     "import sys\nsys.exit(3)", nullptr, "x = bytearray(512 << 20)\nprint(len(x))"},
    {"bash", "echo hello", "cat", "exit 3", nullptr,
     // One read fills a 1 GiB buffer: piping bytes through bash costs more CPU than the limit.
     "exec dd if=/dev/zero of=/dev/null bs=1G count=1 status=none"},
    {"c", "#include <stdio.h>\nint main(void) { puts(\"hello\"); return 0; }\n",
     "#include <stdio.h>\nint main(void) { int c; while ((c = getchar()) != EOF) putchar(c); "
     "return 0; }\n",
     "#include <stdlib.h>\nint main(void) { exit(3); }\n", "int main(void) { return nope; }\n",
     "#include <stdlib.h>\n#include <stdio.h>\nint main(void) { volatile char* p = malloc(512u << "
     "20); for (unsigned i = 0; i < (512u << 20); i += 4096) p[i] = 1; printf(\"%d\\n\", "
     "p[4096]); return 0; }\n"},
    {"cpp", "#include <iostream>\nint main() { std::cout << \"hello\\n\"; }\n",
     "#include <iostream>\nint main() { std::cout << std::cin.rdbuf(); }\n",
     "#include <cstdlib>\nint main() { std::exit(3); }\n", "int main() { return nope; }\n",
     "#include <vector>\n#include <iostream>\nint main() { std::vector<char> v(512u << 20, 1); "
     "std::cout << int(v[12345]) << '\\n'; }\n"},
    {"go", "package main\nimport \"fmt\"\nfunc main() { fmt.Println(\"hello\") }\n",
     "package main\nimport (\"io\"; \"os\")\nfunc main() { io.Copy(os.Stdout, os.Stdin) }\n",
     "package main\nimport \"os\"\nfunc main() { os.Exit(3) }\n",
     "package main\nfunc main() { return nope }\n",
     "package main\nimport \"fmt\"\nfunc main() { b := make([]byte, 512<<20); for i := range b "
     "{ b[i] = 1 }; fmt.Println(b[12345]) }\n"},
    {"javascript", "console.log('hello')", "process.stdin.pipe(process.stdout)", "process.exit(3)",
     nullptr, "const b = Buffer.alloc(512 * 1024 * 1024, 1); console.log(b[12345])"},
    {"java",
     "public class Main { public static void main(String[] a) { System.out.println(\"hello\"); "
     "} }\n",
     "public class Main { public static void main(String[] a) throws Exception { "
     "System.in.transferTo(System.out); } }\n",
     "public class Main { public static void main(String[] a) { System.exit(3); } }\n",
     "public class Main { public static void main(String[] a) { return nope; } }\n",
     "public class Main { public static void main(String[] a) { byte[] b = new byte[512 << 20]; "
     "java.util.Arrays.fill(b, (byte) 1); System.out.println(b[12345]); } }\n"},
    {"rust", "fn main() { println!(\"hello\"); }\n",
     "use std::io::*;\nfn main() { let mut s = String::new(); stdin().read_to_string(&mut "
     "s).unwrap(); print!(\"{}\", s); }\n",
     "fn main() { std::process::exit(3); }\n", "fn main() { return nope; }\n",
     "fn main() { let v = vec![1u8; 512 << 20]; println!(\"{}\", v[12345]); }\n"},
};

const char* rootfs_dir() {
    return std::getenv("SBX_ROOTFS_DIR");
}

Daemon& rootfs_daemon() {
    static Daemon daemon([] {
        DaemonOptions options;
        options.with_languages = false;
        options.extra_args = {"--language-dir", rootfs_dir()};
        return options;
    }());
    return daemon;
}

// A client of the daemon over the built rootfs; null, and said so, where SBX_ROOTFS_DIR is
// unset: developers may run daemon_tests without the rootfs; scripts/test always sets it.
std::unique_ptr<Client> rootfs_client() {
    if (!rootfs_dir()) {
        MESSAGE("SBX_ROOTFS_DIR is not set: skipping the per-language rootfs tests");
        return nullptr;
    }
    return std::make_unique<Client>(rootfs_daemon().socket());
}

Json run(Client& client, const std::string& language, const std::string& code, Json extra = {}) {
    Json request = execute(language, code, std::move(extra));
    if (!request.contains("limits")) request["limits"] = Json::object();
    request["limits"]["wall_time_ms"] = 20000;
    request["limits"]["cpu_time_ms"] = 10000;
    return client.call(request, 120s);
}

}  // namespace

TEST_CASE("every language of the built rootfs: hello, stdin, exit code, compile error, memory") {
    const auto client = rootfs_client();
    if (!client) return;
    Json languages = client->call({{"op", "languages"}})["languages"];
    for (const auto& language : kLanguages) {
        CAPTURE(language.name);
        auto listed = std::find_if(languages.begin(), languages.end(),
                                   [&](const Json& l) { return l["name"] == language.name; });
        REQUIRE_MESSAGE(listed != languages.end(), language.name << " is not installed");
        // The version is the toolchain's own, from the manifest the builder wrote.
        std::ifstream manifest(fs::path(rootfs_dir()) / language.name / "manifest.json");
        CHECK((*listed)["version"] == Json::parse(manifest)["version"]);
        CHECK((*listed)["compiled"] == (language.compile_error != nullptr));

        Json hello = run(*client, language.name, language.hello);
        CHECK_MESSAGE(hello["status"] == "ok", hello.dump().substr(0, 2000));
        CHECK(hello["run"]["stdout"] == "hello\n");

        Json echo = run(*client, language.name, language.echo, {{"stdin", "one\ntwo ü\n"}});
        CHECK_MESSAGE(echo["status"] == "ok", echo.dump().substr(0, 2000));
        CHECK(echo["run"]["stdout"] == "one\ntwo ü\n");

        Json failed = run(*client, language.name, language.exit3);
        CHECK(failed["status"] == "runtime_error");
        CHECK(failed["run"]["exit_code"] == 3);

        if (language.compile_error) {
            Json broken = run(*client, language.name, language.compile_error);
            CHECK(broken["status"] == "compile_error");
            CHECK_MESSAGE(
                broken["compile"]["stderr"].get<std::string>().find("nope") != std::string::npos,
                broken["compile"].dump().substr(0, 2000));
        }

        // Runtimes that need threads (goroutines on OS threads, the JVM, node's workers) get
        // them under the default seccomp profile and the language's process limit.
        fs::path threads = fs::path(SBX_SOURCE_DIR) / "tests/rootfs/programs" / language.name;
        for (const char* file : {"threads.go", "threads.java", "threads.js"}) {
            if (!fs::exists(threads / file)) continue;
            std::ifstream in(threads / file);
            std::string code((std::istreambuf_iterator<char>(in)), {});
            Json threaded = run(*client, language.name, code);
            CHECK_MESSAGE(threaded["status"] == "ok", threaded.dump().substr(0, 2000));
            CHECK(threaded["run"]["stdout"].get<std::string>().find("threads ok") !=
                  std::string::npos);
        }

        Json hog = run(*client, language.name, language.memory_hog,
                       {{"limits", {{"memory_bytes", 128 << 20}}}});
        CHECK_MESSAGE(hog["status"] == "memory_limit", hog.dump().substr(0, 2000));
    }
}

TEST_CASE("localhost and the sandbox's own hostname resolve") {
    // From the rootfs's /etc/hosts: there is no DNS in a sandbox.
    const auto client = rootfs_client();
    if (!client) return;
    Json resolved = run(*client, "bash",
                        "getent hosts localhost\n"
                        "getent hosts \"$(hostname)\"\n"
                        "getent hosts 127.0.0.1");
    CHECK_MESSAGE(resolved["status"] == "ok", resolved.dump().substr(0, 2000));
    CHECK(resolved["run"]["stdout"] ==
          "::1             localhost ip6-localhost ip6-loopback\n"
          "127.0.1.1       sandbox\n"
          "127.0.0.1       localhost\n");
    // A server and its client in one program, by name.
    Json served = run(*client, "python",
                      "import socket\n"
                      "server = socket.create_server(('localhost', 0))\n"
                      "client = socket.create_connection(('localhost', server.getsockname()[1]))\n"
                      "print(socket.gethostbyname(socket.gethostname()))\n");
    CHECK_MESSAGE(served["status"] == "ok", served.dump().substr(0, 2000));
    CHECK(served["run"]["stdout"] == "127.0.1.1\n");
}

TEST_CASE("the rootfs serves C.UTF-8 from the locale archive") {
    // Every language runs with LANG=C.UTF-8; from the archive each setlocale() is one open
    // and one mapping instead of a dozen files (docs/performance.md, session 8).
    const auto client = rootfs_client();
    if (!client) return;
    Json listed = run(*client, "bash", "localedef --list-archive\nx=é\necho \"$LANG ${#x}\"");
    CHECK_MESSAGE(listed["status"] == "ok", listed.dump().substr(0, 2000));
    CHECK(listed["run"]["stdout"] == "C.utf8\nC.UTF-8 1\n");
}

TEST_CASE("bash starts with SHELL set, as its passwd entry would have set it") {
    // Without SHELL in its environment, bash looks up its user's passwd entry to fill it in,
    // asking nscd twice on the way, in every run (docs/rootfs.md); it would then not export
    // it. The value stays the entry's.
    const auto client = rootfs_client();
    if (!client) return;
    Json shell = run(*client, "bash",
                     "printenv SHELL || echo unset; getent passwd \"$(id -u)\" | cut -d: -f7");
    CHECK_MESSAGE(shell["status"] == "ok", shell.dump().substr(0, 2000));
    CHECK(shell["run"]["stdout"] == "/bin/sh\n/bin/sh\n");
}
