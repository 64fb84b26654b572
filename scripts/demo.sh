#!/usr/bin/env bash
# The main job: train ONE small recurrent-depth model from scratch on a task whose needed depth
# grows with its difficulty, then show the paper's claims on it, with checks that fail the demo
# when they do not hold (README, Quickstart):
#   1. harder levels need more recurrences, and depth extrapolates past the training mean;
#   2. a KL exit spends more recurrences on harder examples, at almost no loss;
#   3. KV-cache sharing at under a quarter of the full cache, and warm start;
#   4. the latent trajectory of one hard example, each token classified.
#
# The task is `swap` (a ball under one of five cups a-e, then N swaps of two cups; where is the
# ball?): "c:ab,cd,bc=" -> "d". The model's core is ONE transformer layer, so each recurrence
# adds one layer of depth; it learns to move the ball one swap further per recurrence.
#
#   bash scripts/demo.sh [BUILD_DIR]          the demo (about 3 min of CPU, 2.5 of them training)
#   QUICK=1 bash scripts/demo.sh [BUILD_DIR]  the reduced run for CI (asserts learning happened)
#   FULL=1 bash scripts/demo.sh [BUILD_DIR]   a longer run for a stronger model (docs/demo.md)
#
# Environment: DEMO_OUT (default BUILD_DIR/demo, demo-quick or demo-full), DEMO_SEED (1),
# DEMO_INIT_SCALE (the initial state in training: 0 = zeros, the default; FULL=1: 1, the truncated
# normal), DEMO_THREADS (1: this model is too small for a second thread to pay, and a spinning pool
# waits badly on a loaded machine; results do not depend on it), DEMO_STEPS (training steps),
# HUGINN_CPU_ISA (generic | avx2 | avx512: force the CPU kernels' instruction set; README,
# "One binary for every x86-64 CPU").
# Exits non-zero when a check fails. The recipe is seeded: the same numbers on every run with
# one ISA; only the times depend on the machine and its load.
set -euo pipefail
BUILD=${1:-build}
QUICK=${QUICK:-0}
FULL=${FULL:-0}
HUGINN="$BUILD/huginn"
THREADS=${DEMO_THREADS:-1}
SEED=${DEMO_SEED:-1}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/demo-model.sh"
[[ -x "$HUGINN" ]] || { echo "demo: $HUGINN not found (run make first)" >&2; exit 1; }

# ---- the recipe (every choice is a flag of `huginn task train`; docs/demo.md says why each) ----
TASK=swap
TRAIN_LEVELS=1-8          # swaps per example, drawn uniformly
MEAN=8 BACKPROP=4         # recurrence drawn per step (log-normal Poisson, mean 8), backprop through 4
BATCH=16 LR=3e-3
SUPERVISE=--supervise-steps  # the ball's cup after every swap is a label (never an input)
INIT_SCALE=${DEMO_INIT_SCALE:-0}  # s_0 during training: zeros (0) or the truncated normal (scale S)
# Each example's gradient in turn, as the demo's figures and its seeds x ISAs sweep were made
# (the batched default sums a batch's gradients in another order: equal to float tolerance,
# not bit for bit, and training amplifies that). About 5 % slower on this model.
ORDER=--sequential
LEVELS="1 2 3 4 5 6 7 8"  # evaluated one by one
KEY_LEVELS="2 4 8"        # the levels the depth and KL-exit checks compare
GRID=1,2,3,4,6,8,12,16,24,32,48,64
EXITS=kl:1e-1,kl:1e-2,kl:1e-3,kl:1e-4
KL=kl:1e-4                # the threshold of the KL-exit checks and the cache rows
EXIT_MAX=32
if [[ "$QUICK" == 1 ]]; then
  OUT=${DEMO_OUT:-$BUILD/demo-quick}
  TRAIN_LEVELS=1-4 STEPS=${DEMO_STEPS:-2000} CURRICULUM=0 LIMIT=200
  LEVELS="1 2 4" KEY_LEVELS="2 4" GRID=1,2,4,8,16 EXITS=kl:1e-3 KL=kl:1e-3 EXIT_MAX=16
