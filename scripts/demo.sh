#!/usr/bin/env bash
# The main job, for now a smoke run of the foundation on a tiny golden model: the model's
# config and parameter counts, then the next-token prediction as the number of recurrences r
# grows — the latent state settles and the prediction stops changing (test-time compute).
# The full demo (train a model, show accuracy vs r) replaces this when the demo issue lands.
set -euo pipefail
BUILD=${1:-build}
HUGINN="$BUILD/huginn"
MODEL=tests/data/golden/tiny-b
IDS=17,42,7,256,3,99,12

echo "== huginn info =="
"$HUGINN" info --model "$MODEL"
echo
echo "== next-token top-3 at the last position as r grows (ids $IDS) =="
for r in 1 2 4 8 16 32 64; do
  printf "r=%-3s " "$r"
  "$HUGINN" forward --model "$MODEL" --ids "$IDS" --steps "$r" --top 3 --quiet | tail -n 1
done
