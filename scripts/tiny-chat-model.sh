#!/usr/bin/env bash
# Writes a model directory huginn serve can chat with: tiny-b's config and weights (golden,
# random weights) and a byte-level BPE tokenizer trained here on a few words, with Huginn's chat
# markers as special tokens (they fit tiny-b's 300-token vocabulary).
# Usage: scripts/tiny-chat-model.sh BUILD DIR
set -euo pipefail
BUILD=$1; DIR=$2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$DIR"
cp "$ROOT/tests/data/golden/tiny-b/config.json" "$ROOT/tests/data/golden/tiny-b/model.safetensors" "$DIR/"
printf 'hello world, hello there. the world says hello back\nhello hello world\n' > "$DIR/corpus.txt"
"$BUILD/huginn" tokenizer train --input "$DIR/corpus.txt" --vocab-size 280 --quiet \
  --special '<|begin_text|>' --special '<|end_text|>' --special '<|begin_header|>' \
  --special '<|end_header|>' --special '<|end_turn|>' --out "$DIR/tokenizer.json" >/dev/null 2>&1
rm "$DIR/corpus.txt"
