// Machine peaks: streaming read bandwidth, fp32 FMA and bf16 dot-product throughput.
// Instruction sets are chosen at run time (__builtin_cpu_supports) and each kernel carries its
// own target attribute, so this file builds without -march=native and runs on any x86-64.
#include "eval/machine_peak.h"

#include <immintrin.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <memory>
#include <vector>

#include "huginn/error.h"
#include "huginn/thread_pool.h"

namespace huginn {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// CPU seconds of this process (all threads), for timing on a machine shared with other jobs.
double process_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Keeps results alive so the compiler cannot drop the loops.
std::atomic<float> g_sink{0.0f};

// The 16 lanes' sum, by hand: GCC 12 warns falsely (-Wuninitialized) inside
// _mm512_reduce_add_ps in a target("avx512f") function. The order does not matter here (the sum
// only keeps the compiler from dropping the loop).
__attribute__((target("avx512f"))) float lane_sum(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  float s = 0;
  for (float x : lanes) s += x;
  return s;
}

// ---- read bandwidth: sum of floats with independent accumulators ---------------------------

__attribute__((target("avx512f"))) float sum_avx512(const float* p, size_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
  }
  float s = lane_sum(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  for (; i < n; ++i) s += p[i];
  return s;
}

__attribute__((target("avx2"))) float sum_avx2(const float* p, size_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
  }
  alignas(32) float t[8];
  _mm256_store_ps(t, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  float s = 0;
  for (float v : t) s += v;
  for (; i < n; ++i) s += p[i];
  return s;
}

float sum_scalar(const float* p, size_t n) {
  float a[8] = {};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) a[j] += p[i + j];
  float s = 0;
  for (float v : a) s += v;
  for (; i < n; ++i) s += p[i];
  return s;
}

float sum_floats(const float* p, size_t n) {
  if (__builtin_cpu_supports("avx512f")) return sum_avx512(p, n);
  if (__builtin_cpu_supports("avx2")) return sum_avx2(p, n);
  return sum_scalar(p, n);
}

// ---- compute peaks: 16 independent accumulator chains, operands in registers ------------------

constexpr int kChains = 16;

__attribute__((target("avx512f"))) float fma_avx512(int64_t iters, float seed) {
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(seed * static_cast<float>(c));
  const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(seed * 1e-7f);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 16  // the accumulators must stay in registers
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_fmadd_ps(acc[c], x, y);
  }
  __m512 s = acc[0];
  for (int c = 1; c < kChains; ++c) s = _mm512_add_ps(s, acc[c]);
  return lane_sum(s);
}

__attribute__((target("avx2,fma"))) float fma_avx2(int64_t iters, float seed) {
  __m256 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm256_set1_ps(seed * static_cast<float>(c));
  const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(seed * 1e-7f);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 16  // the accumulators must stay in registers
    for (int c = 0; c < kChains; ++c) acc[c] = _mm256_fmadd_ps(acc[c], x, y);
  }
  __m256 s = acc[0];
  for (int c = 1; c < kChains; ++c) s = _mm256_add_ps(s, acc[c]);
  alignas(32) float t[8];
  _mm256_store_ps(t, s);
  float r = 0;
  for (float v : t) r += v;
  return r;
}

float fma_scalar(int64_t iters, float seed) {
  float acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = seed * static_cast<float>(c);
  for (int64_t i = 0; i < iters; ++i)
    for (int c = 0; c < kChains; ++c) acc[c] = acc[c] * 0.999999f + seed * 1e-7f;
  float s = 0;
  for (float v : acc) s += v;
  return s;
}

__attribute__((target("avx512f,avx512bf16"))) float dpbf16_avx512(int64_t iters, float seed) {
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(seed * static_cast<float>(c));
  const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80);  // bf16 1.0
  const __m512bh b = (__m512bh)_mm512_set1_epi16(0x3380);  // bf16 ~6e-8
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 16  // the accumulators must stay in registers
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_dpbf16_ps(acc[c], a, b);
  }
  __m512 s = acc[0];
  for (int c = 1; c < kChains; ++c) s = _mm512_add_ps(s, acc[c]);
  return lane_sum(s);
}

// Runs `kernel(iters)` on every thread at once, growing iters until one run takes min_seconds,
// then keeps the best of `reps` runs. Returns total FLOPs per second / 1e9.
// With cpu_time, seconds are the process's CPU time over the thread count (the time the threads
// actually ran), not the wall clock.
template <class Kernel>
double time_compute(ThreadPool& pool, double flops_per_iter, double min_seconds, int reps,
                    Kernel kernel, bool cpu_time) {
  int64_t iters = 1 << 12;
  auto run = [&](int64_t n) {
    const auto t0 = Clock::now();
    const double c0 = process_cpu_seconds();
    pool.run_on_all([&](int t) { g_sink.store(kernel(n, 1.0f + t)); });
    return cpu_time ? (process_cpu_seconds() - c0) / pool.size() : seconds_since(t0);
  };
  for (double s = run(iters); s < min_seconds && iters < (int64_t{1} << 40);) {
    iters = static_cast<int64_t>(iters * std::clamp(1.2 * min_seconds / std::max(s, 1e-6), 1.5, 64.0));
    s = run(iters);
  }
  double best = 1e30;
  for (int r = 0; r < std::max(reps, 1); ++r) best = std::min(best, run(iters));
  return flops_per_iter * static_cast<double>(iters) * pool.size() / best / 1e9;
}

}  // namespace

