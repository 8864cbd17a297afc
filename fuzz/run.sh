#!/usr/bin/env bash
# Runs one fuzz target for a set time on one core, then says how many inputs
# it ran and how many crashes it found.
#
#   fuzz/run.sh TARGET [SECONDS]      (default 180)
#
# Works on a stable toolchain: RUSTC_BOOTSTRAP=1 lets stable rustc take the
# coverage flags cargo-fuzz passes, and --sanitizer none needs no nightly
# sanitizer runtime (the targets are safe Rust; what they look for is panics).
# The corpus is fuzz/corpus/TARGET (run fuzz/seed.sh first); crashes,
# libFuzzer's log (fuzz-0.log) and a summary go to fuzz/artifacts/TARGET/.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
target=${1:?usage: fuzz/run.sh TARGET [SECONDS]}
seconds=${2:-180}
case $target in
    json_scan | splice) dict=json.dict ;;
    tsv) dict=tsv.dict ;;
    ip_canonical) dict=ip.dict ;;
    *)
        echo "run.sh: unknown target $target (json_scan, tsv, ip_canonical, splice)" >&2
        exit 64
        ;;
esac

corpus=$here/corpus/$target
artifacts=$here/artifacts/$target
mkdir -p "$corpus" "$artifacts"
if [ -z "$(ls -A "$corpus")" ]; then
    echo "run.sh: $corpus is empty; run fuzz/seed.sh first (fuzzing from nothing still works)" >&2
fi

# Build first, so the time limit is all fuzzing.
RUSTC_BOOTSTRAP=1 cargo fuzz build --fuzz-dir "$here" --sanitizer none "$target"

# libFuzzer writes fuzz-0.log for -jobs=1 into the working directory.
cd "$artifacts"
rm -f fuzz-0.log
marker=$(mktemp "$artifacts/.start.XXXXXX")
started=$(date +%s)
status=0
RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir "$here" --sanitizer none "$target" "$corpus" -- \
    -jobs=1 -workers=1 -max_total_time="$seconds" -print_final_stats=1 \
    -dict="$here/dict/$dict" -artifact_prefix="$artifacts/" || status=$?
elapsed=$(($(date +%s) - started))

executions=$(awk '/stat::number_of_executed_units/ { n += $2 } END { print n + 0 }' fuzz-0.log)
found=$(find "$artifacts" -maxdepth 1 -type f -newer "$marker" \
    \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \))
rm -f "$marker"
crashes=$(printf '%s' "$found" | grep -c . || true)
summary="$target: $executions executions in ${elapsed}s, $crashes crashes, corpus $(find "$corpus" -type f | wc -l) inputs"
echo "$summary" | tee "$artifacts/summary.txt"
if [ "$crashes" -gt 0 ]; then
    grep -m1 -A4 'panicked at' fuzz-0.log >&2 || true
    printf '%s\n' "$found" >&2
    exit 1
fi
exit "$status"
