#!/usr/bin/python3
"""The measuring half of scripts/bench (Python 3 standard library only).

scripts/bench starts the daemon and calls this with its pid and socket. Every loop here is
bounded by a run count and by a time limit, whichever comes first. Nothing leaves the unix
socket; nothing is judged: it prints figures, ratios and the issue's targets side by side.
"""

import argparse
import json
import os
import socket
import statistics
import struct
import sys
import time

BARE = ["/usr/bin/bash", "-c", ":"]
BARE_ENV = {"PATH": "/usr/bin:/bin"}
# For reference only, not the baseline: the host's bash doing what the request's bash
# does, a script holding ":" with the bash language's environment (rootfs/bash/language.json).
# The UTF-8 locale and the script file are the submission's work, not the sandbox's.
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "rootfs", "bash",
                       "language.json")) as _language:
    SAME_ENV = json.load(_language)["env"]
BWRAP = [
    "/usr/bin/bwrap", "--unshare-all",
    "--ro-bind", "/usr", "/usr",
    "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
    "--symlink", "usr/lib64", "/lib64",
    "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
    "/usr/bin/bash", "-c", ":",
]
TRIVIAL = {"op": "execute", "language": "bash", "code": ":"}
CPP_HELLO = (
    "#include <iostream>\n"
    "// bench nonce {nonce}\n"
    "int main() {{ std::cout << \"hello\" << std::endl; return 0; }}\n"
)


def now():
    return time.monotonic_ns()


# ---------------------------------------------------------------- worker processes


def in_workers(workers, max_runs, seconds, body):
    """Runs body(max_runs_for_this_worker, deadline_ns) in `workers` forked processes at
    once; each returns a dict of numbers, which are summed ("latencies_ns" lists joined).
    Returns (merged dict, elapsed seconds from the common start to the last worker's end)."""
    deadline = now() + int(seconds * 1e9)
    share = [max_runs // workers + (1 if i < max_runs % workers else 0) for i in range(workers)]
    pipes, pids = [], []
    start = now()
    for i in range(workers):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            code = 0
            try:
                out = body(share[i], deadline)
            except BaseException as error:  # report, never hang the parent
                out = {"error": repr(error)}
                code = 1
            with os.fdopen(w, "w") as f:
                json.dump(out, f)
            os._exit(code)
        os.close(w)
        pipes.append(r)
        pids.append(pid)
    results = []
    for r, pid in zip(pipes, pids):
        with os.fdopen(r) as f:
            data = f.read()
        os.waitpid(pid, 0)
        results.append(json.loads(data) if data else {"error": "worker died"})
    elapsed = (now() - start) / 1e9
    merged = {}
    for res in results:
        if "error" in res:
            raise RuntimeError("worker failed: " + res["error"])
        for key, value in res.items():
            if isinstance(value, list):
                merged.setdefault(key, []).extend(value)
            else:
                merged[key] = merged.get(key, 0) + value
    return merged, elapsed


def spawn_body(argv, env=None):
    devnull = os.open("/dev/null", os.O_RDWR)
    env = env or BARE_ENV

    def body(max_runs, deadline):
        runs = failed = 0
        lat = []
        while runs < max_runs and now() < deadline:
            t0 = now()
            pid = os.posix_spawn(argv[0], argv, env,
                                 file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0),
                                               (os.POSIX_SPAWN_DUP2, devnull, 1),
                                               (os.POSIX_SPAWN_DUP2, devnull, 2)])
            _, status = os.waitpid(pid, 0)
            lat.append(now() - t0)
            runs += 1
            if status != 0:
                failed += 1
        return {"runs": runs, "failed": failed, "latencies_ns": lat}

    return body


# ---------------------------------------------------------------- the daemon's socket


