#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "commands.h"
#include "connection.h"
#include "encoding.h"
#include "language_guess.h"

using namespace sandboxctl;

namespace {

struct TempDir {
    std::filesystem::path path;
    TempDir() {
        char name[] = "/tmp/sandboxctl-test-XXXXXX";
        REQUIRE(::mkdtemp(name) != nullptr);
        path = name;
    }
    ~TempDir() { std::filesystem::remove_all(path); }
    std::string write(const std::string& name, const std::string& content) const {
        auto file = path / name;
        std::ofstream(file, std::ios::binary) << content;
        return file.string();
    }
};

int listen_on(const std::string& path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(::listen(fd, 4) == 0);
    return fd;
}

// Wait up to 5 s so a broken client fails the test instead of hanging it.
bool readable(int fd) {
    pollfd entry{fd, POLLIN, 0};
    return ::poll(&entry, 1, 5000) == 1;
}

// A stand-in for sandboxd on a real unix socket: takes one connection, reads one request
// line, and sends the chunks `respond` makes from it, with pauses so they arrive apart.
class FakeServer {
  public:
    using Responder = std::function<std::vector<std::string>(const Json& request)>;

    explicit FakeServer(Responder respond, bool close_after_request = false)
        : socket_path_((dir_.path / "sandboxd.sock").string()), listener_(listen_on(socket_path_)) {
        thread_ = std::thread([this, respond, close_after_request] {
            if (!readable(listener_)) return;
            int client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
            if (client < 0) return;
            char chunk[4096];
            while (received_.find('\n') == std::string::npos && readable(client)) {
                ssize_t got = ::read(client, chunk, sizeof chunk);
                if (got <= 0) break;
                received_.append(chunk, static_cast<std::size_t>(got));
            }
            if (!close_after_request) {
                Json request = Json::parse(received_.substr(0, received_.find('\n')));
                for (const auto& piece : respond(request)) {
                    ::send(client, piece.data(), piece.size(), MSG_NOSIGNAL);
                    std::this_thread::sleep_for(std::chrono::milliseconds(20));
                }
                // Hold the connection until the client is done with it.
                while (readable(client) && ::read(client, chunk, sizeof chunk) > 0) {
                }
            }
            ::close(client);
        });
    }
    ~FakeServer() {
        if (thread_.joinable()) thread_.join();
        ::close(listener_);
    }
    const std::string& path() const { return socket_path_; }
    // The request as received; only safe after the client got its answer.
    Json request() {
        if (thread_.joinable()) thread_.join();
        return Json::parse(received_.substr(0, received_.find('\n')));
    }
    GlobalOptions options(std::uint64_t timeout_ms = 5000) const {
        return GlobalOptions{socket_path_, timeout_ms};
    }

  private:
    TempDir dir_;
    std::string socket_path_;
    int listener_;
    std::string received_;
    std::thread thread_;
};

// Answers with an unrelated id first, then `body` under the request's own id.
FakeServer::Responder answer_with(Json body) {
    return [body](const Json& request) {
        Json other = {{"id", "someone-else"}, {"ok", true}, {"version", "0.0.0-wrong"}};
        Json mine = Json{{"id", request.at("id")}};
        mine.update(body);
        return std::vector<std::string>{other.dump() + "\n", mine.dump() + "\n"};
    };
}

Outcome outcome_with(std::string status) {
    Outcome outcome;
    outcome.status = std::move(status);
    return outcome;
}

}  // namespace

TEST_CASE("language guess covers every known extension") {
    const std::vector<std::pair<std::string, std::string>> cases{
        {"a.py", "python"},     {"a.sh", "bash"},        {"a.bash", "bash"},    {"a.c", "c"},
        {"a.cpp", "cpp"},       {"a.cc", "cpp"},         {"a.cxx", "cpp"},      {"a.go", "go"},
        {"a.js", "javascript"}, {"a.mjs", "javascript"}, {"Main.java", "java"}, {"a.rs", "rust"},
    };
    for (const auto& [file, language] : cases) {
        CAPTURE(file);
        CHECK(guess_language(file) == language);
        CHECK(guess_language("some/dir.x/" + file) == language);
        CHECK(known_extensions().find(file.substr(file.rfind('.'))) != std::string::npos);
    }
}

