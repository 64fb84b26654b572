// This machine's limits, measured at a given thread count, for "% of peak" figures: streaming
// read bandwidth from memory (a buffer much larger than the last-level cache), the fp32 FMA peak
// (an unrolled register-only loop) and the bf16 dot-product peak (vdpbf16ps, when the CPU has
// AVX512_BF16). Each is the best of a few timed repetitions. Also the read bandwidth from the
// last-level cache, since a recurrent core small enough to stay there is not bound by memory.
#pragma once

#include <cstddef>
#include <string>

namespace huginn {

class ThreadPool;

struct PeakOptions {
  size_t buffer_bytes = 0;    // read-bandwidth buffer; 0 = max(4 x last-level cache, 256 MiB)
  double min_seconds = 0.05;  // each timed repetition runs at least this long
  int reps = 3;               // repetitions; the best counts
};

struct MachinePeak {
  int threads = 0;
  std::string isa;            // "avx512", "avx2" or "scalar": what the FMA loop used
  bool has_bf16 = false;      // AVX512_BF16 present (bf16_gflops measured)
  double read_gbs = 0;        // 1e9 bytes/s, from memory
  double llc_read_gbs = 0;    // the same over half the last-level cache (0 when its size is unknown)
  double fp32_gflops = 0;     // 1e9 FLOP/s, an FMA = 2 FLOPs
  double bf16_gflops = 0;     // 1e9 FLOP/s, one bf16 pair product + add = 2 FLOPs; 0 when absent
  size_t buffer_bytes = 0;    // what the bandwidth test read per pass
  size_t llc_bytes = 0;       // last-level cache size as the OS reports it (0 when unknown)
};

// Last-level cache size in bytes (sysconf, then /sys); 0 when unknown.
size_t last_level_cache_bytes();

// Runs the three measurements on every thread of `pool` at once.
MachinePeak measure_peak(ThreadPool& pool, const PeakOptions& options = {});

// The pieces, for tests: each returns its rate (GB/s or GFLOP/s) over `pool`.
double measure_read_bandwidth(ThreadPool& pool, size_t bytes, double min_seconds, int reps);
// cpu_time: rate per CPU-second the threads ran (the process's CPU time / threads) instead of per
// wall-clock second, for a machine shared with other jobs.
double measure_fp32_peak(ThreadPool& pool, double min_seconds, int reps, std::string* isa = nullptr,
                         bool cpu_time = false);
double measure_bf16_peak(ThreadPool& pool, double min_seconds, int reps);  // 0 without AVX512_BF16

}  // namespace huginn
