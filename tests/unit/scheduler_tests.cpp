// The scheduler's between-jobs hook (where the daemon builds a slot's next sandbox): after a
// job, on the slot that ran it, only when nothing waits and never while draining.

#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "scheduler.h"

using namespace std::chrono_literals;
using sandboxd::CancelToken;
using sandboxd::Scheduler;

namespace {

// What happened, in order, as the slot threads saw it.
struct Events {
    std::mutex mutex;
    std::condition_variable changed;
    std::vector<std::string> seen;
    bool released = false;

    void add(std::string event) {
        std::lock_guard lock(mutex);
        seen.push_back(std::move(event));
        changed.notify_all();
    }
    bool wait_for_count(std::size_t count) {
        std::unique_lock lock(mutex);
        return changed.wait_for(lock, 10s, [&] { return seen.size() >= count; });
    }
    void wait_for_release() {
        std::unique_lock lock(mutex);
        changed.wait(lock, [&] { return released; });
    }
    void release() {
        std::lock_guard lock(mutex);
        released = true;
        changed.notify_all();
    }
    std::vector<std::string> snapshot() {
        std::lock_guard lock(mutex);
        return seen;
    }
};

Scheduler::Work job(Events& events, std::string name, bool blocks = false) {
    return [&events, name, blocks](unsigned slot, const CancelToken&) {
        if (blocks) events.wait_for_release();
        events.add(name + "@" + std::to_string(slot));
    };
}

Scheduler::BetweenJobs between(Events& events) {
    return [&events](unsigned slot) { events.add("between@" + std::to_string(slot)); };
}

}  // namespace

TEST_CASE("between jobs: called after a job on its slot, once nothing waits") {
    Events events;
    {
        Scheduler scheduler(1, 8, between(events));
        auto token = std::make_shared<CancelToken>();
        REQUIRE(scheduler.submit(token, job(events, "a", true), {}) ==
                Scheduler::Admission::accepted);
        REQUIRE(scheduler.submit(std::make_shared<CancelToken>(), job(events, "b"), {}) ==
                Scheduler::Admission::accepted);
        REQUIRE(scheduler.submit(std::make_shared<CancelToken>(), job(events, "c"), {}) ==
                Scheduler::Admission::accepted);
        events.release();
        REQUIRE(events.wait_for_count(4));
    }
    // b and c were queued when a ended: no hook until the queue was empty.
    CHECK(events.snapshot() == std::vector<std::string>{"a@0", "b@0", "c@0", "between@0"});
}

TEST_CASE("between jobs: not while draining for a shutdown") {
    Events events;
    {
        Scheduler scheduler(1, 8, between(events));
        REQUIRE(scheduler.submit(std::make_shared<CancelToken>(), job(events, "a", true), {}) ==
                Scheduler::Admission::accepted);
        // Running, not queued: stop_accepting() drops queued jobs.
        for (int i = 0; i < 1000 && scheduler.stats().running == 0; ++i)
            std::this_thread::sleep_for(1ms);
        REQUIRE(scheduler.stats().running == 1);
        scheduler.stop_accepting();
        events.release();
        REQUIRE(events.wait_for_count(1));
        REQUIRE(scheduler.wait_idle(10s));
    }
    // The destructor joined the slot thread: anything it was going to do, it has done.
    CHECK(events.snapshot() == std::vector<std::string>{"a@0"});
}

TEST_CASE("withdraw: every queued job of a shared token is dropped, other tokens' still run") {
    Events events;
    {
        Scheduler scheduler(1, 8);
        auto leaving = std::make_shared<CancelToken>();
        auto staying = std::make_shared<CancelToken>();
        REQUIRE(scheduler.submit(staying, job(events, "running", true), {}) ==
                Scheduler::Admission::accepted);
        for (int i = 0; i < 1000 && scheduler.stats().running == 0; ++i)
            std::this_thread::sleep_for(1ms);
        REQUIRE(scheduler.stats().running == 1);
        for (const char* name : {"left-1", "left-2"})
            REQUIRE(scheduler.submit(leaving, job(events, name), {}) ==
                    Scheduler::Admission::accepted);
        REQUIRE(scheduler.submit(staying, job(events, "queued"), {}) ==
                Scheduler::Admission::accepted);
        scheduler.withdraw(leaving);
        CHECK(leaving->cancelled());
        CHECK_FALSE(staying->cancelled());
        CHECK(scheduler.stats().queued == 1);
        events.release();
        REQUIRE(events.wait_for_count(2));
        REQUIRE(scheduler.wait_idle(10s));
    }
    CHECK(events.snapshot() == std::vector<std::string>{"running@0", "queued@0"});
}