TEST_CASE("language guess refuses what it does not know") {
    CHECK_FALSE(guess_language("notes.txt"));
    CHECK_FALSE(guess_language("Makefile"));
    CHECK_FALSE(guess_language(".bashrc"));
    CHECK_FALSE(guess_language("dir.py/script"));
    CHECK_FALSE(guess_language("a.PY"));
    CHECK_FALSE(guess_language("a."));

    RunOptions options;
    options.file = "notes.txt";
    try {
        build_execute_request(options, "1");
        FAIL("expected an error");
    } catch (const ClientError& error) {
        std::string text = error.what();
        CHECK(text.find("notes.txt") != std::string::npos);
        CHECK(text.find(".py, .sh, .bash, .c, .cpp, .cc, .cxx, .go, .js, .mjs, .java, .rs") !=
              std::string::npos);
        CHECK(text.find("--lang") != std::string::npos);
    }
}

TEST_CASE("exit codes mirror the program and the verdict") {
    Outcome ok = outcome_with("ok");
    ok.exit_code = 0;
    CHECK(exit_code_for(ok) == 0);

    Outcome failed = outcome_with("runtime_error");
    failed.exit_code = 3;
    CHECK(exit_code_for(failed) == 3);
    failed.exit_code.reset();
    CHECK(exit_code_for(failed) == 1);

    Outcome signaled = parse_outcome(Json::parse(R"({"status":"signaled","signal":"SIGSEGV"})"));
    CHECK(signaled.signal_number == SIGSEGV);
    CHECK(exit_code_for(signaled) == 128 + SIGSEGV);
    CHECK(parse_outcome(Json::parse(R"({"status":"signaled","signal":9})")).signal == "SIGKILL");
    CHECK(parse_outcome(Json::parse(R"({"status":"signaled","signal":40})")).signal == "signal 40");
    CHECK(exit_code_for(parse_outcome(Json::parse(R"({"status":"signaled","signal":6})"))) ==
          128 + 6);
    CHECK(exit_code_for(
              parse_outcome(Json::parse(R"({"status":"signaled","signal":"SIGBOGUS"})"))) == 2);

    CHECK(exit_code_for(outcome_with("time_limit")) == 124);
    CHECK(exit_code_for(outcome_with("wall_time_limit")) == 124);
    CHECK(exit_code_for(outcome_with("memory_limit")) == 137);
    CHECK(exit_code_for(outcome_with("output_limit")) == 125);
    CHECK(exit_code_for(outcome_with("file_size_limit")) == 125);
    CHECK(exit_code_for(outcome_with("syscall_blocked")) == 125);
    CHECK(exit_code_for(outcome_with("internal_error")) == 2);
    CHECK(exit_code_for(outcome_with("cancelled")) == 2);

    ExecuteResult compile_error;
    compile_error.status = "compile_error";
    compile_error.compile = failed;
    CHECK(exit_code_for(compile_error) == 1);

    ExecuteResult tests;
    tests.status = "time_limit";
    tests.tests = {ok, outcome_with("time_limit"), outcome_with("memory_limit")};
    CHECK(exit_code_for(tests) == 124);
    tests.status = "ok";
    tests.tests = {ok, ok};
    CHECK(exit_code_for(tests) == 0);
}

TEST_CASE("verdict lines") {
    Outcome run = outcome_with("ok");
    run.exit_code = 0;
    run.cpu_time_ms = 11.2;
    run.wall_time_ms = 19.8;
    run.memory_bytes = 7340032;
    ExecuteResult result;
    result.status = "ok";
    result.run = run;
    CHECK(
        verdict_lines(result) ==
        std::vector<std::string>{"[sandboxd] ok  exit 0  cpu 11.2 ms  wall 19.8 ms  mem 7.0 MiB"});

    Outcome compile = outcome_with("ok");
    compile.exit_code = 0;
    compile.wall_time_ms = 412.04;
    result.compile = compile;
    CHECK(verdict_lines(result).front() ==
          "[sandboxd] ok  exit 0  cpu 11.2 ms  wall 19.8 ms  mem 7.0 MiB  compile 412.0 ms");

    Outcome limited = outcome_with("time_limit");
    limited.signal = "SIGKILL";
    limited.cpu_time_ms = 2000.46;
    limited.stdout_truncated = true;
    limited.message = "cpu time limit\nexceeded";
    CHECK(format_outcome(limited) ==
          "time_limit  SIGKILL  cpu 2000.5 ms  stdout truncated  (cpu time limit exceeded)");

    result.run.reset();
    result.status = "time_limit";
    result.tests = {run, limited};
    CHECK(verdict_lines(result) ==
          std::vector<std::string>{
              "[sandboxd] test 1: ok  exit 0  cpu 11.2 ms  wall 19.8 ms  mem 7.0 MiB",
              "[sandboxd] test 2: time_limit  SIGKILL  cpu 2000.5 ms  stdout truncated  (cpu "
              "time limit exceeded)",
              "[sandboxd] time_limit  1/2 tests ok  compile 412.0 ms"});

    ExecuteResult compile_error;
    compile_error.status = "compile_error";
    compile_error.compile = outcome_with("runtime_error");
    compile_error.compile->exit_code = 1;
    compile_error.compile->wall_time_ms = 80;
    CHECK(verdict_lines(compile_error) ==
          std::vector<std::string>{"[sandboxd] compile_error  compiler runtime_error  exit 1  "
                                   "wall 80.0 ms"});

    CHECK(format_bytes(512) == "512 B");
    CHECK(format_bytes(1536) == "1.5 KiB");
    CHECK(format_bytes(3ull << 30) == "3.0 GiB");
}

