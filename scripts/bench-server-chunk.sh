#!/usr/bin/env bash
# Chunked prefill: time to first token of a short request that arrives (DELAY ms after it) while
# a ~TOKENS-token prompt prefills, on the medium model of scripts/bench-server-model.sh (28 M
# parameters, block_size 1024), through tests/server/js/chunk.mjs: REPS distinct long prompts,
# max_tokens 1, NUM_STEPS recurrences, --threads THREADS, --parallel 2 (the two requests share
# the decode batch). One server per --prefill-chunk value in CHUNKS (default "0 64 256"; 0 = off),
# prefix cache off; counts the answers (text and logprobs) that differ from the first server's.
# Usage: scripts/bench-server-chunk.sh [BUILD] [NUM_STEPS] [THREADS] [TOKENS] [REPS] [DELAY_MS]
set -euo pipefail
BUILD=${1:-build}; STEPS=${2:-8}; THREADS=${3:-1}; TOKENS=${4:-1000}; REPS=${5:-3}; DELAY=${6:-300}
CHUNKS=${CHUNKS:-0 64 256}
source "$(dirname "$0")/bench-server-lib.sh"
echo "chunked prefill, medium model, ~$TOKENS-token prompts x $REPS, short request ${DELAY} ms later, num_steps $STEPS, --threads $THREADS; load: $(uptime | sed 's/.*load/load/')"
FIRST=
for C in $CHUNKS; do
  start_server --parallel 2 --prefix-cache-mb 0 --prefill-chunk "$C" --threads "$THREADS"
  node "$JS/chunk.mjs" "$URL" medium bench "$STEPS" "$TOKENS" "$REPS" "$DELAY" > "$TMP/r$C.json"
  stop_server
  FIRST=${FIRST:-$C}
  node -e "const r=require('$TMP/r$C.json'), f=require('$TMP/r$FIRST.json');
    const ms=(a)=>a.map(x=>x.toFixed(0)).join(', ');
    const mism=r.answers.filter((a,i)=>a!==f.answers[i]).length;
    console.log('--prefill-chunk '+String($C).padStart(4)+': short TTFT '+ms(r.short_ms)+' ms, long TTFT '+
      ms(r.long_ms)+' ms, short answered first '+r.short_first.filter(x=>x).length+' of '+r.short_first.length+
      ' (prompt tokens '+r.prompt_tokens.join(', ')+'), answers differing from --prefill-chunk $FIRST: '+mism);
    r.answers.forEach((a,i)=>{ if (a!==f.answers[i]) console.log('  rep '+i+': '+a+'\n  vs    '+f.answers[i]); })"
done
echo "load after: $(uptime | sed 's/.*load/load/')"