elif [[ "$FULL" == 1 ]]; then  # up to 12 swaps, mean recurrence 12, a longer run
  OUT=${DEMO_OUT:-$BUILD/demo-full}
  TRAIN_LEVELS=1-12 MEAN=12 STEPS=${DEMO_STEPS:-16000} CURRICULUM=${DEMO_CURRICULUM:-0} LIMIT=500
  # Random initial states in training, as the reference: trained from zeros only, this longer
  # run ends at several fixed points per token, reached from different s_0 (docs/demo.md).
  INIT_SCALE=${DEMO_INIT_SCALE:-1}
  LEVELS="1 2 3 4 5 6 7 8 9 10 11 12" KEY_LEVELS="2 4 8 12" EXIT_MAX=48
else
  OUT=${DEMO_OUT:-$BUILD/demo}
  STEPS=${DEMO_STEPS:-8000} CURRICULUM=${DEMO_CURRICULUM:-0} LIMIT=300
fi
rm -rf "$OUT"
mkdir -p "$OUT/eval" "$OUT/cache"
TIMES="$OUT/timings.txt"
: > "$TIMES"
# timed NAME command...: runs it, appends "NAME wall user sys" (seconds) to timings.txt. CPU time
# (user + sys of the command and its children) is what the part costs on an idle machine.
timed() {
  local name=$1 t
  shift
  { t=$( { TIMEFORMAT='%R %U %S'; time "$@" >&3 2>&4; } 2>&1 ); } 3>&1 4>&2
  echo "$name $t" >> "$TIMES"
}
echo "load_start $(cut -d' ' -f1-3 /proc/loadavg)" > "$OUT/machine.txt"

demo_model_config "$MEAN" "$BACKPROP" > "$OUT/config.json"
SLOTS=4   # shared core KV slots: (1 prelude + 4 + 1 coda) entries per token, vs 34 at r = 32
MACHINE="$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(nproc) cores ($(grep -m1 -ow -e avx512f -e avx512_bf16 -e avx2 /proc/cpuinfo | sort -u | paste -sd' '))"
cat > "$OUT/recipe.txt" <<EOF
task $TASK
task_levels $TRAIN_LEVELS
huginn $(cd "$(dirname "$HUGINN")" && pwd)/huginn
machine $MACHINE
slots $SLOTS
train huginn task train --model-config config.json --task $TASK:ops=$TRAIN_LEVELS $SUPERVISE $ORDER --steps $STEPS --batch $BATCH --lr $LR --warmup $((STEPS / 20)) --curriculum $CURRICULUM --mean-recurrence $MEAN --backprop-depth $BACKPROP --init-scale $INIT_SCALE --seed $SEED --threads $THREADS
levels $LEVELS
key_levels $KEY_LEVELS
grid $GRID
exits $EXITS
kl $KL
exit_max $EXIT_MAX
mean $MEAN
limit $LIMIT
seed $SEED
threads $THREADS
isa ${HUGINN_CPU_ISA:-unset (the best this CPU runs)}
quick $QUICK
EOF

echo "== the task: $TASK (held-out examples, 1, 4 and 8 swaps) =="
for l in 1 4 8; do "$HUGINN" task generate "$TASK:ops=$l" --split test --n 1 --format text; done
echo
echo "== training ($STEPS steps x $BATCH examples: the answer and the ball's cup after every swap are labels; $THREADS thread(s)) =="
train() {  # the whole log to train.log; the held-out checks (with ETA) to the terminal
  "$HUGINN" task train --model-config "$OUT/config.json" --task "$TASK:ops=$TRAIN_LEVELS" \
    $SUPERVISE $ORDER --out "$OUT/model" --steps "$STEPS" --batch "$BATCH" --lr "$LR" \
    --warmup $((STEPS / 20)) --curriculum "$CURRICULUM" --mean-recurrence "$MEAN" \
    --backprop-depth "$BACKPROP" --init-scale "$INIT_SCALE" --eval-every $((STEPS / 5)) --seed "$SEED" \
    --threads "$THREADS" 2>&1 | tee "$OUT/train.log" | grep --line-buffered -E "heldout_acc|^train"
}
timed train train
echo

