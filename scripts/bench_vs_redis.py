#!/usr/bin/env python3
"""ringkv against redis-server, side by side, in one run.

Both servers are pinned to the same core (SERVER_CORE), the load generators to another
(LOAD_CORE); runs interleave the two servers and repeat over ROUNDS rounds; the table shows
medians. Besides throughput and latency it reports each server's CPU time per operation
(utime + stime from /proc/PID/stat over the run): on two cores redis-benchmark saturates
its own core first, and CPU per operation is what separates two servers then.

Also measured: resident memory per key (1,000,000 string keys, 100,000 hashes of 10
fields) and read-through hit ratios under Zipf(0.99) with maxmemory at 10% of the data.
Writes docs/benchmarks.md and docs/benchmarks.png. Usage: scripts/bench-vs-redis.sh
"""
import json, os, statistics, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER_CORE = os.environ.get("SERVER_CORE", "1")
LOAD_CORE = os.environ.get("LOAD_CORE", "0")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
QUICK = os.environ.get("QUICK") == "1"
RINGKV = ROOT / "target/release/ringkv-server"
BENCH = ROOT / "target/release/ringkv"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_bytes(pid):
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


class Server:
    def __init__(self, kind, port, extra=()):
        self.kind, self.port = kind, port
        if kind == "ringkv":
            cmd = [str(RINGKV), "--port", str(port), "--loglevel", "warning", *extra]
        else:
            cmd = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                   "--loglevel", "warning", *extra]
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CORE, *cmd],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while self.cli("PING") != "PONG":
            if time.time() > deadline:
                raise SystemExit(f"{kind} did not start on port {port}")
            time.sleep(0.05)

    def cli(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True)
        return out.stdout.strip()

    def info(self, field):
        for line in self.cli("INFO", "memory").splitlines():
            if line.startswith(field + ":"):
                return int(line.split(":")[1])
        return 0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# Sections of docs/benchmarks.md other scripts write (bench_types.py); kept across rewrites.
TYPES_SECTION = ("<!-- data types: scripts/bench-types.sh -->", "<!-- end of data types -->")
PUBSUB_SECTION = ("<!-- pub/sub: scripts/bench-pubsub.sh -->", "<!-- end of pub/sub -->")
SCRIPTING_SECTION = ("<!-- scripting: scripts/bench-scripting.sh -->", "<!-- end of scripting -->")
# Every section another script writes, carried over when this one rewrites the file.
OTHER_SECTIONS = (TYPES_SECTION, PUBSUB_SECTION, SCRIPTING_SECTION)


def write_doc(text, keep=None, section=None):
    """Writes docs/benchmarks.md: `text` with the `keep` sections of the old file carried
    over, or the old file with `section` (markers, body) put in place of its old one."""
    path = ROOT / "docs/benchmarks.md"
    old = path.read_text() if path.exists() else ""

    def split(doc, markers):
        start, end = markers
        if start in doc and end in doc:
            head, rest = doc.split(start, 1)
            body, tail = rest.split(end, 1)
            return head, start + body + end, tail
        return doc, "", ""

    if keep:
        kept = [split(old, markers)[1] for markers in keep]
        kept = "".join("\n\n" + k for k in kept if k)
        path.write_text(text.rstrip("\n") + kept + "\n")
    else:
        markers, body = section
        head, _, tail = split(old, markers)
        block = f"{markers[0]}\n{body.strip()}\n{markers[1]}"
        path.write_text(head.rstrip("\n") + "\n\n" + block + "\n" + tail.lstrip("\n"))


def comparison_rows(first_column, results, groups, pipelines):
    """Markdown table rows, medians of `results[(group, pipeline, kind)]` = [(ops, µs)]."""
    rows = [f"| {first_column} | -P | redis ops/s | ringkv ops/s | ratio | redis µs/op | ringkv µs/op | CPU ratio |",
            "|---|---|---|---|---|---|---|---|"]
    for group in groups:
        for pipeline in pipelines:
            r, k = results[(group, pipeline, "redis")], results[(group, pipeline, "ringkv")]
            r_ops, k_ops = statistics.median(x[0] for x in r), statistics.median(x[0] for x in k)
            r_cpu, k_cpu = statistics.median(x[1] for x in r), statistics.median(x[1] for x in k)
            rows.append(f"| {group} | {pipeline} | {r_ops:,.0f} | {k_ops:,.0f} | {k_ops / r_ops:.2f} "
                        f"| {r_cpu:.2f} | {k_cpu:.2f} | {k_cpu / r_cpu:.2f} |")
    return rows


def redis_benchmark(port, test, clients, pipeline, requests, command=(), keyspace=100000):
    """One redis-benchmark run of `-t test`, or of `command` when given (no prefill phase);
    `__rand_int__` ranges over `keyspace`."""
    what = list(command) if command else ["-t", test]
    out = subprocess.run(["taskset", "-c", LOAD_CORE, "redis-benchmark", "-p", str(port),
                          "-c", str(clients), "-P", str(pipeline), "-n", str(requests), "-r", str(keyspace),
                          "-d", "64", "--csv", *what], capture_output=True, text=True)
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    rows = [l.replace('"', "").split(",") for l in out.stdout.strip().splitlines()[1:]]
    if not rows or "error" in (out.stdout + out.stderr).lower():
        raise SystemExit(f"redis-benchmark failed: {out.stdout} {out.stderr}")
    row = rows[0]
    return {"ops": float(row[1]), "p50": float(row[4]), "p99": float(row[6])}


