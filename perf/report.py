#!/usr/bin/env python3
"""Writes report.md for a results dir made by perf/perf.py (results.json and raw/).

    .venv/bin/python perf/report.py perf/results/<dir>
"""

import json
import sys
from pathlib import Path

NAMES = {"ringkeeper": "ringkeeper", "zookeeper": "ZooKeeper"}


def load(out):
    out = Path(out)
    res = json.loads((out / "results.json").read_text())
    runs = {}
    for kind in res.get("servers", []):
        for sc in res["scenarios"]:
            f = out / "raw" / kind / (sc["id"] + ".json")
            if f.exists():
                runs[(kind, sc["id"])] = json.loads(f.read_text())
    return res, runs


def load_ensemble(out, res):
    """{(kind, scenario id): bench report} of the 3-member ensemble runs (raw/ensemble3/KIND/)."""
    runs = {}
    for kind in res.get("servers", []):
        for sc in res.get("ensemble_scenarios", []):
            f = Path(out) / "raw" / "ensemble3" / kind / (sc["id"] + ".json")
            if f.exists():
                runs[(kind, sc["id"])] = json.loads(f.read_text())
    return runs


def scenario_table(L, scs, runs, kinds):
    """Appends one table of scenarios (and notes on failed runs) to L."""
    hdr = "| scenario | bench args |"
    sep = "| --- | --- |"
    for kind in kinds:
        hdr += " %s ops/s | p50 / p99 / p99.9 ms | srv CPU |" % NAMES[kind]
        sep += " ---: | ---: | ---: |"
    if len(kinds) == 2:
        hdr += " ratio | p99 ratio |"
        sep += " ---: | ---: |"
    L.append(hdr)
    L.append(sep)
    notes = []
    for sc in scs:
        row = "| %s | `%s` |" % (sc["label"], " ".join(sc["args"]))
        prims = []
        for kind in kinds:
            r = runs.get((kind, sc["id"]))
            p = (r or {}).get("primary")
            bad = problems(r)
            if bad:
                notes.append("%s, %s: **%s**" % (sc["label"], NAMES[kind], bad))
            if not p:
                row += " – | – | – |"
                prims.append(None)
                continue
            cpu = r.get("server_cpu_s")
            cpu_s = "%.2f" % (cpu / r["wall_s"]) if cpu is not None and r.get("wall_s") else "–"
            row += " %s%s | %s / %s / %s | %s |" % (num(p["ops_per_sec"]), " (!)" if bad else "", ms(p["p50_us"]), ms(p["p99_us"]), ms(p["p999_us"]), cpu_s)
            prims.append(p)
        if len(kinds) == 2:
            a, b = prims
            row += " %s | %s |" % (
                fx(ratio(a and a["ops_per_sec"], b and b["ops_per_sec"])),
                fx(ratio(a and a["p99_us"], b and b["p99_us"])),
            )
        L.append(row)
    L.append("")
    for n in notes:
        L.append("- (!) " + n)
    if notes:
        L.append("")