# ---- 1 + 2: every level at every r and with KL exit (one KV slot per core layer shared across
# recurrences, so a token that exited early stays visible to later tokens) ----
echo "== evaluation per level: accuracy at r = $GRID, and KL exit ($EXITS, max $EXIT_MAX) =="
eval_levels() {
  for l in $LEVELS; do
    "$HUGINN" eval --model "$OUT/model" --task "$TASK:ops=$l" --steps "$GRID" --exit "$EXITS" \
      --exit-max-steps "$EXIT_MAX" --cache-slots 1 --limit "$LIMIT" --show 1 \
      --out "$OUT/eval/level-$l" --threads "$THREADS" -q > "$OUT/eval/level-$l.txt"
    echo "  level $l: $(awk -F, 'NR > 1 && $3 == "" { printf " r=%s %.0f%%", $2, 100 * $6 }' "$OUT/eval/level-$l/results.csv")"
  done
}
timed eval_levels eval_levels

if [[ "$QUICK" != 1 ]]; then
# ---- 3: KV-cache sharing and warm start, all levels mixed, beside the full cache ----
echo "== KV cache: full vs shared slots, cold vs warm start ($TASK:ops=$TRAIN_LEVELS) =="
eval_cache() {  # eval_cache NAME STEPS FLAGS...
  local name=$1 steps=$2
  shift 2
  "$HUGINN" eval --model "$OUT/model" --task "$TASK:ops=$TRAIN_LEVELS" --steps "$steps" \
    --exit "$KL" --limit "$LIMIT" --show 0 --no-plots --out "$OUT/cache/$name" \
    --threads "$THREADS" -q "$@" > "$OUT/cache/$name.txt"
}
cache_runs() {
  eval_cache full-cold "$EXIT_MAX"
  eval_cache shared-cold "$EXIT_MAX" --cache-slots "$SLOTS"
  eval_cache shared-warm "$EXIT_MAX" --cache-slots "$SLOTS" --warm-start
  eval_cache full-warm "$EXIT_MAX" --warm-start
  # The prompt fed one token per call, as if the model had written it: each marker's running cup
  # is an answer (the swap's intermediate answers), so warm start can be measured over answers
  # that span many tokens (one KV slot, as the evaluation per level); r = 1-3 too: does a warm
  # token answer at fewer fixed recurrences?
  eval_cache bytoken-cold "1,2,3,$EXIT_MAX" --cache-slots 1 --prompt-by-token
  eval_cache bytoken-warm "1,2,3,$EXIT_MAX" --cache-slots 1 --prompt-by-token --warm-start
}
timed cache cache_runs

# ---- 4: one hard example's latent trajectory, from 4 extra random initial states too ----
echo "== latent trajectory of a hard example (huginn trace, $EXIT_MAX recurrences, 4 random initial states) =="
HARD=$("$HUGINN" task generate "$TASK:ops=${KEY_LEVELS##* }" --split test --n 1 --format jsonl)
HARD_PROMPT=$(sed 's/.*"prompt":"\([^"]*\)".*/\1/' <<< "$HARD")
HARD_ANSWER=$(sed 's/.*"answer":"\([^"]*\)".*/\1/' <<< "$HARD")
echo "prompt $HARD_PROMPT" > "$OUT/trace.txt"
echo "answer $HARD_ANSWER" >> "$OUT/trace.txt"
timed trace "$HUGINN" trace --model "$OUT/model" --prompt "$HARD_PROMPT" --steps "$EXIT_MAX" \
  --seeds 4 --seed-scale 1 --exit "$KL" --out "$OUT/trace" --plot-format png \
  --threads "$THREADS" >> "$OUT/trace.txt"
fi

echo "load_end $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine.txt"
echo
bash "$HERE/demo_report.sh" "$OUT"
