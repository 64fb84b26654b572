#!/usr/bin/env bash
# Installs what huginn-cpp builds and tests with; does nothing when all is present. A failure here
# stops `make test` (nothing is skipped for want of a tool). Each package is here for a reason:
#   cmake, g++, make              the build
#   libgtest-dev                  unit tests (GoogleTest)
#   libbenchmark-dev              micro-benchmarks (Google Benchmark)
#   nlohmann-json3-dev            config.json, safetensors headers, JSON output
#   libcli11-dev                  command-line parsing with --help for every command
#   libpcre2-dev                  Unicode regexes of HF tokenizers (\p{L}, lookahead), exactly
#   libutf8proc-dev               NFC/NFKC normalization for tokenizers (small C library made for it)
#   gnuplot-nox                   PNG/SVG plots (huginn trace, eval) without X: pngcairo + svg terminals
#   libcpp-httplib-dev            HTTP/1.1 server for huginn serve (threaded, SSE streaming), small
#   zlib1g-dev                    crc32 of checkpoint files (checksums.json), verified on --resume;
#                                 gzip inputs of huginn data prepare
#   libzstd-dev                   zstd inputs of huginn data prepare (the usual compression of corpora)
#   libxxhash-dev                 XXH3-64 checksums of token shards (written by data prepare, checked
#                                 by every load): ~12x FNV-1a's speed, the reference implementation
#   nodejs, npm                   server tests drive huginn serve with the official openai npm client
#   util-linux (flock)            serialises the npm install between concurrent builds/tests
#   libopenmpi-dev, openmpi-bin   data-parallel training across processes and machines (mpirun -np N
#                                 huginn train; src/dist/comm_mpi.cc), and its tests under mpirun
#   chromium                      the real headless browser the chat page's test (GET / of huginn
#                                 serve) runs in, driven by puppeteer-core; as root (CI) it runs
#                                 with --no-sandbox, as chromium refuses its sandbox for root
# Then the server tests' npm clients (tests/server/js, `npm ci` from the committed lock file) when
# node_modules lacks one: openai and puppeteer-core (which downloads no browser: it drives the
# Debian one), the only npm packages, test clients only.
# With --bench (opt-in; large, so CI and `make test` do not pay for it):
#   python3-torch, python3-numpy  bench/compare_pytorch.py: the eager PyTorch side of the speed
#                                 comparison and its golden check (ctest compare_pytorch_golden)
#   libopenblas0-pthread          an optimised BLAS for PyTorch: Debian's python3-torch calls
#                                 libblas.so.3, which is the reference BLAS (~1 GFLOP/s) unless an
#                                 optimised one is installed and selected (update-alternatives below)
#   libopenblas-dev               cblas.h for build/bench_gemm, which runs OpenBLAS's sgemm beside
#                                 our GEMM in the same run (without it bench_gemm has no comparison)
# With --fuzz (`make fuzz`, `make fuzz-ci`; plain `make test` does not need clang):
#   clang, libclang-rt-14-dev     libFuzzer (-fsanitize=fuzzer) and clang's ASan/UBSan runtimes
#                                 for the fuzzers of fuzz/; GCC has no libFuzzer
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=0
[ "${1:-}" = "--bench" ] && BENCH=1
PKGS=(cmake g++ make pkg-config libgtest-dev libbenchmark-dev nlohmann-json3-dev libcli11-dev
      libpcre2-dev libutf8proc-dev gnuplot-nox libcpp-httplib-dev zlib1g-dev libzstd-dev libxxhash-dev util-linux
      chromium libopenmpi-dev openmpi-bin)
# node may come from elsewhere (e.g. NodeSource): only install Debian's when there is none.
command -v npm >/dev/null 2>&1 || PKGS+=(nodejs npm)
[ $BENCH = 1 ] && PKGS+=(python3-torch python3-numpy libopenblas0-pthread libopenblas-dev)
[ "${1:-}" = "--fuzz" ] && PKGS+=(clang libclang-rt-14-dev)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The npm clients of the server end-to-end tests (tests/server/server_e2e_test.cc): openai, and
# puppeteer-core for the chat page's browser test.
JS=tests/server/js
have_js='[ -f node_modules/openai/package.json ] && [ -f node_modules/puppeteer-core/package.json ]'
if ! (cd "$JS" && eval "$have_js"); then
  echo "install-deps: npm ci in $JS (the server tests' openai and puppeteer-core clients)"
  flock /tmp/huginn-server-npm.lock sh -c "cd '$JS' && { $have_js || npm ci --no-audit --no-fund --silent; }" \
    || { echo "install-deps: npm ci failed in $JS; the server tests cannot run without it" >&2; exit 1; }
fi

if [ $BENCH = 1 ]; then
  # libblas.so.3 -> OpenBLAS (the alternative with the highest priority is not always the one in
  # use: an earlier manual choice sticks), then check that it took.
  arch=$(gcc -print-multiarch)
  blas=/usr/lib/$arch/openblas-pthread/libblas.so.3
  [ -e "$blas" ] || { echo "install-deps: $blas missing after installing libopenblas0-pthread" >&2; exit 1; }
  if [ "$(readlink -f /usr/lib/$arch/libblas.so.3)" != "$(readlink -f "$blas")" ]; then
    echo "install-deps: libblas.so.3 -> $blas (update-alternatives)"
    $SUDO update-alternatives --set "libblas.so.3-$arch" "$blas"
  fi
  lapack=/usr/lib/$arch/openblas-pthread/liblapack.so.3
  if [ -e "$lapack" ] && [ "$(readlink -f /usr/lib/$arch/liblapack.so.3)" != "$(readlink -f "$lapack")" ]; then
    $SUDO update-alternatives --set "liblapack.so.3-$arch" "$lapack"
  fi
  /usr/bin/python3 -c "import torch, numpy" \
    || { echo "install-deps: /usr/bin/python3 cannot import torch after installing python3-torch" >&2; exit 1; }
fi
