#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <string_view>
#include <variant>

#include <nlohmann/json.hpp>

#include "encoding.h"
#include "protocol.h"

using nlohmann::json;
using namespace std::string_literals;
namespace protocol = sandboxd::protocol;
using protocol::ErrorCode;

namespace {

protocol::Request parsed(std::string_view line) {
    auto result = protocol::parse_request(line);
    if (auto* error = std::get_if<protocol::Error>(&result)) {
        INFO("line: ", line);
        INFO("unexpected error: ", protocol::to_string(error->code), ": ", error->message);
        FAIL("the request did not parse");
    }
    return std::get<protocol::Request>(std::move(result));
}

protocol::ExecuteRequest parsed_execute(std::string_view line) {
    protocol::Request request = parsed(line);
    REQUIRE(std::holds_alternative<protocol::ExecuteRequest>(request.body));
    return std::get<protocol::ExecuteRequest>(std::move(request.body));
}

protocol::Error rejected(std::string_view line) {
    auto result = protocol::parse_request(line);
    INFO("line: ", line);
    REQUIRE(std::holds_alternative<protocol::Error>(result));
    return std::get<protocol::Error>(std::move(result));
}

// An execute request with `extra` spliced in, e.g. R"("stdin": 1)".
std::string execute_with(std::string_view extra) {
    return R"j({"id":7,"op":"execute","language":"python","code":"print(1)",)j" +
           std::string(extra) + "}";
}

void check_bad_request(std::string_view line, std::string_view message_part) {
    protocol::Error error = rejected(line);
    INFO("line: ", line);
    INFO("message: ", error.message);
    CHECK(error.code == ErrorCode::bad_request);
    CHECK(error.message.find(message_part) != std::string::npos);
}

json decode_line(const std::string& line) {
    REQUIRE(!line.empty());
    CHECK(line.back() == '\n');
    CHECK(line.find('\n') == line.size() - 1);
    return json::parse(line);
}

protocol::LimitPolicy test_policy() {
    protocol::LimitPolicy policy;
    policy.defaults.wall_time_ms = 5000;
    policy.defaults.cpu_time_ms = 2000;
    policy.defaults.memory_bytes = 256ull << 20;
    policy.maxima.wall_time_ms = 60000;
    policy.maxima.cpu_time_ms = 30000;
    policy.maxima.memory_bytes = 1073741824;
    policy.maxima.max_processes = 256;
    policy.maxima.max_output_bytes = 16ull << 20;
    policy.maxima.max_file_bytes = 64ull << 20;
    policy.maxima.cpus = 0;
    return policy;
}

}  // namespace

TEST_CASE("every op parses") {
    CHECK(std::holds_alternative<protocol::PingRequest>(parsed(R"({"op":"ping"})").body));
    CHECK(std::holds_alternative<protocol::LanguagesRequest>(parsed(R"({"op":"languages"})").body));
    CHECK(std::holds_alternative<protocol::StatsRequest>(parsed(R"({"op":"stats"})").body));
    protocol::ExecuteRequest minimal =
        parsed_execute(R"({"op":"execute","language":"py","code":""})");
    CHECK(minimal.language == "py");
    CHECK(minimal.code.empty());
    CHECK(minimal.files.empty());
    CHECK(minimal.stdin_data.empty());
    CHECK(minimal.args.empty());
    CHECK(minimal.env.empty());
    CHECK_FALSE(minimal.limits.wall_time_ms);
    CHECK_FALSE(minimal.limits.cpus);
    CHECK_FALSE(minimal.tests);
    // Whitespace around the object, and the '\r' of a CRLF client, are JSON whitespace.
    CHECK(std::holds_alternative<protocol::PingRequest>(parsed(" {\"op\":\"ping\"} \r").body));
}

