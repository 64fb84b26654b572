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

clean:
	rm -rf $(BUILD)

format:
	@git ls-files '*.cc' '*.h' | xargs clang-format -i
