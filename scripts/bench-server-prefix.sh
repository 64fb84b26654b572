#!/usr/bin/env bash
# Prefix cache: time to first token for a repeated ~TOKENS-token system prompt, cold (first
# request with it) and warm (the next request with the same system prompt, another question),
# on the medium model of scripts/bench-server-model.sh (28 M parameters, block_size 1024),
# through tests/server/js/prefix.mjs: REPS distinct system prompts, max_tokens 1, NUM_STEPS
# recurrences, --threads THREADS. Runs a server with the cache (default 512 MiB) and one with
# --prefix-cache-mb 0, and counts the warm answers (text and logprobs) that differ between them.
# Usage: scripts/bench-server-prefix.sh [BUILD] [NUM_STEPS] [THREADS] [TOKENS] [REPS]
set -euo pipefail
BUILD=${1:-build}; STEPS=${2:-8}; THREADS=${3:-1}; TOKENS=${4:-1000}; REPS=${5:-3}
source "$(dirname "$0")/bench-server-lib.sh"
echo "prefix cache, medium model, ~$TOKENS-token system prompts x $REPS, num_steps $STEPS, --threads $THREADS; load: $(uptime | sed 's/.*load/load/')"
for MB in 512 0; do
  start_server --parallel 2 --prefix-cache-mb $MB --threads "$THREADS"
  node "$JS/prefix.mjs" "$URL" medium bench "$STEPS" "$TOKENS" "$REPS" > "$TMP/r$MB.json"
  stop_server
done
node -e "const on=require('$TMP/r512.json'), off=require('$TMP/r0.json');
  const f=(a)=>a.map(x=>x.toFixed(0)).join(', ');
  const mism=on.answers.filter((a,i)=>a!==off.answers[i]).length;
  console.log('prompt tokens '+on.prompt_tokens.join(', ')+'; cached on the warm request '+on.cached_tokens.join(', '));
  console.log('cache on : cold TTFT '+f(on.cold_ms)+' ms, warm TTFT '+f(on.warm_ms)+' ms');
  console.log('cache off: cold TTFT '+f(off.cold_ms)+' ms, second request '+f(off.warm_ms)+' ms');
  console.log('warm answers differing from the cache-off server: '+mism+' of '+on.answers.length);"
