#!/usr/bin/env bash
# bench/clients.sh -- does `nvmf perf` drive our target as hard as the Linux
# kernel's NVMe/TCP host does?  (A benchmark, not a test: not in CI, not in
# tests/interop/run.sh's `all`.)
#
# Builds the release `nvmf`, boots one QEMU guest with tests/interop/run-vm.sh
# (--with-fio, --smp 2, TCG on this kind of machine) and runs
# tests/interop/guest/perf-clients.sh in it: our `nvmf target --memory`, pinned to
# vCPU 1 with one worker thread, serving the guest's loopback, driven in
# interleaved rounds by the kernel host (`nvme connect -i 1` + fio libaio and
# io_uring, direct=1) and by `nvmf perf` (one I/O queue), both on vCPU 0.
# Everything -- both clients and the target -- runs inside the same emulated
# guest, so only the comparison between the clients means something, not the
# absolute figures.
#
# Environment:
#   CLIENTS_RUNTIME  seconds per run (default 6; the CPU window is 2 s .. runtime-1 s)
#   CLIENTS_ROUNDS   rounds (default 3)
#   CLIENTS_CASES    default "randread-4k-qd32 randread-4k-qd128 read-128k-qd16"
#   CLIENTS_CLIENTS  default "kernel-libaio kernel-io_uring kernel-io_uring-batch nvmf-perf nvmf-perf-sqfc"
#                    (see tests/interop/guest/perf-clients.sh)
#   CLIENTS_APPEND   guest kernel command line additions (run-vm.sh --append; default
#                    "clocksource=tsc tsc=reliable": the 6.1 guest otherwise marks the TCG TSC
#                    unstable and reads the clock from the HPET, an MMIO exit to QEMU per read,
#                    which made every clock read in fio, blk-mq and nvmf perf an emulation cost;
#                    set it to " " for the default clocksource)
#   CLIENTS_VM_ARGS  more run-vm.sh arguments (e.g. "--kernel backports")
#   NVMF             nvmf binary to use (default: cargo build --release -p nvmf-cli)
#
# Output: bench/results/clients-<date>.md (the table, medians of the rounds) and
# .json (every round); the guest's raw files in bench/results/clients-<date>.raw/.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
STAMP=$(date +%Y-%m-%d-%H%M%S)
OUT=$ROOT/bench/results
RAW=$OUT/clients-$STAMP.raw
mkdir -p "$RAW"

RUNTIME=${CLIENTS_RUNTIME:-6}
CLIENTS_APPEND=${CLIENTS_APPEND-"clocksource=tsc tsc=reliable"}
ROUNDS=${CLIENTS_ROUNDS:-3}
CASES=${CLIENTS_CASES:-"randread-4k-qd32 randread-4k-qd128 read-128k-qd16"}
CLIENTS=${CLIENTS_CLIENTS:-"kernel-libaio kernel-io_uring kernel-io_uring-batch nvmf-perf nvmf-perf-sqfc"}

t_start=$EPOCHREALTIME
# what the binary is built from (other work may have uncommitted changes in crates/)
SRC="commit $(git rev-parse --short HEAD)"
dirty=$(git status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null | wc -l)
[[ $dirty == 0 ]] || SRC="$SRC + $dirty uncommitted file(s) in crates/ or Cargo.*"
if [[ -z ${NVMF:-} ]]; then
    echo "clients: cargo build --release -p nvmf-cli" >&2
    cargo build --release -p nvmf-cli >&2
    NVMF=$ROOT/target/release/nvmf
fi
[[ -x $NVMF ]] || { echo "clients: no executable $NVMF" >&2; exit 1; }

echo "clients: host load before: $(uptime)" | tee "$RAW/host-load.txt" >&2
set +e
# shellcheck disable=SC2086
"$ROOT/tests/interop/run-vm.sh" --no-target --no-ublk --with-fio --smp 2 --timeout 1200 \
    --share "$RAW" --extra "$NVMF" --script "$ROOT/tests/interop/guest/perf-clients.sh" \
    --env "PC_RUNTIME=$RUNTIME" --env "PC_ROUNDS=$ROUNDS" \
    --env "PC_CASES=$CASES" --env "PC_CLIENTS=$CLIENTS" \
    ${CLIENTS_APPEND:+--append "$CLIENTS_APPEND"} ${CLIENTS_VM_ARGS:-} >"$RAW/run-vm.log" 2>&1