TEST_CASE("execute responses parse, including base64 output") {
    Json response = Json::parse(R"({
      "id": "42", "ok": true, "language": "python", "version": "3.11.2", "status": "ok",
      "compile": null,
      "run": {"status": "ok", "exit_code": 0, "signal": null, "stdout": "hello\n", "stderr": "",
              "stdout_truncated": false, "stderr_truncated": false, "encoding": "utf8",
              "cpu_time_ms": 11.2, "wall_time_ms": 19.8, "memory_bytes": 7340032,
              "message": ""}})");
    ExecuteResult result = parse_execute_response(response);
    CHECK(result.status == "ok");
    CHECK_FALSE(result.compile);
    REQUIRE(result.run);
    CHECK(result.run->stdout_bytes == "hello\n");
    CHECK(result.run->exit_code == 0);
    CHECK_FALSE(result.run->signal);
    CHECK(result.run->memory_bytes == 7340032u);

    const std::string binary("\xff\x00\x01 raw\n", 8);
    Json run = response["run"];
    run["encoding"] = "base64";
    run["stdout"] = sandboxd::base64_encode(binary);
    run["stderr"] = sandboxd::base64_encode("err");
    Outcome decoded = parse_outcome(run);
    CHECK(decoded.stdout_bytes == binary);
    CHECK(decoded.stderr_bytes == "err");

    run["stdout"] = "not base64!";
    CHECK_THROWS_AS(parse_outcome(run), ClientError);
    run["stdout"] = 5;
    CHECK_THROWS_AS(parse_outcome(run), ClientError);

    Json no_run = response;
    no_run.erase("run");
    CHECK_THROWS_AS(parse_execute_response(no_run), ClientError);

    Json tests = no_run;
    tests["status"] = "runtime_error";
    tests["tests"] = Json::array({response["run"], response["run"]});
    tests["tests"][1]["status"] = "runtime_error";
    tests["tests"][1]["exit_code"] = 4;
    ExecuteResult with_tests = parse_execute_response(tests);
    CHECK(with_tests.tests.size() == 2);
    CHECK(exit_code_for(with_tests) == 4);
}

TEST_CASE("execute requests carry what the options say") {
    TempDir dir;
    RunOptions options;
    options.file = dir.write("prog.py", "print(input())\n");
    options.stdin_file = dir.write("in.txt", "hello\n");
    std::string data("\x00\xfe bin", 6);
    options.files = {"data/in.bin=" + dir.write("host.bin", data)};
    options.args = {"a", "-b"};
    options.cpu_time_ms = 2000;
    options.memory = "256M";
    options.output = "1K";

    Json request = build_execute_request(options, "7");
    CHECK(request["id"] == "7");
    CHECK(request["op"] == "execute");
    CHECK(request["language"] == "python");
    CHECK(request["code"] == "print(input())\n");
    CHECK(request["stdin"] == "hello\n");
    CHECK(request["args"] == Json::array({"a", "-b"}));
    CHECK(request["files"] ==
          Json::parse(R"([{"path":"data/in.bin","content":")" + sandboxd::base64_encode(data) +
                      R"(","encoding":"base64"}])"));
    CHECK(request["limits"] == Json::parse(R"({"cpu_time_ms":2000,"memory_bytes":268435456,
                                               "max_output_bytes":1024})"));

    options.language = "python3";
    CHECK(build_execute_request(options, "7")["language"] == "python3");

    RunOptions minimal;
    minimal.file = options.file;
    Json bare = build_execute_request(minimal, "8");
    CHECK_FALSE(bare.contains("limits"));
    CHECK_FALSE(bare.contains("stdin"));
    CHECK_FALSE(bare.contains("files"));

    auto error_of = [](const RunOptions& bad) {
        try {
            build_execute_request(bad, "9");
        } catch (const ClientError& error) {
            return std::string(error.what());
        }
        return std::string("no error");
    };
    RunOptions missing = minimal;
    missing.file = (dir.path / "absent.py").string();
    CHECK(error_of(missing) == "cannot read " + missing.file + ": No such file or directory");
    RunOptions directory = minimal;
    directory.file = dir.path.string() + "/x.py";
    std::filesystem::create_directory(directory.file);
    CHECK(error_of(directory) == "cannot read " + directory.file + ": Is a directory");
    RunOptions bad_memory = minimal;
    bad_memory.memory = "lots";
    CHECK(error_of(bad_memory).find("--memory: not a size: 'lots'") == 0);
    RunOptions bad_file = minimal;
    bad_file.files = {"nohostpath="};
    CHECK(error_of(bad_file).find("--file wants INSIDE=HOSTPATH") == 0);
    RunOptions binary_code = minimal;
    binary_code.file = dir.write("bin.py", "\xff\xfe");
    CHECK(error_of(binary_code).find("is not valid UTF-8") != std::string::npos);
}

