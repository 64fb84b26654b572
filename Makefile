# huginn-cpp: `make` builds, `make test` runs the suite, `make demo` runs the main job.
# Every target first makes sure the Debian packages are installed (scripts/install-deps.sh).
BUILD ?= build
JOBS ?= 2
BUILD_TYPE ?= Release
CMAKE_FLAGS ?=
QUICK ?= 0

.PHONY: all deps configure build test demo bench clean format

all: build

deps:
	@bash scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 900

demo: build
	@QUICK=$(QUICK) bash scripts/demo.sh $(BUILD)

bench: build
	@$(BUILD)/bench_forward

# Fuzzing (fuzz/run.sh; fuzz/README.md): libFuzzer + ASan + UBSan builds with clang in build-fuzz/.
# `make fuzz`: FUZZ_SECONDS per target, keeps going after findings (long runs);
# `make fuzz-ci`: FUZZ_CI_SECONDS per target, stops at and fails on the first finding (CI).
# FUZZ_TARGETS="config safetensors" limits either to some targets.
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 600
FUZZ_CI_SECONDS ?= 30
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
	rm -rf $(BUILD)

format:
	@git ls-files '*.cc' '*.h' | xargs clang-format -i