TEST_CASE("the execute example of PROTOCOL.md parses completely") {
    const char* line = R"j({
      "id": "42", "op": "execute", "language": "python", "code": "print(input())",
      "files": [{"path": "data/in.txt", "content": "aGk=", "encoding": "base64"},
                {"path": "notes.txt", "content": "plain"}],
      "stdin": "hello\n", "args": ["a", "b"], "env": {"KEY": "VALUE", "A": "1"},
      "limits": {"wall_time_ms": 5000, "cpu_time_ms": 2000, "memory_bytes": 268435456,
                 "max_processes": 64, "max_output_bytes": 1048576,
                 "max_file_bytes": 16777216, "cpus": 0.5},
      "compile_limits": {"wall_time_ms": 10000},
      "tests": [{"stdin": "1 2\n"}, {"stdin": "3 4\n", "limits": {"cpu_time_ms": 100}}, {}]
    })j";
    protocol::Request request = parsed(line);
    CHECK(request.id == "42");
    auto& execute = std::get<protocol::ExecuteRequest>(request.body);
    CHECK(execute.language == "python");
    CHECK(execute.code == "print(input())");
    REQUIRE(execute.files.size() == 2);
    CHECK(execute.files[0].path == "data/in.txt");
    CHECK(execute.files[0].content == "hi");
    CHECK(execute.files[1].path == "notes.txt");
    CHECK(execute.files[1].content == "plain");
    CHECK(execute.stdin_data == "hello\n");
    CHECK(execute.args == std::vector<std::string>{"a", "b"});
    REQUIRE(execute.env.size() == 2);
    CHECK(execute.env[0] == std::pair<std::string, std::string>{"A", "1"});
    CHECK(execute.env[1] == std::pair<std::string, std::string>{"KEY", "VALUE"});
    CHECK(execute.limits.wall_time_ms == 5000u);
    CHECK(execute.limits.cpu_time_ms == 2000u);
    CHECK(execute.limits.memory_bytes == 268435456u);
    CHECK(execute.limits.max_processes == 64u);
    CHECK(execute.limits.max_output_bytes == 1048576u);
    CHECK(execute.limits.max_file_bytes == 16777216u);
    CHECK(execute.limits.cpus == 0.5);
    CHECK(execute.compile_limits.wall_time_ms == 10000u);
    CHECK_FALSE(execute.compile_limits.cpu_time_ms);
    REQUIRE(execute.tests);
    REQUIRE(execute.tests->size() == 3);
    CHECK((*execute.tests)[0].stdin_data == "1 2\n");
    CHECK_FALSE((*execute.tests)[0].limits.cpu_time_ms);
    CHECK((*execute.tests)[1].limits.cpu_time_ms == 100u);
    CHECK((*execute.tests)[2].stdin_data.empty());
}

TEST_CASE("lines that are not a JSON object are bad requests") {
    check_bad_request("", "invalid JSON");
    check_bad_request("hello", "invalid JSON");
    check_bad_request("{", "invalid JSON");
    check_bad_request(R"({"op":"ping"} {"op":"ping"})", "invalid JSON");
    check_bad_request(R"({"op":"ping",})", "invalid JSON");
    check_bad_request(R"({"op":'ping'})", "invalid JSON");
    check_bad_request(R"([{"op":"ping"}])", "must be a JSON object");
    check_bad_request(R"("ping")", "must be a JSON object");
    check_bad_request("42", "must be a JSON object");
    check_bad_request("null", "must be a JSON object");
    // A lone surrogate escape is valid UTF-8 text but not a valid JSON string.
    check_bad_request(R"({"op":"ping","x":"\ud800"})", "invalid JSON");
}

TEST_CASE("invalid UTF-8 anywhere in the line is a bad request") {
    check_bad_request("\xff", "not valid UTF-8");
    check_bad_request("{\"op\":\"ping\",\"x\":\"\xc3\"}", "not valid UTF-8");
    check_bad_request("{\"op\":\"ping\",\"x\":\"\xc0\xaf\"}", "not valid UTF-8");      // overlong
    check_bad_request("{\"op\":\"ping\",\"x\":\"\xed\xa0\x80\"}", "not valid UTF-8");  // surrogate
    check_bad_request("{\"id\":1,\"op\":\"ping\"}\x80", "not valid UTF-8");
    CHECK(rejected("{\"id\":1,\"op\":\"ping\",\"x\":\"\xfe\"}").id.is_null());
    // Multi-byte characters that are valid pass through untouched.
    CHECK(parsed_execute(execute_with("\"stdin\":\"h\xc3\xa9 \xf0\x9f\x98\x80\"")).stdin_data ==
          "h\xc3\xa9 \xf0\x9f\x98\x80");
}

