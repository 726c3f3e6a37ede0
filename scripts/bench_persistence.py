#!/usr/bin/env python3
"""The persistence tier's figures, measured in one run on pinned cores, side by side with
redis-server. The server runs on core 1, the load generator on core 0.

1. SET throughput and server CPU per operation with persistence off, appendfsync everysec
   and always, at -P 1 and -P 16, for ringkv and redis-server (appendonly no/yes), in
   interleaved rounds; each run lasts DURATION seconds (long enough that ringkv's
   checkpoints run inside it). CPU per op = (utime + stime of the server process) / ops.
2. HSET of one field into a 100,000-field hash, persistence off and everysec.
3. RSS of 1,000,000 keys (16-byte keys, 64-byte values) after SETTLE seconds, persistence
   off and on (WAL only, and after a checkpoint).
4. Restart with those keys: seconds from the process start until every key is readable,
   from the WAL alone and from the base image plus a WAL tail; disk bytes per key.
5. strace under appendfsync always: fdatasync calls against WAL writes.

Writes docs/persistence-benchmarks.md. Usage: scripts/bench-persistence.sh
(DURATION=30 ROUNDS=3 by default; QUICK=1 for DURATION=5 ROUNDS=1 SETTLE=5).
"""

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RINGKV = ROOT / "target" / "release" / "ringkv-server"
BENCH = ROOT / "target" / "release" / "ringkv"
QUICK = os.environ.get("QUICK") == "1"
DURATION = int(os.environ.get("DURATION", "5" if QUICK else "30"))
ROUNDS = int(os.environ.get("ROUNDS", "1" if QUICK else "3"))
SETTLE = int(os.environ.get("SETTLE", "5" if QUICK else "30"))
KEYS = int(os.environ.get("KEYS", "1000000"))
# SECTIONS=memory (or throughput,hset,memory,strace) runs only those, printing their tables.
SECTIONS = set(os.environ.get("SECTIONS", "throughput,hset,memory,strace").split(","))
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(port, *args, timeout=30):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True,
                          text=True, timeout=timeout).stdout


def wait_ready(port, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if cli(port, "PING", timeout=5).strip() == "PONG":
                return
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"server on {port} never became ready")