def ensemble_section(L, res, runs, sa_runs):
    """The "3-member ensemble" section."""
    kinds = res["servers"]
    scs = res.get("ensemble_scenarios", [])
    er = res.get("ensemble_runs", {})
    m = res["machine"]
    L.append("## 3-member ensemble")
    L.append("")
    L.append("Three members of one server on this machine (127.0.0.1, a fresh data dir each, all three started at once), "
             "then, once that ensemble is gone, three of the other. An ensemble counts as up once every member answered a "
             "handshake and `srvr` says `Mode: leader` on exactly one member and `Mode: follower` on the other two. "
             "Each scenario runs `ringkeeper bench --servers F1,F2,L` with all three client addresses, the two followers "
             "first and the leader last: the bench puts session i on address i mod 3 (round robin), so 1 client talks to a "
             "follower, 16 clients are 6/5/5 and 64 clients 22/21/21 over the members; the bench sets its keys up through "
             "the first address. Reads are answered by the member a session is on; writes go to the leader (forwarded by a "
             "follower) and are acknowledged once a majority has them on disk. All three members, the bench, and in "
             "ringkeeper's case every member's shards share the machine's %s cores. srv CPU sums the three members."
             % m.get("nproc"))
    L.append("")
    shards = res.get("rk_ensemble_shards")
    for kind in kinds:
        e = er.get(kind)
        if not e:
            continue
        if "error" in e:
            L.append("- %s: **failed**: %s" % (NAMES[kind], e["error"].splitlines()[0]))
            continue
        cmds = e.get("server_commands") or []
        how = "member 1: `%s`; members 2 and 3 alike with their own %s" % (
            " ".join(cmds[0]) if cmds else "?",
            "`--server-id`, `--data-dir` and `--client-addr`" if kind == "ringkeeper"
            else "zoo.cfg (clientPort), data dir and myid")
        if kind == "ringkeeper":
            how += "; shards per member: %s" % (
                "`--shards %s`" % shards if shards else
                "ringkeeper's default, one per core (%s); a member pins shard i to core i mod %s, so every member "
                "has a shard on every core (`--shards 1` would put all three members on core 0)" % (m.get("nproc"), m.get("nproc")))
        else:
            how += "; zoo.cfg as the standalone's (forceSync=yes, maxClientCnxns=0, tickTime=2000) plus initLimit=10, " \
                   "syncLimit=5 and `server.N=127.0.0.1:QUORUM_PORT:ELECTION_PORT` per member, dataDir/myid; heap -Xms%s -Xmx%s " \
                   "per member" % (res.get("zk_ensemble_heap"), res.get("zk_ensemble_heap"))
        end = e.get("modes_end") or {}
        same = all(v == (e.get("modes_start") or {}).get(k) for k, v in end.items()) and end
        L.append("- %s: %s. Up in %.2f s; leader: member %s%s." % (
            NAMES[kind], how, e.get("start_s") or 0, e.get("leader"),
            " (still, with both followers, after the last scenario)" if same else
            "; **after the last scenario: %s**" % ", ".join("member %s %s" % kv for kv in sorted(end.items())) if end else ""))
    if res.get("server_warmup_args"):
        L.append("- each new ensemble gets the same %g s of unmeasured load as a standalone server before the first scenario"
                 % res["server_warmup_s"])
    L.append("")
    if not scs:
        return
    scenario_table(L, scs, runs, kinds)
    both = [sc for sc in scs if any((k, sc["id"]) in sa_runs for k in kinds)]
    if both:
        L.append("Replication cost: the ensemble's figure over the same scenario's on the standalone server of this run "
                 "(throughput: below 1 is slower; p50: above 1 is slower).")
        L.append("")
        hdr, sep = "| scenario |", "| --- |"
        for kind in kinds:
            hdr += " %s ops/s | %s p50 |" % (NAMES[kind], NAMES[kind])
            sep += " ---: | ---: |"
        L.append(hdr)
        L.append(sep)
        for sc in both:
            row = "| %s |" % sc["label"]
            for kind in kinds:
                a, b = runs.get((kind, sc["id"])), sa_runs.get((kind, sc["id"]))
                pa = a["primary"] if a and not problems(a) else None
                pb = b["primary"] if b and not problems(b) else None
                row += " %s | %s |" % (fx(ratio(pa and pa["ops_per_sec"], pb and pb["ops_per_sec"])),
                                       fx(ratio(pa and pa["p50_us"], pb and pb["p50_us"])))
            L.append(row)
        L.append("")


def ms(us):
    if us is None:
        return "–"
    return "%.2f" % (us / 1000.0)


def num(x):
    if x is None:
        return "–"
    if x >= 100:
        return "{:,.0f}".format(x)
    return "%.1f" % x


def ratio(a, b):
    if not a or not b:
        return None
    return a / b


def fx(r):
    return "–" if r is None else "%.2fx" % r


def problems(r):
    """Errors a run had, as text ('' when clean)."""
    if r is None:
        return "not run"
    if "error" in r:
        return r["error"]
    bits = []
    if r.get("total_errors"):
        codes = {}
        for o in r.get("ops", []):
            for c, n in o.get("errors_by_code", {}).items():
                codes[c] = codes.get(c, 0) + n
        bits.append("%d error replies (%s)" % (r["total_errors"], ", ".join("%s: %d" % kv for kv in codes.items())))
    if r.get("connect_errors_total"):
        bits.append("%d failures (%s)" % (r["connect_errors_total"], "; ".join(r.get("connect_errors", {}))))
    if r.get("dropped"):
        bits.append("%d open-loop sends skipped" % r["dropped"])
    if r.get("exit_code") not in (0, None):
        bits.append("bench exit %s" % r["exit_code"])
    if not r.get("primary", {}).get("count"):
        bits.append("no measured ops")
    return "; ".join(bits)


