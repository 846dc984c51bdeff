// Feeds arbitrary bytes to the request parser as one line, then pushes whatever comes out
// through limit resolution and the encoders. Beyond "no crash, no exception", it checks the
// promises the rest of the daemon relies on: every reply is one line of JSON that carries
// the request's id, and every parsed request satisfies the validation rules.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include <nlohmann/json.hpp>

#include "protocol.h"

namespace {

using nlohmann::json;
namespace protocol = sandboxd::protocol;

void require(bool condition) {
    if (!condition) std::abort();
}

void check_line(const std::string& line, const protocol::RequestId& id) {
    require(!line.empty() && line.back() == '\n');
    require(line.find('\n') == line.size() - 1);
    json reply = json::parse(line, nullptr, /*allow_exceptions=*/false);
    require(reply.is_object());
    require(reply.contains("ok") && reply["ok"].is_boolean());
    require(reply.contains("id"));
    if (id.is_string() || id.is_number()) require(reply["id"] == id);
    if (!reply["ok"].get<bool>()) {
        require(reply["error"]["code"].is_string());
        require(reply["error"]["message"].is_string());
    }
}

void check_execute(const protocol::ExecuteRequest& request) {
    require(!request.language.empty());
    require(request.files.size() <= protocol::max_files);
    for (const protocol::InputFile& file : request.files) {
        const std::string& path = file.path;
        require(!path.empty() && path.front() != '/' && path.back() != '/');
        require(path.size() <= protocol::max_path_bytes);
        require(path.find('\0') == std::string::npos);
        require(path.find("//") == std::string::npos);
        require(path != ".." && path.rfind("../", 0) != 0 &&
                path.find("/../") == std::string::npos);
        require(path.size() < 3 || path.compare(path.size() - 3, 3, "/..") != 0);
    }
    for (const std::string& arg : request.args) require(arg.find('\0') == std::string::npos);
    for (const auto& [key, value] : request.env) {
        require(!key.empty() && key.find('=') == std::string::npos);
        require(key.find('\0') == std::string::npos && value.find('\0') == std::string::npos);
    }
    if (request.tests)
        require(!request.tests->empty() && request.tests->size() <= protocol::max_tests);
}

protocol::LimitPolicy policy() {
    protocol::LimitPolicy p;
    p.maxima.wall_time_ms = 60000;
    p.maxima.cpu_time_ms = 30000;
    p.maxima.memory_bytes = 1ull << 30;
    p.maxima.max_processes = 256;
    p.maxima.max_output_bytes = 64ull << 20;
    p.maxima.max_file_bytes = 64ull << 20;
    p.maxima.cpus = 4;
    return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view line(reinterpret_cast<const char*>(data), size);
    auto parsed = protocol::parse_request(line);
    if (auto* error = std::get_if<protocol::Error>(&parsed)) {
        require(error->id.is_null() || error->id.is_string() || error->id.is_number());
        check_line(protocol::encode_error(*error), error->id);
        return 0;
    }
    const protocol::Request& request = std::get<protocol::Request>(parsed);
    require(request.id.is_null() || request.id.is_string() || request.id.is_number());
    json body = {{"status", "ok"}};
    if (const auto* execute = std::get_if<protocol::ExecuteRequest>(&request.body)) {
        check_execute(*execute);
        const protocol::LimitPolicy p = policy();
        auto limits = protocol::resolve_execute_limits(*execute, p, p, request.id);
        if (auto* error = std::get_if<protocol::Error>(&limits)) {
            require(error->code == protocol::ErrorCode::limit_too_high);
            check_line(protocol::encode_error(*error), request.id);
        }
        // Client bytes (code and decoded files may be binary) go through the encoder as a
        // response would carry program output.
        body["language"] = execute->language;
        body["stdout"] = execute->code;
        body["stderr"] = execute->stdin_data;
        for (const protocol::InputFile& file : execute->files)
            body["files"].push_back(file.content);
    }
    check_line(protocol::encode_ok(request.id, std::move(body)), request.id);
    return 0;
}
