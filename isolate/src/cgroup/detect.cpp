#include <string>

#include "cgroup/v1.h"
#include "cgroup/v2.h"
#include "isolate/cgroup.h"
#include "isolate/error.h"

namespace isolate::cgroup {

std::unique_ptr<Backend> detect_backend(const BackendOptions& options) {
    if (options.force != "" && options.force != "v1" && options.force != "v2")
        throw SetupError("unknown cgroup backend \"" + options.force + "\" (want v1 or v2)");

    std::string v2_problem = "not tried";
    if (options.force != "v1") {
        if (auto location = locate_v2(options.cgroup_root, &v2_problem))
            return std::make_unique<V2Backend>(options.subtree, *location);
        if (options.force == "v2") throw SetupError("cgroup v2 backend unusable: " + v2_problem);
    }

    const V1Locations v1 = locate_v1(options.cgroup_root);
    if (v1.missing.empty()) return std::make_unique<V1Backend>(options.subtree, v1);

    std::string missing;
    for (const auto& c : v1.missing) missing += (missing.empty() ? "" : ", ") + c;
    if (options.force == "v1") throw SetupError("cgroup v1 hierarchies not mounted: " + missing);
    throw SetupError("no usable cgroup backend: " + v2_problem +
                     "; and cgroup v1 hierarchies not mounted: " + missing);
}

}  // namespace isolate::cgroup