def start(kind, policy, datadir, port, extra=()):
    if kind == "ringkv":
        args = [str(RINGKV), "--port", str(port), "--dir", str(datadir), "--loglevel", "warning"]
        args += ["--persistence", "no"] if policy == "off" else ["--appendfsync", policy]
    else:
        args = ["redis-server", "--port", str(port), "--dir", str(datadir), "--save", "",
                "--daemonize", "no", "--loglevel", "warning"]
        args += ["--appendonly", "no"] if policy == "off" else \
            ["--appendonly", "yes", "--appendfsync", policy]
    proc = subprocess.Popen(["taskset", "-c", "1", *args, *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port)
    return proc


def stop(proc):
    proc.kill()
    proc.wait()


def cpu_ticks(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def info(port, section):
    out = cli(port, "INFO", section)
    return dict(l.split(":", 1) for l in out.splitlines() if ":" in l and not l.startswith("#"))


def set_run(kind, policy, pipeline):
    """One SET run on a fresh server: ops/s and server CPU µs per op."""
    with tempfile.TemporaryDirectory(dir=ROOT / "target") as d:
        port = free_port()
        proc = start(kind, policy, Path(d), port)
        try:
            before = cpu_ticks(proc.pid)
            out = subprocess.run(
                ["taskset", "-c", "0", str(BENCH), "bench", "-p", str(port), "-t", "set",
                 "-c", "50", "-P", str(pipeline), "-d", "64", "-r", "100000",
                 "--duration", str(DURATION), "--warmup", "0", "--json"],
                capture_output=True, text=True, check=True).stdout
            after = cpu_ticks(proc.pid)
            result = json.loads(out)[0]
            checkpoints = int(info(port, "persistence").get("checkpoints", "0") or 0) \
                if kind == "ringkv" and policy != "off" else 0
        finally:
            stop(proc)
    ops = result["requests"]
    return {"ops": result["ops_per_sec"], "cpu_us": (after - before) / TICK * 1e6 / ops,
            "checkpoints": checkpoints, "errors": result["reply_errors"]}


def throughput():
    cells = {}
    configs = [(k, p) for k in ("ringkv", "redis") for p in ("off", "everysec", "always")]
    for _ in range(ROUNDS):
        for pipeline in (1, 16):
            for kind, policy in configs:
                r = set_run(kind, policy, pipeline)
                cells.setdefault((pipeline, kind, policy), []).append(r)
                print(f"-P {pipeline} {kind} {policy}: {r['ops']:,.0f} ops/s, "
                      f"{r['cpu_us']:.3f} µs/op, checkpoints {r['checkpoints']}", flush=True)
    med = lambda xs: statistics.median(xs)
    return {key: {"ops": med([r["ops"] for r in rs]), "cpu_us": med([r["cpu_us"] for r in rs]),
                  "checkpoints": med([r["checkpoints"] for r in rs])}
            for key, rs in cells.items()}


def pipe_keys(port, count, prefix=b"key:", value=b"v" * 64):
    payload = b"".join(
        b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(value), value)
        for k in (prefix + b"%012d" % i for i in range(count)))
    subprocess.run(["redis-cli", "-p", str(port), "--pipe"], input=payload,
                   capture_output=True, check=True)


def hset_run(policy):
    with tempfile.TemporaryDirectory(dir=ROOT / "target") as d:
        port = free_port()
        proc = start("ringkv", policy, Path(d), port)
        try:
            payload = b"".join(
                b"*202\r\n$4\r\nHSET\r\n$6\r\nmyhash\r\n" + b"".join(
                    b"$20\r\nelement:%012d\r\n$3\r\nxxx\r\n" % j for j in range(i, i + 100))
                for i in range(0, 100000, 100))
            subprocess.run(["redis-cli", "-p", str(port), "--pipe"], input=payload,
                           capture_output=True, check=True)
            fields = int(cli(port, "HLEN", "myhash").strip())
            out = subprocess.run(
                ["taskset", "-c", "0", "redis-benchmark", "-p", str(port), "-t", "hset",
                 "-n", "3000000", "-c", "50", "-P", "16", "-r", "100000", "-q", "--csv"],
                capture_output=True, text=True, check=True).stdout
        finally:
            stop(proc)
    line = [l for l in out.splitlines() if l.startswith('"HSET"')][0]
    return fields, float(line.split(",")[1].strip('"'))


def wait_all_readable(port, count, started, timeout=120):
    """Seconds from `started` until the last key reads back and DBSIZE is complete."""
    last = f"key:{count - 1:012d}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if cli(port, "GET", last, timeout=5).strip() and \
                    cli(port, "DBSIZE", timeout=5).strip() == str(count):
                return time.time() - started
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.005)
    raise RuntimeError("keys never became readable")


