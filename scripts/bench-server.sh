#!/usr/bin/env bash
# Load test of huginn serve on loopback: CONC clients x REQS greedy completions each (default
# 32 x 20), every answer checked against a lone request's; prints throughput, p50/p99 latency
# and the server's RSS before/after. Usage: scripts/bench-server.sh [BUILD] [CONC] [REQS] [MODEL]
set -euo pipefail
BUILD=${1:-build}; CONC=${2:-32}; REQS=${3:-20}; MODEL=${4:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
JS="$ROOT/tests/server/js"
[ -d "$JS/node_modules/openai" ] || (cd "$JS" && npm ci --no-audit --no-fund --silent)
TMP=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$TMP"' EXIT
if [ -z "$MODEL" ]; then  # tiny-b with a byte-level tokenizer trained on a few words
  MODEL="$TMP/tiny"; mkdir -p "$MODEL"
  cp "$ROOT/tests/data/golden/tiny-b/config.json" "$ROOT/tests/data/golden/tiny-b/model.safetensors" "$MODEL/"
  printf 'hello world, hello there. the world says hello back\nhello hello world\n' > "$TMP/corpus.txt"
  "$BUILD/huginn" tokenizer train --input "$TMP/corpus.txt" --vocab-size 280 --quiet \
    --special '<|begin_text|>' --special '<|end_text|>' --special '<|begin_header|>' \
    --special '<|end_header|>' --special '<|end_turn|>' --out "$MODEL/tokenizer.json" >/dev/null 2>&1
fi
NAME=$(basename "$MODEL")
"$BUILD/huginn" serve --model "$MODEL" --port 0 --parallel 4 --max-queue 256 --api-key bench \
  > "$TMP/out" 2> "$TMP/log" &
PID=$!
for _ in $(seq 100); do grep -q listening "$TMP/out" && break; sleep 0.1; done
PORT=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$TMP/out")
URL="http://127.0.0.1:$PORT"
node "$JS/load.mjs" "$URL" "$NAME" bench 8 3 16 4 > /dev/null   # warm-up
RSS0=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
# Three runs: the first ones also touch HTTP threads for the first time (thread-local
# tokenizer caches); later runs show whether RSS stays flat.
node "$JS/load.mjs" "$URL" "$NAME" bench "$CONC" "$REQS" 16 4
RSS1=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
node "$JS/load.mjs" "$URL" "$NAME" bench "$CONC" "$REQS" 16 4
RSS2=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
node "$JS/load.mjs" "$URL" "$NAME" bench "$CONC" "$REQS" 16 4 > /dev/null
RSS3=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
echo "server RSS (kB): ${RSS0} before, ${RSS1} / ${RSS2} / ${RSS3} after runs 1 / 2 / 3"
