#!/usr/bin/env python3
"""Summarise a bench/run.sh run: median per case, side by side with SPDK's figures.

usage: summarize.py RAW_DIR OUT_PREFIX RUNTIME REPEAT
Writes OUT_PREFIX.md, OUT_PREFIX.json and OUT_PREFIX-latency.png (if matplotlib).
"""
import glob
import json
import os
import statistics
import sys

# SPDK v26.05 nvmf_tgt + spdk_nvme_perf on this machine kind, one core each,
# loopback, medians of 6 runs (+-15 %). Copied from /work/shared/bench/reference.md.
# "mem" = Malloc bdev (compare with our memory namespace), "null" = Null bdev
# (the transport's ceiling). Values: (IOPS, MiB/s, mean us, p50 us, p99 us).
SPDK = {
    "randread-4k-qd1": {"null": (35900, 140, 27.9, 26.2, 82)},
    "randread-4k-qd32": {"null": (322000, 1259, 99, 92, 218)},
    "randread-4k-qd128": {"mem": (328000, 1282, 390, None, 784),
                          "null": (368000, 1437, 348, 347, 565)},
    "randwrite-4k-qd128": {"null": (409000, 1599, 313, 299, 662)},
    "read-128k-qd16": {"mem": (18000, 2254, 894, None, 1789),
                       "null": (26100, 3265, 616, 555, 1271)},
    "write-128k-qd16": {"null": (28100, 3518, 573, 507, 1338)},
    # Header + data digest, Null bdev.
    "digest-randread-4k-qd128": {"null": (276000, None, None, None, None)},
    "digest-read-128k-qd16": {"null": (None, 2248, None, None, None)},
    "digest-write-128k-qd16": {"null": (None, 2285, None, None, None)},
}


def load(raw):
    cases = {}
    for path in sorted(glob.glob(os.path.join(raw, "*.json"))):
        base = os.path.basename(path)[: -len(".json")]
        if base.count(".") != 1 or not base.rsplit(".", 1)[1].isdigit():
            continue  # prefill-PORT.json and the like
        name, rep = base.rsplit(".", 1)
        try:
            with open(path) as f:
                d = json.load(f)
        except (OSError, ValueError):
            continue
        ticks = os.path.join(raw, f"{name}.{rep}.target-ticks")
        try:
            with open(ticks) as f:
                d["target_cpu_s"] = int(f.read().strip() or 0) / 100.0
        except (OSError, ValueError):
            d["target_cpu_s"] = None
        cases.setdefault(name, []).append(d)
    return cases


