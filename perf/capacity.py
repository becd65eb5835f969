#!/usr/bin/env python3
"""Capacity planning: the highest open-loop rate that meets a latency SLO.

Given an op mix (the bench's workload flags, after `--`) and an SLO on p99 latency, ramps the
offered rate (`ringkeeper bench --rate R`: requests sent on a fixed schedule, latency measured
from each request's intended start, so queueing is not hidden) and reports the highest rate
that met the SLO, for each server:

    .venv/bin/python perf/capacity.py --slo-p99-ms 5 -- --workload mixed --read-ratio 0.9 --sessions 64

A step meets the SLO when the primary op's p99 is at most the SLO, the achieved rate is at
least 95% of the offered one, and nothing failed (no error replies, no connection failures, no
sends skipped for too much in flight); a rate that misses is tried a second time and misses only
if that misses too (p99 near saturation is noisy on a small machine). The ramp doubles the rate
from --start-rate until a rate misses, then bisects between the last rate that met and the first that missed, for at most
--max-steps steps per server (bounded time: about max-steps x (step + warm-up + 1) seconds).

Servers: by default each of --servers is started here on a fresh data dir (see servers.py for
their settings) and stopped after its ramp; --target HOST:PORT ramps an already running server
instead.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import servers as S  # noqa: E402


def step_ok(r, rate, slo_us):
    """(meets the SLO, why not)."""
    bad = S.failed(r)
    if bad:
        return False, bad
    p = r["primary"]
    if r.get("dropped"):
        return False, "%d sends skipped" % r["dropped"]
    if p["ops_per_sec"] < 0.95 * rate:
        return False, "achieved %.0f/s" % p["ops_per_sec"]
    if p["p99_us"] > slo_us:
        return False, "p99 %.2f ms" % (p["p99_us"] / 1000)
    return True, ""


def ramp(addr, mix, slo_ms, raw_dir, step_s=4.0, warmup_s=1.0, max_steps=12, start_rate=2000.0,
         precision=0.05, log=print, label="", confirm=True):
    """Ramps one server; returns {"best_rate", "steps": [...]}. With `confirm`, a rate misses
    only if a second try misses too (a single p99 near saturation is noisy); both tries count
    as steps."""
    slo_us = slo_ms * 1000
    raw_dir = Path(raw_dir)
    steps = []
    good, bad = 0.0, None
    rate = float(start_rate)
    retry = False
    while len(steps) < max_steps:
        args = list(mix) + ["--rate", "%.0f" % rate, "--duration", str(step_s), "--warmup", str(warmup_s)]
        name = "rate-%d%s.json" % (rate, "-retry" if retry else "")
        r = S.run_bench(addr, args, raw_dir / name, timeout=step_s + warmup_s + 120)
        ok, why = step_ok(r, rate, slo_us)
        p = r.get("primary", {})
        steps.append({
            "rate": rate,
            "ok": ok,
            "why": why,
            "achieved": p.get("ops_per_sec"),
            "p50_us": p.get("p50_us"),
            "p99_us": p.get("p99_us"),
            "p999_us": p.get("p999_us"),
        })
        log("%-10s capacity: offered %8.0f/s achieved %8.0f/s p99 %7.2f ms  %s%s"
            % (label, rate, p.get("ops_per_sec") or 0, (p.get("p99_us") or 0) / 1000,
               "meets" if ok else "MISSES (%s)" % why, " (second try)" if retry else ""))
        steps[-1]["retry"] = retry
        if not ok and confirm and not retry and len(steps) < max_steps:
            retry = True
            continue
        retry = False
        if ok:
            good = max(good, rate)
        else:
            bad = rate if bad is None else min(bad, rate)
        if bad is None:
            rate *= 2
        else:
            if bad - good <= precision * max(good, 1.0):
                break
            rate = (good + bad) / 2 if good else bad / 4
            if good == 0 and rate < 50:
                break
    return {"best_rate": good, "first_missed": bad, "steps": steps}


def ramp_all(kinds, mix, slo_ms, workdir, raw_dir, log=print, server_warmup=None, **kw):
    """Starts each server in turn on a fresh data dir, warms it up with unmeasured closed-loop
    load (server_warmup: (bench args, seconds); default: the mix itself for 5 s) and ramps it."""
    out = {"mix": list(mix), "slo_p99_ms": slo_ms, "servers": {}}
    warm_args, warm_s = server_warmup or (list(mix) + ["--warmup", "0"], 5.0)
    out["server_warmup"] = {"args": list(warm_args), "seconds": warm_s}
    for kind in kinds:
        srv = S.Server(kind, workdir, "capacity")
        try:
            srv.start()
            if warm_s > 0:
                S.run_bench(srv.addr, list(warm_args) + ["--duration", str(warm_s)],
                            Path(raw_dir) / kind / "server-warmup.json", timeout=warm_s + 120)
            out["servers"][kind] = ramp(srv.addr, mix, slo_ms, Path(raw_dir) / kind, log=log, label=kind, **kw)
        except RuntimeError as e:
            log("!!! capacity ramp failed for %s: %s" % (kind, e))
            out["servers"][kind] = {"error": str(e)}
        finally:
            srv.destroy()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slo-p99-ms", type=float, required=True)
    ap.add_argument("--servers", default="ringkeeper,zookeeper")
    ap.add_argument("--target", help="ramp this running server (host:port) instead of starting any")
    ap.add_argument("--step-seconds", type=float, default=4.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--max-steps", type=int, default=12)
    ap.add_argument("--no-confirm", action="store_true", help="a single missing step counts (no second try)")
    ap.add_argument("--start-rate", type=float, default=2000)
    ap.add_argument("--server-warmup", type=float, default=5.0,
                    help="seconds of unmeasured closed-loop load of the mix on each new server first")
    ap.add_argument("--out", help="write the summary JSON here (raw step reports beside it)")
    ap.add_argument("mix", nargs=argparse.REMAINDER, help="-- then the bench's workload flags")
    a = ap.parse_args()
    mix = a.mix[1:] if a.mix[:1] == ["--"] else a.mix
    if not mix:
        mix = ["--workload", "mixed", "--read-ratio", "0.9", "--sessions", "64"]
    if "--threads" not in mix:
        mix += ["--threads", "2"]
    kw = dict(step_s=a.step_seconds, warmup_s=a.warmup, max_steps=a.max_steps, start_rate=a.start_rate,
              confirm=not a.no_confirm)
    warm = (list(mix) + ["--warmup", "0"], a.server_warmup)
    work = Path(tempfile.mkdtemp(prefix="rk-capacity-"))
    raw = Path(a.out).with_suffix("") if a.out else work / "raw"
    if a.target:
        res = {"mix": mix, "slo_p99_ms": a.slo_p99_ms, "servers": {a.target: ramp(a.target, mix, a.slo_p99_ms, raw, label=a.target, **kw)}}
    else:
        res = ramp_all([k.strip() for k in a.servers.split(",") if k.strip()], mix, a.slo_p99_ms, work, raw,
                       server_warmup=warm, **kw)
    print()
    print("highest open-loop rate with p99 <= %g ms for `%s`:" % (a.slo_p99_ms, " ".join(mix)))
    for name, r in res["servers"].items():
        if "error" in r:
            print("  %-12s FAILED: %s" % (name, r["error"]))
        else:
            print("  %-12s %.0f ops/s (first rate that missed: %s)"
                  % (name, r["best_rate"], "%.0f" % r["first_missed"] if r["first_missed"] else "none reached"))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    import shutil

    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