def ringkv_bench(port, test, clients, pipeline, requests, extra=()):
    out = subprocess.run(["taskset", "-c", LOAD_CORE, str(BENCH), "bench", "-p", str(port), "-t", test,
                          "-c", str(clients), "-P", str(pipeline), "-n", str(requests), "-r", "100000",
                          "-d", "64", "--warmup", "0", "--json", *extra], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"ringkv bench failed: {out.stderr}")
    result = json.loads(out.stdout)[0]
    if result["reply_errors"] or result["connection_errors"]:
        raise SystemExit(f"errors during ringkv bench: {result}")
    return {"ops": result["ops_per_sec"], "p50": result["p50_ms"], "p99": result["p99_ms"], "raw": result}


def matrix():
    cases = []
    for test in ("get", "set"):
        for pipeline in (1, 16):
            for clients in (1, 50):
                cases.append((test, clients, pipeline))
    cases += [("mget", 50, 1), ("mset", 50, 1), ("hset", 50, 1), ("hget", 50, 1)]
    if QUICK:
        cases = [c for c in cases if c[1] == 50 and c[0] in ("get", "set")]
    servers = {"ringkv": Server("ringkv", 7379), "redis": Server("redis", 7380)}
    results = {}
    try:
        # redis-benchmark cannot run MGET/HGET alone with a key space; ringkv bench covers those.
        for round_no in range(ROUNDS):
            for test, clients, pipeline in cases:
                requests = 20000 * pipeline if clients == 1 else 100000 * pipeline // (1 if pipeline == 1 else 4)
                for name, server in servers.items():
                    for generator in ("redis-benchmark", "ringkv bench"):
                        if generator == "redis-benchmark" and test in ("mget", "hget"):
                            continue
                        before = cpu_seconds(server.proc.pid)
                        if generator == "redis-benchmark":
                            r = redis_benchmark(server.port, test, clients, pipeline, requests)
                        else:
                            r = ringkv_bench(server.port, test, clients, pipeline, requests)
                        r["cpu_us"] = (cpu_seconds(server.proc.pid) - before) / requests * 1e6
                        results.setdefault((test, clients, pipeline, generator, name), []).append(r)
            print(f"round {round_no + 1}/{ROUNDS} done", file=sys.stderr)
    finally:
        for s in servers.values():
            s.stop()
    return cases, results


def settle(pid, limit=20.0):
    """Waits until resident memory stops changing: allocators return freed pages after a
    delay (jemalloc's dirty-page decay is 10 s), for both servers alike."""
    deadline, last = time.time() + limit, rss_bytes(pid)
    while time.time() < deadline:
        time.sleep(2)
        now = rss_bytes(pid)
        if abs(now - last) < 0.002 * last:
            return
        last = now


def memory():
    rows = []
    keys = 100_000 if QUICK else 1_000_000
    hashes = 10_000 if QUICK else 100_000
    for name in ("ringkv", "redis"):
        for what, fill in (("strings", ["-t", "set", "-r", str(keys), "-d", "64"]),
                           ("hashes", ["-t", "hset", "-r", str(hashes), "--hash-fields", "10", "-d", "16"])):
            server = Server(name, 7381 if name == "ringkv" else 7382)
            try:
                rss0, used0 = rss_bytes(server.proc.pid), server.info("used_memory")
                subprocess.run([str(BENCH), "bench", "-p", str(server.port), "--fill", "-c", "8", "-P", "64",
                                "--json", *fill], check=True, capture_output=True)
                settle(server.proc.pid)
                count = keys if what == "strings" else hashes
                rows.append({"server": name, "what": what, "count": count,
                             "rss_per_key": (rss_bytes(server.proc.pid) - rss0) / count,
                             "used_per_key": (server.info("used_memory") - used0) / count,
                             "used_full": server.info("used_memory")})
            finally:
                server.stop()
    return rows


def hit_ratio(memory_rows):
    keys = 100_000 if QUICK else 1_000_000
    requests = 500_000 if QUICK else 3_000_000
    redis_full = next(r["used_full"] for r in memory_rows if r["server"] == "redis" and r["what"] == "strings")
    limit = int(redis_full * 0.10)
    rows = []
    for policy in ("allkeys-lru", "allkeys-lfu"):
        for name in ("ringkv", "redis"):
            server = Server(name, 7383 if name == "ringkv" else 7384,
                            ["--maxmemory", str(limit), "--maxmemory-policy", policy])
            try:
                args = [str(BENCH), "bench", "-p", str(server.port), "--read-through", "--zipf", "0.99",
                        "-r", str(keys), "-d", "64", "-c", "50", "-P", "1", "-n", str(requests), "--warmup", "0", "--json"]
                subprocess.run(args, check=True, capture_output=True)  # warm the cache
                out = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)[0]
                rows.append({"policy": policy, "server": name, "hit_ratio": out["hit_ratio"], "maxmemory": limit})
            finally:
                server.stop()
    return rows