def memory_and_restart():
    res = {}
    # RSS without persistence.
    with tempfile.TemporaryDirectory(dir=ROOT / "target") as d:
        port = free_port()
        proc = start("ringkv", "off", Path(d), port)
        pipe_keys(port, KEYS)
        time.sleep(SETTLE)
        res["rss_off"] = rss_mb(proc.pid)
        stop(proc)
    for variant in ("wal", "base"):
        with tempfile.TemporaryDirectory(dir=ROOT / "target") as d:
            data = Path(d) / "data"
            port = free_port()
            proc = start("ringkv", "everysec", data, port)
            pipe_keys(port, KEYS)
            if variant == "base":
                t0 = time.time()
                cli(port, "SAVE", timeout=600)
                res["save_s"] = time.time() - t0
                # A WAL tail on top of the base image.
                pipe_keys(port, KEYS // 10, prefix=b"key:")
            time.sleep(SETTLE)
            res[f"rss_{variant}"] = rss_mb(proc.pid)
            p = info(port, "persistence")
            res[f"info_{variant}"] = {k: p.get(k, "") for k in (
                "base_keys", "wal_bytes", "base_disk_bytes", "checkpoints", "checkpoint_last_ms")}
            stop(proc)  # SIGKILL: a crash, not a clean stop
            disk = sum(f.stat().st_blocks * 512 for f in data.rglob("*") if f.is_file())
            res[f"disk_{variant}"] = disk / KEYS
            started = time.time()
            proc = start_nowait(data, port)
            res[f"restart_{variant}"] = wait_all_readable(port, KEYS, started)
            p = info(port, "persistence")
            res[f"loaded_{variant}"] = (p.get("loaded_keys"), p.get("loaded_wal_records"),
                                        p.get("loading_time_ms"))
            stop(proc)
    return res


def start_nowait(datadir, port):
    return subprocess.Popen(["taskset", "-c", "1", str(RINGKV), "--port", str(port), "--dir",
                             str(datadir), "--loglevel", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def strace_always():
    if not shutil.which("strace"):
        return None
    with tempfile.TemporaryDirectory(dir=ROOT / "target") as d:
        port = free_port()
        proc = start("ringkv", "always", Path(d), port)
        tracer = subprocess.Popen(["strace", "-f", "-c", "-e", "trace=fdatasync,pwrite64",
                                   "-p", str(proc.pid)], stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        out = subprocess.run(
            [str(BENCH), "bench", "-p", str(port), "-t", "set", "-c", "50", "-P", "1",
             "-d", "64", "-r", "100000", "-n", "50000", "--json"],
            capture_output=True, text=True, check=True).stdout
        wal = info(port, "persistence")
        tracer.send_signal(2)
        report = tracer.communicate(timeout=30)[1]
        stop(proc)
    calls = {m.group(2): int(m.group(1)) for m in
             re.finditer(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", report, re.M)}
    return {"requests": json.loads(out)[0]["requests"], "fdatasync": calls.get("fdatasync", 0),
            "pwrite64": calls.get("pwrite64", 0), "wal_writes": int(wal.get("wal_writes", 0)),
            "wal_fsyncs": int(wal.get("wal_fsyncs", 0))}


def main():
    subprocess.run(["cargo", "build", "--release", "-q", "--bin", "ringkv-server", "--bin",
                    "ringkv"], cwd=ROOT, check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
               if l.startswith("model name"))
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True,
                                   text=True).stdout.split()[2]
    if SECTIONS != {"throughput", "hset", "memory", "strace"}:
        for name in sorted(SECTIONS):
            print(name, {"throughput": throughput, "hset": lambda: (hset_run("off"), hset_run("everysec")),
                         "memory": memory_and_restart, "strace": strace_always}[name]())
        return
    t = throughput()
    lines = ["# Persistence tier figures", "",
             f"Commit {commit}, {cpu}, {os.cpu_count()} cores, redis-server {redis_version}. "
             f"Command: `scripts/bench-persistence.sh` (DURATION={DURATION} s per run, "
             f"median of {ROUNDS} interleaved rounds).", "",
             "## SET throughput and server CPU by fsync policy", "",
             "`ringkv bench -t set -c 50 -d 64 -r 100000 --duration "
             f"{DURATION}`, a fresh server per run; server on core 1, generator on core 0. "
             "Ratios are to the same server with persistence off; CPU is the server's "
             "utime + stime over the run divided by its operations.", "",
             "| pipeline | policy | ringkv ops/s | ratio | µs/op | redis ops/s | ratio | µs/op | "
             "ringkv / redis | ringkv checkpoints in run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for p in (1, 16):
        r0, s0 = t[(p, "ringkv", "off")], t[(p, "redis", "off")]
        for policy in ("off", "everysec", "always"):
            r, s = t[(p, "ringkv", policy)], t[(p, "redis", policy)]
            lines.append(
                f"| -P {p} | {policy} | {r['ops']:,.0f} | {r['ops'] / r0['ops']:.2f} | "
                f"{r['cpu_us']:.3f} | {s['ops']:,.0f} | {s['ops'] / s0['ops']:.2f} | "
                f"{s['cpu_us']:.3f} | {r['ops'] / s['ops']:.2f} | {r['checkpoints']:.0f} |")
    r16 = t[(16, "ringkv", "everysec")]["cpu_us"] - t[(16, "ringkv", "off")]["cpu_us"]
    s16 = t[(16, "redis", "everysec")]["cpu_us"] - t[(16, "redis", "off")]["cpu_us"]
    lines += ["", f"CPU the log adds at -P 16 (everysec − off): ringkv {r16:.3f} µs/op, "
                  f"redis {s16:.3f} µs/op.", ""]
    print("\n".join(lines), flush=True)

    off_fields, off_hset = hset_run("off")
    on_fields, on_hset = hset_run("everysec")
    lines += ["## HSET into a 100,000-field hash", "",
              "`redis-benchmark -t hset -n 3000000 -c 50 -P 16 -r 100000` after filling "
              "`myhash` with 100,000 fields (each HSET sets one of them).", "",
              "| persistence | fields | ops/s | ratio to off |", "|---|---|---|---|",
              f"| off | {off_fields:,} | {off_hset:,.0f} | 1.00 |",
              f"| everysec | {on_fields:,} | {on_hset:,.0f} | {on_hset / off_hset:.2f} |", ""]
    print("\n".join(lines[-7:]), flush=True)

    m = memory_and_restart()
    lines += [f"## Memory, restart and disk with {KEYS:,} keys", "",
              f"16-byte keys and 64-byte values loaded with `redis-cli --pipe`; RSS read "
              f"{SETTLE} s later. *base* = after `SAVE` (a checkpoint, {m['save_s']:.1f} s) "
              f"and {KEYS // 10:,} more writes as a WAL tail. Restart = SIGKILL, then seconds "
              "from spawning the process until the last key reads back and DBSIZE is "
              "complete.", "",
              "| case | RSS MB | ratio to off | restart s | loaded (base keys, WAL records, ms) | "
              "disk bytes/key |", "|---|---|---|---|---|---|",
              f"| persistence off | {m['rss_off']:.0f} | 1.00 | — | — | — |"]
    for v, label in (("wal", "everysec, WAL only"), ("base", "everysec, base image + tail")):
        lines.append(f"| {label} | {m[f'rss_{v}']:.0f} | {m[f'rss_{v}'] / m['rss_off']:.2f} | "
                     f"{m[f'restart_{v}']:.2f} | {', '.join(str(x) for x in m[f'loaded_{v}'])} | "
                     f"{m[f'disk_{v}']:.0f} |")
    lines.append("")
    print("\n".join(lines[-8:]), flush=True)

    s = strace_always()
    if s:
        lines += ["## fdatasync under appendfsync always", "",
                  f"`strace -f -c` over {s['requests']:,} SETs from 50 clients at -P 1: "
                  f"{s['fdatasync']:,} fdatasync and {s['pwrite64']:,} pwrite64 calls; the WAL "
                  f"counted {s['wal_writes']:,} writes and {s['wal_fsyncs']:,} syncs, so every "
                  f"write of acknowledged records was synced, "
                  f"{s['requests'] / max(s['wal_fsyncs'], 1):.1f} SETs per sync (group commit).",
                  ""]
        print("\n".join(lines[-3:]), flush=True)
    lines += floors(t, off_hset, on_hset, m, s)
    (ROOT / "docs" / "persistence-benchmarks.md").write_text("\n".join(lines) + "\n")


def floors(t, off_hset, on_hset, m, s):
    """The issue's floors against this run's figures."""
    ratio = lambda p, kind, policy: t[(p, kind, policy)]["ops"] / t[(p, kind, "off")]["ops"]
    cpu = lambda p, kind, policy: t[(p, kind, policy)]["cpu_us"] - t[(p, kind, "off")]["cpu_us"]
    rows = [
        ("everysec / off at -P 16 ≥ 0.90", ratio(16, "ringkv", "everysec"), 0.90, True),
        ("everysec / off at -P 1 ≥ 0.97", ratio(1, "ringkv", "everysec"), 0.97, True),
        ("ringkv everysec ops/s ≥ redis everysec, -P 16",
         t[(16, "ringkv", "everysec")]["ops"] / t[(16, "redis", "everysec")]["ops"], 1.0, True),
        ("ringkv everysec ops/s ≥ redis everysec, -P 1",
         t[(1, "ringkv", "everysec")]["ops"] / t[(1, "redis", "everysec")]["ops"], 1.0, True),
        ("always / off ≥ redis's always / off, -P 1 (ratio of ratios)",
         ratio(1, "ringkv", "always") / ratio(1, "redis", "always"), 1.0, True),
        ("always / off ≥ redis's always / off, -P 16 (ratio of ratios)",
         ratio(16, "ringkv", "always") / ratio(16, "redis", "always"), 1.0, True),
        ("CPU everysec − off at -P 16 ≤ 0.15 µs/op", cpu(16, "ringkv", "everysec"), 0.15, False),
        ("HSET on a 100,000-field hash, on / off ≥ 0.8", on_hset / off_hset, 0.8, True),
        ("RSS with persistence / off ≤ 1.15 (after a checkpoint)",
         m["rss_base"] / m["rss_off"], 1.15, False),
        ("restart, every key readable ≤ 1.0 s (base image + tail)", m["restart_base"], 1.0, False),
        ("restart, every key readable ≤ 1.0 s (WAL only)", m["restart_wal"], 1.0, False),
        ("disk bytes per key at steady state ≤ 300", m["disk_base"], 300, False),
    ]
    out = ["## Against the floors", "", "| floor | this run | held |", "|---|---|---|"]
    for name, value, bound, at_least in rows:
        held = value >= bound if at_least else value <= bound
        out.append(f"| {name} | {value:.3f} | {'yes' if held else 'no'} |")
    if s:
        out.append(f"| fdatasync for every WAL write under always | {s['fdatasync']} syncs, "
                   f"{s['wal_writes']} writes | {'yes' if s['fdatasync'] >= s['wal_writes'] else 'no'} |")
    return out + [""]


if __name__ == "__main__":
    main()
