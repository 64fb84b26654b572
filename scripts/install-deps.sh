#!/usr/bin/env bash
# Installs the Debian packages huginn-cpp builds and tests with; does nothing when all are present.
# Each package is here for a reason:
#   cmake, g++, make              the build
#   libgtest-dev                  unit tests (GoogleTest)
#   libbenchmark-dev              micro-benchmarks (Google Benchmark)
#   nlohmann-json3-dev            config.json, safetensors headers, JSON output
#   libcli11-dev                  command-line parsing with --help for every command
#   libpcre2-dev                  Unicode regexes of HF tokenizers (\p{L}, lookahead), exactly
#   libutf8proc-dev               NFC/NFKC normalization for tokenizers (small C library made for it)
#   gnuplot-nox                   PNG/SVG plots (huginn trace, eval) without X: pngcairo + svg terminals
#   libcpp-httplib-dev            HTTP/1.1 server for huginn serve (threaded, SSE streaming), small
#   zlib1g-dev                    crc32 of checkpoint files (checksums.json), verified on --resume
#   nodejs, npm                   server tests drive huginn serve with the official openai npm client
# With --bench (opt-in; large, so CI and `make test` do not pay for it):
#   python3-torch, python3-numpy  bench/compare_pytorch.py: the eager PyTorch side of the speed
#                                 comparison and its golden check (ctest compare_pytorch_golden)
# With --fuzz (`make fuzz`, `make fuzz-ci`; plain `make test` does not need clang):
#   clang, libclang-rt-14-dev     libFuzzer (-fsanitize=fuzzer) and clang's ASan/UBSan runtimes
#                                 for the fuzzers of fuzz/; GCC has no libFuzzer
set -euo pipefail
PKGS=(cmake g++ make pkg-config libgtest-dev libbenchmark-dev nlohmann-json3-dev libcli11-dev
      libpcre2-dev libutf8proc-dev gnuplot-nox libcpp-httplib-dev zlib1g-dev)
# node may come from elsewhere (e.g. NodeSource): only install Debian's when there is none.
command -v npm >/dev/null 2>&1 || PKGS+=(nodejs npm)
[ "${1:-}" = "--bench" ] && PKGS+=(python3-torch python3-numpy)
[ "${1:-}" = "--fuzz" ] && PKGS+=(clang libclang-rt-14-dev)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