TEST_CASE("the client waits for the response with its own id") {
    FakeServer server(answer_with({{"ok", true}, {"version", "0.1.0"}}));
    Connection connection(server.path(), std::chrono::milliseconds(5000));
    std::string line = connection.request(R"({"id":"mine","op":"ping"})", "mine");
    CHECK(Json::parse(line) == Json::parse(R"({"id":"mine","ok":true,"version":"0.1.0"})"));
    CHECK(server.request()["op"] == "ping");
}

TEST_CASE("a response split across writes is reassembled") {
    FakeServer server([](const Json& request) {
        std::string line = Json{{"id", request["id"]}, {"ok", true}, {"version", "0.1.0"}}.dump();
        return std::vector<std::string>{"{\"id\":\"x\",\"ok\":tr", "ue}\n" + line.substr(0, 5),
                                        line.substr(5) + "\n"};
    });
    std::ostringstream out, err;
    CHECK(ping_command(server.options(), false, out, err) == 0);
    CHECK(out.str().rfind("sandboxd 0.1.0 (round trip ", 0) == 0);
    CHECK(err.str().empty());
}

TEST_CASE("an error with a null id answers the only outstanding request") {
    FakeServer server([](const Json&) {
        return std::vector<std::string>{
            R"({"id":null,"ok":false,"error":{"code":"bad_request","message":"not JSON"}})"
            "\n"};
    });
    std::ostringstream out, err;
    CHECK(stats_command(server.options(), false, out, err) == 2);
    CHECK(err.str() == "sandboxd: bad_request: not JSON\n");
}

TEST_CASE("run writes the program's output and mirrors its exit code") {
    TempDir dir;
    RunOptions options;
    options.file = dir.write("prog.sh", "echo hi");
    const std::string binary("out\xff\n", 5);
    Json body = Json::parse(R"({"ok":true,"status":"runtime_error","compile":null,
        "run":{"status":"runtime_error","exit_code":3,"signal":null,"encoding":"base64",
               "cpu_time_ms":1.25,"wall_time_ms":2,"memory_bytes":1048576,"message":""}})");
    body["run"]["stdout"] = sandboxd::base64_encode(binary);
    body["run"]["stderr"] = sandboxd::base64_encode("oops\n");
    FakeServer server(answer_with(body));
    std::ostringstream out, err;
    CHECK(run_command(server.options(), options, out, err) == 3);
    CHECK(out.str() == binary);
    CHECK(err.str() ==
          "oops\n[sandboxd] runtime_error  exit 3  cpu 1.2 ms  wall 2.0 ms  mem 1.0 MiB\n");
    Json request = server.request();
    CHECK(request["language"] == "bash");
    CHECK(request["code"] == "echo hi");
}

