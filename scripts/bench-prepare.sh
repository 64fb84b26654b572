#!/usr/bin/env bash
# data prepare end to end against the tokenizer's own batch encode, in the same rounds:
#   scripts/bench-prepare.sh INPUT [BEFORE_HUGINN] [BUILD] [TOKENIZER] [ROUNDS]
# Each round runs `huginn data prepare --threads 2` of INPUT with BUILD's huginn (and BEFORE_HUGINN,
# another build to compare, when given and not "-") and then `bench_tokenizer --only cl100k
# --no-hf --runs 3` (its "batch 2 th" column is the tokenizer's two-thread MB/s). Prints wall
# seconds, MB/s of the input, CPU seconds and peak RSS (/usr/bin/time) and the load average.
set -euo pipefail
INPUT=${1:?usage: scripts/bench-prepare.sh INPUT [BEFORE_HUGINN] [BUILD] [TOKENIZER] [ROUNDS]}
BEFORE=${2:--}
BUILD=${3:-build}
TOK=${4:-tests/data/tokenizers/cl100k/tokenizer.json}
ROUNDS=${5:-2}
[ -x "$BUILD/huginn" ] && [ -x "$BUILD/bench_tokenizer" ] || { echo "bench-prepare: build $BUILD first (make build)" >&2; exit 1; }
BYTES=$(stat -c %s "$INPUT")
OUT=$(mktemp -d /tmp/huginn-bench-prepare.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
run() {  # run NAME HUGINN
  rm -rf "$OUT/shards"
  local load t
  load=$(cut -d' ' -f1 /proc/loadavg)
  t=$( { /usr/bin/time -f "%e %U %S %M" "$2" data prepare --tokenizer "$TOK" --input "$INPUT" \
          --out "$OUT/shards" --threads 2 -q >/dev/null; } 2>&1 | tail -1)
  read -r wall user sys rss <<< "$t"
  awk -v n="$1" -v b="$BYTES" -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss" -v l="$load" \
    'BEGIN { printf "%-10s %7.2f s  %7.1f MB/s  CPU %6.2f s  peak RSS %5.0f MB  load %s\n", n, w, b / 1e6 / w, u + s, r / 1024, l }'
}
for round in $(seq "$ROUNDS"); do
  echo "round $round"
  [ "$BEFORE" != - ] && run before "$BEFORE"
  run after "$BUILD/huginn"
  "$BUILD/bench_tokenizer" --only cl100k --no-hf --runs 3 2>&1 | grep -E '^(tokenizer|cl100k) '
done