TEST_CASE("deep nesting is rejected quickly without recursion") {
    const auto start = std::chrono::steady_clock::now();
    check_bad_request(std::string(200000, '['), "deeper than 64");
    check_bad_request(std::string(200000, '[') + std::string(200000, ']'), "deeper than 64");
    std::string objects;
    for (int i = 0; i < 100000; ++i) objects += "{\"a\":";
    check_bad_request(objects, "deeper than 64");
    check_bad_request(R"({"id":5,"op":"ping","x":)" + std::string(200000, '['), "deeper than 64");
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));

    // The top-level object is level 1: 63 more levels are fine, 64 more are not.
    parsed(R"({"op":"ping","x":)" + std::string(63, '[') + std::string(63, ']') + "}");
    check_bad_request(R"({"op":"ping","x":)" + std::string(64, '[') + std::string(64, ']') + "}",
                      "deeper than 64");
    // Brackets inside strings, including after escaped quotes, do not count.
    parsed(R"({"op":"ping","x":"\"[[[[)" + std::string(100, '[') + R"(\\","y":1})");
}

TEST_CASE("op must be present, a string and known") {
    protocol::Error missing = rejected(R"({"id":1})");
    CHECK(missing.code == ErrorCode::bad_request);
    CHECK(missing.message == "op is required");
    CHECK(missing.id == 1);
    check_bad_request(R"({"op":null})", "op is required");
    check_bad_request(R"({"op":1})", "op must be a string");
    check_bad_request(R"({"op":["ping"]})", "op must be a string");

    protocol::Error unknown = rejected(R"({"id":"x","op":"launch"})");
    CHECK(unknown.code == ErrorCode::unknown_op);
    CHECK(unknown.id == "x");
    CHECK(unknown.message.find("\"launch\"") != std::string::npos);
    CHECK(rejected(R"({"op":"PING"})").code == ErrorCode::unknown_op);
    CHECK(rejected(R"({"op":""})").code == ErrorCode::unknown_op);

    // A huge op name is cut in the message instead of echoed whole.
    protocol::Error huge = rejected(R"({"op":")" + std::string(100000, 'x') + "\"}");
    CHECK(huge.code == ErrorCode::unknown_op);
    CHECK(huge.message.size() < 200);
}

TEST_CASE("execute needs a language and code") {
    check_bad_request(R"({"op":"execute","code":"x"})", "language is required");
    check_bad_request(R"({"op":"execute","language":"","code":"x"})",
                      "language must be a non-empty string");
    check_bad_request(R"({"op":"execute","language":3,"code":"x"})", "language must be a string");
    check_bad_request(R"({"op":"execute","language":"py"})", "code is required");
    check_bad_request(R"({"op":"execute","language":"py","code":["x"]})", "code must be a string");
}

TEST_CASE("mistyped execute fields are bad requests naming the field") {
    check_bad_request(execute_with(R"("stdin":1)"), "stdin must be a string");
    check_bad_request(execute_with(R"("args":"a b")"), "args must be an array");
    check_bad_request(execute_with(R"("args":["a",2])"), "args[1] must be a string");
    check_bad_request(execute_with(R"("env":["A=1"])"), "env must be an object");
    check_bad_request(execute_with(R"("env":{"A":1})"), R"(env["A"] must be a string)");
    check_bad_request(execute_with(R"("env":{"":"1"})"), "env keys must not be empty");
    check_bad_request(execute_with(R"("env":{"A=B":"1"})"), "must not contain '='");
    check_bad_request(execute_with(R"("files":{})"), "files must be an array");
    check_bad_request(execute_with(R"("files":["a.txt"])"), "files[0] must be an object");
    check_bad_request(execute_with(R"("files":[{"content":"x"}])"), "files[0].path is required");
    check_bad_request(execute_with(R"("files":[{"path":"a"}])"), "files[0].content is required");
    check_bad_request(execute_with(R"("files":[{"path":1,"content":"x"}])"),
                      "files[0].path must be a string");
    check_bad_request(execute_with(R"("files":[{"path":"a","content":"x","encoding":"hex"}])"),
                      "files[0].encoding must be");
    check_bad_request(execute_with(R"("files":[{"path":"a","content":"x","encodign":"base64"}])"),
                      R"(files[0] has an unknown key "encodign")");
    check_bad_request(execute_with(R"("limits":[])"), "limits must be an object");
    check_bad_request(execute_with(R"("compile_limits":5)"), "compile_limits must be an object");
    check_bad_request(execute_with(R"("tests":{})"), "tests must be an array");
    check_bad_request(execute_with(R"("tests":[])"), "tests must not be empty");
    check_bad_request(execute_with(R"("tests":["1 2"])"), "tests[0] must be an object");
    check_bad_request(execute_with(R"("tests":[{},{"stdin":3}])"),
                      "tests[1].stdin must be a string");
    check_bad_request(execute_with(R"("tests":[{"stdn":"1"}])"),
                      R"(tests[0] has an unknown key "stdn")");
    check_bad_request(execute_with(R"("tests":[{"limits":{"cpu_time_ms":-1}}])"),
                      "tests[0].limits.cpu_time_ms must be a non-negative integer");

    // Every error about the fields still carries the request's id.
    CHECK(rejected(execute_with(R"("stdin":1)")).id == 7);
}

