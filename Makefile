# huginn-cpp: `make` builds, `make test` runs the suite, `make demo` runs the main job.
# Every target first makes sure the Debian packages are installed (scripts/install-deps.sh).
BUILD ?= build
JOBS ?= 2
BUILD_TYPE ?= Release
CMAKE_FLAGS ?=
QUICK ?= 0
FULL ?= 0

# Sanitizer builds (scripts/san-test.sh): their own build folders, RelWithDebInfo (-O2 -g1: line
# tables for the reports) with NDEBUG dropped so that HUGINN_DASSERT is checked, no benchmark
# programs, every sanitizer report fatal (-fno-sanitize-recover=all; ASan leak checking on) and
# written to <build>/san-reports, where any report of any process (the CLI and servers the tests
# start included) fails the run. README "Testing" says what runs where and why: CI runs both
# targets as they are here. ASAN_TARGETS / TSAN_TARGETS pick the test binaries (all: every one);
# ctest then runs exactly the binaries that were built, and scripts/test-count.sh checks their
# tests against the TESTs in their sources.
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
ASAN_TARGETS ?= all
# The threaded parts: the thread pool, tokenizer batch encode, the decode batcher, the server's
# connection front, queue and scheduler, and `huginn serve` itself under the e2e tests' clients and
# floods (huginn: the CLI those tests start); and the CPU kernels' thread splits, forward, decode
# and backward, which those tests run on 1 and 2 threads; and data prepare's reader, encoding
# threads and shard writer.
TSAN_TARGETS ?= thread_pool_test tokenizer_unit_test decode_batch_test server_unit_test front_test \
                server_e2e_test huginn ops_test gemm_test prefill_ops_test golden_decode_test \
                ops_backward_test grad_golden_test prepare_test
export ASAN_OPTIONS ?= detect_leaks=1:strict_string_checks=1
export UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS ?= halt_on_error=1:second_deadlock_stack=1

.PHONY: all deps configure build test test-asan test-tsan test-bench demo bench clean format

all: build

deps:
	@bash scripts/install-deps.sh

# --log-level=NOTICE: cmake's progress lines are hidden, its notices, warnings and errors are not.
configure: deps
	@cmake -S . -B $(BUILD) --log-level=NOTICE -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DHUGINN_TORCH_TESTS=AUTO $(CMAKE_FLAGS)

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

# Then scripts/test-count.sh prints how many tests ran and fails when any was skipped or fewer
# ran than the sources define.
test: build
	@rm -f $(BUILD)/ctest-junit.xml; rc=0; (cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 900 --output-junit ctest-junit.xml) || rc=$$?; \
	  bash scripts/test-count.sh $(BUILD) || rc=1; exit $$rc

# san-test BUILD_DIR SANITIZER TARGETS: configure, build the targets, run their tests, count them,
# and fail on any sanitizer report from any process (scripts/san-test.sh).
define san-test
	@CMAKE_FLAGS="$(CMAKE_FLAGS)" JOBS=$(JOBS) bash scripts/san-test.sh $(1) $(2) $(3)
endef

# The suite (or ASAN_TARGETS) under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan: deps
	$(call san-test,$(ASAN_BUILD),address,$(ASAN_TARGETS))

# The threaded parts (TSAN_TARGETS) under ThreadSanitizer.
test-tsan: deps
	$(call san-test,$(TSAN_BUILD),thread,$(TSAN_TARGETS))

# The opt-in PyTorch side: installs python3-torch and an optimised BLAS, then runs the golden check
# of bench/compare_pytorch.py's model (compare_pytorch_golden; a missing torch is an error here).
test-bench:
	@bash scripts/install-deps.sh --bench
	@cmake -S . -B $(BUILD) --log-level=NOTICE -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DHUGINN_TORCH_TESTS=ON $(CMAKE_FLAGS)
	@cmake --build $(BUILD) -j $(JOBS)
	@cd $(BUILD) && ctest --output-on-failure -L bench --timeout 900

# The demo needs only the CLI, so a fresh clone builds that alone before it (not the tests).
demo: configure
	@cmake --build $(BUILD) -j $(JOBS) --target huginn
	@QUICK=$(QUICK) FULL=$(FULL) bash scripts/demo.sh $(BUILD)

bench: build
	@$(BUILD)/bench_forward

# Fuzzing (fuzz/run.sh; fuzz/README.md): libFuzzer + ASan + UBSan builds with clang in build-fuzz/.
# `make fuzz`: FUZZ_SECONDS per target, keeps going after findings (long runs);
# `make fuzz-ci`: FUZZ_CI_SECONDS per target, stops at and fails on the first finding (CI).
# FUZZ_TARGETS="config safetensors" limits either to some targets.
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 600
FUZZ_CI_SECONDS ?= 60
FUZZ_TARGETS ?=
.PHONY: fuzz-build fuzz fuzz-ci

fuzz-build:
	@bash scripts/install-deps.sh --fuzz
	@CC=clang CXX=clang++ cmake -S . -B $(FUZZ_BUILD) -DHUGINN_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
	@cmake --build $(FUZZ_BUILD) --target huginn_fuzzers -j $(JOBS)

fuzz: fuzz-build
	@FUZZ_JOBS=$(JOBS) bash fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-ci:
	@t0=$$(date +%s); $(MAKE) --no-print-directory fuzz-build && \
	  echo "fuzz-ci: build took $$(( $$(date +%s) - t0 )) s" && \
	  FUZZ_JOBS=$(JOBS) bash fuzz/run.sh --ci $(FUZZ_BUILD) $(FUZZ_CI_SECONDS) $(FUZZ_TARGETS); \
	  rc=$$?; echo "fuzz-ci: $$(( $$(date +%s) - t0 )) s in all (build + runs)"; exit $$rc

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD)

format:
	@git ls-files '*.cc' '*.h' | xargs clang-format -i
