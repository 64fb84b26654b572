#!/usr/bin/env bash
# scripts/test-count.sh BUILD_DIR [--targets TARGET...]: how many tests ran in BUILD_DIR's last
# ctest run (its ctest-junit.xml), and a failure when that is below the floor or when any test
# was skipped.
#   The floor is counted from the sources, so it follows the suite without upkeep: every TEST,
#   TEST_F and TEST_P in tests/ and fuzz/ (or in the sources of the test binaries TARGET..., for a
#   stage that builds a subset) must have run at least once (parameterized ones run once per
#   value, so the count that ran is normally higher). A vanished binary or layer, a test that
#   skips, or a filter that stopped matching drops the count below the floor.
#   Only tests that need a GPU may skip (none run in CI: it has no GPU); their names say Gpu/Cuda.
set -euo pipefail
build=$1
shift
junit=$build/ctest-junit.xml
[ -f "$junit" ] || { echo "test-count: $junit missing (did ctest run with --output-junit?)" >&2; exit 1; }
regex='.'
if [ "${1:-}" = "--targets" ]; then  # test binaries: tests/<dir>/<name>.cc (tokenizer_<name>: tests/tokenizer)
  shift
  files=()
  for t in "$@"; do
    case $t in
      *_test) ;;
      *) continue ;;  # huginn and other non-test targets
    esac
    if [[ $t == tokenizer_* ]]; then f=tests/tokenizer/${t#tokenizer_}.cc; else f=$(find tests -name "$t.cc" | head -1); fi
    [ -f "$f" ] || { echo "test-count: no source for test target $t" >&2; exit 1; }
    files+=("$f")
  done
else
  mapfile -t files < <(find tests fuzz -name '*.cc' 2>/dev/null | sort)
fi
floor=$(grep -hoE '^[[:space:]]*TEST(_F|_P)?\([[:space:]]*[A-Za-z0-9_]+[[:space:]]*,[[:space:]]*[A-Za-z0-9_]+' "${files[@]}" |
          sed -E 's/^[[:space:]]*TEST(_F|_P)?\([[:space:]]*([A-Za-z0-9_]+)[[:space:]]*,[[:space:]]*([A-Za-z0-9_]+)/\2.\3/' |
          grep -v '^DISABLED_\|\.DISABLED_' | grep -cE "$regex" || true)
total=$(grep -c '<testcase ' "$junit" || true)
failed=$(grep -c '<testcase [^>]*status="fail"' "$junit" || true)
skipped_names=$(grep -oE '<testcase name="[^"]*"[^>]*status="notrun"' "$junit" | sed -E 's/<testcase name="([^"]*)".*/\1/' || true)
skipped=$(printf '%s' "$skipped_names" | grep -c . || true)
ran=$((total - skipped))
echo "test-count: $build: $ran tests ran ($failed failed, $skipped skipped) of $total; floor $floor (TESTs in the sources)"
status=0
if [ "$ran" -lt "$floor" ]; then
  echo "test-count: FAIL: fewer tests ran ($ran) than the sources define ($floor)" >&2
  status=1
fi
bad_skips=$(printf '%s' "$skipped_names" | grep -viE 'gpu|cuda' || true)
if [ -n "$bad_skips" ]; then
  echo "test-count: FAIL: skipped tests (only GPU tests may skip):" >&2
  printf '  %s\n' $bad_skips >&2
  status=1
fi
exit $status