TEST_CASE("limits must be non-negative integers below 2^53, with known keys") {
    for (const char* key : {"wall_time_ms", "cpu_time_ms", "memory_bytes", "max_processes",
                            "max_output_bytes", "max_file_bytes"}) {
        INFO(key);
        const std::string k = key;
        const std::string message = "limits." + k + " must be a non-negative integer";
        check_bad_request(execute_with(R"("limits":{")" + k + R"(":-1})"), message);
        check_bad_request(execute_with(R"("limits":{")" + k + R"(":1.5})"), message);
        check_bad_request(execute_with(R"("limits":{")" + k + R"(":1.0})"), message);
        check_bad_request(execute_with(R"("limits":{")" + k + R"(":1e3})"), message);
        check_bad_request(execute_with(R"("limits":{")" + k + R"(":"100"})"), message);
        check_bad_request(execute_with(R"("limits":{")" + k + R"(":true})"), message);
        check_bad_request(execute_with(R"("limits":{")" + k + R"(":[1]})"), message);
        check_bad_request(execute_with(R"("limits":{")" + k + R"(":18446744073709551616})"),
                          message);  // parsed as a float
        check_bad_request(execute_with(R"("limits":{")" + k + R"(":9007199254740993})"),
                          "limits." + k + " must be at most 9007199254740992");
    }
    auto execute = parsed_execute(execute_with(
        R"("limits":{"memory_bytes":9007199254740992,"wall_time_ms":0,"cpu_time_ms":-0})"));
    CHECK(execute.limits.memory_bytes == 9007199254740992u);
    CHECK(execute.limits.wall_time_ms == 0u);
    CHECK(execute.limits.cpu_time_ms == 0u);

    CHECK(parsed_execute(execute_with(R"("limits":{"cpus":2})")).limits.cpus == 2.0);
    CHECK(parsed_execute(execute_with(R"("limits":{"cpus":0})")).limits.cpus == 0.0);
    check_bad_request(execute_with(R"("limits":{"cpus":-0.5})"),
                      "limits.cpus must be a non-negative number");
    check_bad_request(execute_with(R"("limits":{"cpus":"1"})"),
                      "limits.cpus must be a non-negative number");

    // A typo must not silently fall back to the default.
    check_bad_request(execute_with(R"("limits":{"cpu_time":100})"),
                      R"(limits has an unknown key "cpu_time")");
    check_bad_request(execute_with(R"("compile_limits":{"tmpfs_bytes":1})"),
                      R"(compile_limits has an unknown key "tmpfs_bytes")");
}

