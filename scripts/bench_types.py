#!/usr/bin/env python3
"""Data-type commands against redis-server, side by side, in one run (issue #14's table).

`redis-benchmark -t <tests> -n N -c 50 -P <p>` against a fresh ringkv node (persistence
off) and a fresh redis-server, each pinned to SERVER_CORE, the generator to LOAD_CORE,
interleaved over ROUNDS rounds; medians. CPU per operation is the server's utime + stime
from /proc/PID/stat over the run divided by the requests. Then memory per element: one
list of ELEMENTS elements of 8 bytes, pushed in batches, measured as the growth of
`used_memory` and of RSS. Usage: scripts/bench-types.sh
"""
import os, statistics, subprocess, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER_CORE = os.environ.get("SERVER_CORE", "1")
LOAD_CORE = os.environ.get("LOAD_CORE", "0")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
REQUESTS = int(os.environ.get("REQUESTS", "1000000"))
TESTS = os.environ.get("TESTS", "lpush,rpush,lpop,rpop,lrange_100,lrange_600").split(",")
ELEMENTS = int(os.environ.get("ELEMENTS", "1000000"))
RINGKV = ROOT / "target/release/ringkv-server"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss(pid):
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


class Server:
    def __init__(self, kind, port):
        self.kind, self.port = kind, port
        if kind == "ringkv":
            cmd = [str(RINGKV), "--port", str(port), "--persistence", "no", "--loglevel", "warning"]
        else:
            cmd = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                   "--loglevel", "warning"]
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CORE, *cmd],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while self.cli("PING") != "PONG":
            if time.time() > deadline:
                raise SystemExit(f"{kind} did not start on port {port}")
            time.sleep(0.05)

    def cli(self, *args, stdin=None):
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args], input=stdin,
                             capture_output=True, text=True)
        return out.stdout.strip()

    def used_memory(self):
        for line in self.cli("INFO", "memory").splitlines():
            if line.startswith("used_memory:"):
                return int(line.split(":")[1])
        return 0

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def run_benchmark(server, test, pipeline):
    # The pops need something to pop: fill the list the benchmark pops from first.
    before = cpu_seconds(server.proc.pid)
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, "redis-benchmark", "-p", str(server.port), "-t", test,
         "-n", str(REQUESTS), "-c", "50", "-P", str(pipeline), "-q", "--csv"],
        capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(server.proc.pid) - before
    rows = [l.split(",") for l in out.splitlines() if l and not l.startswith('"test"')]
    ops = float(rows[-1][1].strip('"'))
    return ops, cpu / REQUESTS * 1e6


def element_memory(kind, port):
    server = Server(kind, port)
    try:
        used, resident = server.used_memory(), rss(server.proc.pid)
        batch = 1000
        lines = []
        for start in range(0, ELEMENTS, batch):
            items = " ".join(f"{i:08d}" for i in range(start, min(start + batch, ELEMENTS)))
            lines.append(f"RPUSH biglist {items}")
        server.cli(stdin="\n".join(lines) + "\n")
        assert server.cli("LLEN", "biglist") == str(ELEMENTS)
        time.sleep(1)
        return ((server.used_memory() - used) / ELEMENTS, (rss(server.proc.pid) - resident) / ELEMENTS)
    finally:
        server.stop()


def main():
    results = {}
    port = 7400
    for _ in range(ROUNDS):
        for pipeline in (16, 1):
            for kind in ("ringkv", "redis"):
                port += 1
                server = Server(kind, port)
                try:
                    for test in TESTS:
                        if test in ("lpop", "rpop", "lrange_100", "lrange_600"):
                            # redis-benchmark's own LPUSH fills `mylist` first for LRANGE;
                            # pops get a list as long as the run.
                            subprocess.run(["redis-benchmark", "-p", str(port), "-t", "lpush",
                                            "-n", str(REQUESTS), "-c", "50", "-P", "16", "-q"],
                                           capture_output=True, check=True)
                        results.setdefault((test, pipeline, kind), []).append(
                            run_benchmark(server, test, pipeline))
                finally:
                    server.stop()
    print(f"| test | -P | ringkv ops/s | redis ops/s | ratio | ringkv µs/op | redis µs/op | CPU ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for pipeline in (16, 1):
        for test in TESTS:
            ours = results[(test, pipeline, "ringkv")]
            theirs = results[(test, pipeline, "redis")]
            ops_o = statistics.median(o for o, _ in ours)
            ops_t = statistics.median(o for o, _ in theirs)
            cpu_o = statistics.median(c for _, c in ours)
            cpu_t = statistics.median(c for _, c in theirs)
            print(f"| {test} | {pipeline} | {ops_o:,.0f} | {ops_t:,.0f} | {ops_o / ops_t:.2f} | "
                  f"{cpu_o:.3f} | {cpu_t:.3f} | {cpu_o / cpu_t:.2f} |")
    print()
    print(f"| server | used_memory bytes/element | RSS bytes/element ({ELEMENTS:,} 8-byte elements) |")
    print("|---|---|---|")
    for kind in ("ringkv", "redis"):
        port += 1
        used, resident = element_memory(kind, port)
        print(f"| {kind} | {used:.1f} | {resident:.1f} |")


if __name__ == "__main__":
    main()