TEST_CASE("run shows compiler diagnostics on stderr") {
    TempDir dir;
    RunOptions options;
    options.file = dir.write("main.c", "int main( {");
    options.quiet = true;
    FakeServer server(answer_with(Json::parse(R"({"ok":true,"status":"compile_error",
        "compile":{"status":"runtime_error","exit_code":1,"stdout":"","stderr":"main.c:1: error\n",
                   "encoding":"utf8"}})")));
    std::ostringstream out, err;
    CHECK(run_command(server.options(), options, out, err) == 1);
    CHECK(out.str().empty());
    CHECK(err.str() == "main.c:1: error\n");
}

TEST_CASE("run --json prints the raw response line") {
    TempDir dir;
    RunOptions options;
    options.file = dir.write("a.py", "pass");
    options.json = true;
    SUBCASE("answered") {
        FakeServer server(answer_with({{"ok", true}, {"status", "time_limit"}}));
        std::ostringstream out, err;
        CHECK(run_command(server.options(), options, out, err) == 0);
        CHECK(Json::parse(out.str())["status"] == "time_limit");
    }
    SUBCASE("refused") {
        FakeServer server(answer_with(
            {{"ok", false}, {"error", {{"code", "limit_too_high"}, {"message", "x"}}}}));
        std::ostringstream out, err;
        CHECK(run_command(server.options(), options, out, err) == 2);
        CHECK(Json::parse(out.str())["error"]["code"] == "limit_too_high");
    }
}

TEST_CASE("error responses are reported as sandboxd: code: message") {
    TempDir dir;
    RunOptions options;
    options.file = dir.write("a.py", "pass");
    options.language = "cobol";
    FakeServer server(answer_with(
        {{"ok", false},
         {"error", {{"code", "unknown_language"}, {"message", "no language 'cobol'"}}}}));
    std::ostringstream out, err;
    CHECK(run_command(server.options(), options, out, err) == 2);
    CHECK(err.str() == "sandboxd: unknown_language: no language 'cobol'\n");
}

TEST_CASE("languages and stats print readable text") {
    SUBCASE("languages") {
        FakeServer server(answer_with(Json::parse(R"({"ok":true,"languages":[
            {"name":"python","version":"3.11.2","aliases":["py","python3"],"compiled":false},
            {"name":"c","version":"12.2.0","aliases":[],"compiled":true}]})")));
        std::ostringstream out, err;
        CHECK(languages_command(server.options(), false, out, err) == 0);
        CHECK(out.str() ==
              "NAME    VERSION  ALIASES     COMPILED\n"
              "python  3.11.2   py,python3  no\n"
              "c       12.2.0   -           yes\n");
    }
    SUBCASE("stats keep the daemon's order") {
        FakeServer server(answer_with(Json::parse(
            R"({"ok":true,"running":1,"queued":0,"cgroup":"v2","slots":{"total":2}})")));
        std::ostringstream out, err;
        CHECK(stats_command(server.options(), false, out, err) == 0);
        CHECK(out.str() == "running: 1\nqueued: 0\ncgroup: v2\nslots: {\"total\":2}\n");
    }
}

TEST_CASE("connection failures say what to do") {
    TempDir dir;
    const std::string missing = (dir.path / "absent.sock").string();
    std::ostringstream out, err;
    CHECK(ping_command(GlobalOptions{missing, 1000}, false, out, err) == 2);
    CHECK(err.str() ==
          "cannot connect to " + missing + ": is sandboxd running?\n(No such file or directory)\n");

    // A socket file nobody listens on any more: connect() gets ECONNREFUSED.
    const std::string stale = (dir.path / "stale.sock").string();
    ::close(listen_on(stale));
    err.str("");
    CHECK(ping_command(GlobalOptions{stale, 1000}, false, out, err) == 2);
    CHECK(err.str() ==
          "cannot connect to " + stale + ": is sandboxd running?\n(Connection refused)\n");

    std::string denied = connect_error_message(stale, EACCES);
    CHECK(denied.rfind("cannot connect to " + stale + ": permission denied\n", 0) == 0);
    CHECK(denied.find("group") != std::string::npos);
    CHECK(denied.find("must include you") != std::string::npos);

    err.str("");
    CHECK(ping_command(GlobalOptions{"/tmp/" + std::string(200, 'x'), 1000}, false, out, err) == 2);
    CHECK(err.str().find("longer than a unix socket address allows") != std::string::npos);
}

TEST_CASE("a silent or vanishing daemon ends in an error, not a hang") {
    SUBCASE("silent") {
        FakeServer server([](const Json&) { return std::vector<std::string>{}; });
        std::ostringstream out, err;
        auto start = std::chrono::steady_clock::now();
        CHECK(ping_command(server.options(200), false, out, err) == 2);
        CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(3));
        CHECK(err.str().find("did not answer within 200 ms") != std::string::npos);
    }
    SUBCASE("closes") {
        FakeServer server({}, true);
        std::ostringstream out, err;
        CHECK(ping_command(server.options(), false, out, err) == 2);
        CHECK(err.str() == "sandboxd closed the connection without answering\n");
    }
    SUBCASE("not JSON") {
        FakeServer server([](const Json&) { return std::vector<std::string>{"hello\n"}; });
        std::ostringstream out, err;
        CHECK(ping_command(server.options(), false, out, err) == 2);
        CHECK(err.str() == "sandboxd sent a line that is not a JSON object: hello\n");
    }
}