TEST_CASE("file paths must stay inside the working directory") {
    auto path_error = [](const std::string& path_json) {
        return execute_with(R"("files":[{"path":"ok.txt","content":""},{"path":)" + path_json +
                            R"(,"content":"x"}])");
    };
    check_bad_request(path_error(R"("../etc/passwd")"), "files[1].path must not contain '..'");
    check_bad_request(path_error(R"("a/../../b")"), "files[1].path must not contain '..'");
    check_bad_request(path_error(R"("a/..")"), "files[1].path must not contain '..'");
    check_bad_request(path_error(R"("/etc/passwd")"), "files[1].path must be relative");
    check_bad_request(path_error(R"("a//b")"), "files[1].path must not contain an empty component");
    check_bad_request(path_error(R"("a/")"), "files[1].path must not contain an empty component");
    check_bad_request(path_error(R"("./a")"), "files[1].path must not contain a '.' component");
    check_bad_request(path_error(R"("")"), "files[1].path must not be empty");
    check_bad_request(path_error(R"("a\u0000b")"), "files[1].path must not contain NUL");
    check_bad_request(path_error('"' + std::string(256, 'x') + '"'), "longer than 255 bytes");
    std::string long_path;
    while (long_path.size() <= 4096) long_path += "abcdefgh/";
    long_path += "f";
    check_bad_request(path_error('"' + long_path + '"'), "at most 4096 bytes");
    // Names that merely contain dots are ordinary names.
    auto execute = parsed_execute(path_error(R"("..a/b..c/...")"));
    CHECK(execute.files[1].path == "..a/b..c/...");
    CHECK(parsed_execute(path_error('"' + std::string(255, 'x') + '"')).files.size() == 2);
}

TEST_CASE("files must not collide") {
    check_bad_request(
        execute_with(R"("files":[{"path":"a","content":""},{"path":"b","content":""},)"
                     R"({"path":"a","content":""}])"),
        R"(files[2].path "a" duplicates files[0].path)");
    check_bad_request(
        execute_with(R"("files":[{"path":"d","content":""},{"path":"d/f","content":""}])"),
        R"(files[1].path: "d/f" would be inside "d", which is also a file)");
    check_bad_request(
        execute_with(R"("files":[{"path":"d/e/f","content":""},{"path":"d-x","content":""},)"
                     R"({"path":"d/e","content":""}])"),
        "which is also a file");
    // Siblings, and names that only share a prefix, are fine.
    auto execute = parsed_execute(execute_with(
        R"("files":[{"path":"d/a","content":""},{"path":"d/b","content":""},)"
        R"({"path":"d-a","content":""},{"path":"d.b/c","content":""},{"path":"dd","content":""}])"));
    CHECK(execute.files.size() == 5);
}

TEST_CASE("base64 file content is decoded strictly and round-trips binary bytes") {
    std::string all_bytes;
    for (int i = 0; i < 256; ++i) all_bytes += static_cast<char>(i);
    const std::string line =
        execute_with(R"("files":[{"path":"bin/blob","encoding":"base64","content":")" +
                     sandboxd::base64_encode(all_bytes) + R"("}])");
    auto execute = parsed_execute(line);
    REQUIRE(execute.files.size() == 1);
    CHECK(execute.files[0].content == all_bytes);
    CHECK(parsed_execute(execute_with(R"("files":[{"path":"e","encoding":"base64","content":""}])"))
              .files[0]
              .content.empty());

    for (const char* bad :
         {"aGk", "aGk==", "a===", "aG!=", "aG k=", "aGk=\\n", "=aGk", "aGk=aGk="}) {
        INFO(bad);
        check_bad_request(execute_with(R"("files":[{"path":"f","encoding":"base64","content":")" +
                                       std::string(bad) + R"("}])"),
                          "files[0].content is not valid base64");
    }
}

TEST_CASE("NUL is allowed in data and rejected in names") {
    auto execute = parsed_execute(
        R"({"op":"execute","language":"c","code":"a\u0000b","stdin":"\u0000",)"
        R"("files":[{"path":"f","content":"x\u0000y"}],"tests":[{"stdin":"1\u00002"}]})");
    CHECK(execute.code == "a\0b"s);
    CHECK(execute.stdin_data == "\0"s);
    CHECK(execute.files[0].content == "x\0y"s);
    CHECK((*execute.tests)[0].stdin_data == "1\0002"s);

    check_bad_request(execute_with(R"("args":["a\u0000b"])"), "args[0] must not contain NUL");
    check_bad_request(execute_with(R"("env":{"A\u0000B":"1"})"), "must not contain NUL");
    check_bad_request(execute_with(R"("env":{"A":"1\u0000"})"), R"(env["A"] must not contain NUL)");
}

TEST_CASE("unknown top-level keys are ignored and null means absent") {
    auto execute = parsed_execute(execute_with(
        R"("future_option":{"x":[1,2]},"priority":3,"stdin":null,"files":null,"args":null,)"
        R"("env":null,"limits":{"cpus":null,"memory_bytes":null},"tests":null)"));
    CHECK(execute.stdin_data.empty());
    CHECK_FALSE(execute.limits.cpus);
    CHECK_FALSE(execute.limits.memory_bytes);
    CHECK_FALSE(execute.tests);
    CHECK(std::holds_alternative<protocol::PingRequest>(
        parsed(R"({"op":"ping","language":5,"extra":true})").body));
}