vm_rc=$?
set -e
echo "clients: host load after: $(uptime)" | tee -a "$RAW/host-load.txt" >&2
grep -E '^(PASS|FAIL|SKIP):|^=== |^--- |"iops"|run-vm: (accel|PASS|FAIL)' "$RAW/run-vm.log" >&2 || true
[[ -f $RAW/perf-clients.tar ]] || { echo "clients: the guest copied nothing back (run-vm rc=$vm_rc); see $RAW/run-vm.log" >&2; exit 1; }
tar -xf "$RAW/perf-clients.tar" -C "$RAW"
elapsed=$(awk -v a="$t_start" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.0f", b-a}')

python3 - "$RAW/perf-clients" "$OUT/clients-$STAMP" "$elapsed" "$vm_rc" "$RAW/run-vm.log" "$SRC" <<'EOF'
import json, os, re, statistics, sys

raw, out, elapsed, vm_rc, vmlog, src = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
HZ = 100.0

env = {}
for line in open(os.path.join(raw, "env.txt")):
    k, _, v = line.rstrip("\n").partition("=")
    env[k] = v
cases = env["cases"].split()
clients = env["clients"].split()
rounds = int(env["rounds"])
pinned = int(env["vcpus"]) >= 2
CLI_CPU, TGT_CPU = ("cpu0", "cpu1") if pinned else ("cpu", "cpu")

def snap(path):
    s = {}
    for line in open(path):
        f = line.split()
        if not f:
            continue
        if f[0] == "uptime":
            s["t"] = float(f[1])
        elif f[0] == "target":
            rest = line[line.rfind(")") + 2:].split()      # from field 3 (state)
            s["target"] = (int(rest[11]) + int(rest[12])) / HZ
        elif f[0].startswith("cpu"):
            v = [int(x) for x in f[1:]]
            total = sum(v[:8])                              # user..steal
            s[f[0]] = (total - v[3] - v[4]) / HZ            # busy = not idle, not iowait
        elif f[0] == "ctxt":
            s["ctxt"] = int(f[1])
        elif f[0] == "disk":
            s["disk_ios"] = int(f[1]) + int(f[5])
    return s

def client_report(cl, path):
    j = json.load(open(path))
    if cl.startswith("nvmf-perf"):
        t = j["total"]
        return dict(iops=t["iops"], mib_s=t["mib_s"], ios=t["ios"], secs=j["runtime_s"],
                    proc_cpu=j["cpu"]["user_s"] + j["cpu"]["sys_s"], lat_p50=t["lat_us"]["p50"],
                    lat_mean=t["lat_us"]["mean"])
    job = j["jobs"][0]
    ios = job["read"]["total_ios"] + job["write"]["total_ios"]
    iops = job["read"]["iops"] + job["write"]["iops"]
    bw = job["read"]["bw_bytes"] + job["write"]["bw_bytes"]
    secs = job["job_runtime"] / 1000.0
    lat = job["read"]["clat_ns"] if job["read"]["total_ios"] else job["write"]["clat_ns"]
    return dict(iops=iops, mib_s=bw / 1048576.0, ios=ios, secs=secs,
                proc_cpu=(job["usr_cpu"] + job["sys_cpu"]) / 100.0 * secs,
                lat_p50=lat.get("percentile", {}).get("50.000000", 0) / 1000.0,
                lat_mean=lat["mean"] / 1000.0)

runs, missing = [], []
for case in cases:
    for cl in clients:
        for r in range(1, rounds + 1):
            n = os.path.join(raw, f"{cl}.{case}.{r}")
            try:
                c = client_report(cl, n + ".json")
                a0, a, b, b0 = (snap(n + x) for x in (".a0", ".a", ".b", ".b0"))
            except Exception as e:                           # a failed run: leave it out
                missing.append(f"{cl} {case} round {r}: {e}")
                continue
            win = b["t"] - a["t"]
            win_ios = c["iops"] * win                        # steady state: client's mean rate
            row = dict(case=case, client=cl, round=r, **c, window_s=round(win, 2))
            row["tgt_pct"] = 100 * (b["target"] - a["target"]) / win
            row["tgt_us_io"] = 1e6 * (b["target"] - a["target"]) / win_ios
            row["tgt_us_io_whole"] = 1e6 * (b0["target"] - a0["target"]) / c["ios"]
            row["tgt_vcpu_pct"] = 100 * (b[TGT_CPU] - a[TGT_CPU]) / win
            row["cli_vcpu_pct"] = 100 * (b[CLI_CPU] - a[CLI_CPU]) / win
            row["cli_vcpu_us_io"] = 1e6 * (b[CLI_CPU] - a[CLI_CPU]) / win_ios
            row["cli_proc_us_io"] = 1e6 * c["proc_cpu"] / c["ios"]
            row["ctxt_io"] = (b["ctxt"] - a["ctxt"]) / win_ios
            if "disk_ios" in a and "disk_ios" in b:          # kernel host: exact I/Os in the window
                row["window_ios_exact_over_est"] = (b["disk_ios"] - a["disk_ios"]) / win_ios
            runs.append(row)

COLS = [("iops", "IOPS", 0), ("mib_s", "MiB/s", 1), ("tgt_pct", "target CPU %", 0),
        ("tgt_us_io", "target µs/IO", 1), ("tgt_us_io_whole", "target µs/IO (whole run)", 1),
        ("cli_vcpu_pct", "client vCPU busy %", 0), ("cli_vcpu_us_io", "client vCPU µs/IO", 1),
        ("cli_proc_us_io", "client process µs/IO", 1), ("ctxt_io", "ctx switches/IO", 2),
        ("lat_p50", "p50 lat µs", 0)]
med = {}
for case in cases:
    for cl in clients:
        rs = [x for x in runs if x["case"] == case and x["client"] == cl]
        if rs:
            med[(case, cl)] = {k: statistics.median(x[k] for x in rs) for k, _, _ in COLS}
            med[(case, cl)]["n"] = len(rs)

lines = []
P = lines.append
m = re.search(r"run-vm: accel=(\S+) kernel=(\S+)", open(vmlog, errors="replace").read())
accel, kern = (m.group(1), m.group(2)) if m else ("?", env.get("kernel", "?"))
P(f"# Clients driving `nvmf target`: Linux kernel host + fio vs `nvmf perf`\n")
P(f"- guest: QEMU `-accel {accel}` `-cpu max`, {env['vcpus']} vCPUs ({env['cpu_model']}), Debian kernel {env['kernel']}, "
  f"clocksource {env.get('clocksource', '?')} (`{env.get('cmdline', '?')}`); host: {os.cpu_count()} CPUs, shared with other work")
P(f"- {env['pinning']}; target: `{env['nvmf_version']}` ({src}) `nvmf target --memory {env['size_mb']}M --threads 1` "
  f"(namespace written once before the runs)")
P(f"- kernel host: `nvme connect -t tcp -i 1` (one I/O queue, like `nvmf perf --numjobs 1`), request merging off "
  f"(`queue/nomerges` = 2, so the target gets the same commands from both clients), {env['nvme_cli']}, "
  f"{env['fio_version']} `--direct=1 --numjobs=1 --norandommap --randrepeat=0 --time_based`")
P(f"- {rounds} interleaved rounds (client order alternating), {env['runtime_s']} s per run; every cell is the median of the rounds")
P(f"- CPU columns are measured in the steady-state window {env['warm_s']} s .. {float(env['warm_s']) + float(env['window_s']):g} s "
  f"after the client's start (no process start-up, connect or fio set-up), I/Os in the window = the client's mean IOPS x window; "
  f"`target µs/IO (whole run)` = the target's CPU from before the client's start to after its exit / the client's I/Os")
P(f"- target CPU % = the target process's utime+stime (/proc/PID/stat) as % of one vCPU; "
  f"client vCPU = all busy time of the clients' vCPU (/proc/stat: the client process, and for the kernel host also "
  f"nvme-tcp's io_work kworker and softirqs); client process = fio's job (usr_cpu+sys_cpu) or `nvmf perf`'s own process; "
  f"ctx switches/IO = the guest's context switches (/proc/stat ctxt, both vCPUs) in the window / I/Os")
P(f"- clients: `kernel-ENGINE` = fio defaults (one I/O per submit call); `kernel-ENGINE-batch` = "
  f"`--iodepth_batch_submit=QD/4 --iodepth_batch_complete_max=QD`; `nvmf-perf` = defaults (sets CATTR bit 2: no SQ flow "
  f"control, so the target ends a read with a C2HData PDU flagged SUCCESS and sends no CapsuleResp); `nvmf-perf-sqfc` = "
  f"`--sq-flow-control` (no CATTR bit 2 -- what the kernel host does: a CapsuleResp after every read's data)")
P(f"- whole run (build + boot + {rounds} rounds): {elapsed} s wall; run-vm.sh exit status {vm_rc}\n")
P("| case | client | " + " | ".join(h for _, h, _ in COLS) + " |")
P("|---|---|" + "---:|" * len(COLS))
for case in cases:
    for cl in clients:
        mm = med.get((case, cl))
        if not mm:
            P(f"| {case} | {cl} | " + " | ".join("–" for _ in COLS) + " |"); continue
        P(f"| {case} | {cl} | " + " | ".join(f"{mm[k]:,.{d}f}" for k, _, d in COLS) + " |")
P("")
P("`nvmf perf` relative to the best kernel-host client per case (median IOPS; target CPU µs/IO):\n")
P("| case | best kernel client | kernel IOPS | nvmf perf IOPS | ratio | target µs/IO kernel | target µs/IO nvmf perf |")
P("|---|---|---:|---:|---:|---:|---:|")
for case in cases:
    ks = [(med[(case, c)]["iops"], c) for c in clients if c.startswith("kernel") and (case, c) in med]
    if not ks or (case, "nvmf-perf") not in med:
        continue
    kiops, kc = max(ks)
    p = med[(case, "nvmf-perf")]
    P(f"| {case} | {kc} | {kiops:,.0f} | {p['iops']:,.0f} | {p['iops'] / kiops:.2f} | "
      f"{med[(case, kc)]['tgt_us_io']:.1f} | {p['tgt_us_io']:.1f} |")
P("")
chk = [x["window_ios_exact_over_est"] for x in runs if "window_ios_exact_over_est" in x]
if chk:
    P(f"Check of the window estimate (kernel host: I/Os counted in /sys/block/…/stat over the window / "
      f"mean IOPS x window): {min(chk):.3f} .. {max(chk):.3f}.\n")
P("Per round (IOPS; target CPU %):\n")
P("| case | client | " + " | ".join(f"round {r}" for r in range(1, rounds + 1)) + " |")
P("|---|---|" + "---:|" * rounds)
for case in cases:
    for cl in clients:
        cells = []
        for r in range(1, rounds + 1):
            x = [y for y in runs if y["case"] == case and y["client"] == cl and y["round"] == r]
            cells.append(f"{x[0]['iops']:,.0f}; {x[0]['tgt_pct']:.0f} %" if x else "failed")
        P(f"| {case} | {cl} | " + " | ".join(cells) + " |")
if missing:
    P("\nRuns left out (failed):\n")
    for s in missing:
        P(f"- {s}")
md = "\n".join(lines) + "\n"
open(out + ".md", "w").write(md)
json.dump(dict(env=env, source=src, accel=accel, elapsed_s=elapsed, vm_rc=vm_rc, runs=runs,
               medians={f"{k[0]}|{k[1]}": v for k, v in med.items()}, missing=missing),
          open(out + ".json", "w"), indent=1)
print(md)
EOF
echo "clients: wrote $OUT/clients-$STAMP.md and .json (raw: $RAW); ${elapsed} s; run-vm.sh exit status $vm_rc" >&2
exit $([[ $vm_rc == 0 ]] && echo 0 || echo 1)
