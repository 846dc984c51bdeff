// Every error code of the protocol, from the inputs a hostile or careless client sends. After
// each one the same connection must keep working, except after too_large, which closes it.

#include <doctest/doctest.h>

#include "harness.h"

using namespace test;

namespace {

Daemon& error_daemon() {
    static Daemon daemon([] {
        DaemonOptions options;
        options.config = {
            {"limits", {{"maxima", {{"memory_bytes", "512M"}, {"wall_time_ms", 20000}}}}}};
        return options;
    }());
    return daemon;
}

// Sends `line`, expects an error with `code`, then proves the connection still answers.
void expect_error(Client& client, const std::string& line, const std::string& code,
                  const std::string& message_part = "") {
    CAPTURE(line.substr(0, 120));
    client.send_raw(line + "\n");
    auto response = client.read(20s);
    REQUIRE(response);
    CHECK((*response)["ok"] == false);
    CHECK((*response)["error"]["code"] == code);
    CHECK((*response)["error"]["message"].is_string());
    if (!message_part.empty())
        CHECK((*response)["error"]["message"].get<std::string>().find(message_part) !=
              std::string::npos);
    Json pong = client.call({{"id", "after"}, {"op", "ping"}});
    CHECK(pong["ok"] == true);
    CHECK(pong["id"] == "after");
}

std::string execute_line(const Json& extra) {
    return execute("bash", "true", extra).dump();
}

}  // namespace

TEST_CASE("malformed requests are bad_request and the connection goes on") {
    Client client(error_daemon().socket());
    expect_error(client, "this is not json", "bad_request");
    expect_error(client, "[1, 2, 3]", "bad_request");
    expect_error(client, R"({"id": 7})", "bad_request", "op");
    expect_error(client, R"({"op": 5})", "bad_request");
    expect_error(client, R"({"op": "execute", "code": "x"})", "bad_request", "language");
    expect_error(client, R"({"op": "execute", "language": "bash"})", "bad_request", "code");
    expect_error(client, R"({"op": "execute", "language": "bash", "code": 12})", "bad_request");
    expect_error(client, execute_line({{"args", "not-a-list"}}), "bad_request", "args");
    expect_error(client, execute_line({{"stdin", {1}}}), "bad_request", "stdin");
    expect_error(client, execute_line({{"tests", Json::array()}}), "bad_request", "tests");
}

TEST_CASE("limits: negative is bad_request, above the maximum is limit_too_high naming both") {
    Client client(error_daemon().socket());
    expect_error(client, execute_line({{"limits", {{"cpu_time_ms", -1}}}}), "bad_request",
                 "cpu_time_ms");
    expect_error(client, execute_line({{"limits", {{"memory_bytes", "big"}}}}), "bad_request",
                 "memory_bytes");
    expect_error(client, execute_line({{"limits", {{"memory_bytes", 1ull << 30}}}}),
                 "limit_too_high", "memory_bytes");
    expect_error(client, execute_line({{"limits", {{"memory_bytes", 1ull << 30}}}}),
                 "limit_too_high", "536870912");
    expect_error(client, execute_line({{"limits", {{"wall_time_ms", 20001}}}}), "limit_too_high",
                 "20000");
    expect_error(client, execute_line({{"compile_limits", {{"no_such_limit", 1}}}}), "bad_request");
}

TEST_CASE("file paths that leave the working directory and bad base64 are bad_request") {
    Client client(error_daemon().socket());
    auto with_file = [](Json file) { return execute_line({{"files", {file}}}); };
    expect_error(client, with_file({{"path", "../escape"}, {"content", "x"}}), "bad_request", "..");
    expect_error(client, with_file({{"path", "a/../../b"}, {"content", "x"}}), "bad_request");
    expect_error(client, with_file({{"path", "/etc/passwd"}, {"content", "x"}}), "bad_request");
    expect_error(client, with_file({{"path", "x"}, {"content", "@@@"}, {"encoding", "base64"}}),
                 "bad_request", "base64");
    expect_error(client, with_file({{"path", "x"}, {"content", "x"}, {"encoding", "rot13"}}),
                 "bad_request");
    // The source file's place belongs to the code.
    expect_error(client, with_file({{"path", "main.sh"}, {"content", "x"}}), "bad_request",
                 "main.sh");
}

TEST_CASE("invalid UTF-8 and 200,000-deep nesting are bad_request") {
    Client client(error_daemon().socket());
    expect_error(client, "{\"op\":\"ping\",\"x\":\"\xff\xfe\"}", "bad_request");
    std::string deep =
        "{\"op\":\"ping\",\"x\":" + std::string(200'000, '[') + std::string(200'000, ']') + "}";
    expect_error(client, deep, "bad_request");
}

TEST_CASE("unknown op and unknown language") {
    Client client(error_daemon().socket());
    expect_error(client, R"({"id":1,"op":"reboot"})", "unknown_op", "reboot");
    expect_error(client, execute("cobol", "x").dump(), "unknown_language", "cobol");
}

TEST_CASE("the id is echoed in errors whenever it could be read") {
    Client client(error_daemon().socket());
    client.send_raw(R"({"id":"mine","op":"nope"})"
                    "\n");
    auto response = client.read();
    REQUIRE(response);
    CHECK((*response)["id"] == "mine");
    CHECK((*response)["error"]["code"] == "unknown_op");
}

TEST_CASE("a 17 MiB line is too_large and closes the connection; others are unaffected") {
    Client bystander(error_daemon().socket());
    Client client(error_daemon().socket());
    std::string huge =
        R"({"op":"execute","language":"bash","code":")" + std::string(17u << 20, 'x') + "\"}\n";
    client.send_raw(huge.substr(0, 1u << 20));
    try {
        client.send_raw(huge.substr(1u << 20));
    } catch (const std::exception&) {
        // The daemon may close before it has read everything: that is the point.
    }
    auto response = client.read(20s);
    REQUIRE(response);
    CHECK((*response)["error"]["code"] == "too_large");
    CHECK(client.closed_by_peer());
    CHECK(bystander.call({{"op", "ping"}})["ok"] == true);
}

TEST_CASE("busy: a full queue is answered at once, never a hang" * doctest::test_suite("vm")) {
    DaemonOptions options;
    options.slots = 1;
    options.queue_size = 1;
    Daemon daemon(options);
    Client client(daemon.socket());
    Client watcher(daemon.socket());
    client.send(execute("bash", "sleep 1", {{"id", 0}}));
    REQUIRE(eventually([&] { return watcher.call({{"op", "stats"}})["running"] == 1; }, 10s));
    std::string batch;
    for (int i = 1; i < 4; ++i) batch += execute("bash", "sleep 1", {{"id", i}}).dump() + "\n";
    client.send_raw(batch);
    int busy = 0, ok = 0;
    for (int i = 0; i < 4; ++i) {
        auto response = client.read(30s);
        REQUIRE(response);
        if ((*response)["ok"] == false && (*response)["error"]["code"] == "busy") ++busy;
        if ((*response)["ok"] == true && (*response)["status"] == "ok") ++ok;
    }
    // One runs, one waits, the rest are turned away.
    CHECK(ok == 2);
    CHECK(busy == 2);
}