TEST_CASE("at most 1000 files and 1000 tests") {
    auto files = [](int n) {
        std::string list;
        for (int i = 0; i < n; ++i)
            list += (i ? "," : "") + R"({"path":"f)"s + std::to_string(i) + R"(","content":""})";
        return execute_with(R"("files":[)" + list + "]");
    };
    CHECK(parsed_execute(files(1000)).files.size() == 1000);
    check_bad_request(files(1001), "files must have at most 1000 entries");

    auto tests = [](int n) {
        std::string list;
        for (int i = 0; i < n; ++i) list += i ? ",{}" : "{}";
        return execute_with(R"("tests":[)" + list + "]");
    };
    CHECK(parsed_execute(tests(1000)).tests->size() == 1000);
    check_bad_request(tests(1001), "tests must have at most 1000 entries");
}

TEST_CASE("the id is echoed verbatim in both responses and errors") {
    for (const char* id :
         {R"("42")", "42", "-3", "1.5", "0", R"("")", R"("a\"b\u0000")", "18446744073709551615"}) {
        INFO(id);
        const json expected = json::parse(id);
        protocol::Request request = parsed(R"({"op":"ping","id":)" + std::string(id) + "}");
        CHECK(request.id == expected);
        CHECK(decode_line(protocol::encode_ok(request.id, {{"version", "0.1.0"}}))["id"] ==
              expected);

        protocol::Error error = rejected(R"({"op":"nope","id":)" + std::string(id) + "}");
        CHECK(error.id == expected);
        CHECK(decode_line(protocol::encode_error(error))["id"] == expected);
    }
    // Absent or null: null back.
    CHECK(parsed(R"({"op":"ping"})").id.is_null());
    CHECK(parsed(R"({"op":"ping","id":null})").id.is_null());
    CHECK(decode_line(protocol::encode_ok(nullptr, json::object()))["id"].is_null());
}

TEST_CASE("an id of the wrong type is a bad request with a null id") {
    for (const char* id : {"{}", R"({"a":1})", "[1]", "true", "false"}) {
        INFO(id);
        protocol::Error error = rejected(R"({"op":"ping","id":)" + std::string(id) + "}");
        CHECK(error.code == ErrorCode::bad_request);
        CHECK(error.id.is_null());
        CHECK(error.message == "id must be a string or a number");
    }
}

