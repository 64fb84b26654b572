#!/usr/bin/env bash
# The server benchmarks' model: DIR/SIZE with a tokenizer.json trained on a two-line corpus.
# SIZE "tiny": tiny-b as it is (n_embd 96, 0.97 M parameters); "medium": tiny-b's layout at
# n_embd 512, intermediate 1536, block_size 1024 (28 M parameters, ~112 MB of f32 weights),
# freshly initialised with huginn init --seed 1. Prints the model directory.
# Usage: scripts/bench-server-model.sh BUILD SIZE DIR
set -euo pipefail
BUILD=$1; SIZE=$2; DIR=$3
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODEL="$DIR/$SIZE"; mkdir -p "$MODEL"
GOLD="$ROOT/tests/data/golden/tiny-b"
if [ "$SIZE" = tiny ]; then
  cp "$GOLD/config.json" "$GOLD/model.safetensors" "$MODEL/"
else
  node -e "const c=require('$GOLD/config.json');c.n_embd=512;c.intermediate_size=1536;c.n_heads=8;
    c.num_attention_heads=8;c.num_key_value_heads=8;c.block_size=1024;
    require('fs').writeFileSync('$DIR/config.json',JSON.stringify(c,null,1))"
  "$BUILD/huginn" init --model-config "$DIR/config.json" --out "$MODEL" --seed 1 --quiet
fi
printf 'hello world, hello there. the world says hello back\nhello hello world\n' > "$DIR/corpus.txt"
"$BUILD/huginn" tokenizer train --input "$DIR/corpus.txt" --vocab-size 280 --quiet \
  --special '<|begin_text|>' --special '<|end_text|>' --special '<|begin_header|>' \
  --special '<|end_header|>' --special '<|end_turn|>' --out "$MODEL/tokenizer.json" >/dev/null 2>&1
echo "$MODEL"
