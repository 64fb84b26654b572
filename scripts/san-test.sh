#!/usr/bin/env bash
# scripts/san-test.sh BUILD_DIR SANITIZER TARGETS... : the Makefile's test-asan / test-tsan
# (README "Testing"). Configures BUILD_DIR with HUGINN_SANITIZE=SANITIZER (address: ASan + UBSan;
# thread: TSan), builds TARGETS ("all": everything), runs the tests of
# the binaries that were built, and counts them (scripts/test-count.sh). Prints the build and test
# times.
#   Every sanitizer report of every process goes to BUILD_DIR/san-reports/report.<pid>
#   (log_path), and any such file fails the run and is printed: the tests run the huginn CLI and
#   `huginn serve` as child processes whose stderr they do not read (a server's goes to a log
#   that the test then deletes), so a report there — a leak found at a server's exit, a race in
#   its threads — would otherwise be lost whenever the child's exit status is not checked.
set -euo pipefail
build=$1 sanitizer=$2
shift 2
targets=("$@")
reports=$(realpath -m "$build/san-reports")

# RelWithDebInfo (-O2 -g1: line tables for the reports) with NDEBUG dropped so that every
# HUGINN_DASSERT is checked; no benchmark programs.
san_cmake=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1"
           -DHUGINN_DASSERT=ON -DHUGINN_BENCH=OFF -DHUGINN_SANITIZE="$sanitizer")
t0=$SECONDS
# CMAKE_FLAGS (the Makefile's) is one word per flag: unquoted on purpose.
# shellcheck disable=SC2086
cmake -S . -B "$build" --log-level=NOTICE "${san_cmake[@]}" ${CMAKE_FLAGS:-}
cmake --build "$build" -j "${JOBS:-2}" --target "${targets[@]}"
built=$((SECONDS - t0))

rm -rf "$reports" "$build/ctest-junit.xml"
mkdir -p "$reports"
log="log_path=$reports/report"
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}$log"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}$log"
# scripts/tsan.supp: one third-party library that TSan cannot see into (the file says why).
export TSAN_OPTIONS="${TSAN_OPTIONS:+$TSAN_OPTIONS:}$log:suppressions=$(realpath scripts/tsan.supp)"
t1=$SECONDS
rc=0
(cd "$build" && ctest --output-on-failure -j "${JOBS:-2}" --timeout 1800 -E '_NOT_BUILT$' \
   -LE 'demo|bench' --output-junit ctest-junit.xml) || rc=$?
tested=$((SECONDS - t1))

count_args=()
[ "${targets[*]}" = all ] || count_args=(--targets "${targets[@]}")
bash scripts/test-count.sh "$build" "${count_args[@]}" || rc=1

mapfile -t found < <(find "$reports" -type f | sort)
if [ ${#found[@]} -gt 0 ]; then
  echo "san-test: ${#found[@]} sanitizer report(s) in $reports (each is a failure):"
  for f in "${found[@]}"; do
    echo "----- $f"
    head -n 120 "$f"
  done
  rc=1
fi
echo "san-test: $build ($sanitizer): build ${built} s, tests ${tested} s, $([ $rc -eq 0 ] && echo ok || echo FAILED)"
exit $rc
