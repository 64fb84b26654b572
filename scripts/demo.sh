#!/usr/bin/env bash
# The main job: train a small recurrent-depth model from scratch on a built-in task (two-digit
# addition, "49+94=" -> "143", on a model whose core is one layer, so each recurrence adds one
# layer of depth), then evaluate it at test-time recurrences r = 1..64 and with KL exit at a few
# thresholds: the table, JSON/CSV, plots, example generations with per-token step counts — and
# check the numbers.
#
#   bash scripts/demo.sh [BUILD_DIR]          the full demo (~3 min of training on 2 cores)
#   QUICK=1 bash scripts/demo.sh [BUILD_DIR]  the reduced run for CI (asserts learning happened)
#
# Outputs go to $DEMO_OUT (default BUILD_DIR/demo or BUILD_DIR/demo-quick). Exits non-zero when a
# check fails. The recipe is seeded; its numbers do not depend on the thread count.
set -euo pipefail
BUILD=${1:-build}
QUICK=${QUICK:-0}
HUGINN="$BUILD/huginn"
THREADS=${DEMO_THREADS:-2}
[[ -x "$HUGINN" ]] || { echo "demo: $HUGINN not found (run make first)" >&2; exit 1; }

# The recipe (see README, Quickstart): a task whose answer takes several sequential steps, a model
# whose core is ONE transformer layer, so each recurrence adds one layer of depth.
if [[ "$QUICK" == 1 ]]; then
  OUT=${DEMO_OUT:-$BUILD/demo-quick}
  STEPS=${DEMO_STEPS:-1500} LIMIT=200
  EVAL_STEPS=1,2,4,8,16 EXITS=kl:1e-2,kl:1e-3 EXIT_MAX=16
else
  OUT=${DEMO_OUT:-$BUILD/demo}
  STEPS=${DEMO_STEPS:-2000} LIMIT=500
  EVAL_STEPS=1,2,4,8,16,32,64 EXITS=kl:1e-1,kl:3e-2,kl:1e-2,kl:3e-3,kl:1e-3,kl:1e-4 EXIT_MAX=32
fi
TASK=add:digits=2 EVAL_TASK=add:digits=2 BATCH=32 LR=3e-3
MEAN=8 BACKPROP=4 PRELUDE=1 CORE=1 CODA=1
rm -rf "$OUT"
mkdir -p "$OUT/eval"

# E = 64, byte vocabulary (128 ids), trained with a recurrence drawn per step (log-normal Poisson,
# mean $MEAN) and truncated backprop through $BACKPROP of them.
cat > "$OUT/config.json" <<EOF
{"name": "huginn-demo", "block_size": 96, "vocab_size": 128, "n_embd": 64,
 "num_attention_heads": 4, "intermediate_size": 128, "n_layers_in_prelude": $PRELUDE,
 "n_layers_in_recurrent_block": $CORE, "n_layers_in_coda": $CODA, "mean_recurrence": $MEAN,
 "mean_backprop_depth": $BACKPROP, "tie_embeddings": true, "qk_bias": true}
EOF

echo "== the task: $TASK (held-out examples) =="
"$HUGINN" task generate "$EVAL_TASK" --split test --n 3 --format text
echo
echo "== training ($STEPS steps x $BATCH examples, loss on the answer only, $THREADS threads) =="
"$HUGINN" task train --model-config "$OUT/config.json" --task "$TASK" --out "$OUT/model" \
  --steps "$STEPS" --batch "$BATCH" --lr "$LR" --warmup $((STEPS / 10)) --eval-every 250 \
  --seed 1 --threads "$THREADS"
echo
echo "== evaluation: accuracy vs test-time recurrence, and KL exit (max $EXIT_MAX steps) =="
# One KV slot per core layer shared across recurrences (compress-s): a token that exits early
# stays visible to later tokens at every depth.
"$HUGINN" eval --model "$OUT/model" --task "$EVAL_TASK" --steps "$EVAL_STEPS" --exit "$EXITS" \
  --exit-max-steps "$EXIT_MAX" --cache-slots "$CORE" --limit "$LIMIT" --show 2 --out "$OUT/eval" \
  --threads "$THREADS" | tee "$OUT/eval/table.txt"
echo

# ---- the demo checks its own numbers (results.csv: setting,steps,exit,n,correct,accuracy,
# ci_low,ci_high,mean_steps_per_token,...) ----
CSV="$OUT/eval/results.csv"
fixed_acc() { awk -F, -v r="$1" 'NR > 1 && $3 == "" && $2 == r { print $6 }' "$CSV"; }
best_fixed=$(awk -F, 'NR > 1 && $3 == "" && $6 > b { b = $6 } END { print b + 0 }' "$CSV")
acc1=$(fixed_acc 1)
# Chance: always answering the most frequent answer of the evaluated examples.
chance=$("$HUGINN" task generate "$EVAL_TASK" --split test --n "$LIMIT" --format jsonl |
  sed 's/.*"answer":"\([^"]*\)".*/\1/' |
  awk '{ c[$0]++ } END { for (a in c) if (c[a] > m) m = c[a]; printf "%.3f", m / NR }')
accm=$(fixed_acc $MEAN)
fail=0
check() {  # check "description" awk-condition
  if awk "BEGIN { exit !($2) }"; then echo "  PASS  $1"; else echo "  FAIL  $1"; fail=1; fi
}
echo "== checks =="
if [[ "$QUICK" == 1 ]]; then
  check "learning happened: accuracy at r=$MEAN ($accm) >= accuracy at r=1 ($acc1) + 0.15" "$accm >= $acc1 + 0.15"
  check "above chance: accuracy at r=$MEAN ($accm) >= chance ($chance) + 0.15" "$accm >= $chance + 0.15"
else
  acc2m=$(fixed_acc $((2 * MEAN)))
  accx=$(fixed_acc $EXIT_MAX)
  check "accuracy at r=$MEAN ($accm) is >= 25 points above r=1 ($acc1)" "$accm >= $acc1 + 0.25"
  check "at r=$((2 * MEAN)) ($acc2m) within 5 points of the best fixed r ($best_fixed)" "$acc2m >= $best_fixed - 0.05"
  # KL exit: some threshold uses <= 60% of the fixed-r steps at <= 2 points accuracy lost.
  kl=$(awk -F, -v base="$accx" -v max="$EXIT_MAX" 'NR > 1 && $3 != "" && $9 <= 0.6 * max && $6 >= base - 0.02 { print $1 " steps/token " $9 " accuracy " $6; exit }' "$CSV")
  check "KL exit ${kl:-(none)} uses <= 60% of r=$EXIT_MAX's steps at <= 2 points below its accuracy ($accx)" "${#kl} > 0"
fi
echo
echo "results: $OUT/eval/results.json, results.csv; plots: $OUT/eval/accuracy_vs_steps.png, accuracy_vs_compute.png"
exit $fail
