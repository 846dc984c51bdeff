// Runs every `example` block of docs/protocol.md against the real daemon, so the documented
// requests and answers can never drift from what sandboxd does.

#include <doctest/doctest.h>

#include <fstream>

#include "harness.h"

using namespace test;

namespace {

struct Example {
    int line = 0;  // where the block starts in the document
    std::vector<std::string> requests;
    std::vector<Json> expected;
};

std::vector<Example> read_examples(const std::string& path) {
    std::ifstream in(path);
    REQUIRE(in);
    std::vector<Example> examples;
    bool inside = false;
    int number = 0;
    for (std::string line; std::getline(in, line);) {
        ++number;
        if (!inside && line == "```example") {
            inside = true;
            examples.push_back({number, {}, {}});
        } else if (inside && line == "```") {
            inside = false;
        } else if (inside && line.rfind("> ", 0) == 0) {
            examples.back().requests.push_back(line.substr(2));
        } else if (inside && line.rfind("< ", 0) == 0) {
            examples.back().expected.push_back(Json::parse(line.substr(2)));
        } else if (inside) {
            FAIL("docs/protocol.md:" << number << ": an example line starts with neither > nor <");
        }
    }
    return examples;
}

// Every key shown in `expected` is in `actual` with the same value; "..." matches anything.
bool matches(const Json& expected, const Json& actual) {
    if (expected == "...") return true;
    if (expected.is_object()) {
        if (!actual.is_object()) return false;
        for (const auto& [key, value] : expected.items())
            if (!actual.contains(key) || !matches(value, actual[key])) return false;
        return true;
    }
    if (expected.is_array()) {
        if (!actual.is_array() || actual.size() != expected.size()) return false;
        for (std::size_t i = 0; i < expected.size(); ++i)
            if (!matches(expected[i], actual[i])) return false;
        return true;
    }
    return expected == actual;
}

}  // namespace

TEST_CASE("every example in docs/protocol.md gives the documented answer" *
          doctest::test_suite("vm")) {
    auto examples = read_examples(std::string(SBX_SOURCE_DIR) + "/docs/protocol.md");
    REQUIRE(examples.size() >= 8);
    Daemon daemon;
    for (const auto& example : examples) {
        CAPTURE(example.line);
        REQUIRE(example.requests.size() == example.expected.size());
        Client client(daemon.socket());
        for (const auto& request : example.requests) client.send_raw(request + "\n");
        for (std::size_t i = 0; i < example.requests.size(); ++i) {
            auto answer = client.read(60s);
            REQUIRE(answer);
            auto wanted = std::find_if(example.expected.begin(), example.expected.end(),
                                       [&](const Json& e) { return e["id"] == (*answer)["id"]; });
            REQUIRE_MESSAGE(wanted != example.expected.end(),
                            "unexpected answer " << answer->dump());
            CHECK_MESSAGE(matches(*wanted, *answer),
                          "expected " << wanted->dump() << "\n got " << answer->dump());
        }
    }
}
