#!/usr/bin/env python3
"""The persistence tier's figures, measured in one run on pinned cores:

1. SET throughput with persistence off, appendfsync everysec and always, as ratios to off,
   side by side with redis-server (appendonly no/yes) at the same policies. The server is
   pinned to core 1 and redis-benchmark to core 0; both servers write to the same disk.
2. Time for a ringkv node to recover 1,000,000 keys, and disk bytes per key.

Writes docs/persistence-benchmarks.md. Usage: scripts/bench-persistence.sh
(N=200000 requests per cell by default; KEYS=1000000 for the recovery run.)
"""

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RINGKV = ROOT / "target" / "release" / "ringkv-server"
N = int(os.environ.get("N", "200000"))
KEYS = int(os.environ.get("KEYS", "1000000"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "persistence"],
                                 capture_output=True, text=True, timeout=5).stdout
            if re.search(r"^loading:0", out, re.M):
                return out
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"server on {port} never became ready")


def start(kind, policy, datadir, port):
    if kind == "ringkv":
        args = [str(RINGKV), "--port", str(port), "--dir", str(datadir), "--loglevel", "warning"]
        if policy == "off":
            args += ["--persistence", "no"]
        else:
            args += ["--appendfsync", policy]
    else:
        args = ["redis-server", "--port", str(port), "--dir", str(datadir), "--save", "",
                "--daemonize", "no", "--loglevel", "warning"]
        if policy == "off":
            args += ["--appendonly", "no"]
        else:
            args += ["--appendonly", "yes", "--appendfsync", policy]
    proc = subprocess.Popen(["taskset", "-c", "1", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port)
    return proc


def stop(proc):
    proc.kill()
    proc.wait()


def set_throughput(kind, policy, pipeline):
    """Median SET ops/s over ROUNDS runs on a fresh server each."""
    results = []
    for _ in range(ROUNDS):
        with tempfile.TemporaryDirectory(dir=ROOT / "target") as d:
            port = free_port()
            proc = start(kind, policy, Path(d), port)
            try:
                out = subprocess.run(
                    ["taskset", "-c", "0", "redis-benchmark", "-p", str(port), "-t", "set",
                     "-n", str(N), "-c", "50", "-P", str(pipeline), "-d", "64",
                     "-r", "100000", "-q", "--csv"],
                    capture_output=True, text=True, check=True).stdout
            finally:
                stop(proc)
            line = [l for l in out.splitlines() if l.startswith('"SET"')][0]
            results.append(float(line.split(",")[1].strip('"')))
    results.sort()
    return results[len(results) // 2]


def recovery():
    """Fills KEYS keys through redis-cli --pipe, SAVEs, kills the node, restarts it and
    reads the loading time it reports; plus disk bytes per key."""
    with tempfile.TemporaryDirectory(dir=ROOT / "target") as d:
        datadir = Path(d) / "data"
        port = free_port()
        proc = start("ringkv", "everysec", datadir, port)
        payload = "".join(
            f"*3\r\n$3\r\nSET\r\n${len(k)}\r\n{k}\r\n$64\r\n{'v' * 64}\r\n"
            for k in (f"key:{i:012}" for i in range(KEYS))
        ).encode()
        subprocess.run(["redis-cli", "-p", str(port), "--pipe"], input=payload,
                       capture_output=True, check=True)
        subprocess.run(["redis-cli", "-p", str(port), "SAVE"], capture_output=True, check=True)
        proc.kill()
        proc.wait()
        disk = sum(f.stat().st_size for f in datadir.rglob("*") if f.is_file())
        started = time.time()
        proc = start("ringkv", "everysec", datadir, port)
        wall = time.time() - started
        info = wait_ready(port)
        dbsize = subprocess.run(["redis-cli", "-p", str(port), "DBSIZE"],
                                capture_output=True, text=True).stdout.strip()
        stop(proc)
        loading_ms = int(re.search(r"loading_time_ms:(\d+)", info).group(1))
        return {"keys": int(dbsize), "loading_ms": loading_ms, "wall_s": wall,
                "disk_bytes": disk}


def main():
    subprocess.run(["cargo", "build", "--release", "-q", "--bin", "ringkv-server"],
                   cwd=ROOT, check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
               if l.startswith("model name"))
    lines = ["# Persistence tier figures", "",
             f"Commit {commit}, {cpu}, {os.cpu_count()} cores, redis-server "
             f"{subprocess.run(['redis-server', '--version'], capture_output=True, text=True).stdout.split()[2]}. "
             f"Command: `scripts/bench-persistence.sh` (N={N}, median of {ROUNDS}).", "",
             "## SET throughput by fsync policy", "",
             "redis-benchmark -t set -c 50 -d 64 -r 100000; server on core 1, generator on "
             "core 0. Ratios are to the same server with persistence off.", "",
             "| pipeline | policy | ringkv ops/s | ratio to off | redis ops/s | ratio to off | ringkv / redis |",
             "|---|---|---|---|---|---|---|"]
    for pipeline in (1, 16):
        base = {k: set_throughput(k, "off", pipeline) for k in ("ringkv", "redis")}
        for policy in ("off", "everysec", "always"):
            r = base["ringkv"] if policy == "off" else set_throughput("ringkv", policy, pipeline)
            s = base["redis"] if policy == "off" else set_throughput("redis", policy, pipeline)
            lines.append(f"| -P {pipeline} | {policy} | {r:,.0f} | {r / base['ringkv']:.2f} | "
                         f"{s:,.0f} | {s / base['redis']:.2f} | {r / s:.2f} |")
            print(lines[-1], flush=True)
    rec = recovery()
    lines += ["", f"## Recovery of {KEYS:,} keys", "",
              f"16-byte keys, 64-byte values, `SAVE`, SIGKILL, restart: the node reports "
              f"`loading_time_ms:{rec['loading_ms']}` for {rec['keys']:,} keys "
              f"({rec['keys'] / max(rec['loading_ms'], 1) * 1000:,.0f} keys/s). "
              f"Disk: {rec['disk_bytes']:,} bytes, {rec['disk_bytes'] / KEYS:.0f} bytes per key "
              f"(key + value = 80 bytes).", ""]
    print("\n".join(lines[-3:]))
    (ROOT / "docs" / "persistence-benchmarks.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
