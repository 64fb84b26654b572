// Weight-streaming matvec (decode) speed: GB/s of weights read by y = x·wᵀ, x [M, K] with
// M = 1 (and M = 4), for F32, BF16, Q8 and Q4 weights (widened / dequantized as they are packed),
// at the layer shapes of bench-m (E 1024, I 2816, V 32768). Two regimes:
//   stream: a rotation of copies of the matrix totalling >= --mb MB (default 640, beyond this
//           machine's 260 MB L3), so every weight comes from memory;
//   hot:    the same matrix again and again (from L2/L3 where it fits).
// Also the plain read bandwidth of one thread (a summing loop over --mb MB), the ceiling.
//
//   bench_matvec [--threads N] [--mb MB] [--reps R] [--isa generic|avx2|avx512]
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "huginn/backend.h"
#include "huginn/thread_pool.h"
#include "eval/machine_peak.h"
#include "kernels/cpu/cpu_backend.h"
#include "bench_util.h"

using namespace huginn;

namespace {

// Wall time, or with --cpu-time the process's CPU time: on a shared, oversubscribed machine the
// latter leaves out the time this process was not running (sound at 1 thread only).
bool g_cpu_time = false;
double now() {
  if (g_cpu_time) {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Best of `reps` timings of one pass of f().
template <class F>
double best_time(int reps, const F& f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const double t0 = now();
    f();
    best = std::min(best, now() - t0);
  }
  return best;
}

struct Shape {
  const char* name;
  int64_t N, K;
};

}  // namespace

int main(int argc, char** argv) {
  int threads = 1, reps = 5;
  int64_t mb = 640;
  std::string isa_name;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads") threads = bench::int_arg(argc, argv, i);
    else if (a == "--mb") mb = bench::int64_arg(argc, argv, i);
    else if (a == "--reps") reps = bench::int_arg(argc, argv, i);
    else if (a == "--isa") isa_name = bench::next_arg(argc, argv, i);
    else if (a == "--cpu-time") g_cpu_time = true;
    else {
      std::printf("usage: bench_matvec [--threads N] [--mb MB] [--reps R] [--isa NAME] "
                  "[--cpu-time]\n");
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  ThreadPool pool(threads);
  CpuOptions o;
  o.isa = best_cpu_isa();
  for (CpuIsa i : available_cpu_isas())
    if (isa_name == cpu_isa_name(i)) o.isa = i;
  auto be = make_cpu_backend(pool, o);
  std::printf("matvec weight streaming: %d thread(s), isa %s, stream set %lld MB, %s time\n",
              pool.size(), cpu_isa_name(o.isa), (long long)mb, g_cpu_time ? "CPU" : "wall");
  {
    ThreadPool one(1);
    std::printf("read bandwidth (sum loop, 1 thread): %.1f GB/s\n",
                measure_read_bandwidth(one, static_cast<size_t>(mb) << 20, 0.1, reps));
  }

  const Shape shapes[] = {{"wqkv", 3072, 1024},     {"attn_proj", 1024, 1024},
                          {"mlp_fc", 5632, 1024},   {"mlp_proj", 1024, 2816},
                          {"adapter", 1024, 2048},  {"lm_head", 32768, 1024},
                          {"1024x2816", 1024, 2816}, {"2816x1024", 2816, 1024}};
  struct Fmt {
    const char* name;
    DType dt;
  };
  const Fmt fmts[] = {{"f32", DType::kF32}, {"bf16", DType::kBF16}, {"q8", DType::kQ8}, {"q4", DType::kQ4}};
  std::printf("%-10s %6s %6s %-8s %3s %10s %10s %10s\n", "matrix", "N", "K", "dtype", "M",
              "MB", "stream GB/s", "hot GB/s");
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  for (const Shape& s : shapes) {
    Tensor wf = Tensor::empty({s.N, s.K});
    for (int64_t i = 0; i < wf.numel(); ++i) wf.f32()[i] = nd(rng);
    for (const Fmt& f : fmts) {
      const Tensor w = convert_weight(wf, f.dt);
      const double bytes = static_cast<double>(w.nbytes());
      const int64_t copies = std::max<int64_t>(2, static_cast<int64_t>(mb * 1e6 / bytes) + 1);
      std::vector<Tensor> ws;
      for (int64_t c = 0; c < copies; ++c) ws.push_back(w.clone());
      for (int64_t M : {1, 4}) {
        Tensor x = Tensor::empty({M, s.K}), y = Tensor::empty({M, s.N});
        for (int64_t i = 0; i < x.numel(); ++i) x.f32()[i] = nd(rng);
        const double ts = best_time(reps, [&] {
          for (const Tensor& wc : ws) be->matmul(x, wc, y);
        }) / copies;
        const int hot_n = std::max<int>(4, static_cast<int>(64e6 / bytes));
        be->matmul(x, ws[0], y);
        const double th = best_time(reps, [&] {
          for (int r = 0; r < hot_n; ++r) be->matmul(x, ws[0], y);
        }) / hot_n;
        std::printf("%-10s %6lld %6lld %-8s %3lld %10.1f %10.1f %10.1f\n", s.name,
                    (long long)s.N, (long long)s.K, f.name, (long long)M, bytes / 1e6,
                    bytes / ts / 1e9, bytes / th / 1e9);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}