class Client:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""
        self.next_id = 0
        self.timeout = None

    def request(self, obj, timeout=120.0):
        """Sends one request and returns (answer, ns from the write to the whole answer)."""
        self.next_id += 1
        obj = dict(obj, id=self.next_id)
        line = (json.dumps(obj) + "\n").encode()
        if timeout != self.timeout:
            # The kernel's timeout on a blocking socket: Python's own (settimeout) polls before
            # every send and receive, two more calls a request, which the sandboxd loop's CPU
            # figure would count.
            seconds = int(timeout)
            value = struct.pack("ll", seconds, int((timeout - seconds) * 1e6))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
            self.timeout = timeout
        t0 = now()
        self.sock.sendall(line)
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("the daemon closed the connection")
            self.buf += chunk
        t1 = now()
        answer, self.buf = self.buf.split(b"\n", 1)
        return json.loads(answer), t1 - t0

    def close(self):
        self.sock.close()


def execute_body(sock_path, request):
    def body(max_runs, deadline):
        client = Client(sock_path)
        runs = failed = 0
        lat = []
        keys = []  # "peer pid:id", as the daemon logs each request, in the order of `lat`
        statuses = {}
        while runs < max_runs and now() < deadline:
            answer, ns = client.request(request)
            runs += 1
            lat.append(ns)
            keys.append(f"{os.getpid()}:{client.next_id}")
            status = answer.get("status") if answer.get("ok") else answer.get("error", {}).get("code")
            if status != "ok":
                failed += 1
                statuses[str(status)] = statuses.get(str(status), 0) + 1
        client.close()
        out = {"runs": runs, "failed": failed, "latencies_ns": lat, "request_keys": keys}
        for key, count in statuses.items():
            out["status_" + key] = count
        return out

    return body


# ---------------------------------------------------------------- /proc


def proc_status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


def proc_times(pid):
    """(utime+stime, cutime+cstime) of the process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    # after the comm: state(0) ppid ... utime is field 14 overall, i.e. index 11 here
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / tick, (cutime + cstime) / tick


def busy_seconds():
    """CPU time all CPUs spent busy so far (user, nice, system, irq, softirq), in seconds.
    It includes the kernel's deferred work (kworkers, RCU callbacks) and the clients."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]) / os.sysconf("SC_CLK_TCK")


def with_cpu(workers, max_runs, seconds, body):
    """in_workers(), plus the whole machine's busy CPU per completed run, in ms. Throughput
    on a small machine is bound by it, so it explains the ratios between the loops."""
    busy0 = busy_seconds()
    result, elapsed = in_workers(workers, max_runs, seconds, body)
    cpu_ms = (busy_seconds() - busy0) * 1e3 / result["runs"] if result["runs"] else float("nan")
    return result, elapsed, cpu_ms


def cgroup_reuse(client):
    """The daemon's count of runs that made their cgroups and that took an earlier run's."""
    answer, _ = client.request({"op": "stats"})
    return answer.get("cgroup_reuse") or {}


def merge_rounds(rounds):
    """with_cpu() results of one loop's rounds as one: runs and seconds added, CPU per run
    weighted by runs."""
    merged, seconds, cpu_total = {}, 0.0, 0.0
    for result, elapsed, cpu_ms in rounds:
        for key, value in result.items():
            if isinstance(value, list):
                merged.setdefault(key, []).extend(value)
            else:
                merged[key] = merged.get(key, 0) + value
        seconds += elapsed
        if result["runs"]:
            cpu_total += cpu_ms * result["runs"]
    runs = merged.get("runs", 0)
    return merged, seconds, cpu_total / runs if runs else float("nan")


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---------------------------------------------------------------- formatting


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def ms(ns):
    return ns / 1e6


