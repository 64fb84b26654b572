#!/bin/bash
# The decoders of scripts/bench-decoders.sh on the trained `trace` model embedded into a larger
# shape by `huginn widen` (the same function up to float rounding, docs/widen.md), so that the
# trained model's draft acceptance and accuracy are measured where a core pass is memory-bound.
# The source model's rows first (same examples), then the widened model's, stored and run in BF16.
#
#   bash scripts/bench-decoders-widened.sh [BUILD_DIR] [MODEL_DIR] [SHAPE]
# SHAPE: a config.json or the preset huginn-0125 (its prelude/core/coda shapes, the task's
# vocabulary); default: n_embd 2048, 32 heads of 64, intermediate 8192, the source's layers (core +
# adapter 151 MB in BF16, several times a 32 MB L3). MODEL_DIR (default /tmp/huginn-trace) must
# hold the trained model (scripts/bench-decoders.sh trains it). The widened model is written to
# MODEL_DIR/wide-NAME once and kept. Environment as bench-decoders.sh's (R, OPS, DECODERS) and N
# (24 examples: a memory-bound model decodes slowly on one thread).
set -euo pipefail
BUILD=${1:-build}
DIR=${2:-/tmp/huginn-trace}
SHAPE=${3:-}
HUGINN="$BUILD/huginn"
[ -x "$HUGINN" ] || { echo "bench-decoders-widened: $HUGINN not found (make build)" >&2; exit 1; }
[ -f "$DIR/model/model.safetensors" ] ||
  { echo "bench-decoders-widened: no model in $DIR/model (run scripts/bench-decoders.sh first)" >&2; exit 1; }
if [ -z "$SHAPE" ]; then
  SHAPE="$DIR/shape-2048.json"
  python3 - "$DIR/model/config.json" "$SHAPE" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c.update(n_embd=2048, num_attention_heads=32, n_heads=32, num_key_value_heads=32,
         intermediate_size=8192)
json.dump(c, open(sys.argv[2], "w"), indent=2)
PY
fi
name=$(basename "$SHAPE" .json)
WIDE="$DIR/wide-$name"
if [ ! -f "$WIDE/model.safetensors" ]; then
  /usr/bin/time -f "widen: %e s wall, %M KB peak RSS" "$HUGINN" widen --model "$DIR/model" \
    --shape "$SHAPE" --out "$WIDE" --dtype bf16
fi
export N=${N:-24}
echo "== source model ($DIR/model, f32)"
bash "$(dirname "$0")/bench-decoders.sh" "$BUILD" "$DIR"
echo "== widened model ($WIDE, bf16 as stored)"
MODEL="$WIDE" DTYPE=auto bash "$(dirname "$0")/bench-decoders.sh" "$BUILD" "$DIR"
