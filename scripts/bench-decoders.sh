#!/bin/bash
# The four decoders (sequential, wavefront, speculative, diffusion) on a trained model of the
# demo's task family: task `trace` (swap's prompts answered with the cup after every swap), its
# held-out examples at r steps, one thread. Per decoder: eval's accuracy, steps per token, wall
# tok/s, positions per core pass and drafts accepted, then tokens per CPU-second of the whole
# process (user + sys: on a shared machine wall time measures the other jobs too), and the same
# after the prompt's prefill and first token (measured once with --max-new-tokens 1): decode only.
#
#   bash scripts/bench-decoders.sh [BUILD_DIR] [MODEL_DIR]
# Environment: R (32), OPS (8 swaps), N (300 examples). MODEL_DIR (default /tmp/huginn-trace) is
# trained first when it holds no model: the demo's config and recipe on trace:ops=1-8 (about
# 3 min of CPU). MODEL (default MODEL_DIR/model) evaluates another model of the task instead (a
# widened copy: scripts/bench-decoders-widened.sh), loaded with DTYPE (--dtype: f32, or auto for
# a BF16 file as stored); DECODERS ("all", or e.g. "sequential|wavefront|diffusion") picks rows.
set -euo pipefail
source "$(dirname "$0")/demo-model.sh"
BUILD=${1:-build}
DIR=${2:-/tmp/huginn-trace}
HUGINN="$BUILD/huginn"
R=${R:-32}; OPS=${OPS:-8}; N=${N:-300}
MODEL=${MODEL:-$DIR/model}; DTYPE=${DTYPE:-f32}; DECODERS=${DECODERS:-all}
[ -x "$HUGINN" ] || { echo "bench-decoders: $HUGINN not found (make build)" >&2; exit 1; }
mkdir -p "$DIR"
if [ ! -f "$DIR/model/model.safetensors" ]; then
  demo_model_config 8 4 > "$DIR/config.json"
  echo "training the trace model in $DIR/model ..."
  "$HUGINN" task train --model-config "$DIR/config.json" --task trace:ops=1-8 --supervise-steps \
    --out "$DIR/model" --steps 8000 --batch 16 --lr 3e-3 --warmup 400 --curriculum 0 \
    --mean-recurrence 8 --backprop-depth 4 --seed 1 --threads 1 -q
fi
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
shape=$(python3 -c 'import json, sys; c = json.load(open(sys.argv[1])); print("n_embd %d, heads %d, intermediate %d, layers %d/%d/%d" % tuple(c[k] for k in ("n_embd", "num_attention_heads", "intermediate_size", "n_layers_in_prelude", "n_layers_in_recurrent_block", "n_layers_in_coda")))' "$MODEL/config.json")
echo "trace:ops=$OPS, $N held-out examples, r = $R, 1 thread; $MODEL (--dtype $DTYPE): $shape"
# The prompt's prefill and first token, which every decoder pays alike: subtracted for the
# decode-only rate (tokens after the first per CPU-second after the first token).
first_cpu=$(/usr/bin/time -f "CPU %U %S" "$HUGINN" eval --model "$MODEL" --task "trace:ops=$OPS" \
        --steps "$R" --limit "$N" --threads 1 -q --show 0 --dtype "$DTYPE" --max-new-tokens 1 \
        --out "$DIR/eval" 2>&1 | awk '/^CPU/ {print $2 + $3}')
echo "prefill + first token of $N examples: $first_cpu CPU s"
base=""
dbase=""
for d in sequential wavefront speculative diffusion "diffusion --freeze-strategy fixed" \
         "diffusion --inner-recurrence 2" "diffusion --inner-recurrence 1"; do
  [ "$DECODERS" = all ] || [[ "$d" =~ ^($DECODERS)$ ]] || continue
  # shellcheck disable=SC2086  # $d holds the decoder and its flags
  out=$(/usr/bin/time -f "CPU %U %S" "$HUGINN" eval --model "$MODEL" --task "trace:ops=$OPS" \
        --steps "$R" --limit "$N" --threads 1 -q --show 0 --dtype "$DTYPE" --decode $d \
        --out "$DIR/eval" 2>&1)
  row=$(echo "$out" | grep -E "^r=" | sed 's/  */ /g')
  toks=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["rows"][0]["tokens"])' "$DIR/eval/results.json")
  cpu=$(echo "$out" | awk '/^CPU/ {print $2 + $3}')
  rate=$(python3 -c "print(f'{$toks / $cpu:.4g}')")
  # (CPU times are 0.01 s apart: below 1 s of decode the rate would measure the clock)
  drate=$(python3 -c "d = $cpu - $first_cpu; print(f'{($toks - $N) / d:.4g}' if d >= 1 else 'nan')")
  [ -n "$base" ] || base=$rate
  [ -n "$dbase" ] || dbase=$drate
  printf '%-34s %s | %s tokens, %s CPU s, %s tok/CPU-s, %sx; decode only %s tok/CPU-s, %sx\n' \
    "$d" "$row" "$toks" "$cpu" "$rate" "$(python3 -c "print(f'{$rate / $base:.2f}')")" "$drate" \
    "$(python3 -c "print(f'{$drate / $dbase:.2f}')")"
done
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
