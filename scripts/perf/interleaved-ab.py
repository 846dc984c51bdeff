#!/usr/bin/env python3
"""Two sandboxd builds side by side, their requests interleaved (docs/performance.md).

    scripts/perf/interleaved-ab.py [--runs N] [--clients 1|2] BIN_A BIN_B

Starts both daemons at once (sockets and cgroup subtrees of their own: sandboxd-ab-0 and
sandboxd-ab-1, uid bases 7,700,000 and 7,800,000) and sends bash `:` to them in turns, A B A
B..., every other pair B first. Both see the same minutes of a machine whose speed drifts:
daemons measured one after the other differed by more than the changes measured here.

With 1 client (the default) it prints each daemon's latency (request written to answer read);
with 2 it prints each daemon's CPU per run, its own and its reaped sandboxes' (from
bench.proc_times, from /proc/<pid>/stat). Kernel threads' work (RCU callbacks, kworkers) is in
neither. Needs root and the bash language in LANGUAGE_DIR (default /var/lib/sandboxd/rootfs).
Stops only the daemons it started, by pid.
"""
import argparse
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import bench  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
LANGUAGE_DIR = os.environ.get("LANGUAGE_DIR", "/var/lib/sandboxd/rootfs")
SECCOMP_DIR = os.path.join(HERE, "..", "..", "seccomp-profiles")


def start(binary, index, workdir):
    sock = os.path.join(workdir, f"ab-{index}.sock")
    log = open(os.path.join(workdir, f"ab-{index}.log"), "w")
    daemon = subprocess.Popen(
        [binary, "--socket", sock, "--cgroup-subtree", f"sandboxd-ab-{index}",
         "--uid-base", str(7_700_000 + index * 100_000), "--language-dir", LANGUAGE_DIR,
         "--seccomp-dir", SECCOMP_DIR, "--slots", "2", "--queue-size", "64"],
        stderr=log)
    deadline = time.time() + 60
    while not os.path.exists(sock):
        if daemon.poll() is not None or time.time() > deadline:
            sys.exit(f"interleaved-ab: {binary} did not start; see {log.name}")
        time.sleep(0.05)
    return daemon, sock


def alternate(socks, pairs, first, latencies=None):
    clients = [bench.Client(s) for s in socks]
    for k in range(pairs):
        for i in ((0, 1) if (k + first) % 2 == 0 else (1, 0)):
            _, ns = clients[i].request(bench.TRIVIAL)
            if latencies is not None:
                latencies[i].append(ns)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3000, help="requests per daemon")
    parser.add_argument("--clients", type=int, choices=(1, 2), default=1)
    parser.add_argument("binaries", nargs=2)
    args = parser.parse_args()
    if os.getuid() != 0:
        sys.exit("interleaved-ab: run as root (the daemons need namespaces and cgroups)")
    names = [os.path.basename(b) for b in args.binaries]
    if names[0] == names[1]:
        names = ["A:" + names[0], "B:" + names[1]]

    with tempfile.TemporaryDirectory(prefix="sandboxd-ab-") as workdir:
        daemons = []
        try:
            for i, binary in enumerate(args.binaries):
                daemons.append(start(os.path.abspath(binary), i, workdir))
            socks = [sock for _, sock in daemons]
            alternate(socks, 50, 0)  # warm: sandboxes built, caches filled
            if args.clients == 1:
                latencies = [[], []]
                alternate(socks, args.runs, 0, latencies)
                for name, values in zip(names, latencies):
                    values.sort()
                    n = len(values)
                    print(f"{name:24s} latency p50 {values[n // 2] / 1e6:.3f} "
                          f"p90 {values[n * 9 // 10] / 1e6:.3f} "
                          f"p99 {values[n * 99 // 100] / 1e6:.3f} "
                          f"mean {sum(values) / n / 1e6:.3f} ms ({n} runs)")
            else:
                before = [bench.proc_times(d.pid) for d, _ in daemons]
                workers = [multiprocessing.Process(target=alternate,
                                                   args=(socks, args.runs // 2, k))
                           for k in range(2)]
                for w in workers:
                    w.start()
                for w in workers:
                    w.join()
                after = [bench.proc_times(d.pid) for d, _ in daemons]
                runs = args.runs // 2 * 2
                for name, b, a in zip(names, before, after):
                    own = (a[0] - b[0]) * 1e3 / runs
                    reaped = (a[1] - b[1]) * 1e3 / runs
                    print(f"{name:24s} CPU per run: daemon {own:.3f} + sandboxes {reaped:.3f} "
                          f"= {own + reaped:.3f} ms ({runs} runs)")
        finally:
            for daemon, _ in daemons:
                daemon.send_signal(signal.SIGTERM)
            for daemon, _ in daemons:
                daemon.wait()


if __name__ == "__main__":
    main()
