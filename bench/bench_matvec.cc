// Weight-streaming matvec (decode) speed: GB/s of weights read by y = x·wᵀ, x [M, K], for
// F32, BF16, Q8 and Q4 weights (widened / dequantized as they are packed) and M = 1, 2, 4, 8, 12,
// 16 rows (--m): the rows a depth-parallel decoder (wavefront, speculative, diffusion, the
// server's depth batch) puts into one pass over the weights. Shapes (--shapes): bench-m's layers
// (E 1024, I 2816, V 32768) and the Huginn-0125 core's (E 5280, I 17920). Two regimes:
//   stream: a rotation of copies of the matrix totalling >= --mb MB (default 640, beyond this
//           machine's 260 MB L3), so every weight comes from memory;
//   hot:    the same matrix again and again (from L2/L3 where it fits; --no-hot skips it).
// Also the ceilings, measured on one thread: the plain read bandwidth (a summing loop over --mb
// MB) and the F32 FMA peak (the GEMM's only arithmetic). Per row: % of the read bandwidth, the
// time over M = 1's (what an extra row costs), and % of the roofline bound
// max(bytes / bandwidth, 2·M·N·K / FMA peak), since from a few rows on (BF16: ~5, Q8: ~3) the
// FMAs, not the bytes, are the wall.
//
//   bench_matvec [--threads N] [--mb MB] [--reps R] [--isa generic|avx2|avx512] [--cpu-time]
//                [--shapes bench-m|huginn|all] [--m 1,2,4,...] [--dtypes f32,bf16,q8,q4]
//                [--no-hot]
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

// The matrices of one shape set: bench-m's layers, or one Huginn-0125 core layer's and its adapter.
std::vector<Shape> shape_set(const std::string& name) {
  const std::vector<Shape> bench_m = {{"wqkv", 3072, 1024},     {"attn_proj", 1024, 1024},
                                      {"mlp_fc", 5632, 1024},   {"mlp_proj", 1024, 2816},
                                      {"adapter", 1024, 2048},  {"lm_head", 32768, 1024},
                                      {"1024x2816", 1024, 2816}, {"2816x1024", 2816, 1024}};
  const std::vector<Shape> huginn = {{"h.wqkv", 15840, 5280},  {"h.proj", 5280, 5280},
                                     {"h.fc", 35840, 5280},    {"h.mlp_proj", 5280, 17920},
                                     {"h.adapter", 5280, 10560}};
  if (name == "bench-m") return bench_m;
  if (name == "huginn") return huginn;
  if (name != "all") {
    std::fprintf(stderr, "error: --shapes: expected bench-m, huginn or all, got '%s'\n", name.c_str());
    std::exit(2);
  }
  std::vector<Shape> all = bench_m;
  all.insert(all.end(), huginn.begin(), huginn.end());
  return all;
}

struct Fmt {
  const char* name;
  DType dt;
};