def targets(res, runs):
    """[(target, measured, verdict)]."""
    rk, zk = "ringkeeper", "zookeeper"
    rows = []

    def prim(kind, sid):
        r = runs.get((kind, sid))
        if r is None or problems(r):
            return None
        return r["primary"]

    def clients_of(group):
        return [sc for sc in res["scenarios"] if sc["group"] == group]

    for group, what, need_tp, p99_factor in (
        ("writes", "writes (create, fdatasync before every ack): >= 5x ZooKeeper's throughput at equal or lower p99, 1 to 256 clients", 5.0, 1.0),
        ("reads", "reads (getData): >= 3x ZooKeeper's throughput, p99 at most a third of ZooKeeper's", 3.0, 1 / 3.0),
    ):
        parts, worst_tp, bad_p99, missing = [], None, [], []
        for sc in clients_of(group):
            a, b = prim(rk, sc["id"]), prim(zk, sc["id"])
            if not a or not b:
                missing.append(str(sc["clients"]))
                continue
            t = a["ops_per_sec"] / b["ops_per_sec"]
            p = a["p99_us"] / max(b["p99_us"], 1)
            parts.append("%d: %.2fx, p99 %.2fx" % (sc["clients"], t, p))
            who = "%d client%s" % (sc["clients"], "" if sc["clients"] == 1 else "s")
            worst_tp = t if worst_tp is None else min(worst_tp, t)
            if p > p99_factor:
                bad_p99.append("%s (%.2fx)" % (who, p))
        if worst_tp is None:
            rows.append((what, "no complete pair of runs", "n/a"))
            continue
        measured = "throughput ratio per client count: " + "; ".join(parts)
        if missing:
            measured += " (no clean pair at %s clients)" % ", ".join(missing)
        if worst_tp >= need_tp and not bad_p99 and not missing:
            verdict = "**met** (lowest ratio %.2fx)" % worst_tp
        else:
            why = []
            if worst_tp < need_tp:
                why.append("lowest throughput ratio %.2fx, %.0f%% short of %.0fx" % (worst_tp, 100 * (1 - worst_tp / need_tp), need_tp))
            if bad_p99:
                why.append("p99 ratio over %.2fx at %s" % (p99_factor, ", ".join(bad_p99)))
            if missing:
                why.append("incomplete")
            verdict = "**missed**: " + "; ".join(why)
        rows.append((what, measured, verdict))

    floor = res.get("floor")
    a = prim(rk, "create-c1")
    if floor and a:
        f = a["p50_us"] / floor["p50_us"]
        measured = "ringkeeper create, 1 client: p50 %s ms (mean %s ms) vs bare write+fdatasync of %d B: p50 %s ms (mean %s ms): %.2fx" % (
            ms(a["p50_us"]), ms(a["mean_us"]), floor["record_bytes"], ms(floor["p50_us"]), ms(floor["mean_us"]), f)
        verdict = "**met**" if f <= 1.5 else "**missed** by %.2fx (%.2fx vs <= 1.5x)" % (f / 1.5, f)
        rows.append(("one client, one write at a time: within 1.5x of a bare write+fdatasync of the same size", measured, verdict))
    else:
        rows.append(("one client, one write at a time: within 1.5x of a bare write+fdatasync", "not measured", "n/a"))

    mem = res.get("memory", {})
    mr, mz = mem.get(rk, {}), mem.get(zk, {})
    if mr.get("points") and mz.get("points"):
        pr, pz = mr["points"][-1], mz["points"][-1]
        f = pr["bytes_per_znode_rss"] / max(pz["bytes_per_znode_rss"], 1)
        measured = "after %d znodes, RSS growth per znode: ringkeeper %.0f B, ZooKeeper %.0f B (%.2fx)" % (
            pr["znodes"], pr["bytes_per_znode_rss"], pz["bytes_per_znode_rss"], f)
        if pz.get("bytes_per_znode_heap"):
            fh = pr["bytes_per_znode_rss"] / max(pz["bytes_per_znode_heap"], 1)
            measured += "; against ZooKeeper's live heap after a full GC (%.0f B/znode): %.2fx" % (pz["bytes_per_znode_heap"], fh)
        verdict = "**met** (on RSS)" if f <= 1 / 3 else "**missed** on RSS: %.2fx vs <= 0.33x" % f
        if pz.get("bytes_per_znode_heap"):
            verdict += "; %s against the live heap" % ("met" if fh <= 1 / 3 else "missed (%.2fx)" % fh)
        rows.append(("memory per znode: at most a third of ZooKeeper's", measured, verdict))
        if mr.get("restart_s") and mz.get("restart_s"):
            f = mz["restart_s"] / mr["restart_s"]
            measured = "with %d znodes in the data dir, spawn to first handshake: ringkeeper %.2f s, ZooKeeper %.2f s: %.1fx faster" % (
                mr.get("restart_znodes", 0), mr["restart_s"], mz["restart_s"], f)
            verdict = "**met**" if f >= 10 else "**missed**: %.1fx, %.0f%% short of 10x" % (f, 100 * (1 - f / 10))
            if mr.get("restart_znodes", 0) < 1_000_000:
                verdict += " (not at 1M znodes)"
            rows.append(("restart with 1M znodes: at least 10x faster", measured, verdict))
    else:
        rows.append(("memory per znode / restart time", "not measured", "n/a"))
    return rows