def commit():
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main():
    subprocess.run(["cargo", "build", "--release", "--bin", "ringkv-server", "--bin", "ringkv"], cwd=ROOT, check=True)
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2].removeprefix("v=")
    only = os.environ.get("ONLY")
    if only == "memory":
        for row in memory():
            print(row)
        return
    cases, results = matrix()
    mem = memory()
    hits = hit_ratio(mem)
    med = lambda rs, k: statistics.median(r[k] for r in rs)
    lines = [
        "# ringkv vs redis-server", "",
        f"Measured by `scripts/bench-vs-redis.sh` at commit `{commit()}`, {time.strftime('%Y-%m-%d')}.",
        f"CPU: {cpu_model()}, {os.cpu_count()} cores. Both servers pinned to core {SERVER_CORE} (`taskset`), "
        f"load generators to core {LOAD_CORE}; redis-server {redis_version} without persistence. "
        f"Medians of {ROUNDS} interleaved rounds; 64-byte values, 100,000 keys.", "",
        "CPU µs/op is the server's utime+stime over the run divided by requests: when the generator "
        "saturates its own core, it is the figure that separates two servers.", "",
        "## Throughput and latency", "",
        "| test | -c | -P | generator | ringkv ops/s | redis ops/s | ratio | ringkv p50 ms | redis p50 ms | ringkv p99 ms | redis p99 ms | ringkv CPU µs/op | redis CPU µs/op |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    chart = []
    for test, clients, pipeline in cases:
        for generator in ("redis-benchmark", "ringkv bench"):
            r, d = results.get((test, clients, pipeline, generator, "ringkv")), results.get((test, clients, pipeline, generator, "redis"))
            if not r:
                continue
            ratio = med(r, "ops") / med(d, "ops")
            lines.append(f"| {test.upper()} | {clients} | {pipeline} | {generator} | {med(r,'ops'):,.0f} | {med(d,'ops'):,.0f} | "
                         f"{ratio:.2f} | {med(r,'p50'):.3f} | {med(d,'p50'):.3f} | {med(r,'p99'):.3f} | {med(d,'p99'):.3f} | "
                         f"{med(r,'cpu_us'):.2f} | {med(d,'cpu_us'):.2f} |")
            if generator == "ringkv bench":
                chart.append((f"{test.upper()} c{clients} P{pipeline}", ratio, med(d, "cpu_us") / med(r, "cpu_us")))
    lines += ["", "## Memory per key", "",
              "| data | server | keys | RSS bytes/key | used_memory bytes/key |", "|---|---|---|---|---|"]
    for row in mem:
        label = "16-byte keys, 64-byte values" if row["what"] == "strings" else "hashes of 10 fields (16-byte values), per hash"
        lines.append(f"| {label} | {row['server']} | {row['count']:,} | {row['rss_per_key']:.0f} | {row['used_per_key']:.0f} |")
    lines += ["", "## Read-through hit ratio", "",
              f"Zipf(0.99) over the key space, GET then SET on a miss, maxmemory {hits[0]['maxmemory']:,} bytes "
              "(10% of what redis-server uses for the whole data set) for both servers.", "",
              "| policy | ringkv | redis | difference (points) |", "|---|---|---|---|"]
    for policy in ("allkeys-lru", "allkeys-lfu"):
        r = next(h for h in hits if h["policy"] == policy and h["server"] == "ringkv")["hit_ratio"]
        d = next(h for h in hits if h["policy"] == policy and h["server"] == "redis")["hit_ratio"]
        lines.append(f"| {policy} | {r:.4f} | {d:.4f} | {100 * (r - d):+.2f} |")
    lines += ["", "![ringkv / redis-server ratios](benchmarks.png)", "", "Command: `scripts/bench-vs-redis.sh` (see the README).", ""]
    (ROOT / "docs").mkdir(exist_ok=True)
    write_doc("\n".join(lines), keep=OTHER_SECTIONS)
    print("\n".join(lines))
    draw_chart(chart)


def draw_chart(chart):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no chart drawn", file=sys.stderr)
        return
    labels = [c[0] for c in chart]
    x = range(len(labels))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.bar([i - 0.2 for i in x], [c[1] for c in chart], 0.4, label="throughput ratio (ringkv bench)")
    ax.bar([i + 0.2 for i in x], [c[2] for c in chart], 0.4, label="CPU efficiency ratio (redis µs/op ÷ ringkv µs/op)")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(list(x), labels, rotation=30, ha="right")
    ax.set_ylabel("ringkv ÷ redis-server (higher is better)")
    ax.set_title("ringkv vs redis-server, same pinned core")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(ROOT / "docs/benchmarks.png", dpi=110)


if __name__ == "__main__":
    main()