std::vector<Fmt> formats(const std::string& list) {
  const Fmt all[] = {{"f32", DType::kF32}, {"bf16", DType::kBF16}, {"q8", DType::kQ8}, {"q4", DType::kQ4}};
  std::vector<Fmt> out;
  size_t p = 0;
  while (p <= list.size()) {
    const size_t e = std::min(list.find(',', p), list.size());
    const std::string name = list.substr(p, e - p);
    const Fmt* f = std::find_if(std::begin(all), std::end(all), [&](const Fmt& g) { return name == g.name; });
    if (f == std::end(all)) {
      out.clear();
      break;
    }
    out.push_back(*f);
    p = e + 1;
  }
  if (out.empty()) {
    std::fprintf(stderr, "error: --dtypes: expected some of f32,bf16,q8,q4, got '%s'\n", list.c_str());
    std::exit(2);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 1, reps = 5;
  int64_t mb = 640;
  bool hot = true;
  std::string isa_name, shapes_name = "all", dtypes = "f32,bf16,q8,q4";
  std::vector<int> ms = {1, 2, 4, 8, 12, 16};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads") threads = bench::int_arg(argc, argv, i);
    else if (a == "--mb") mb = bench::int64_arg(argc, argv, i);
    else if (a == "--reps") reps = bench::int_arg(argc, argv, i);
    else if (a == "--isa") isa_name = bench::next_arg(argc, argv, i);
    else if (a == "--cpu-time") g_cpu_time = true;
    else if (a == "--shapes") shapes_name = bench::next_arg(argc, argv, i);
    else if (a == "--dtypes") dtypes = bench::next_arg(argc, argv, i);
    else if (a == "--m") ms = bench::int_list(bench::next_arg(argc, argv, i), "--m");
    else if (a == "--no-hot") hot = false;
    else {
      std::printf("usage: bench_matvec [--threads N] [--mb MB] [--reps R] [--isa NAME] "
                  "[--cpu-time] [--shapes bench-m|huginn|all] [--m 1,2,4,8,12,16] "
                  "[--dtypes f32,bf16,q8,q4] [--no-hot]\n");
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  for (int m : ms)
    if (m < 1) {
      std::fprintf(stderr, "error: --m: row counts must be >= 1, got %d\n", m);
      return 2;
    }
  const std::vector<Shape> shapes = shape_set(shapes_name);
  const std::vector<Fmt> fmts = formats(dtypes);
  ThreadPool pool(threads);
  CpuOptions o;
  o.isa = best_cpu_isa();
  for (CpuIsa i : available_cpu_isas())
    if (isa_name == cpu_isa_name(i)) o.isa = i;
  auto be = make_cpu_backend(pool, o);
  std::printf("matvec weight streaming: %d thread(s), isa %s, stream set %lld MB, %s time\n",
              pool.size(), cpu_isa_name(o.isa), (long long)mb, g_cpu_time ? "CPU" : "wall");
  double read_gbs = 0, fma_gflops = 0;
  {
    ThreadPool one(1);
    read_gbs = measure_read_bandwidth(one, static_cast<size_t>(mb) << 20, 0.1, reps);
    fma_gflops = measure_fp32_peak(one, 0.1, reps, nullptr, g_cpu_time);
    std::printf("read bandwidth (sum loop, 1 thread): %.1f GB/s; F32 FMA peak (1 thread): %.1f "
                "GFLOP/s\n", read_gbs, fma_gflops);
  }
  // The ceilings scale with the threads at most linearly (the bandwidth less).
  const double bw = read_gbs, peak = fma_gflops * pool.size();
  std::printf("%-11s %6s %6s %-5s %3s %8s %8s %6s %8s %6s %8s\n", "matrix", "N", "K", "dtype",
              "M", "MB", "strm GB/s", "%bw", "t/t(M=1)", "%roof", "hot GB/s");
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
      double t1 = 0;
      for (int64_t M : ms) {
        Tensor x = Tensor::empty({M, s.K}), y = Tensor::empty({M, s.N});
        for (int64_t i = 0; i < x.numel(); ++i) x.f32()[i] = nd(rng);
        const double ts = best_time(reps, [&] {
          for (const Tensor& wc : ws) be->matmul(x, wc, y);
        }) / copies;
        if (M == 1) t1 = ts;  // rows before M = 1 in --m print a ratio of 0
        double th = 0;
        if (hot) {
          const int hot_n = std::max<int>(4, static_cast<int>(64e6 / bytes));
          be->matmul(x, ws[0], y);
          th = best_time(reps, [&] {
            for (int r = 0; r < hot_n; ++r) be->matmul(x, ws[0], y);
          }) / hot_n;
        }
        const double bound = std::max(bytes / (bw * 1e9), 2.0 * M * s.N * s.K / (peak * 1e9));
        std::printf("%-11s %6lld %6lld %-5s %3lld %8.1f %8.2f %5.0f%% %8.2f %5.0f%% %8.2f\n",
                    s.name, (long long)s.N, (long long)s.K, f.name, (long long)M, bytes / 1e6,
                    bytes / ts / 1e9, 100.0 * bytes / ts / 1e9 / read_gbs, t1 > 0 ? ts / t1 : 0.0,
                    100.0 * bound / ts, hot ? bytes / th / 1e9 : 0.0);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}
