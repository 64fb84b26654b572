# Sourced by the server benchmarks (bench-server-prefix.sh, bench-server-chunk.sh) after they set
# BUILD: ROOT, JS (the node clients), TMP (removed at exit), MODEL (the medium model of
# bench-server-model.sh in TMP), and start_server ARGS... (huginn serve on a free port with the
# API key "bench"; sets PID and URL) / stop_server. A server still running at exit is killed.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
JS="$ROOT/tests/server/js"
TMP=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -rf "$TMP"' EXIT
MODEL=$("$ROOT/scripts/bench-server-model.sh" "$BUILD" medium "$TMP")

start_server() {
  "$BUILD/huginn" serve --model "$MODEL" --port 0 --api-key bench "$@" > "$TMP/out" 2> "$TMP/log" &
  PID=$!
  for _ in $(seq 600); do grep -qs listening "$TMP/out" && break; sleep 0.1; done
  URL="http://127.0.0.1:$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$TMP/out")"
}

stop_server() {
  kill $PID; wait $PID 2>/dev/null || true; PID=
}
