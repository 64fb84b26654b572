#!/usr/bin/env bash
# Decode batching on vs off under load: huginn serve --parallel P with --max-batch 1 (off) and
# --max-batch P (on), P the most clients, driven by tests/server/js/load.mjs at each count of
# concurrent clients in CLIENTS (default "1 4 16"), each run TOTAL greedy completions of
# MAX_TOKENS tokens at NUM_STEPS recurrences, or with EXIT=CRITERION:THRESHOLD (e.g. kl:1e-3)
# that adaptive exit with at most NUM_STEPS (every answer checked against a lone request's), or
# with DECODE=wavefront|speculative that decoder (answers checked against sequential decoding's;
# with --max-batch above 1 its core passes ride the depth batch).
# BATCHES="1 P" picks the --max-batch values. Prints one line per run: requests/s, tokens/s,
# p50/p99 latency, the server's CPU time per generated token (user + system, all threads: the
# figure that survives a busy machine), the mean batch (calls per pass over the core) and the
# mean recurrences per token.
# MODEL: "tiny" or "medium" (scripts/bench-server-model.sh: 0.97 M or 28 M parameters).
# Usage: scripts/bench-server-batch.sh [BUILD] [MODEL] [TOTAL] [MAX_TOKENS] [NUM_STEPS] [THREADS]
set -euo pipefail
BUILD=${1:-build}; SIZE=${2:-medium}; TOTAL=${3:-32}; MAXTOK=${4:-16}; STEPS=${5:-8}; THREADS=${6:-1}
CLIENTS=${CLIENTS:-1 4 16}
P=$(printf '%s\n' $CLIENTS | sort -n | tail -1)
BATCHES=${BATCHES:-1 $P}
export LOAD_EXIT=${EXIT:-} LOAD_DECODE=${DECODE:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
JS="$ROOT/tests/server/js"
[ -d "$JS/node_modules/openai" ] || (cd "$JS" && npm ci --no-audit --no-fund --silent)
TMP=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -rf "$TMP"' EXIT
MODEL=$("$ROOT/scripts/bench-server-model.sh" "$BUILD" "$SIZE" "$TMP")
echo "model $SIZE ($("$BUILD/huginn" info --model "$MODEL" 2>/dev/null | awk '/^  total/{print $2, "parameters"}' || echo '?')), $TOTAL requests per run, max_tokens $MAXTOK, steps $STEPS${EXIT:+ (exit $EXIT)}${DECODE:+, decode $DECODE}, --threads $THREADS; load: $(uptime | sed 's/.*load/load/')"
for BATCH in $BATCHES; do
  "$BUILD/huginn" serve --model "$MODEL" --port 0 --parallel "$P" --max-batch $BATCH --max-queue 256 \
    --api-key bench --threads "$THREADS" > "$TMP/out" 2> "$TMP/log" &
  PID=$!
  for _ in $(seq 600); do grep -qs listening "$TMP/out" && break; sleep 0.1; done
  URL="http://127.0.0.1:$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$TMP/out")"
  node "$JS/load.mjs" "$URL" "$SIZE" bench 2 1 "$MAXTOK" "$STEPS" > /dev/null  # warm-up
  for CONC in $CLIENTS; do
    R=$(node "$JS/load.mjs" "$URL" "$SIZE" bench "$CONC" $((TOTAL / CONC)) "$MAXTOK" "$STEPS" $PID)
    node -e "const r=JSON.parse(process.argv[1]);
      console.log('max-batch '+String($BATCH).padStart(2)+', clients '+String($CONC).padStart(2)+': '+
        r.req_per_s.toFixed(2)+' req/s, '+r.tok_per_s.toFixed(1)+' tok/s, p50 '+r.p50_ms.toFixed(0)+
        ' ms, p99 '+r.p99_ms.toFixed(0)+' ms, server CPU '+r.server.cpu_ms_per_token.toFixed(2)+
        ' ms/token, mean batch '+r.server.mean_batch.toFixed(2)+', mean steps '+r.mean_steps.toFixed(2)+
        ', errors '+r.errors+
        ', mismatches '+r.mismatches)" "$R"
  done
  kill $PID; wait $PID 2>/dev/null || true; PID=
done
