#!/usr/bin/env bash
# The README's picture of the chat page: huginn serve on tiny-b (random weights, so the text is
# noise; the depths are real; scripts/tiny-chat-model.sh), one answer with KL exit in headless
# chromium (tests/server/js/screenshot.mjs), written to OUT.
# Usage: scripts/chat-page-screenshot.sh [BUILD] [OUT]
set -euo pipefail
BUILD=${1:-build}; OUT=${2:-docs/images/chat_page.png}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
JS="$ROOT/tests/server/js"
[ -d "$JS/node_modules/puppeteer-core" ] || (cd "$JS" && npm ci --no-audit --no-fund --silent)
CHROMIUM=$(command -v chromium) || { echo "chromium is missing (scripts/install-deps.sh)" >&2; exit 1; }
TMP=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -rf "$TMP"' EXIT
MODEL="$TMP/tiny"
bash "$ROOT/scripts/tiny-chat-model.sh" "$BUILD" "$MODEL"
"$BUILD/huginn" serve --model "$MODEL" --port 0 --api-key shot --threads 1 > "$TMP/out" 2> "$TMP/log" &
PID=$!
for _ in $(seq 600); do grep -qs listening "$TMP/out" && break; sleep 0.1; done
URL="http://127.0.0.1:$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$TMP/out")"
node "$JS/screenshot.mjs" "$URL" shot "$CHROMIUM" "$OUT"
echo "wrote $OUT"