def fmt_ratio(x):
    return f"{x:.2f}x" if x == x else "n/a"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--daemon-pid", type=int, required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--bare-runs", type=int, default=3000)
    ap.add_argument("--bwrap-runs", type=int, default=1500)
    ap.add_argument("--throughput-runs", type=int, default=2000)
    ap.add_argument("--latency-runs", type=int, default=1000)
    ap.add_argument("--footprint-runs", type=int, default=5000)
    ap.add_argument("--compile-repeats", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=20.0,
                    help="time bound of each throughput/latency measurement")
    ap.add_argument("--rounds", type=int, default=6,
                    help="the throughput loops take turns this many times")
    ap.add_argument("--footprint-seconds", type=float, default=180.0)
    ap.add_argument("--header", default="")
    ap.add_argument("--daemon-log", default="")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    pid = args.daemon_pid
    W = args.workers
    load_before = loadavg()

    # Idle footprint, after one ping so the daemon has answered once.
    c = Client(args.socket)
    c.request({"op": "ping"})
    time.sleep(0.2)
    rss_idle = proc_status_kib(pid, "VmRSS")
    c.close()

    # Warm-up: page cache, first-use paths.
    c = Client(args.socket)
    for _ in range(5):
        c.request(TRIVIAL)
    reuse0 = cgroup_reuse(c)
    c.close()
    cpu0, child0 = proc_times(pid)
    runs_at_cpu0 = 5

    # The four throughput loops take turns in rounds, so that all four see the same minutes
    # of a machine whose speed drifts (a VM's neighbours come and go). Every other round runs
    # them in the reverse order, so a drift within a round favours no loop.
    # Next to the socket, in the temporary directory scripts/bench made for this run.
    script = os.path.join(os.path.dirname(os.path.abspath(args.socket)), "main.sh")
    with open(script, "w") as f:
        f.write(":\n")
    loops = {"bare": (args.bare_runs, spawn_body(BARE)),
             "bwrap": (args.bwrap_runs, spawn_body(BWRAP)),
             "sandboxd": (args.throughput_runs, execute_body(args.socket, TRIVIAL)),
             "bare, as the request": (args.bare_runs, spawn_body(["/usr/bin/bash", script],
                                                                   SAME_ENV))}
    parts = {name: [] for name in loops}
    for r in range(args.rounds):
        order = list(loops.items())
        for name, (runs, body) in (order if r % 2 == 0 else order[::-1]):
            print(f"# measuring: {name} throughput, round {r + 1} of {args.rounds} ...",
                  file=sys.stderr)
            share = runs // args.rounds + (1 if r < runs % args.rounds else 0)
            parts[name].append(with_cpu(W, share, args.seconds / args.rounds, body))
    bare, bare_s, bare_cpu = merge_rounds(parts["bare"])
    bw, bw_s, bw_cpu = merge_rounds(parts["bwrap"])
    sd, sd_s, sd_cpu = merge_rounds(parts["sandboxd"])
    same, same_s, same_cpu = merge_rounds(parts["bare, as the request"])
    # The floor under the latency targets: the same bash with no sandbox, one at a time.
    print("# measuring: bare fork+exec, 1 worker ...", file=sys.stderr)
    bare1, _ = in_workers(1, args.latency_runs, args.seconds, spawn_body(BARE))
    print("# measuring: sandboxd latency (1 client) ...", file=sys.stderr)
    lat, lat_s = in_workers(1, args.latency_runs, args.seconds, execute_body(args.socket, TRIVIAL))
    done = 5 + sd["runs"] + lat["runs"]
    fill = {"runs": 0, "failed": 0}
    if args.footprint_runs > done:
        print(f"# measuring: footprint, {args.footprint_runs - done} more runs ...", file=sys.stderr)
        fill, _ = in_workers(W, args.footprint_runs - done, args.footprint_seconds,
                             execute_body(args.socket, TRIVIAL))
        done += fill["runs"]
    cpu1, child1 = proc_times(pid)
    runs_for_cpu = done - runs_at_cpu0
    c = Client(args.socket)
    reuse1 = cgroup_reuse(c)
    c.close()
    time.sleep(0.2)
    rss_after = proc_status_kib(pid, "VmRSS")
    hwm = proc_status_kib(pid, "VmHWM")

    print("# measuring: compile cache ...", file=sys.stderr)
    code = CPP_HELLO.format(nonce=f"{os.getpid()}-{time.time_ns()}")
    cpp = {"op": "execute", "language": "cpp", "code": code}
    c = Client(args.socket)
    cold_answer, cold_ns = c.request(cpp, timeout=300)
    cold_cached = (cold_answer.get("compile") or {}).get("cached")
    hits, hit_flags = [], []
    deadline = now() + int(max(args.seconds, 10) * 1e9)
    while len(hits) < args.compile_repeats and now() < deadline:
        answer, ns = c.request(cpp)
        hits.append(ns)
        hit_flags.append((answer.get("compile") or {}).get("cached") is True and
                         answer.get("status") == "ok")
    c.close()
    load_after = loadavg()

    def rate(r, s):
        return r["runs"] / s if s > 0 else float("nan")

    bare_rate, bw_rate, sd_rate = rate(bare, bare_s), rate(bw, bw_s), rate(sd, sd_s)
    lat_ns = lat["latencies_ns"]
    hit_med = statistics.median(hits) if hits else float("nan")

    rows = []

    def row(metric, measured, against="", ratio="", target=""):
        rows.append((metric, measured, against, ratio, target))

    row(f"bare fork+exec `bash -c :`, {W} workers",
        f"{bare_rate:.0f} runs/s, mean {ms(statistics.mean(bare['latencies_ns'])):.2f} ms"
        f" ({bare['runs']} runs)")
    same_rate = rate(same, same_s)
    row(f"bare as the request: `bash main.sh`, LANG=C.UTF-8, {W} workers",
        f"{same_rate:.0f} runs/s, mean {ms(statistics.mean(same['latencies_ns'])):.2f} ms"
        f" ({same['runs']} runs)", "bare", fmt_ratio(same_rate / bare_rate))
    row(f"bwrap --unshare-all, same bash, {W} workers",
        f"{bw_rate:.0f} runs/s, mean {ms(statistics.mean(bw['latencies_ns'])):.2f} ms"
        f" ({bw['runs']} runs)", "bare", fmt_ratio(bw_rate / bare_rate))
    row(f"sandboxd execute bash `:`, {W} clients",
        f"{sd_rate:.0f} runs/s, mean {ms(statistics.mean(sd['latencies_ns'])):.2f} ms"
        f" ({sd['runs']} runs)", "bwrap", fmt_ratio(sd_rate / bw_rate), ">= 2x")
    row("", "", "bare", fmt_ratio(sd_rate / bare_rate), ">= 0.5x")
    row("", "", "bare as the request", fmt_ratio(sd_rate / same_rate), "(reference only)")
    row("all CPUs' busy time per run: bare / bwrap / sandboxd",
        f"{bare_cpu:.2f} / {bw_cpu:.2f} / {sd_cpu:.2f} ms", "bwrap",
        fmt_ratio(bw_cpu / sd_cpu), "")
    row("sandboxd latency p50, 1 client", f"{ms(pct(lat_ns, 50)):.2f} ms ({lat['runs']} runs)",
        "", "", "<= 2 ms")
    row("sandboxd latency p99, 1 client", f"{ms(pct(lat_ns, 99)):.2f} ms"
        f" (p90 {ms(pct(lat_ns, 90)):.2f}, max {ms(max(lat_ns)):.2f})", "", "", "<= 5 ms")
    bare1_ns = bare1["latencies_ns"]
    row("bare fork+exec, 1 worker, p50 (p99)",
        f"{ms(pct(bare1_ns, 50)):.2f} ms ({ms(pct(bare1_ns, 99)):.2f}) ({bare1['runs']} runs)")
    row("sandboxd - bare, p50 (p99)",
        f"+{ms(pct(lat_ns, 50) - pct(bare1_ns, 50)):.2f} ms"
        f" (+{ms(pct(lat_ns, 99) - pct(bare1_ns, 99)):.2f})  = the sandbox's share")
    row("daemon RSS idle (after start + 1 ping)", f"{rss_idle / 1024:.1f} MiB", "", "", "<= 15 MiB")
    row(f"daemon RSS after {done} runs", f"{rss_after / 1024:.1f} MiB (peak {hwm / 1024:.1f})",
        "idle", fmt_ratio(rss_after / rss_idle), "bounded (issue: 100,000 runs)")
    row("daemon CPU per run (own utime+stime)",
        f"{(cpu1 - cpu0) / runs_for_cpu * 1e3:.3f} ms ({runs_for_cpu} runs)", "", "", "reported")
    row("reaped sandboxes' CPU per run (cutime+cstime)",
        f"{(child1 - child0) / runs_for_cpu * 1e3:.3f} ms", "", "", "reported")
    made = reuse1.get("made", 0) - reuse0.get("made", 0)
    reused = reuse1.get("reused", 0) - reuse0.get("reused", 0)
    if made + reused:
        row("runs' cgroups: made / taken from an earlier run",
            f"{made} / {reused} ({100 * reused / (made + reused):.0f}% handed on)", "", "",
            "reported")
    row("compile cache: C++ hello, first (compiles)",
        f"{ms(cold_ns):.0f} ms (cached={cold_cached})")
    row("compile cache: same again, median",
        f"{ms(hit_med):.1f} ms ({len(hits)} runs, {sum(hit_flags)} cached+ok)",
        "first", fmt_ratio(cold_ns / hit_med) if hits else "n/a", ">= 20x")

    # The daemon's own account of each bash run: total_ms (request parsed to answer ready)
    # and wall_ms (the program, execve to exit); the difference is the sandbox's overhead.
    if args.daemon_log:
        totals, walls = [], []
        logged = {}  # "peer pid:id" -> (total_ms, wall_ms)
        with open(args.daemon_log) as f:
            for line in f:
                if "event=request" not in line or "language=bash" not in line:
                    continue
                kv = dict(item.split("=", 1) for item in line.split() if "=" in item)
                if kv.get("status") == "ok" and "total_ms" in kv and "wall_ms" in kv:
                    totals.append(float(kv["total_ms"]))
                    walls.append(float(kv["wall_ms"]))
                    logged[f"{kv.get('peer_pid')}:{kv.get('id')}"] = (totals[-1], walls[-1])
        # The 1-client requests, each split three ways by the daemon's own account.
        split = [(ms(ns), logged[key]) for ns, key in
                 zip(lat_ns, lat.get("request_keys", [])) if key in logged]
        if split:
            # program: its wall (execve to exit); around it: the daemon's total minus that
            # (parse, slot, sandbox hand-offs, answer); outside: end to end minus the total
            # (client, socket, wake-ups).
            row("1 client p50: program / around it / outside",
                f"{statistics.median(w for _, (_, w) in split):.2f} /"
                f" {statistics.median(t - w for _, (t, w) in split):.2f} /"
                f" {statistics.median(e - t for e, (t, _) in split):.2f} ms ({len(split)} runs)")
        if totals:
            over = [t - w for t, w in zip(totals, walls)]
            row("daemon log, bash runs: total_ms p50 (p99)",
                f"{statistics.median(totals):.2f} ms ({pct(totals, 99):.2f})"
                f" of which program wall p50 {statistics.median(walls):.2f} ms", "", "", "")
            row("daemon log: total - program wall, p50 (p99)",
                f"{statistics.median(over):.2f} ms ({pct(over, 99):.2f})  = sandbox overhead",
                "", "", "")

    errors = []
    for name, r in (("bare", bare), ("bwrap", bw), ("sandboxd", sd), ("bare as the request", same),
                    ("latency", lat),
                    ("footprint", fill)):
        if r.get("failed"):
            detail = {k[7:]: v for k, v in r.items() if k.startswith("status_")}
            errors.append(f"{name}: {r['failed']} of {r['runs']} runs did not end ok {detail or ''}")

    if args.header:
        print(args.header)
    print(f"load average: before {load_before}, after {load_after}")
    headers = ("what", "measured", "vs", "ratio", "issue 6 target")
    widths = [max(len(str(r[i])) for r in rows + [headers]) for i in range(5)]
    line = lambda r: "| " + " | ".join(str(r[i]).ljust(widths[i]) for i in range(5)) + " |"
    print(line(headers))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    for e in errors:
        print("note: " + e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
