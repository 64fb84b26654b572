#!/usr/bin/env bash
# The demo's checks and report, from a folder scripts/demo.sh filled (it runs this at its end; it
# can be rerun alone): OUT/report.md with the tables and the plots it embeds, OUT/checks.txt.
# Prints the checks and exits non-zero when one fails.
#
#   bash scripts/demo_report.sh OUT
#
# Reads OUT/recipe.txt, timings.txt, machine.txt, train.log, eval/level-L/results.csv (one per
# level: fixed-r and KL-exit rows), cache/NAME/results.csv, trace.txt and trace/*.png.
# results.csv columns: 1 setting, 2 steps, 3 exit, 4 n, 5 correct, 6 accuracy, 7 ci_low,
# 8 ci_high, 9 mean_steps_per_token, 10 tokens, 11 seconds, 12 tokens_per_second,
# 13 mean_first_token_steps, 14 mean_cache_bytes, 15 mean_prompt_steps_per_token, 16 step_answers,
# 17 step_answers_correct, 18 mean_step_answer_steps (15-18: --prompt-by-token runs only).
set -euo pipefail
OUT=${1:?usage: demo_report.sh OUT}
REPORT="$OUT/report.md"
CHECKS="$OUT/checks.txt"
recipe() { awk -v k="$1" '$1 == k { $1 = ""; sub(/^ /, ""); print; exit }' "$OUT/recipe.txt"; }
TASK=$(recipe task) LEVELS=$(recipe levels) KEY_LEVELS=$(recipe key_levels) KL=$(recipe kl)
MEAN=$(recipe mean) EXIT_MAX=$(recipe exit_max) QUICK=$(recipe quick) HUGINN=$(recipe huginn)
KL_VALUE=${KL#*:}
HARDEST=${KEY_LEVELS##* }
csv() { echo "$OUT/eval/level-$1/results.csv"; }
fixed_col() { awk -F, -v r="$2" -v c="$3" 'NR > 1 && $3 == "" && $2 == r { print $c }' "$(csv "$1")"; }
fixed_acc() { fixed_col "$1" "$2" 6; }
# A column of the level's row for the KL threshold $KL (the CSV spells 1e-3 as 0.001).
kl_col() {
  awk -F, -v t="$KL_VALUE" -v c="$2" \
    'NR > 1 && $3 != "" { split($3, a, ":"); if (a[2] + 0 == t + 0) print $c }' "$(csv "$1")"
}
best_acc() { awk -F, 'NR > 1 && $3 == "" && $6 > b { b = $6 } END { print b + 0 }' "$(csv "$1")"; }
# The smallest r whose accuracy reaches 90 % of the level's best fixed-r accuracy.
r90() {
  awk -F, -v best="$(best_acc "$1")" 'NR > 1 && $3 == "" && $6 >= 0.9 * best { print $2; exit }' "$(csv "$1")"
}
pct() { awk -v x="$1" 'BEGIN { printf "%.1f", 100 * x }'; }
# The accuracy of answering the cup the ball started under (ignoring every swap) on the level's
# evaluated examples: the baseline a model that does not track the ball can reach.
baseline() {
  local n
  n=$(awk -F, 'NR == 2 { print $4 }' "$(csv "$1")")
  "$HUGINN" task generate "$TASK:ops=$1" --split test --n "$n" --format jsonl |
    sed 's/.*"answer":"\([^"]*\)".*"prompt":"\(.\)[^"]*".*/\2 \1/' |
    awk '{ k += $1 == $2 } END { printf "%.3f", k / NR }'
}
# A column of a cache run's fixed-r ("fixed") or KL-exit ("kl") row.
cache_col() {
  awk -F, -v c="$2" -v want="$3" 'NR > 1 && (want == "fixed" ? $3 == "" : $3 != "") { print $c }' \
    "$OUT/cache/$1/results.csv"
}

# The largest relative distance between the trace's trajectories (zeros + random initial
# states) over tokens, at the start or the end ("initial" | "final").
spread() {
  grep -o "\"seed_spread_$1\": [0-9.e+-]*" "$OUT/trace/summary.json" |
    awk '{ if ($2 + 0 > m) m = $2 + 0 } END { printf "%.2g", m }'
}

# ---- checks ----
fail=0
: > "$CHECKS"
check() {  # check "description" awk-condition
  local verdict=FAIL
  if awk "BEGIN { exit !($2) }"; then verdict=PASS; else fail=1; fi
  echo "  $verdict  $1" | tee -a "$CHECKS"
}
echo "== checks =="
if [[ "$QUICK" == 1 ]]; then
  for l in $KEY_LEVELS; do
    b=$(baseline "$l") am=$(fixed_acc "$l" "$MEAN")
    check "level $l learned: accuracy at r=$MEAN ($(pct "$am")%) >= the start-cup baseline ($(pct "$b")%) + 25 points" "$am >= $b + 0.25"
  done
  a1=$(fixed_acc "$HARDEST" 1) am=$(fixed_acc "$HARDEST" "$MEAN")
  check "recurrence helps level $HARDEST: r=$MEAN ($(pct "$am")%) >= r=1 ($(pct "$a1")%) + 10 points" "$am >= $a1 + 0.10"
else
  prev=0
  for l in $KEY_LEVELS; do
    r=$(r90 "$l")
    check "depth grows with difficulty: level $l reaches 90% of its best ($(pct "$(best_acc "$l")")%) at r=$r, later than the easier key level (r=$prev)" "$r > $prev"
    prev=$r
  done
  b=$(best_acc "$HARDEST")
  check "the hardest key level ($HARDEST swaps) is learned: best accuracy $(pct "$b")% >= 90%" "$b >= 0.90"
  for l in $LEVELS; do
    a=$(fixed_acc "$l" $((2 * MEAN))) b=$(best_acc "$l")
    check "depth extrapolates: level $l at r=$((2 * MEAN)) (2x the training mean) $(pct "$a")% is within 2 points of its best $(pct "$b")%" "$a >= $b - 0.02"
  done
  prev=0
  for l in $KEY_LEVELS; do
    s=$(kl_col "$l" 9) a=$(kl_col "$l" 6) ax=$(fixed_acc "$l" "$EXIT_MAX")
    check "KL exit $KL takes more recurrences on harder levels: level $l $s per token > $prev" "$s > $prev"
    check "KL exit $KL on level $l: $(pct "$a")% within 2 points of r=$EXIT_MAX ($(pct "$ax")%) at <= half its recurrences ($s)" "$a >= $ax - 0.02 && $s <= $EXIT_MAX / 2"
    prev=$s
  done
  fb=$(cache_col full-cold 14 fixed) sb=$(cache_col shared-cold 14 fixed)
  check "KV-cache sharing: $sb bytes per example, <= 1/4 of the full cache's $fb" "4 * $sb <= $fb"
  fa=$(cache_col full-cold 6 kl) sa=$(cache_col shared-cold 6 kl)
  check "KV-cache sharing with KL exit: $(pct "$sa")% within 1 point of the full cache ($(pct "$fa")%)" "$sa >= $fa - 0.01"
  # Warm start changes only the tokens after the first (here the end-of-line, which a KL exit
  # stops at the earliest check either way), so it is checked for the same answers.
  wa=$(cache_col shared-warm 6 kl) ws=$(cache_col shared-warm 9 kl) cs=$(cache_col shared-cold 9 kl)
  check "warm start with KL exit: $(pct "$wa")% within 1 point of cold start ($(pct "$sa")%); $ws vs $cs recurrences per token" "$wa >= $sa - 0.01"
  ntok=$(awk '$1 == "prompt" { print length($2) }' "$OUT/trace.txt")
  nrow=$(awk '$1 ~ /^[0-9]+$/ && NF >= 6' "$OUT/trace.txt" | wc -l)
  npng=$(find "$OUT/trace" -name '*.png' | wc -l)
  check "trajectory: all $ntok tokens of the hard example classified ($nrow rows), $npng plots" "$nrow == $ntok && $npng >= 3"
  sp0=$(spread initial) sp=$(spread final)
  check "trajectory: from 4 random initial states (relative spread $sp0 at the start) every token ends within $sp of the others (< 1e-3): independent of the initial state" "$sp < 1e-3"
fi

# ---- plots (gnuplot) ----
DAT="$OUT/plots"
mkdir -p "$DAT"
: > "$DAT/acc_vs_r.dat"
for l in $LEVELS; do
  awk -F, 'NR > 1 && $3 == "" { print $2, 100 * $6 }' "$(csv "$l")" >> "$DAT/acc_vs_r.dat"
  printf '\n\n' >> "$DAT/acc_vs_r.dat"
done
# Per level: the level, then for each threshold (file order) steps/token, answer steps, accuracy.
for l in $LEVELS; do
  awk -F, -v l="$l" 'NR > 1 && $3 != "" { s = s " " $9 " " $13 " " 100 * $6 } END { print l s }' "$(csv "$l")"
done > "$DAT/kl_steps.dat"
EXIT_NAMES=$(awk -F, 'NR > 1 && $3 != "" { printf "%s ", $3 }' "$(csv "${LEVELS%% *}")")
: > "$DAT/calibration.dat"
for l in $KEY_LEVELS; do  # index 2i: KL thresholds; 2i+1: fixed r
  awk -F, 'NR > 1 && $3 != "" { print $9, 100 * $6 }' "$(csv "$l")" >> "$DAT/calibration.dat"
  printf '\n\n' >> "$DAT/calibration.dat"
  awk -F, 'NR > 1 && $3 == "" { print $9, 100 * $6 }' "$(csv "$l")" >> "$DAT/calibration.dat"
  printf '\n\n' >> "$DAT/calibration.dat"
done
PLOTS=0
if command -v gnuplot > /dev/null; then
  PLOTS=1
  nl=$(wc -w <<< "$LEVELS") nk=$(wc -w <<< "$KEY_LEVELS") ne=$(wc -w <<< "$EXIT_NAMES")
  gnuplot <<EOF
set terminal pngcairo size 900,540 font ",11"
set grid
set key outside right
set output "$OUT/accuracy_vs_r.png"
set title "$TASK: accuracy vs test-time recurrences r, one line per level"
set xlabel "recurrences r at test time"; set ylabel "accuracy (%)"
set logscale x 2; set yrange [0:102]
levels = "$LEVELS"
plot for [i=0:$nl-1] "$DAT/acc_vs_r.dat" index i using 1:2 with linespoints lw 2 title sprintf("%s swaps", word(levels, i+1))
set output "$OUT/kl_steps_vs_level.png"
set title "KL exit: mean recurrences per generated token vs level (max $EXIT_MAX)"
unset logscale x; set xlabel "level (swaps per example)"; set ylabel "recurrences per token"
set yrange [0:*]; set xtics 1
names = "$EXIT_NAMES"
plot for [i=0:$ne-1] "$DAT/kl_steps.dat" using 1:(column(2+3*i)) with linespoints lw 2 lc i+1 title sprintf("%s, all tokens", word(names, i+1)), \
     for [i=0:$ne-1] "$DAT/kl_steps.dat" using 1:(column(3+3*i)) with linespoints dt 2 lw 2 lc i+1 title sprintf("%s, answer token", word(names, i+1))
set output "$OUT/calibration.png"
set title "accuracy vs compute: KL thresholds (solid) against fixed r (dashed)"
set xlabel "mean recurrences per generated token"; set ylabel "accuracy (%)"
set logscale x 2; set yrange [0:102]; set xtics auto
keys = "$KEY_LEVELS"
plot for [i=0:$nk-1] "$DAT/calibration.dat" index 2*i using 1:2 with linespoints lw 2 lc i+1 title sprintf("level %s, KL exit", word(keys, i+1)), \
     for [i=0:$nk-1] "$DAT/calibration.dat" index 2*i+1 using 1:2 with linespoints dt 2 lc i+1 title sprintf("level %s, fixed r", word(keys, i+1))
EOF
fi

# ---- report.md ----
{
  echo "# Recurrent depth at small scale: the \`$TASK\` task"
  echo
  echo "Made by \`scripts/demo.sh\` ($( [[ $QUICK == 1 ]] && echo "QUICK=1, " )seed $(recipe seed), $(recipe threads) thread(s), kernels: HUGINN_CPU_ISA=$(recipe isa)) on $(recipe machine)."
  echo "Load average (1, 5, 15 min) at the start: $(awk '$1 == "load_start" { print $2, $3, $4 }' "$OUT/machine.txt"), at the end: $(awk '$1 == "load_end" { print $2, $3, $4 }' "$OUT/machine.txt")."
  echo "Results are seeded: the same on every run with the same kernels (ISA); only the times depend on the machine and its load."
  echo
  echo "| part | wall s | CPU s (user + sys) |"
  echo "|---|---|---|"
  awk '{ printf "| %s | %.0f | %.0f |\n", $1, $2, $3 + $4; w += $2; c += $3 + $4 } END { printf "| **total** | **%.0f** | **%.0f** |\n", w, c }' "$OUT/timings.txt"
  echo
  echo "Training: \`$(recipe train)\`"
  echo
  echo '```text'
  grep -E "^training|heldout_acc" "$OUT/train.log" | sed 's/  n+k [0-9+]*//'
  echo '```'
  echo
  echo "## 1. Harder problems use more depth, and depth extrapolates"
  echo
  echo "Accuracy (%) on $(awk -F, 'NR == 2 { print $4 }' "$(csv "${LEVELS%% *}")") held-out examples per level (swaps per example) at each test-time r; the model trained with a mean of $MEAN recurrences. *r90*: the first r at 90 % of the level's best; *start cup*: the accuracy of ignoring every swap."
  echo
  grid=$(awk -F, 'NR > 1 && $3 == "" { printf "%s ", $2 }' "$(csv "${LEVELS%% *}")")
  printf '| level |'; for r in $grid; do printf ' r=%s |' "$r"; done; echo ' r90 | start cup |'
  printf '|---|'; for r in $grid; do printf -- '---|'; done; echo '---|---|'
  for l in $LEVELS; do
    printf '| %s |' "$l"
    for r in $grid; do printf ' %s |' "$(pct "$(fixed_acc "$l" "$r")")"; done
    echo " $(r90 "$l") | $(pct "$(baseline "$l")") |"
  done
  echo
  [[ $PLOTS == 1 ]] && echo "![accuracy vs r per level](accuracy_vs_r.png)" && echo
  echo "## 2. KL exit: adaptive compute that tracks difficulty"
  echo
  echo "Each threshold stops a token's recurrence once the KL divergence between two successive recurrences' next-token distributions falls below it (at most $EXIT_MAX). Per level: accuracy %, mean recurrences per generated token (the answer and the end-of-line), and the answer token's alone. One KV slot per core layer is shared across recurrences."
  echo
  printf '| level | r=%s |' "$EXIT_MAX"
  for e in $EXIT_NAMES; do printf ' %s: acc | steps/token | answer |' "$e"; done; echo
  printf '|---|---|'; for e in $EXIT_NAMES; do printf -- '---|---|---|'; done; echo
  for l in $LEVELS; do
    printf '| %s | %s |' "$l" "$(pct "$(fixed_acc "$l" "$EXIT_MAX")")"
    awk -F, 'NR > 1 && $3 != "" { printf " %.1f | %.2f | %.2f |", 100 * $6, $9, $13 }' "$(csv "$l")"
    echo
  done
  echo
  [[ $PLOTS == 1 ]] && echo "![KL exit steps vs level](kl_steps_vs_level.png)" && echo &&
    echo "The calibration curve (pick the threshold by the accuracy you can give up):" && echo &&
    echo "![calibration](calibration.png)" && echo
  if [[ $QUICK != 1 ]]; then
    echo "## 3. KV-cache sharing and warm start"
    echo
    echo "All levels mixed ($TASK:ops=$(recipe task_levels)). *full*: every recurrence keeps its own KV entries (1 prelude + $EXIT_MAX core + 1 coda per token at r = $EXIT_MAX); *shared*: $(recipe slots) core slots reused across recurrences; *warm*: each generated token's recurrence starts from the previous token's final state instead of zeros."
    echo
    echo "| cache | start | setting | accuracy % | steps/token | answer steps | KV bytes per example |"
    echo "|---|---|---|---|---|---|---|"
    for run in full-cold shared-cold full-warm shared-warm; do
      awk -F, -v c="${run%-*}" -v s="${run#*-}" 'NR > 1 { gsub(/"/, "", $1); printf "| %s | %s | %s | %.1f | %.2f | %.2f | %d |\n", c, s, $1, 100 * $6, $9, $13, $14 }' "$OUT/cache/$run/results.csv"
    done
    echo
    if [[ -f "$OUT/cache/bytoken-cold/results.csv" ]]; then
      echo "A swap's answer is one letter, and the end-of-line after it stops at the first check either way, so the rows above cannot show warm start saving recurrences. Here the prompt is fed one token per call, as if the model had written it (\`huginn eval --prompt-by-token\`, one KV slot): every token runs its own recurrence and KL exit, and the cup under each marker (\`:\`, \`,\`, \`=\`) is an intermediate answer, so an example of N swaps has N + 1 of them (here N = $(recipe task_levels)). *warm*: each token starts from the previous token's final state (the raw state, as the reference with an exit)."
      echo
      echo "| start | setting | final answer % | intermediate answers % | their steps | steps per prompt token | steps per generated token |"
      echo "|---|---|---|---|---|---|---|"
      for run in bytoken-cold bytoken-warm; do
        awk -F, -v s="${run#*-}" 'NR > 1 { gsub(/"/, "", $1); printf "| %s | %s | %.1f | %.1f of %d | %.2f | %.2f | %.2f |\n", s, $1, 100 * $6, $16 ? 100 * $17 / $16 : 0, $16, $18, $15, $9 }' "$OUT/cache/$run/results.csv"
      done
      echo
    fi
    echo "## 4. The latent trajectory of a hard example"
    echo
    echo "\`huginn trace\` of \`$(awk '$1 == "prompt" { print $2 }' "$OUT/trace.txt")\` (answer $(awk '$1 == "answer" { print $2 }' "$OUT/trace.txt")) over $EXIT_MAX recurrences, from zeros and from 4 random initial states. Each token's class (converging to a fixed point, orbiting, drifting), its last relative change of state, the top-1 prediction after the last recurrence (a byte), and the recurrence at which a KL exit would stop it:"
    echo
    echo '```text'
    # top1@R as the byte it stands for
    awk '$1 == "token" { printf "%5s %4s %-4s %-12s %10s %6s", "token", "id", "text", "class", "rel_change", "top1"; for (i = 7; i < NF; i += 2) printf " %14s", $i " " $(i + 1); print ""; next } $1 ~ /^[0-9]+$/ && NF >= 6 { $6 = $6 == 10 ? "\\n" : sprintf("%c", $6 + 0); printf "%5s %4s %-4s %-12s %10s %6s", $1, $2, $3, $4, $5, $6; for (i = 7; i <= NF; ++i) printf " %14s", $i; print "" }' "$OUT/trace.txt"
    echo '```'
    echo
    echo "Path independence: the five trajectories of each token start up to $(spread initial) apart (mean pairwise distance over mean state norm) and end at most $(spread final) apart."
    echo
    for p in pca convergence heatmap; do
      [[ -f "$OUT/trace/$p.png" ]] && echo "![trace $p](trace/$p.png)" && echo
    done
  fi
  echo "## Checks"
  echo
  echo '```text'
  cat "$CHECKS"
  echo '```'
} > "$REPORT"
echo "report: $REPORT"
exit $fail
