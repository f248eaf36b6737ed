#!/usr/bin/env bash
# Runs every cargo-fuzz target of nvmf-proto for a bounded time against the seed
# corpus in fuzz/corpus/<target>/ and exits non-zero if any target crashes.
#
#   fuzz/run-bounded.sh [SECONDS_PER_TARGET]   (default 30)
#
# Needs only a stable toolchain: RUSTC_BOOTSTRAP=1 lets stable rustc accept the
# -Z flags cargo-fuzz passes (sanitizer, coverage). New corpus entries go to a
# temporary directory, so the committed seed corpus does not grow; crashes are
# written to fuzz/artifacts/<target>/ (git-ignored) and reproduce with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -a <target> fuzz/artifacts/<target>/<file>
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
    if ! cargo fuzz run -a "$t" "$work/$t" "${seeds[@]}" -- \
        -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=2048 2>&1 |
        tee "$work/$t.log" | grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY|thread .* panicked|Test unit written|.*deadly signal)'; then
        :
    fi
    if [ "${PIPESTATUS[0]}" -ne 0 ]; then
        echo "!!! $t FAILED (artifacts in fuzz/artifacts/$t/)"
        tail -40 "$work/$t.log"
        fail=1
    fi
done
exit $fail