TEST_CASE("the id is recovered from a line that is otherwise broken") {
    CHECK(rejected(R"({"id":"r1","op":"ping",})").id == "r1");
    CHECK(rejected(R"({"id":12,"op":"execute","code":"x)").id == 12);
    CHECK(rejected(R"({"id":2.5,"op":"ping","x":)" + std::string(100, '[')).id == 2.5);
    CHECK(rejected(R"({"id":"late"})" + std::string(", garbage")).id == "late");
    // Only the top-level id counts, and only a string or a number.
    CHECK(rejected(R"({"x":{"id":"inner"},)").id.is_null());
    CHECK(rejected(R"({"id":true,)").id.is_null());
    CHECK(rejected(R"({"id":{"a":1},)").id.is_null());
    CHECK(rejected(R"([{"id":1},)").id.is_null());
    // An id after the point of failure cannot be read.
    CHECK(rejected(R"({"op":"ping",,"id":1})").id.is_null());
}

TEST_CASE("encode_ok and encode_error write one parseable line") {
    json ok = decode_line(protocol::encode_ok(
        "a", {{"status", "ok"}, {"text", "line1\nline2\r\u2028"}, {"ok", false}, {"id", 99}}));
    CHECK(ok["id"] == "a");
    CHECK(ok["ok"] == true);
    CHECK(ok["status"] == "ok");
    CHECK(ok["text"] == "line1\nline2\r\u2028");
    CHECK(ok.size() == 4);

    const std::string empty_body = protocol::encode_ok(1, json::object());
    CHECK(empty_body == "{\"id\":1,\"ok\":true}\n");
    CHECK(protocol::encode_ok("x", {{"version", "0.1.0"}}) ==
          "{\"id\":\"x\",\"ok\":true,\"version\":\"0.1.0\"}\n");

    const std::string error_line =
        protocol::encode_error({"q", ErrorCode::limit_too_high, "limits.x: too\nhigh"});
    CHECK(error_line ==
          "{\"id\":\"q\",\"ok\":false,\"error\":{\"code\":\"limit_too_high\",\"message\":"
          "\"limits.x: too\\nhigh\"}}\n");
    json error = decode_line(error_line);
    CHECK(error["error"]["message"] == "limits.x: too\nhigh");

    // Bytes that are not UTF-8 never make encoding fail.
    json replaced = decode_line(protocol::encode_ok(1, {{"stdout",
                                                         "a\xff\xfe"
                                                         "b"}}));
    CHECK(replaced["stdout"] ==
          "a\xef\xbf\xbd\xef\xbf\xbd"
          "b");
    json bad_message = decode_line(protocol::encode_error({1, ErrorCode::internal, "\xc3("}));
    CHECK(bad_message["error"]["code"] == "internal");

    // A body that is not an object is a daemon bug, reported as such rather than sent broken.
    json not_object = decode_line(protocol::encode_ok(3, json::array({1, 2})));
    CHECK(not_object["ok"] == false);
    CHECK(not_object["error"]["code"] == "internal");
    CHECK(not_object["id"] == 3);

    // An id that is neither string nor number is never written.
    CHECK(decode_line(protocol::encode_ok(json::array({1}), json::object()))["id"].is_null());
}

TEST_CASE("every error code has its wire name") {
    CHECK(std::string(protocol::to_string(ErrorCode::bad_request)) == "bad_request");
    CHECK(std::string(protocol::to_string(ErrorCode::unknown_op)) == "unknown_op");
    CHECK(std::string(protocol::to_string(ErrorCode::unknown_language)) == "unknown_language");
    CHECK(std::string(protocol::to_string(ErrorCode::limit_too_high)) == "limit_too_high");
    CHECK(std::string(protocol::to_string(ErrorCode::too_large)) == "too_large");
    CHECK(std::string(protocol::to_string(ErrorCode::busy)) == "busy");
    CHECK(std::string(protocol::to_string(ErrorCode::shutting_down)) == "shutting_down");
    CHECK(std::string(protocol::to_string(ErrorCode::internal)) == "internal");
}

TEST_CASE("resolve_limits: defaults, overrides and maxima") {
    const protocol::LimitPolicy policy = test_policy();

    auto defaults = protocol::resolve_limits({}, policy, 1, "limits");
    REQUIRE(std::holds_alternative<isolate::Limits>(defaults));
    CHECK(std::get<isolate::Limits>(defaults).wall_time_ms == 5000u);
    CHECK(std::get<isolate::Limits>(defaults).memory_bytes == 256ull << 20);
    CHECK(std::get<isolate::Limits>(defaults).cpus == 0);

    protocol::LimitOverrides overrides;
    overrides.memory_bytes = 1073741824;  // exactly the maximum is allowed
    overrides.cpu_time_ms = 10;
    overrides.cpus = 0.25;
    auto resolved = protocol::resolve_limits(overrides, policy, 1, "limits");
    REQUIRE(std::holds_alternative<isolate::Limits>(resolved));
    CHECK(std::get<isolate::Limits>(resolved).memory_bytes == 1073741824u);
    CHECK(std::get<isolate::Limits>(resolved).cpu_time_ms == 10u);
    CHECK(std::get<isolate::Limits>(resolved).wall_time_ms == 5000u);
    CHECK(std::get<isolate::Limits>(resolved).cpus == 0.25);

    overrides.memory_bytes = 2147483648;
    auto too_high = protocol::resolve_limits(overrides, policy, "r", "limits");
    REQUIRE(std::holds_alternative<protocol::Error>(too_high));
    const auto& error = std::get<protocol::Error>(too_high);
    CHECK(error.code == ErrorCode::limit_too_high);
    CHECK(error.id == "r");
    CHECK(error.message == "limits.memory_bytes: 2147483648 is above the maximum 1073741824");

    protocol::LimitOverrides processes;
    processes.max_processes = 257;
    auto named = protocol::resolve_limits(processes, policy, 1, "compile_limits");
    REQUIRE(std::holds_alternative<protocol::Error>(named));
    CHECK(std::get<protocol::Error>(named).message ==
          "compile_limits.max_processes: 257 is above the maximum 256");
}

TEST_CASE("resolve_limits: cpus against a configured maximum") {
    protocol::LimitPolicy policy = test_policy();
    protocol::LimitOverrides overrides;
    overrides.cpus = 64;
    // Without a maximum any rate is allowed.
    CHECK(std::holds_alternative<isolate::Limits>(
        protocol::resolve_limits(overrides, policy, 1, "limits")));

    policy.maxima.cpus = 2;
    overrides.cpus = 2;
    CHECK(std::holds_alternative<isolate::Limits>(
        protocol::resolve_limits(overrides, policy, 1, "limits")));
    overrides.cpus = 2.5;
    auto above = protocol::resolve_limits(overrides, policy, 1, "limits");
    REQUIRE(std::holds_alternative<protocol::Error>(above));
    CHECK(std::get<protocol::Error>(above).message == "limits.cpus: 2.5 is above the maximum 2.0");
    // 0 asks for no cap at all, which a maximum forbids.
    overrides.cpus = 0;
    auto uncapped = protocol::resolve_limits(overrides, policy, 1, "limits");
    REQUIRE(std::holds_alternative<protocol::Error>(uncapped));
    CHECK(std::get<protocol::Error>(uncapped).code == ErrorCode::limit_too_high);
    CHECK(std::get<protocol::Error>(uncapped).message.find("limits.cpus: 0") == 0);
}

TEST_CASE("resolve_execute_limits layers test over request over defaults") {
    protocol::LimitPolicy run_policy = test_policy();
    protocol::LimitPolicy compile_policy = test_policy();
    compile_policy.defaults.wall_time_ms = 20000;

    auto execute = parsed_execute(execute_with(
        R"("limits":{"cpu_time_ms":1000,"memory_bytes":1000000},)"
        R"("compile_limits":{"memory_bytes":5000000},)"
        R"("tests":[{},{"limits":{"cpu_time_ms":3000}},{"limits":{"wall_time_ms":60001}}])"));

    auto failed = protocol::resolve_execute_limits(execute, run_policy, compile_policy, 7);
    REQUIRE(std::holds_alternative<protocol::Error>(failed));
    CHECK(std::get<protocol::Error>(failed).code == ErrorCode::limit_too_high);
    CHECK(std::get<protocol::Error>(failed).id == 7);
    CHECK(std::get<protocol::Error>(failed).message ==
          "tests[2].limits.wall_time_ms: 60001 is above the maximum 60000");

    execute.tests->pop_back();
    auto resolved = protocol::resolve_execute_limits(execute, run_policy, compile_policy, 7);
    REQUIRE(std::holds_alternative<protocol::ExecuteLimits>(resolved));
    const auto& limits = std::get<protocol::ExecuteLimits>(resolved);
    CHECK(limits.compile.wall_time_ms == 20000u);
    CHECK(limits.compile.memory_bytes == 5000000u);
    CHECK(limits.compile.cpu_time_ms == 2000u);
    CHECK(limits.run.cpu_time_ms == 1000u);
    CHECK(limits.run.memory_bytes == 1000000u);
    CHECK(limits.run.wall_time_ms == 5000u);
    REQUIRE(limits.tests.size() == 2);
    CHECK(limits.tests[0].cpu_time_ms == 1000u);
    CHECK(limits.tests[0].memory_bytes == 1000000u);
    CHECK(limits.tests[1].cpu_time_ms == 3000u);
    CHECK(limits.tests[1].memory_bytes == 1000000u);

    auto no_tests = parsed_execute(execute_with(R"("limits":{"memory_bytes":2147483648})"));
    auto error = protocol::resolve_execute_limits(no_tests, run_policy, compile_policy, 7);
    REQUIRE(std::holds_alternative<protocol::Error>(error));
    CHECK(std::get<protocol::Error>(error).message ==
          "limits.memory_bytes: 2147483648 is above the maximum 1073741824");
    auto plain = protocol::resolve_execute_limits(parsed_execute(execute_with(R"("stdin":"")")),
                                                  run_policy, compile_policy, 7);
    REQUIRE(std::holds_alternative<protocol::ExecuteLimits>(plain));
    CHECK(std::get<protocol::ExecuteLimits>(plain).tests.empty());
}
