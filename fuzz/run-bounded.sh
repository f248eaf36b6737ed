#!/usr/bin/env bash
# Runs every cargo-fuzz target (`cargo fuzz list`: the nvmf-proto targets,
# auth_messages for DH-HMAC-CHAP included, and target_controller, the whole
# target over loopback TCP) for a bounded time
# against the seed corpus in fuzz/corpus/<target>/ and exits non-zero if any
# target crashes.
#
#   fuzz/run-bounded.sh [SECONDS_PER_TARGET]   (default 30; eight targets, so
#                                              about 4 min plus the build)
#
# Needs only a stable toolchain: RUSTC_BOOTSTRAP=1 lets stable rustc accept the
# -Z flags cargo-fuzz passes (sanitizer, coverage). New corpus entries go to a
# temporary directory, so the committed seed corpus does not grow; crashes are
# written to fuzz/artifacts/<target>/ (git-ignored) and reproduce with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -a <target> fuzz/artifacts/<target>/<file>
# A crash should become a regression test in crates/proto/tests/regressions.rs
# (crates/controller/tests/hostile.rs for target_controller) and its input a
# seed in fuzz/corpus/<target>/. TC_DEBUG=1 makes target_controller print what
# the target sent while it reproduces.
set -u
secs=${1:-30}
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked || exit 2
fi
# -a: debug assertions and overflow checks on, so arithmetic overflow is a crash.
cargo fuzz build -a || exit 2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
for t in $(cargo fuzz list); do
    mkdir -p "$work/$t"
    seeds=()
    [ -d "corpus/$t" ] && seeds=("corpus/$t")
    echo "=== $t: ${secs}s"
    cargo fuzz run -a "$t" "$work/$t" "${seeds[@]}" -- \
        -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=2048 \
        >"$work/$t.log" 2>&1
    rc=$?
    grep -E '^(Done [0-9]+ runs|stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added)' "$work/$t.log"
    if [ "$rc" -ne 0 ]; then
        echo "!!! $t FAILED (exit $rc; artifacts in fuzz/artifacts/$t/)"
        grep -E -A8 'panicked|ERROR: |SUMMARY' "$work/$t.log" | head -40
        fail=1
    fi
done
[ "$fail" -eq 0 ] && echo "all fuzz targets ran ${secs}s without a crash"
exit $fail
