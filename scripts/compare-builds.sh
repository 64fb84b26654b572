#!/usr/bin/env bash
# Compares two huginn binaries' numbers on the golden models and short training runs, byte for
# byte: forward outputs (f32, bf16, q8 weights; zero and random initial state), fixed and
# adaptive-exit generation (tokens and steps; full and shared caches, warm start), gradient dumps,
# a task training run (the demo's recipe, shortened), a shard training run with a checkpoint and a
# resume, and an eval of the trained model (accuracy and steps per token). Used to show that a
# refactoring kept every number: exits non-zero and names the first output that differs.
#
#   scripts/compare-builds.sh OLD_HUGINN NEW_HUGINN [WORK_DIR]
#
# OLD_TRAIN_FLAGS / NEW_TRAIN_FLAGS: extra flags for each side's training runs, e.g.
# NEW_TRAIN_FLAGS=--sequential to compare a batched-training build's per-sequence path with a
# build from before batched training (a batch sums its gradients in another order, so the
# default paths agree only to float tolerance).
set -euo pipefail
OLD=$1 NEW=$2
WORK=${3:-$(mktemp -d /tmp/huginn-compare.XXXXXX)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/demo-model.sh"
GOLD="$ROOT/tests/data/golden"
T="--threads 1 --quiet"
rm -rf "$WORK/old" "$WORK/new" "$WORK/shards"
mkdir -p "$WORK/old" "$WORK/new"

run() {  # run NAME CMD... (with $H standing for the binary, $O for the output folder)
  local name=$1; shift
  for side in old new; do
    local H=$OLD TF=${OLD_TRAIN_FLAGS:-}; [[ $side == new ]] && H=$NEW TF=${NEW_TRAIN_FLAGS:-}
    local O="$WORK/$side"
    eval "$*" > "$O/$name.out" 2> "$O/$name.err" || { echo "FAIL $name ($side): $(tail -3 "$O/$name.err")"; exit 1; }
  done
}

# A small corpus and tokenizer for the shard trainer (the same for both sides).
SH="$WORK/shards"; mkdir -p "$SH"
cat "$ROOT"/README.md "$ROOT"/docs/*.md > "$SH/corpus.txt" 2>/dev/null || cat "$ROOT"/README.md > "$SH/corpus.txt"
"$NEW" tokenizer train --vocab-size 300 --input "$SH/corpus.txt" --out "$SH/tokenizer.json" \
  --special "<|endoftext|>" --quiet >/dev/null
"$NEW" data prepare --tokenizer "$SH/tokenizer.json" --input "$SH/corpus.txt" --out "$SH/data" \
  --val-fraction 0.05 --quiet >/dev/null
cat > "$SH/config.json" <<CFG
{"block_size": 64, "vocab_size": 300, "n_embd": 48, "num_attention_heads": 3,
 "intermediate_size": 96, "n_layers_in_prelude": 1, "n_layers_in_recurrent_block": 2,
 "n_layers_in_coda": 1, "mean_recurrence": 4, "mean_backprop_depth": 2,
 "tie_embeddings": false, "qk_bias": true}
CFG
demo_model_config 8 4 > "$SH/task-config.json"

IDS=3,141,59,26,53,58,97,93,23,84,62,64,33
for m in tiny-a tiny-b; do
  for dt in f32 bf16 q8; do
    run fwd-$m-$dt '$H forward --model $GOLD/$m --ids $IDS --steps 16 --dtype '$dt' --out $O/fwd-'$m'-'$dt'.safetensors $T'
  done
  run fwd-$m-rand '$H forward --model $GOLD/$m --ids $IDS --steps 7 --init-scale 1 --seed 4 --out $O/fwd-'$m'-rand.safetensors $T'
  run gen-$m-fixed '$H generate --model $GOLD/$m --ids $IDS --steps 8 --max-new 12 --json $T'
  run gen-$m-kl '$H generate --model $GOLD/$m --ids $IDS --exit kl:1e-3 --max-steps 24 --max-new 12 --json $T'
  run gen-$m-kl-slots '$H generate --model $GOLD/$m --ids $IDS --exit kl:1e-2 --max-steps 16 --cache-slots 2 --warm-start --max-new 12 --json $T'
  run gen-$m-sample '$H generate --model $GOLD/$m --ids $IDS --exit latent-diff --max-steps 20 --temperature 0.8 --top-k 40 --seed 9 --max-new 12 --json $T'
  run grad-$m '$H grad --model $GOLD/$m --ids $IDS --labels 141,59,26,53,58,97,93,23,84,62,64,33,-100 --steps-no-grad 3 --steps-with-grad 2 --out $O/grad-'$m'.safetensors $T'
done
run task-train '$H task train --model-config $SH/task-config.json --task add:digits=2 --out $O/task --steps 40 --batch 8 --lr 3e-3 --warmup 4 --eval-every 20 --eval-examples 16 --seed 1 --threads 2 --quiet $TF'
run task-eval '$H eval --model $O/task --task add:digits=2 --steps 1,4 --exit kl:1e-2 --exit-max-steps 8 --limit 20 --show 0 --out $O/task-eval --threads 1 --quiet'
run shard-train '$H train --model-config $SH/config.json --data $SH/data --out $O/run --steps 12 --stop-at 6 --batch 3 --grad-accum 2 --seq-len 32 --lr 3e-3 --save-every 3 --threads 2 --quiet $TF'
run shard-resume '$H train --model-config $SH/config.json --data $SH/data --out $O/run --steps 12 --batch 3 --grad-accum 2 --seq-len 32 --lr 3e-3 --save-every 3 --threads 2 --quiet --resume $TF'

fail=0
compare() {
  if ! cmp -s "$WORK/old/$1" "$WORK/new/$1"; then echo "DIFFERS: $1"; fail=1; else echo "same:    $1"; fi
}
for f in $(cd "$WORK/old" && ls *.safetensors *.out); do
  case $f in task-train.out|shard-*.out|task-eval.out) continue;; esac  # progress lines carry timings
  compare "$f"
done
for f in task/model.safetensors run/step-00000006/model.safetensors run/step-00000012/model.safetensors \
         run/step-00000012/train_state.safetensors; do
  compare "$f"
done
# The eval's numbers without its timings (tokens/s, seconds).
for side in old new; do
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); [row.pop(k,None) for row in r["rows"] for k in ("seconds","tok_s","tokens_per_second")]; print(json.dumps(r["rows"],sort_keys=True))' \
    "$WORK/$side/task-eval/results.json" > "$WORK/$side/task-eval.rows"
done
compare task-eval.rows
echo "outputs in $WORK"
exit $fail
