#include "executor.h"

#include <algorithm>
#include <map>

#include "outcome_json.h"

namespace sandboxd {
namespace {

using nlohmann::json;

constexpr const char* kWorkdir = "/box";

isolate::RunSpec base_spec(const Language& language, unsigned slot, int cancel_fd) {
    isolate::RunSpec spec;
    spec.rootfs = language.rootfs;
    spec.binds = language.binds;
    spec.workdir = kWorkdir;
    spec.seccomp = language.seccomp;
    spec.slot = slot;
    spec.cancel_fd = cancel_fd;
    return spec;
}

void add_user_files(const protocol::ExecuteRequest& request, const Language& language,
                    isolate::RunSpec& spec) {
    for (const auto& file : request.files) spec.files.push_back({file.path, file.content, false});
    spec.files.push_back({language.source_file, request.code, false});
}

// The language's environment with the client's entries on top (same key: the client wins).
std::vector<std::string> run_environment(const Language& language,
                                         const protocol::ExecuteRequest& request) {
    std::map<std::string, std::string> merged;
    for (const auto& entry : language.env) {
        auto eq = entry.find('=');
        merged[entry.substr(0, eq)] = entry.substr(eq + 1);
    }
    for (const auto& [key, value] : request.env) merged[key] = value;
    std::vector<std::string> env;
    env.reserve(merged.size());
    for (const auto& [key, value] : merged) env.push_back(key + "=" + value);
    return env;
}

void account(const isolate::RunResult& result, ExecuteSummary& summary) {
    summary.cpu_time_ms += result.cpu_time_ms;
    summary.wall_time_ms += result.wall_time_ms;
    summary.memory_bytes = std::max(summary.memory_bytes, result.memory_bytes);
}

// Runs the compile step. On success fills `artifacts` and returns true; otherwise the body is
// complete (status compile_error, or internal_error/cancelled when it was not the code's fault).
bool compile(isolate::Sandbox& sandbox, const ExecuteJob& job, unsigned slot, int cancel_fd,
             ExecuteSummary& summary, json& body, std::vector<isolate::InputFile>& artifacts) {
    const Language& language = *job.language;
    isolate::RunSpec spec = base_spec(language, slot, cancel_fd);
    add_user_files(job.request, language, spec);
    spec.argv = expand_argv(*language.compile, job.limits.compile.memory_bytes);
    spec.env = language.env;
    spec.limits = job.limits.compile;
    spec.collect = language.artifacts;
    isolate::RunResult compiled = sandbox.run(spec);
    account(compiled, summary);

    std::string missing;
    if (compiled.status == isolate::Status::ok) {
        for (const auto& wanted : language.artifacts) {
            auto found = std::find_if(compiled.collected.begin(), compiled.collected.end(),
                                      [&](const auto& file) { return file.path == wanted; });
            if (found == compiled.collected.end()) {
                missing = wanted;
                break;
            }
            artifacts.push_back({found->path, std::move(found->content), found->executable});
        }
        if (!missing.empty()) compiled.message = "the compiler succeeded but left no " + missing;
    }
    body["compile"] = outcome_to_json(compiled);
    body["compile"]["cached"] = false;
    if (compiled.status == isolate::Status::ok && missing.empty()) return true;
    // A sandbox failure or a cancel is not the code's fault: say so, not compile_error.
    bool ours = compiled.status == isolate::Status::internal_error ||
                compiled.status == isolate::Status::cancelled;
    summary.status = ours ? isolate::to_string(compiled.status) : "compile_error";
    body["status"] = summary.status;
    return false;
}

}  // namespace

std::optional<std::string> check_against_language(const protocol::ExecuteRequest& request,
                                                  const Language& language) {
    for (std::size_t i = 0; i < request.files.size(); ++i) {
        const std::string& path = request.files[i].path;
        auto clashes = [&](const std::string& reserved) {
            // Equal, or one a directory prefix of the other: both would need the same name.
            auto prefix_of = [](const std::string& a, const std::string& b) {
                return b.size() > a.size() && b.compare(0, a.size(), a) == 0 && b[a.size()] == '/';
            };
            return path == reserved || prefix_of(path, reserved) || prefix_of(reserved, path);
        };
        if (clashes(language.source_file))
            return "files[" + std::to_string(i) + "].path \"" + path + "\" is where " +
                   language.name + " puts the source code (" + language.source_file + ")";
        if (language.compile)
            for (const auto& artifact : language.artifacts)
                if (clashes(artifact))
                    return "files[" + std::to_string(i) + "].path \"" + path +
                           "\" is reserved for the compiled program (" + artifact + ")";
    }
    return std::nullopt;
}

json execute(isolate::Sandbox& sandbox, CompileCache* cache, const ExecuteJob& job, unsigned slot,
             int cancel_fd, ExecuteSummary& summary) {
    const Language& language = *job.language;
    const protocol::ExecuteRequest& request = job.request;
    json body = {{"language", language.name}, {"version", language.version}};

    std::vector<isolate::InputFile> artifacts;
    if (language.compile) {
        std::string key;
        std::shared_ptr<const CachedCompile> cached;
        if (cache) {
            key = CompileCache::key_for(language, request, job.limits.compile);
            cached = cache->find(key);
        }
        if (cached) {
            body["compile"] = cached->outcome;
            body["compile"]["cached"] = true;
            artifacts = cached->artifacts;
        } else if (!compile(sandbox, job, slot, cancel_fd, summary, body, artifacts)) {
            return body;
        } else if (cache) {
            json outcome = body["compile"];
            outcome.erase("cached");
            cache->insert(key, {std::move(outcome), artifacts});
        }
    } else {
        body["compile"] = nullptr;
    }

    auto run_once = [&](const std::string& stdin_data, const isolate::Limits& limits) {
        isolate::RunSpec spec = base_spec(language, slot, cancel_fd);
        add_user_files(request, language, spec);
        spec.files.insert(spec.files.end(), artifacts.begin(), artifacts.end());
        spec.argv = expand_argv(language.run, limits.memory_bytes);
        spec.argv.insert(spec.argv.end(), request.args.begin(), request.args.end());
        spec.env = run_environment(language, request);
        spec.limits = limits;
        spec.stdin_data = stdin_data;
        isolate::RunResult result = sandbox.run(spec);
        account(result, summary);
        return result;
    };

    if (!request.tests) {
        isolate::RunResult result = run_once(request.stdin_data, job.limits.run);
        summary.status = isolate::to_string(result.status);
        body["run"] = outcome_to_json(result);
    } else {
        json tests = json::array();
        summary.status = "ok";
        for (std::size_t i = 0; i < request.tests->size(); ++i) {
            isolate::RunResult result =
                run_once((*request.tests)[i].stdin_data, job.limits.tests[i]);
            if (summary.status == "ok") summary.status = isolate::to_string(result.status);
            tests.push_back(outcome_to_json(result));
            // Once cancelled, every later test would be cancelled too: stop here.
            if (result.status == isolate::Status::cancelled) break;
        }
        body["tests"] = std::move(tests);
    }
    body["status"] = summary.status;
    return body;
}

}  // namespace sandboxd
