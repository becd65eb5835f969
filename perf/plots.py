#!/usr/bin/env python3
"""Plots for a results dir made by perf/perf.py, as PNG and SVG under its plots/:

- throughput-writes / throughput-reads: ops/s and p99 against the number of clients;
- ensemble3-throughput-writes / -setData: the same for 3-member ensembles;
- latency-cdf: latency against percentile (log "nines" axis) for a few scenarios;
- capacity: p99 against the offered open-loop rate, with the SLO.

    .venv/bin/python perf/plots.py perf/results/<dir>
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator  # noqa: E402

STYLE = {
    "ringkeeper": {"color": "#c0392b", "marker": "o", "label": "ringkeeper"},
    "zookeeper": {"color": "#2c3e50", "marker": "s", "label": "ZooKeeper 3.8"},
}
CDF_SCENARIOS = ["create-c1", "create-c64", "get-c64", "mixed-c64", "watch-w100", "lock-c16"]


def _load(out, key="scenarios", sub=""):
    """(results.json, {(kind, scenario id): bench report}) for the scenarios under `key`
    (raw/[sub/]KIND/ID.json)."""
    res = json.loads((out / "results.json").read_text())
    runs = {}
    for kind in res.get("servers", []):
        for sc in res.get(key, []):
            f = out / "raw" / sub / kind / (sc["id"] + ".json")
            if f.exists():
                r = json.loads(f.read_text())
                if r.get("primary", {}).get("count"):
                    runs[(kind, sc["id"])] = r
    return res, runs


def _log_ms_axis(axis):
    """A log latency axis labelled 1-2-5 in plain numbers (readable within one decade too)."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: "%g" % v))


def _save(fig, out, name):
    for ext in ("png", "svg"):
        fig.savefig(out / "plots" / ("%s.%s" % (name, ext)), dpi=110, bbox_inches="tight")
    plt.close(fig)


def throughput(res, runs, out, group, title, scenarios=None, name=None):
    scs = [sc for sc in (res["scenarios"] if scenarios is None else scenarios) if sc["group"] == group]
    if len(scs) < 2:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for kind in res["servers"]:
        pts = [(sc["clients"], runs[(kind, sc["id"])]["primary"]) for sc in scs if (kind, sc["id"]) in runs]
        if not pts:
            continue
        xs = [c for c, _ in pts]
        st = STYLE[kind]
        ax1.plot(xs, [p["ops_per_sec"] for _, p in pts], marker=st["marker"], color=st["color"], label=st["label"])
        ax2.plot(xs, [p["p99_us"] / 1000 for _, p in pts], marker=st["marker"], color=st["color"], label=st["label"] + " p99")
        ax2.plot(xs, [p["p50_us"] / 1000 for _, p in pts], marker=st["marker"], color=st["color"], linestyle=":",
                 alpha=0.7, label=st["label"] + " p50")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("clients (sessions, 1 request in flight each)")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: "%d" % v))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax1.set_ylabel("ops/s")
    ax1.set_ylim(bottom=0)
    ax1.set_title("%s: throughput" % title)
    ax2.set_yscale("log")
    _log_ms_axis(ax2.yaxis)
    ax2.set_ylabel("latency, ms")
    ax2.set_title("%s: latency" % title)
    _save(fig, out, name or "throughput-%s" % group)


def _nines(p):
    """Percentile -> x position: 1/(1 - p) on a log axis (50% -> 2, 99% -> 100, ...)."""
    return 1.0 / max(1.0 - p / 100.0, 1e-6)


def cdfs(res, runs, out):
    ids = [s for s in CDF_SCENARIOS if any((k, s) in runs for k in res["servers"])]
    if not ids:
        return
    labels = {sc["id"]: sc["label"] for sc in res["scenarios"]}
    cols = 3 if len(ids) > 2 else len(ids)
    rows = (len(ids) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    ticks = [50, 90, 99, 99.9, 99.99, 99.999]
    for ax, sid in zip([a for row in axes for a in row], ids):
        for kind in res["servers"]:
            r = runs.get((kind, sid))
            if not r or not r["primary"].get("cdf"):
                continue
            pts = [(p, us) for p, us in r["primary"]["cdf"] if p < 100]
            st = STYLE[kind]
            ax.plot([_nines(p) for p, _ in pts], [us / 1000 for _, us in pts], color=st["color"], label=st["label"])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks([_nines(t) for t in ticks])
        ax.set_xticklabels(["%g%%" % t for t in ticks], fontsize=8)
        ax.minorticks_off()
        _log_ms_axis(ax.yaxis)
        ax.set_xlim(1, _nines(99.999))
        ax.set_xlabel("percentile")
        ax.set_ylabel("latency, ms")
        ax.set_title(labels.get(sid, sid), fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    for ax in [a for row in axes for a in row][len(ids):]:
        ax.axis("off")
    fig.suptitle("latency by percentile (closed loop; lower is better)")
    fig.tight_layout()
    _save(fig, out, "latency-cdf")


def capacity(res, out):
    cap = res.get("capacity")
    if not cap:
        return
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for kind, c in cap["servers"].items():
        steps = sorted((s for s in c.get("steps", []) if s.get("p99_us")), key=lambda s: s["rate"])
        if not steps:
            continue
        st = STYLE.get(kind, {"color": None, "marker": "x", "label": kind})
        ax.plot([s["rate"] for s in steps], [s["p99_us"] / 1000 for s in steps], marker=st["marker"], color=st["color"],
                label="%s (best %.0f/s)" % (st["label"], c["best_rate"]))
    ax.axhline(cap["slo_p99_ms"], color="gray", linestyle="--", label="SLO p99 %g ms" % cap["slo_p99_ms"])
    ax.set_xlim(left=0)
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: "{:,.0f}".format(v)))
    _log_ms_axis(ax.yaxis)
    ax.set_xlabel("offered rate, ops/s (open loop)")
    ax.set_ylabel("p99 latency, ms")
    mix, skip = [], 0
    for a in cap["mix"]:
        if skip:
            skip -= 1
        elif a in ("--threads", "--data-size"):
            skip = 1
        else:
            mix.append(a)
    ax.set_title("capacity: " + " ".join(mix), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, out, "capacity")


def write(out):
    out = Path(out)
    (out / "plots").mkdir(exist_ok=True)
    res, runs = _load(out)
    throughput(res, runs, out, "writes", "create")
    throughput(res, runs, out, "reads", "getData")
    if res.get("ensemble_scenarios"):
        _, eruns = _load(out, "ensemble_scenarios", "ensemble3")
        for group, title in (("writes", "create"), ("setData", "setData")):
            throughput(res, eruns, out, group, "3-member ensemble, %s" % title, res["ensemble_scenarios"],
                       "ensemble3-throughput-%s" % group)
    cdfs(res, runs, out)
    capacity(res, out)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    write(sys.argv[1])
