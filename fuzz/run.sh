#!/usr/bin/env bash
# Run every fuzz target for a bounded time; exit non-zero when any target crashes (panics,
# hangs past -timeout, or runs out of memory).
#
#   fuzz/run.sh [SECONDS_PER_TARGET]     (default 30)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). Runs on stable Rust: cargo-fuzz's
# nightly-only flags (-Zsanitizer, sancov passes) are allowed by RUSTC_BOOTSTRAP=1.
# The seed corpora in fuzz/corpus/<target>/ are read, never written: new inputs go to a
# temporary directory. A crashing input is saved in fuzz/artifacts/<target>/ and its log
# is printed; replay it with `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>`.
set -euo pipefail

secs="${1:-30}"
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo fuzz build
status=0
for t in $(cargo fuzz list); do
    mkdir -p "$work/corpus/$t"
    echo "== fuzz $t for ${secs}s"
    if cargo fuzz run "$t" "$work/corpus/$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$work/$t.log" 2>&1; then
        grep -E '^Done [0-9]+ runs|stat::number_of_executed_units|stat::new_units_added' "$work/$t.log" || true
    else
        echo "!! $t FAILED (input saved under fuzz/artifacts/$t/):"
        tail -n 80 "$work/$t.log"
        status=1
    fi
done
exit "$status"
