#!/usr/bin/env bash
# The server under abuse: starts `huginn serve` on tiny-b (with a byte-level BPE tokenizer
# trained here, as the server tests do; --parallel 2, every other flag at its default) and runs
# bench_server_flood against it: /health and 2-token completion latency idle, under 100
# slow-header (slowloris), 100 slow-body and 300 idle connections, and during a flood of 200
# concurrent completions.
# Usage: [REPS=20] scripts/bench-server-flood.sh [BUILD] [HUGINN]   (HUGINN: another binary to
#        measure, e.g. an older build; default BUILD/huginn. REPS: /health requests per phase,
#        a quarter as many completions; each waits at most 30 s)
set -euo pipefail
BUILD=${1:-build}; HUGINN=${2:-$BUILD/huginn}; REPS=${REPS:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -rf "$TMP"' EXIT
MODEL="$TMP/tiny"; mkdir -p "$MODEL"
GOLD="$ROOT/tests/data/golden/tiny-b"
cp "$GOLD/config.json" "$GOLD/model.safetensors" "$MODEL/"
printf 'hello world, hello there. the world says hello back\nhello hello world\n' > "$TMP/corpus.txt"
"$BUILD/huginn" tokenizer train --input "$TMP/corpus.txt" --vocab-size 280 --quiet \
  --special '<|begin_text|>' --special '<|end_text|>' --special '<|begin_header|>' \
  --special '<|end_header|>' --special '<|end_turn|>' --out "$MODEL/tokenizer.json" >/dev/null 2>&1
"$HUGINN" serve --model "$MODEL" --port 0 --parallel 2 --api-key bench --threads 1 \
  > "$TMP/out" 2> "$TMP/log" &
PID=$!
for _ in $(seq 600); do grep -qs listening "$TMP/out" && break; sleep 0.1; done
PORT=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$TMP/out")
echo "$HUGINN serve --parallel 2 on tiny-b; $(nproc) cores; load: $(uptime | sed 's/.*load/load/')"
"$BUILD/bench_server_flood" --port "$PORT" --key bench --model tiny --reps "$REPS"
kill $PID; wait $PID 2>/dev/null || true; PID=