def write(out):
    out = Path(out)
    res, runs = load(out)
    m = res["machine"]
    v = res["versions"]
    kinds = res["servers"]
    L = []
    L.append("# ringkeeper vs Apache ZooKeeper: %s on %s%s" % (res["started"][:10], m["hostname"], " (quick run)" if res.get("quick") else ""))
    L.append("")
    L.append("Made by `%s` (%s, %.0f s). Every figure below was measured in this one run, on this one "
             "machine, one server after the other with the same load generator (`ringkeeper bench`) and the same "
             "parameters. Raw reports: [raw/](raw/); everything in one file: [results.json](results.json)."
             % (res["command"].strip(), res["started"], res.get("elapsed_s", 0)))
    if res.get("quick"):
        L.append("")
        L.append("**Quick run**: few scenarios, %.0f s each, memory and restart at %s znodes only. "
                 "Use it to try the script; the full run (`perf/run.sh`) is the one to quote."
                 % (res["duration_s"], ", ".join(str(p["znodes"]) for p in res.get("memory", {}).get("ringkeeper", {}).get("points", [])) or "no"))
    L.append("")
    L.append("## Targets (issue 3)")
    L.append("")
    L.append("| target | measured | verdict |")
    L.append("| --- | --- | --- |")
    for t, meas, verdict in targets(res, runs):
        L.append("| %s | %s | %s |" % (t, meas, verdict))
    L.append("")
    L.append("## Machine and versions")
    L.append("")
    L.append("- CPU: %s, %s cores (nproc); memory %.1f GiB; kernel %s; %s"
             % (m.get("cpu") or "?", m.get("nproc"), (m.get("mem_total_kib") or 0) / 1048576, m.get("kernel"), m.get("os")))
    L.append("- data dirs on: `%s`; disk: `%s`" % (m.get("data_fs"), m.get("disk")))
    L.append("- ringkeeper %s, %s; Apache ZooKeeper %s (Debian package), %s; Python %s"
             % (v.get("ringkeeper"), v.get("rustc"), v.get("zookeeper"), v.get("java"), v.get("python")))
    L.append("- The load generator runs on the same machine as the server, so both share its %s cores: "
             "at high client counts the bench itself takes CPU from the server (equally for both servers)." % m.get("nproc"))
    L.append("")
    L.append("## How it was run")
    L.append("")
    for kind in kinds:
        cmd = res.get("scenario_runs", {}).get(kind, {}).get("server_command")
        if cmd:
            L.append("- %s: `%s`" % (NAMES[kind], " ".join(cmd)))
            if kind == "zookeeper":
                L.append("  with zoo.cfg: tickTime=2000, maxClientCnxns=0, forceSync=yes, 4lw.commands.whitelist=*, "
                         "admin.enableServer=false, defaults otherwise (snapCount 100000, preAllocSize 64 MiB)")
    if res["scenarios"]:
        L.append("- one fresh server (fresh data dir) per server for the whole scenario set, scenarios in the order below "
                 "(reads first, creates last); another fresh one for memory/restart and for the capacity ramp")
    if res.get("server_warmup_args"):
        L.append("- before the first scenario, each new server gets %g s of unmeasured load: `ringkeeper bench %s --duration %g` "
                 "(so that ZooKeeper's JIT has compiled its hot paths)"
                 % (res["server_warmup_s"], " ".join(res["server_warmup_args"]), res["server_warmup_s"]))
    L.append("- each scenario: `ringkeeper bench --servers 127.0.0.1:PORT --json --quiet ARGS %s --duration %g --warmup %g` "
             "(closed loop, one request in flight per session, 100-byte data; ARGS in each table)"
             % (" ".join(res["common_bench_args"]), res["duration_s"], res["warmup_s"]))
    if res.get("ensemble_scenarios"):
        L.append("- 3-member ensembles (after the standalone servers): one of each server, three processes on this machine "
                 "with fresh data dirs, for a subset of the scenarios, with `--servers` listing all three members: see "
                 "[3-member ensemble](#3-member-ensemble)")
    L.append("")
    fl, fd = res.get("floor"), res.get("floor_direct")
    if fl:
        L.append("## The floor: a bare write + fdatasync on the same disk")
        L.append("")
        L.append("| what | count | p50 ms | p99 ms | p99.9 ms | mean ms |")
        L.append("| --- | ---: | ---: | ---: | ---: | ---: |")
        for f in (fl, fd):
            if f:
                L.append("| %s | %d | %s | %s | %s | %s |" % (f["how"], f["count"], ms(f["p50_us"]), ms(f["p99_us"]), ms(f["p999_us"]), ms(f["mean_us"])))
        L.append("")
    L.append("## Scenarios")
    L.append("")
    L.append("ops/s and latency are the workload's primary op (for mixed: every op; watch: one round, the time from "
             "the setData's send until every watcher has its event; lock: one acquisition, from the create of the "
             "lock node until it is the lowest; churn: one connect + handshake + close). Ratio: ringkeeper / ZooKeeper "
             "throughput; p99 ratio: ringkeeper's p99 / ZooKeeper's (below 1 is better). srv CPU: the server's "
             "CPU seconds per second of the scenario (2.0 = both cores).")
    L.append("")
    if not res["scenarios"]:
        L.append("Standalone servers: not run this time (`--topology %s`)." % ",".join(res.get("topologies", [])))
        L.append("")
    groups = []
    for sc in res["scenarios"]:
        if sc["group"] not in groups:
            groups.append(sc["group"])
    for g in groups:
        L.append("### %s" % g)
        L.append("")
        scenario_table(L, [s for s in res["scenarios"] if s["group"] == g], runs, kinds)
    if res.get("ensemble_scenarios") or res.get("ensemble_runs"):
        ensemble_section(L, res, load_ensemble(out, res), runs)
    mem = res.get("memory", {})
    if mem:
        L.append("## Memory and restart")
        L.append("")
        L.append("RSS is VmRSS of the server process (/proc/PID/status) 2 s after the bench created the znodes "
                 "(100 bytes of data each, all children of one parent, 64 sessions x 16 in flight); bytes per znode = "
                 "(RSS - RSS of the same server empty) / znodes. ZooKeeper's RSS depends on the JVM heap it was given "
                 "(-Xms%s -Xmx%s: pages of the heap count once touched, garbage included), so its live heap after a full "
                 "GC (`jcmd GC.run` + `GC.heap_info`, where jcmd exists) is shown too. Restart: SIGTERM, wait for exit, "
                 "then spawn to the first successful handshake." % (res.get("zk_heap"), res.get("zk_heap")))
        L.append("")
        L.append("| server | znodes | create ops/s | RSS MiB | B/znode (RSS) | live heap MiB | B/znode (heap) | data dir MiB |")
        L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for kind in kinds:
            mk = mem.get(kind, {})
            if "error" in mk:
                L.append("| %s | **failed**: %s | | | | | | |" % (NAMES[kind], mk["error"].splitlines()[0]))
                continue
            L.append("| %s | 0 | – | %.1f | – | %s | – | – |" % (
                NAMES[kind], mk.get("rss_empty_kib", 0) / 1024,
                "%.1f" % (mk["live_heap_empty_kib"] / 1024) if mk.get("live_heap_empty_kib") else "–"))
            for p in mk.get("points", []):
                L.append("| %s | %d | %s | %.1f | %.0f | %s | %s | %.1f |" % (
                    NAMES[kind], p["znodes"], num(p["create_ops_per_sec"]), p["rss_kib"] / 1024, p["bytes_per_znode_rss"],
                    "%.1f" % (p["live_heap_kib"] / 1024) if p.get("live_heap_kib") else "–",
                    "%.0f" % p["bytes_per_znode_heap"] if p.get("bytes_per_znode_heap") else "–",
                    p["data_dir_bytes"] / 1048576))
        L.append("")
        L.append("| server | znodes in the data dir | clean stop s | restart s (spawn to first handshake) | RSS after restart MiB | znodes after restart (mntr) |")
        L.append("| --- | ---: | ---: | ---: | ---: | ---: |")
        for kind in kinds:
            mk = mem.get(kind, {})
            if mk.get("restart_s") is not None:
                L.append("| %s | %d | %.2f | %.2f | %.1f | %s |" % (
                    NAMES[kind], mk["restart_znodes"], mk["stop_s"], mk["restart_s"], mk["rss_after_restart_kib"] / 1024,
                    mk.get("znode_count_after_restart")))
        L.append("")
    cap = res.get("capacity")
    if cap:
        L.append("## Capacity: highest open-loop rate within the SLO")
        L.append("")
        L.append("`perf/capacity.py --slo-p99-ms %g -- %s`: open loop (`--rate`, latency from each request's intended "
                 "start), a step meets the SLO when p99 <= %g ms, the achieved rate is >= 95%% of the offered one and "
                 "nothing failed; a rate that misses is tried twice; the rate doubles until one misses, then bisects. Each server is fresh, "
                 "warmed up for %g s first, and each step is one short run: a single noisy step moves the result."
                 % (cap["slo_p99_ms"], " ".join(cap["mix"]), cap["slo_p99_ms"], cap.get("server_warmup", {}).get("seconds", 0)))
        L.append("")
        L.append("| server | highest rate meeting the SLO | first rate that missed | steps (offered/s: p99 ms) |")
        L.append("| --- | ---: | ---: | --- |")
        for kind, c in cap["servers"].items():
            if "error" in c:
                L.append("| %s | **failed** | | %s |" % (NAMES.get(kind, kind), c["error"].splitlines()[0]))
                continue
            steps = ", ".join("%.0f%s: %s%s" % (s["rate"], " again" if s.get("retry") else "", ms(s["p99_us"]), "" if s["ok"] else " ✗")
                              for s in c["steps"])
            L.append("| %s | %s | %s | %s |" % (NAMES.get(kind, kind), num(c["best_rate"]), num(c["first_missed"]) if c["first_missed"] else "none", steps))
        L.append("")
    plots = sorted((out / "plots").glob("*.png")) if (out / "plots").exists() else []
    if plots:
        L.append("## Plots")
        L.append("")
        for p in plots:
            L.append("![%s](plots/%s)" % (p.stem, p.name))
            L.append("")
    L.append("## What is approximate")
    L.append("")
    L.append("- One run per scenario on a shared machine: expect run-to-run noise of 10-20%, more in p99.9 of short runs.")
    L.append("- Client and server share the cores; on a machine with few cores the bench's own CPU use limits both servers.")
    L.append("- Anything else running on the machine (a build, another benchmark) shows up in whichever server was being "
             "measured at the time, mostly as p99 spikes; ringkeeper pins one shard per core, so a bench or other thread "
             "preempting a shard stalls that shard's connections.")
    if res.get("ensemble_scenarios"):
        L.append("- 3-member ensembles: three servers and the bench on %s cores measure how well each shares a small machine "
                 "as much as replication itself; the members replicate over loopback, so network latency is absent, and "
                 "all three fsync to the same disk." % m.get("nproc"))
    if res.get("quick"):
        L.append("- Quick run: %g s per scenario, so p99.9 and beyond rest on a handful of samples." % res["duration_s"])
    L.append("- The floor is measured from Python (a few µs of interpreter time per iteration) with a preallocated file; "
             "ringkeeper's log writes O_DIRECT 4 KiB blocks, so both variants are shown; the target uses the first.")
    L.append("- ZooKeeper's memory depends on its heap settings and GC; RSS and live heap bracket it.")
    L.append("- Watch fan-out and lock latencies include the bench's own scheduling of hundreds of sessions on %s cores."
             % m.get("nproc"))
    L.append("")
    (out / "report.md").write_text("\n".join(L))
    return out / "report.md"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        import plots

        plots.write(sys.argv[1])
    except ImportError:
        pass
    print(write(sys.argv[1]))
