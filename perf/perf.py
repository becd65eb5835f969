#!/usr/bin/env python3
"""Runs the side-by-side scenario set against ringkeeper and Apache ZooKeeper and writes
perf/results/<date>-<host>[-quick]/ (raw JSON, results.json, report.md, plots/).

Normally started by perf/run.sh, which installs and builds what this needs first. Alone:

    .venv/bin/python perf/perf.py [--quick] [--duration S] [--servers ringkeeper,zookeeper]
                                  [--topology standalone,ensemble3] [--only-ensemble]

Order: the fdatasync floor; then per server (ringkeeper first) the scenario set on one fresh
standalone server with a fresh data dir; then per server a subset of the scenarios on a fresh
3-member ensemble (three processes on this machine, fresh data dirs, --servers listing all three
client addresses); then per server memory (RSS after 100k and 1M znodes of 100 bytes) and
restart time with those znodes, on another fresh data dir; then the capacity ramp. Memory,
restart and capacity are standalone only. Servers never run at the same time.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import servers as S  # noqa: E402

PERF = Path(__file__).resolve().parent
ROOT = PERF.parent

# Every bench run gets these (the bench caps --threads at --sessions).
COMMON = ["--threads", "2", "--data-size", "100"]


def scenarios(quick):
    """(id, group, label, clients, bench args) in the order they run. Reads first, creates
    last, so that the nodes created by earlier runs weigh as little as possible."""
    out = []

    def add(sid, group, label, clients, args):
        out.append({"id": sid, "group": group, "label": label, "clients": clients, "args": args})

    def n(c, what="client"):
        return "%d %s%s" % (c, what, "" if c == 1 else "s")

    clients = [1, 64] if quick else [1, 4, 16, 64, 256]
    for c in clients:
        add("get-c%d" % c, "reads", "getData, %s" % n(c), c, ["--workload", "get", "--sessions", str(c)])
    add("mixed-c64", "mixed", "90% getData / 10% setData, 64 clients", 64,
        ["--workload", "mixed", "--read-ratio", "0.9", "--sessions", "64"])
    if not quick:
        add("set-c64", "setData", "setData, 64 clients", 64, ["--workload", "set", "--sessions", "64"])
        add("multi-c16", "multi", "multi of 5 creates, 16 clients", 16,
            ["--workload", "multi", "--multi-ops", "5", "--sessions", "16"])
    for w in [100] if quick else [100, 1000]:
        add("watch-w%d" % w, "watch", "watch fan-out, %d watchers" % w, w,
            ["--workload", "watch", "--sessions", str(w)])
    add("lock-c16", "lock", "lock contention, 16 clients, hold 100 µs", 16,
        ["--workload", "lock", "--sessions", "16", "--hold-us", "100"])
    if not quick:
        add("churn-c8", "churn", "session connect+close, 8 at a time", 8, ["--workload", "churn", "--sessions", "8"])
    for c in [1, 64] if quick else [1, 4, 16, 64, 256]:
        add("create-c%d" % c, "writes", "create, %s" % n(c), c, ["--workload", "create", "--sessions", str(c)])
    return out


def ensemble_scenarios(quick):
    """The subset run against 3-member ensembles, same shape (and, where the same scenario
    exists standalone, the same id and args). Reads first, creates last."""
    out = []

    def add(sid, group, label, clients, args):
        out.append({"id": sid, "group": group, "label": label, "clients": clients, "args": args})

    def n(c):
        return "%d client%s" % (c, "" if c == 1 else "s")

    if not quick:
        add("get-c64", "reads", "getData, 64 clients", 64, ["--workload", "get", "--sessions", "64"])
    add("mixed-c64", "mixed", "90% getData / 10% setData, 64 clients", 64,
        ["--workload", "mixed", "--read-ratio", "0.9", "--sessions", "64"])
    if not quick:
        for c in [1, 16, 64]:
            add("set-c%d" % c, "setData", "setData, %s" % n(c), c, ["--workload", "set", "--sessions", str(c)])
    for c in [1, 16] if quick else [1, 16, 64]:
        add("create-c%d" % c, "writes", "create, %s" % n(c), c, ["--workload", "create", "--sessions", str(c)])
    return out


def log(msg):
    print("[perf %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info(data_dir):
    info = {
        "hostname": socket.gethostname(),
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "os": "",
        "cpu": "",
        "mem_total_kib": None,
    }
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                info["os"] = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["mem_total_kib"] = int(line.split()[1])
    except OSError:
        pass
    src = sh(["findmnt", "-n", "-T", str(data_dir), "-o", "SOURCE,FSTYPE,OPTIONS"])
    info["data_fs"] = src
    dev = src.split()[0] if src else ""
    if dev.startswith("/dev/"):
        parent = sh(["lsblk", "-n", "-d", "-o", "PKNAME", dev]) or os.path.basename(dev)
        info["disk"] = sh(["lsblk", "-n", "-d", "-o", "NAME,MODEL,ROTA,SIZE,TRAN", "/dev/" + parent]) or dev
    else:
        info["disk"] = dev or "unknown"
    return info


def versions():
    v = {}
    head = sh(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = sh(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    v["ringkeeper"] = "%s%s" % (head or "unknown", " (uncommitted changes)" if dirty else "")
    v["rustc"] = sh(["rustc", "--version"])
    v["zookeeper"] = sh(["dpkg-query", "-W", "-f", "${Version}", "zookeeper"]) or "unknown"
    try:
        jv = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30).stderr
        v["java"] = jv.splitlines()[0] if jv else "unknown"
    except (OSError, subprocess.SubprocessError):
        v["java"] = "missing"
    v["python"] = platform.python_version()
    return v


def fsync_floor(directory, seconds, record=256, direct=False):
    """Latency of one pwrite + fdatasync of `record` bytes into a preallocated file (as a WAL
    that preallocates its segments does), in the given directory's filesystem. With `direct`:
    O_DIRECT writes of 4 KiB (ringkeeper's log writes aligned 4 KiB blocks)."""
    import mmap

    path = Path(directory) / ("floor-%s.bin" % ("direct" if direct else "buffered"))
    size = 64 << 20
    with open(path, "wb") as f:
        chunk = b"\0" * (1 << 20)
        for _ in range(size >> 20):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    flags = os.O_WRONLY | (getattr(os, "O_DIRECT", 0) if direct else 0)
    fd = os.open(path, flags)
    if direct:
        record = 4096
        buf = mmap.mmap(-1, record)
        buf.write(b"x" * record)
    else:
        buf = b"x" * record
    lat = []
    off = 0
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            t = time.perf_counter_ns()
            os.pwrite(fd, buf, off)
            os.fdatasync(fd)
            lat.append((time.perf_counter_ns() - t) / 1000.0)
            off = (off + record) % size
    finally:
        os.close(fd)
        path.unlink()
    lat.sort()

    def q(p):
        return lat[min(len(lat) - 1, int(p * len(lat)))]

    return {
        "record_bytes": record,
        "o_direct": direct,
        "count": len(lat),
        "mean_us": sum(lat) / len(lat),
        "p50_us": q(0.50),
        "p99_us": q(0.99),
        "p999_us": q(0.999),
        "max_us": lat[-1],
        "how": "pwrite of %d bytes%s at increasing offsets of a preallocated 64 MiB file + "
        "fdatasync, one at a time, for %.0f s (Python loop)" % (record, " with O_DIRECT" if direct else "", seconds),
    }


# Unmeasured load on a new server before anything is measured (the JVM compiles its hot paths).
WARM_SERVER = ["--workload", "mixed", "--read-ratio", "0.5", "--sessions", "32", "--warmup", "0"] + COMMON


def warm_server(srv, seconds, raw_file):
    r = S.run_bench(srv.addr, WARM_SERVER + ["--duration", str(seconds)], raw_file, timeout=seconds + 120)
    bad = S.failed(r)
    if bad:
        raise RuntimeError("%s: the warm-up load failed: %s; log tail:\n%s" % (srv.kind, bad, srv.log_tail()))


def raw_dir(raw, topology, kind):
    """raw/KIND for standalone (as before ensembles existed), raw/ensemble3/KIND otherwise."""
    return raw / kind if topology == "standalone" else raw / topology / kind


def run_scenarios(kind, tmp, raw, scens, duration, warmup, server_warmup, topology="standalone"):
    srv = S.new_server(kind, topology, tmp, "scenarios")
    rdir = raw_dir(raw, topology, kind)
    tag = kind if topology == "standalone" else "%s/%s" % (kind, topology)
    out = {"server_command": None, "runs": {}}
    try:
        out["start_s"] = srv.start()
        cmds = srv.commands()
        out["server_command"] = cmds[0]
        if topology != "standalone":
            out["server_commands"] = cmds
            out["leader"] = srv.leader
            out["modes_start"] = srv.modes()
            out["bench_servers"] = srv.addr
            log("%s: all %d members up in %.2f s, leader member %d; bench --servers %s (followers first)"
                % (tag, len(cmds), out["start_s"], srv.leader, srv.addr))
        out["rss_start_kib"] = srv.rss_kib()
        warm_server(srv, server_warmup, rdir / "server-warmup.json")
        for sc in scens:
            args = sc["args"] + COMMON + ["--duration", str(duration), "--warmup", str(warmup)]
            cpu0 = srv.cpu_seconds()
            t0 = time.monotonic()
            r = S.run_bench(srv.addr, args, rdir / (sc["id"] + ".json"), timeout=duration + warmup + 120)
            r["scenario"] = sc["id"]
            r["topology"] = topology
            r["server_cpu_s"] = srv.cpu_seconds() - cpu0
            r["wall_s"] = time.monotonic() - t0
            (rdir / (sc["id"] + ".json")).write_text(json.dumps(r, indent=1))
            p = r.get("primary", {})
            bad = S.failed(r)
            log(
                "%-20s %-12s %10.0f/s  p50 %6s  p99 %6s  p99.9 %6s µs%s"
                % (tag, sc["id"], p.get("ops_per_sec", 0), p.get("p50_us"), p.get("p99_us"), p.get("p999_us"),
                   "   !!! %s" % bad if bad else "")
            )
            dead = srv.dead()
            if dead:
                raise RuntimeError("%s during %s; log tail:\n%s" % (dead, sc["id"], srv.log_tail()))
        out["rss_end_kib"] = srv.rss_kib()
        out["data_bytes_end"] = srv.data_bytes()
        if topology != "standalone":
            out["modes_end"] = srv.modes()
            if out["modes_end"] != out["modes_start"]:
                log("!!! %s: member modes changed during the scenarios: %s -> %s"
                    % (tag, out["modes_start"], out["modes_end"]))
    finally:
        srv.destroy()
    return out


def mntr(port):
    """The mntr four-letter word as a dict (empty when it fails)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"mntr")
            buf = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
    except OSError:
        return {}
    out = {}
    for line in buf.decode(errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) == 2:
            out[parts[0]] = parts[1]
    return out


def run_memory(kind, tmp, raw, counts):
    """RSS after creating each count of znodes (100 bytes each, cumulative), then the restart
    time with all of them in the data dir."""
    srv = S.Server(kind, tmp, "memory")
    srv.start()
    res = {"server_command": srv.last_command, "points": []}
    try:
        time.sleep(1.0)
        base = S.rss_kib(srv.pid)
        res["rss_empty_kib"] = base
        if kind == "zookeeper":
            res["live_heap_empty_kib"] = S.jvm_live_heap_kib(srv.pid)
        created = 0
        for n in counts:
            args = ["--workload", "create", "--sessions", "64", "--depth", "16", "--ops", str(n - created)] + COMMON
            t0 = time.monotonic()
            r = S.run_bench(srv.addr, args, raw / kind / ("memory-create-%d.json" % n), timeout=1800)
            bad = S.failed(r)
            if bad:
                raise RuntimeError("%s: creating znodes failed: %s" % (kind, bad))
            created += r["primary"]["count"]
            time.sleep(2.0)
            point = {
                "znodes": created,
                "create_s": time.monotonic() - t0,
                "create_ops_per_sec": r["primary"]["ops_per_sec"],
                "rss_kib": S.rss_kib(srv.pid),
                "data_dir_bytes": srv.data_bytes(),
                "znode_count_mntr": mntr(srv.port).get("zk_znode_count"),
            }
            point["bytes_per_znode_rss"] = (point["rss_kib"] - base) * 1024 / max(created, 1)
            if kind == "zookeeper":
                point["live_heap_kib"] = S.jvm_live_heap_kib(srv.pid)
                if point["live_heap_kib"] and res.get("live_heap_empty_kib"):
                    point["bytes_per_znode_heap"] = (
                        (point["live_heap_kib"] - res["live_heap_empty_kib"]) * 1024 / max(created, 1)
                    )
            res["points"].append(point)
            log("%-10s %8d znodes: RSS %7.1f MiB (%.0f B/znode over the empty server's)%s"
                % (kind, created, point["rss_kib"] / 1024, point["bytes_per_znode_rss"],
                   ", live heap %.1f MiB" % (point["live_heap_kib"] / 1024) if point.get("live_heap_kib") else ""))
        t0 = time.monotonic()
        srv.stop()
        res["stop_s"] = time.monotonic() - t0
        res["restart_znodes"] = created
        res["restart_s"] = srv.start(timeout=900)
        res["rss_after_restart_kib"] = S.rss_kib(srv.pid)
        res["znode_count_after_restart"] = mntr(srv.port).get("zk_znode_count")
        log("%-10s restart with %d znodes: %.2f s to the first handshake (mntr znodes %s)"
            % (kind, created, res["restart_s"], res["znode_count_after_restart"]))
    finally:
        srv.destroy()
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few short scenarios (about 4 minutes; with --only-ensemble about 1)")
    ap.add_argument("--duration", type=float, help="measured seconds per scenario (default 10, quick 3)")
    ap.add_argument("--warmup", type=float, help="unmeasured seconds before each (default 2, quick 1)")
    ap.add_argument("--servers", default="ringkeeper,zookeeper", help="which servers, in order")
    ap.add_argument("--topology", default="standalone,ensemble3",
                    help="standalone (one process: the full scenario set, memory/restart, capacity), "
                    "ensemble3 (3-member ensembles on this machine: a subset of the scenarios), or both "
                    "(default: both, in that order)")
    ap.add_argument("--only-ensemble", action="store_true",
                    help="only the 3-member ensemble scenarios (same as --topology ensemble3)")
    ap.add_argument("--znodes", help="memory/restart points, comma separated (default 100000,1000000; quick 100000)")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--only-memory", action="store_true",
                    help="only the memory and restart measurement (no scenarios, no capacity ramp)")
    ap.add_argument("--skip-capacity", action="store_true")
    ap.add_argument("--slo-p99-ms", type=float, default=5.0, help="capacity SLO (default 5)")
    ap.add_argument("--out", help="results dir (default perf/results/<date>-<host>[-quick])")
    a = ap.parse_args()

    duration = a.duration if a.duration is not None else (3.0 if a.quick else 10.0)
    warmup = a.warmup if a.warmup is not None else (1.0 if a.quick else 2.0)
    kinds = [k.strip() for k in a.servers.split(",") if k.strip()]
    for k in kinds:
        if k not in S.SERVERS:
            ap.error("unknown server %r" % k)
    topologies = ["ensemble3"] if a.only_ensemble else [t.strip() for t in a.topology.split(",") if t.strip()]
    for t in topologies:
        if t not in S.TOPOLOGIES:
            ap.error("unknown topology %r (%s)" % (t, ", ".join(S.TOPOLOGIES)))
    if a.only_memory and a.only_ensemble:
        ap.error("--only-memory and --only-ensemble exclude each other")
    if a.only_memory:
        topologies = ["standalone"]
    if "standalone" not in topologies:
        # memory/restart and the capacity ramp are measured on standalone servers only
        a.skip_memory = a.skip_capacity = True
    counts = [int(x) for x in (a.znodes or ("100000" if a.quick else "100000,1000000")).split(",")]
    name = "%s-%s%s" % (datetime.date.today().isoformat(), socket.gethostname(), "-quick" if a.quick else "")
    out = Path(a.out) if a.out else PERF / "results" / name
    raw = out / "raw"
    tmp = out / "tmp"  # data dirs and server logs; ignored by git
    for d in (raw, tmp, out / "plots"):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    t_start = time.monotonic()
    results = {
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "perf/run.sh " + " ".join(sys.argv[1:]),
        "quick": a.quick,
        "duration_s": duration,
        "warmup_s": warmup,
        "server_warmup_s": 3.0 if a.quick else 10.0,
        "server_warmup_args": WARM_SERVER,
        "common_bench_args": COMMON,
        "machine": machine_info(tmp),
        "versions": versions(),
        "zk_heap": S.ZK_HEAP,
        "servers": kinds,
        "topologies": topologies,
        "scenarios": scenarios(a.quick) if "standalone" in topologies else [],
        "scenario_runs": {},
        "ensemble_scenarios": ensemble_scenarios(a.quick) if "ensemble3" in topologies else [],
        "ensemble_runs": {},
        "zk_ensemble_heap": S.ZK_ENSEMBLE_HEAP,
        "rk_ensemble_shards": S.RK_ENSEMBLE_SHARDS,
        "memory": {},
    }
    log("results go to %s" % out)

    def save():
        results["elapsed_s"] = time.monotonic() - t_start
        (out / "results.json").write_text(json.dumps(results, indent=1))

    floor_s = 2.0 if a.quick else 5.0
    results["floor"] = fsync_floor(tmp, floor_s)
    results["floor_direct"] = fsync_floor(tmp, floor_s, direct=True)
    (raw / "floor.json").write_text(json.dumps([results["floor"], results["floor_direct"]], indent=1))
    log("floor: write+fdatasync of %d B: p50 %.0f µs, mean %.0f µs; O_DIRECT 4 KiB: p50 %.0f µs"
        % (results["floor"]["record_bytes"], results["floor"]["p50_us"], results["floor"]["mean_us"],
           results["floor_direct"]["p50_us"]))
    save()

    if a.only_memory:
        results["scenarios"] = []
        a.skip_capacity = True
    for kind in kinds if results["scenarios"] else []:
        log("%s: %d scenarios of %g s (+%g s warm-up)" % (kind, len(results["scenarios"]), duration, warmup))
        results["scenario_runs"][kind] = run_scenarios(
            kind, tmp, raw, results["scenarios"], duration, warmup, results["server_warmup_s"]
        )
        save()

    for kind in kinds if results["ensemble_scenarios"] else []:
        log("%s: 3-member ensemble, %d scenarios of %g s (+%g s warm-up)"
            % (kind, len(results["ensemble_scenarios"]), duration, warmup))
        try:
            results["ensemble_runs"][kind] = run_scenarios(
                kind, tmp, raw, results["ensemble_scenarios"], duration, warmup, results["server_warmup_s"],
                topology="ensemble3",
            )
        except RuntimeError as e:
            log("!!! 3-member ensemble failed for %s: %s" % (kind, e))
            results["ensemble_runs"][kind] = {"error": str(e)}
        save()

    if not a.skip_memory:
        for kind in kinds:
            log("%s: memory after %s znodes, then restart" % (kind, " and ".join(str(c) for c in counts)))
            try:
                results["memory"][kind] = run_memory(kind, tmp, raw, counts)
            except RuntimeError as e:
                log("!!! memory/restart failed for %s: %s" % (kind, e))
                results["memory"][kind] = {"error": str(e)}
            save()

    if not a.skip_capacity:
        import capacity

        mix = ["--workload", "mixed", "--read-ratio", "0.9", "--sessions", "64"]
        results["capacity"] = capacity.ramp_all(
            kinds, mix + COMMON, a.slo_p99_ms, tmp, raw / "capacity",
            step_s=2.0 if a.quick else 4.0, warmup_s=1.0, max_steps=6 if a.quick else 12,
            start_rate=4000 if a.quick else 2000, log=log,
            server_warmup=(WARM_SERVER, results["server_warmup_s"]),
        )
        save()

    save()
    try:
        import plots

        plots.write(out)
    except ImportError as e:
        log("!!! no plots (%s): install perf/requirements.txt into the venv" % e)
    import report

    report.write(out)
    log("done in %.0f s: %s" % (time.monotonic() - t_start, out / "report.md"))


if __name__ == "__main__":
    main()