size_t last_level_cache_bytes() {
  long v = sysconf(_SC_LEVEL3_CACHE_SIZE);
  if (v > 0) return static_cast<size_t>(v);
  for (int index = 4; index >= 0; --index) {
    std::ifstream f("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/size");
    std::string s;
    if (!(f >> s) || s.empty()) continue;
    size_t mult = 1;
    if (s.back() == 'K') mult = size_t{1} << 10;
    if (s.back() == 'M') mult = size_t{1} << 20;
    const long n = std::atol(s.c_str());
    if (n > 0) return static_cast<size_t>(n) * mult;
  }
  return 0;
}

double measure_read_bandwidth(ThreadPool& pool, size_t bytes, double min_seconds, int reps) {
  const int T = pool.size();
  // Each thread owns a 64-byte-aligned slice of whole 4 KiB pages and first-touches it.
  const size_t slice = std::max<size_t>((bytes / T) & ~size_t{4095}, 4096);
  const size_t total = slice * T;
  std::unique_ptr<float, decltype(&std::free)> buf(
      static_cast<float*>(std::aligned_alloc(4096, total)), &std::free);
  if (!buf)
    throw Error("machine peak: cannot allocate " + std::to_string(total >> 20) +
                " MiB for the bandwidth test (use a smaller --peak-buffer-mb)");
  const size_t n = slice / sizeof(float);
  pool.run_on_all([&](int t) {
    float* p = buf.get() + n * t;
    for (size_t i = 0; i < n; ++i) p[i] = static_cast<float>(i & 1023) * 1e-3f;
  });
  auto pass = [&] {
    const auto t0 = Clock::now();
    pool.run_on_all([&](int t) { g_sink.store(sum_floats(buf.get() + n * t, n)); });
    return seconds_since(t0);
  };
  pass();  // warm: TLB, page tables
  double best = 1e30, spent = 0;
  for (int r = 0; r < std::max(reps, 1) || spent < min_seconds; ++r) {
    const double s = pass();
    best = std::min(best, s);
    spent += s;
    if (r > 1000) break;
  }
  return static_cast<double>(total) / best / 1e9;
}

double measure_fp32_peak(ThreadPool& pool, double min_seconds, int reps, std::string* isa,
                         bool cpu_time) {
  if (__builtin_cpu_supports("avx512f")) {
    if (isa) *isa = "avx512";
    return time_compute(pool, 2.0 * 16 * kChains, min_seconds, reps, fma_avx512, cpu_time);
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    if (isa) *isa = "avx2";
    return time_compute(pool, 2.0 * 8 * kChains, min_seconds, reps, fma_avx2, cpu_time);
  }
  if (isa) *isa = "scalar";
  return time_compute(pool, 2.0 * kChains, min_seconds, reps, fma_scalar, cpu_time);
}

double measure_bf16_peak(ThreadPool& pool, double min_seconds, int reps) {
  if (!__builtin_cpu_supports("avx512bf16")) return 0.0;
  // vdpbf16ps: 16 lanes x 2 bf16 products, each accumulated = 64 FLOPs per instruction.
  return time_compute(pool, 64.0 * kChains, min_seconds, reps, dpbf16_avx512, false);
}

MachinePeak measure_peak(ThreadPool& pool, const PeakOptions& o) {
  MachinePeak p;
  p.threads = pool.size();
  p.llc_bytes = last_level_cache_bytes();
  p.buffer_bytes = o.buffer_bytes ? o.buffer_bytes : std::max<size_t>(4 * p.llc_bytes, size_t{256} << 20);
  p.read_gbs = measure_read_bandwidth(pool, p.buffer_bytes, o.min_seconds, o.reps);
  if (p.llc_bytes >= (size_t{2} << 20))
    p.llc_read_gbs = measure_read_bandwidth(pool, p.llc_bytes / 2, o.min_seconds, 5 * o.reps);
  p.fp32_gflops = measure_fp32_peak(pool, o.min_seconds, o.reps, &p.isa);
  p.has_bf16 = __builtin_cpu_supports("avx512bf16");
  p.bf16_gflops = measure_bf16_peak(pool, o.min_seconds, o.reps);
  return p;
}

}  // namespace huginn