def median_run(runs):
    runs = sorted(runs, key=lambda d: d["total"]["iops"])
    return runs[(len(runs) - 1) // 2]


def fmt(v, digits=0):
    if v is None:
        return "—"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def main():
    raw, prefix, runtime, repeat = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    cases = load(raw)
    order = []
    for path in sorted(glob.glob(os.path.join(raw, "*.err"))):
        n = os.path.basename(path).rsplit(".", 2)[0]
        if n not in order:
            order.append(n)
    # Keep the matrix order of run.sh (file mtimes).
    order.sort(key=lambda n: min(os.path.getmtime(p) for p in glob.glob(os.path.join(raw, f"{n}.*.err"))))
    summary = {}
    for name in order:
        runs = cases.get(name)
        if not runs:
            summary[name] = None
            continue
        m = median_run(runs)
        t = m["total"]
        secs = m["runtime_s"] or 1
        tcpu = m.get("target_cpu_s")
        summary[name] = {
            "runs": len(runs),
            "iops_all_runs": [r["total"]["iops"] for r in runs],
            "iops": t["iops"],
            "mib_s": t["mib_s"],
            "lat_us": t["lat_us"],
            "host_cpu_pct": m["cpu"]["percent_of_one_core"],
            "target_cpu_pct": round(tcpu / secs * 100, 1) if tcpu is not None else None,
            # CPU time per I/O is far less sensitive to other load than IOPS is.
            "host_cpu_us_per_io": m["cpu"]["us_per_io"],
            "target_cpu_us_per_io": round(tcpu * 1e6 / max(t["ios"], 1), 2) if tcpu is not None else None,
            "spdk": {k: dict(zip(["iops", "mib_s", "mean_us", "p50_us", "p99_us"], v))
                     for k, v in SPDK.get(name, {}).items()},
        }
    with open(os.path.join(raw, "uptime-before.txt")) as f:
        load_before = f.read().strip()
    try:
        with open(os.path.join(raw, "uptime-after.txt")) as f:
            load_after = f.read().strip()
    except OSError:
        load_after = ""

    try:
        with open(os.path.join(raw, "options.txt")) as f:
            options = [l.strip() for l in f if l.strip()]
    except OSError:
        options = []
    with open(prefix + ".json", "w") as f:
        json.dump({"runtime_s": float(runtime), "repeat": int(repeat), "options": options, "load_before": load_before,
                   "load_after": load_after, "cases": summary}, f, indent=2)

    null_ns = "namespace: null" in options
    lines = [
        f"# nvmf-rs benchmark {os.path.basename(prefix)}",
        "",
        "Options: " + "; ".join(f"`{o}`" for o in options) if options else "Options: none recorded",
        "",
        f"bench/run.sh: target `--memory 1G` (or `--null 1G`, see Options) `--threads 1` pinned to CPU 0, `nvmf perf` pinned to CPU 1 "
        f"(scaling cases: target `--threads 2` and perf `--numjobs 2`, unpinned); loopback; "
        f"{runtime} s per run, median of {repeat} run(s) by IOPS.",
        "",
        f"- {load_before}",
        f"- {load_after}",
        "",
        "SPDK columns: /work/shared/bench/reference.md (SPDK v26.05, same machine kind); "
        "`mem` = Malloc bdev (comparable with our memory namespace), `null` = Null bdev "
        "(transport ceiling). Their runs vary ±30 %. SPDK polls, so its CPU per I/O is not "
        "comparable by %; the reference gives about 2.7 µs of CPU per I/O per side at 4 KiB QD128.",
        "",
        "| case | IOPS | MiB/s | mean µs | p50 µs | p99 µs | p99.9 µs | max µs | host CPU % | target CPU % | host CPU µs/IO | target CPU µs/IO | SPDK IOPS | SPDK MiB/s | SPDK mean µs | SPDK p99 µs | ours / SPDK |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in order:
        s = summary[name]
        if s is None:
            lines.append(f"| {name} | failed | | | | | | | | | | | | | | | |")
            continue
        if null_ns:
            ref, kind = s["spdk"].get("null") or {}, "null"
        else:
            ref = s["spdk"].get("mem") or s["spdk"].get("null") or {}
            kind = "mem" if "mem" in s["spdk"] else ("null" if s["spdk"] else "")
        ratio = ""
        if ref.get("iops"):
            ratio = f"{s['iops'] / ref['iops']:.2f} ({kind})"
        elif ref.get("mib_s"):
            ratio = f"{s['mib_s'] / ref['mib_s']:.2f} ({kind}, MiB/s)"
        l = s["lat_us"]
        lines.append(
            f"| {name} | {fmt(s['iops'])} | {fmt(s['mib_s'], 1)} | {fmt(l['mean'], 1)} | {fmt(l['p50'], 1)} | "
            f"{fmt(l['p99'], 1)} | {fmt(l['p99_9'], 1)} | {fmt(l['max'], 1)} | {fmt(s['host_cpu_pct'])} | "
            f"{fmt(s['target_cpu_pct'])} | {fmt(s['host_cpu_us_per_io'], 1)} | {fmt(s['target_cpu_us_per_io'], 1)} | {fmt(ref.get('iops'))} | {fmt(ref.get('mib_s'))} | "
            f"{fmt(ref.get('mean_us'), 1)} | {fmt(ref.get('p99_us'))} | {ratio} |"
        )
    lines.append("")
    png = prefix + "-latency.png"
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = [n for n in order if summary[n]]
        pcts = ["p50", "p99", "p99_9", "max"]
        fig, ax = plt.subplots(figsize=(12, 5))
        width = 0.2
        for i, p in enumerate(pcts):
            xs = [j + i * width for j in range(len(names))]
            ax.bar(xs, [summary[n]["lat_us"][p] for n in names], width, label=p)
        ax.set_yscale("log")
        ax.set_ylabel("latency, µs (log)")
        ax.set_xticks([j + 1.5 * width for j in range(len(names))])
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
        ax.legend()
        ax.set_title("nvmf-rs loopback latency percentiles")
        fig.tight_layout()
        fig.savefig(png, dpi=100)
        lines.append(f"![latency percentiles]({os.path.basename(png)})")
        lines.append("")
    except Exception as e:  # noqa: BLE001 - the plot is optional
        print(f"skipping the plot: {e}", file=sys.stderr)
    with open(prefix + ".md", "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
