#!/usr/bin/env bash
# Runs the libFuzzer binaries of a HUGINN_FUZZ build, each for SECONDS, JOBS at a time, and prints
# one line per target: executions, executions per second, corpus growth, time, and the result.
#
#   fuzz/run.sh [--ci] BUILD SECONDS [TARGET...]      (no TARGET: every BUILD/fuzz/*_fuzz)
#
# Inputs: fuzz/corpus/<t>/ (committed seeds) and fuzz/regressions/<t>/ (minimised findings) are read
# only; new coverage goes to BUILD/fuzz-corpus/<t>/, kept between runs so long runs build on each
# other. Findings (crash, leak, timeout, out-of-memory) are written to BUILD/fuzz-artifacts/<t>/
# and the log of each target to BUILD/fuzz-logs/<t>.log.
#
# Default: keep going after a finding (-fork=1 -ignore_crashes/timeouts/ooms), so a long run collects
# every finding of every target. --ci: stop each target at its first finding; exit status 1 when any
# target had one. --ci is reproducible: a fixed seed (FUZZ_SEED, default 1), at most FUZZ_CI_RUNS
# inputs (default 20000) and a fresh working corpus, so every machine runs the same inputs in the
# same order and a slower one (stopped by SECONDS first) runs a prefix of them; a CI verdict never
# depends on luck or on what an earlier run left in the corpus. Targets named in fuzz/ci-exclude (one "target reason" per line, for a known crash
# its owner is fixing) are not run by --ci; their line says so.
#
# Environment: FUZZ_JOBS (targets at once, default 2), FUZZ_MAX_LEN (bytes per input, default 4096),
# FUZZ_TIMEOUT (seconds per input before it counts as a hang, default 10), FUZZ_RSS_MB (memory per
# process before it counts as out-of-memory, default 2048).
set -uo pipefail
ci=0
if [ "${1:-}" = "--ci" ]; then
  ci=1
  shift
fi
if [ $# -lt 2 ]; then
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
build=$1
seconds=$2
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
jobs=${FUZZ_JOBS:-2}
max_len=${FUZZ_MAX_LEN:-4096}
timeout=${FUZZ_TIMEOUT:-10}
rss_mb=${FUZZ_RSS_MB:-2048}

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for b in "$build"/fuzz/*_fuzz; do
    [ -x "$b" ] && targets+=("$(basename "$b" _fuzz)")
  done
fi
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz: no fuzzers in $build/fuzz (build them with make fuzz-build)" >&2
  exit 2
fi

excluded() {  # prints the reason when target $1 is excluded from --ci
  [ $ci -eq 1 ] && [ -f "$root/fuzz/ci-exclude" ] &&
    awk -v t="$1" '$1 == t { $1 = ""; sub(/^ /, ""); print; found = 1 } END { exit !found }' \
      "$root/fuzz/ci-exclude"
}

# One target: runs it, then writes its summary line to $build/fuzz-logs/<t>.result.
run_one() {
  local t=$1 bin="$build/fuzz/$1_fuzz"
  local work="$build/fuzz-corpus/$t"
  if [ $ci -eq 1 ]; then
    work="$build/fuzz-corpus-ci/$t"
    rm -rf "$work"
  fi
  local art="$build/fuzz-artifacts/$t" log="$build/fuzz-logs/$t.log"
  local res="$build/fuzz-logs/$t.result"
  mkdir -p "$work" "$art" "$build/fuzz-logs"
  if [ ! -x "$bin" ]; then
    echo "fuzz $t: FAILED (no fuzzer $bin)" >"$res"
    return
  fi
  local len=$max_len
  case $t in  # targets whose real inputs are larger than FUZZ_MAX_LEN
    checkpoint) len=$((max_len > 16384 ? max_len : 16384)) ;;  # a tiny model's train_state header: 6.7 KB
    tokenizer_json) len=$((max_len > 8192 ? max_len : 8192)) ;;  # the seeds are 2.6-3.4 KB
  esac
  local dirs=("$work" "$root/fuzz/corpus/$t")
  [ -d "$root/fuzz/regressions/$t" ] && dirs+=("$root/fuzz/regressions/$t")
  local before
  before=$(find "$work" -type f | wc -l)
  local flags=(-max_total_time="$seconds" -max_len="$len" -timeout="$timeout"
               -rss_limit_mb="$rss_mb" -malloc_limit_mb="$rss_mb" -print_final_stats=1
               -artifact_prefix="$art/")
  if [ $ci -eq 0 ]; then
    flags+=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  else
    flags+=(-seed="${FUZZ_SEED:-1}" -runs="${FUZZ_CI_RUNS:-20000}")
  fi
  local start end rc
  start=$(date +%s)
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} "$bin" "${flags[@]}" "${dirs[@]}" >"$log" 2>&1
  rc=$?
  end=$(date +%s)
  local execs after findings result
  execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
  execs=${execs:-0}
  after=$(find "$work" -type f | wc -l)
  findings=$(find "$art" -type f -newer "$log.start" 2>/dev/null | wc -l)
  local secs=$((end - start))
  [ $secs -lt 1 ] && secs=1
  if [ "$rc" -eq 0 ] && [ "$findings" -eq 0 ]; then
    result=ok
  else
    result="FOUND $findings (exit $rc; see $log and $art/)"
  fi
  printf 'fuzz %-20s %10d execs %7d exec/s  corpus %d -> %d  %4d s  %s\n' "$t" "$execs" \
    $((execs / secs)) "$before" "$after" "$secs" "$result" >"$res"
}

echo "fuzz: ${#targets[@]} targets, ${seconds} s each, $jobs at a time, max_len $max_len," \
     "timeout ${timeout} s, rss ${rss_mb} MB$([ $ci -eq 1 ] && echo ', stop at first finding')"
t0=$(date +%s)
pids=()
status=0
for t in "${targets[@]}"; do
  mkdir -p "$build/fuzz-logs"
  rm -f "$build/fuzz-logs/$t.result"
  if reason=$(excluded "$t"); then
    echo "fuzz $(printf '%-20s' "$t") EXCLUDED from --ci: $reason" >"$build/fuzz-logs/$t.result"
    continue
  fi
  touch "$build/fuzz-logs/$t.log.start"
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
  run_one "$t" &
  pids+=($!)
done
wait
for t in "${targets[@]}"; do
  line=$(cat "$build/fuzz-logs/$t.result" 2>/dev/null || echo "fuzz $t: FAILED (no result)")
  echo "$line"
  case "$line" in *FOUND*|*FAILED*) status=1 ;; esac
done
echo "fuzz: done in $(( $(date +%s) - t0 )) s"
if [ $status -ne 0 ]; then
  for t in "${targets[@]}"; do
    if grep -qE 'FOUND|FAILED' "$build/fuzz-logs/$t.result" 2>/dev/null; then
      echo "---- $t: end of $build/fuzz-logs/$t.log"
      grep -E 'ERROR|SUMMARY|fuzz:|Test unit written|internal error|#0 |#1 |#2 |#3 ' \
        "$build/fuzz-logs/$t.log" | head -20
    fi
  done
fi
[ $ci -eq 1 ] && exit $status
exit 0
