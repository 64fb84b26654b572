// GEMM speed on the model's layer shapes, ours beside OpenBLAS in the same run.
//   y[M, N] = x[M, K] · w[N, K]ᵀ   (M tokens, K inputs, N outputs; w a Linear weight as stored)
//
// Two sweeps:
//   prefill (default): M = 64 ... 1024 rows. Ours = the CPU backend's matmul with F32 weights and
//     with BF16 weights (widened to F32 as they are packed); OpenBLAS = cblas_sgemm on the same
//     F32 operands (RowMajor, NoTrans x, Trans w). GFLOP/s and % of this machine's fp32 FMA peak,
//     measured at start at the same thread count.
//   --small: M = 1 ... 64 rows with the weights streamed from memory (a rotation of copies of the
//     matrix larger than the last-level cache): GB/s of weights read and GFLOP/s, ours for F32,
//     BF16, Q8 and Q4 weights, OpenBLAS for F32. The read bandwidth of the machine is measured too.
//
//   bench_gemm [--threads 1,2] [--m 64,256,1024] [--models bench-m,huginn-0125]
//              [--layers qkv,proj,fc,mlp_proj,adapter] [--dtypes f32,bf16,q8,q4] [--isa NAME]
//              [--min-time S] [--small] [--mb MB] [--no-blas] [--csv] [--cpu-time]
//
// --cpu-time: every time (ours, OpenBLAS's, the peak's) is the process's CPU time over the thread
// count instead of the wall clock, which leaves out the time this process waited for a CPU on a
// machine shared with other jobs (exact at 1 thread; spinning workers count as busy).
// Shapes (E n_embd, I intermediate): qkv [3E, E], proj [E, E], fc [2I, E] (gate | up),
// mlp_proj [E, I], adapter [E, 2E]. bench-m: E 1024, I 2816; Huginn-0125: E 5280, I 17920.
// Each figure is the best of the timed repetitions after one warm-up call, repetitions running
// until --min-time seconds (default 0.3) and at least 2 of them.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"
#include "eval/machine_peak.h"
#include "huginn/backend.h"
#include "huginn/thread_pool.h"
#include "kernels/cpu/cpu_backend.h"

#ifdef HUGINN_BENCH_OPENBLAS
#include <cblas.h>
#endif

using namespace huginn;

namespace {

struct Args {
  std::vector<int> threads{1, 2};
  std::vector<int> ms;  // empty: the sweep's default
  std::vector<std::string> models{"bench-m", "huginn-0125"};
  std::vector<std::string> layers{"qkv", "proj", "fc", "mlp_proj", "adapter"};
  std::vector<std::string> dtypes;  // empty: the sweep's default
  std::string isa;
  double min_time = 0.3;
  bool small = false, blas = true, csv = false, cpu_time = false;
  int64_t mb = 0;  // --small stream set; 0: max(4 x LLC, 512 MB)
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t p = 0;
  while (p <= s.size()) {
    const size_t q = std::min(s.find(',', p), s.size());
    if (q > p) out.push_back(s.substr(p, q - p));
    p = q + 1;
  }
  return out;
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

double cpu_now() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Best time of f() after a warm-up call, over at least 2 runs filling min_time seconds; with
// cpu_time, process CPU seconds / threads.
template <class F>
double best_time(double min_time, bool cpu_time, int threads, const F& f) {
  f();
  double best = 1e30, spent = 0;
  for (int r = 0; r < 2 || spent < min_time; ++r) {
    const double t0 = now(), c0 = cpu_now();
    f();
    const double t = cpu_time ? (cpu_now() - c0) / threads : now() - t0;
    best = std::min(best, t);
    spent += t;
    if (r > 10000) break;
  }
  return best;
}

struct Layer {
  std::string model, name;
  int64_t K, N;
};

std::vector<Layer> layers_of(const Args& a) {
  std::vector<Layer> out;
  for (const std::string& m : a.models) {
    int64_t E, I;
    if (m == "bench-m") {
      E = 1024, I = 2816;
    } else if (m == "huginn-0125") {
      E = 5280, I = 17920;
    } else {
      std::fprintf(stderr, "bench_gemm: unknown model '%s' (bench-m, huginn-0125)\n", m.c_str());
      std::exit(2);
    }
    for (const std::string& l : a.layers) {
      if (l == "qkv") out.push_back({m, l, E, 3 * E});
      else if (l == "proj") out.push_back({m, l, E, E});
      else if (l == "fc") out.push_back({m, l, E, 2 * I});
      else if (l == "mlp_proj") out.push_back({m, l, I, E});
      else if (l == "adapter") out.push_back({m, l, 2 * E, E});
      else {
        std::fprintf(stderr, "bench_gemm: unknown layer '%s'\n", l.c_str());
        std::exit(2);
      }
    }
  }
  return out;
}

Tensor random_f32(int64_t rows, int64_t cols, std::mt19937& rng) {
  Tensor t = Tensor::empty({rows, cols});
  std::normal_distribution<float> d(0.0f, 0.02f);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = d(rng);
  return t;
}

DType dtype_of(const std::string& s) {
  if (s == "f32") return DType::kF32;
  if (s == "bf16") return DType::kBF16;
  if (s == "q8") return DType::kQ8;
  if (s == "q4") return DType::kQ4;
  std::fprintf(stderr, "bench_gemm: unknown dtype '%s' (f32, bf16, q8, q4)\n", s.c_str());
  std::exit(2);
}

double load_average() {
  double load = 0;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &load) != 1) load = 0;
    std::fclose(f);
  }
  return load;
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

#ifdef HUGINN_BENCH_OPENBLAS
void blas_sgemm(const Tensor& x, const Tensor& w, Tensor& y) {
  const int M = static_cast<int>(x.dim(0)), K = static_cast<int>(x.dim(1)),
            N = static_cast<int>(w.dim(0));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x.f32(),
              static_cast<int>(x.stride(0)), w.f32(), static_cast<int>(w.stride(0)), 0.0f,
              y.f32(), static_cast<int>(y.stride(0)));
}
#endif

struct Row {
  std::string model, layer, dtype, impl;
  int64_t M, K, N;
  int threads;
  double secs, gflops, pct_peak, gbs;
};

void print_row(const Row& r, bool csv, bool small) {
  if (csv) {
    std::printf("%s,%s,%lld,%lld,%lld,%s,%s,%d,%.6g,%.2f,%.1f,%.2f\n", r.model.c_str(),
                r.layer.c_str(), (long long)r.M, (long long)r.K, (long long)r.N, r.dtype.c_str(),
                r.impl.c_str(), r.threads, r.secs, r.gflops, r.pct_peak, r.gbs);
  } else if (small) {
    std::printf("%-12s %-9s %5lld %6lld %6lld %-5s %-9s %2d | %8.2f GB/s %8.1f GFLOP/s %5.1f%%\n",
                r.model.c_str(), r.layer.c_str(), (long long)r.M, (long long)r.K, (long long)r.N,
                r.dtype.c_str(), r.impl.c_str(), r.threads, r.gbs, r.gflops, r.pct_peak);
  } else {
    std::printf("%-12s %-9s %5lld %6lld %6lld %-5s %-9s %2d | %8.1f GFLOP/s %5.1f%% peak\n",
                r.model.c_str(), r.layer.c_str(), (long long)r.M, (long long)r.K, (long long)r.N,
                r.dtype.c_str(), r.impl.c_str(), r.threads, r.gflops, r.pct_peak);
  }
  std::fflush(stdout);
}

struct Machine {
  std::vector<double> fp32_peak;  // per entry of Args::threads
  double read_gbs = 0;            // 1 thread, from memory (--small)
};

// Prefill sweep: one weight matrix per layer, x and y per M; ours then OpenBLAS on each shape.
void prefill(const Args& a, const Machine& mc, const CpuOptions& opt) {
  std::mt19937 rng(7);
  std::vector<std::string> dtypes = a.dtypes.empty() ? std::vector<std::string>{"f32", "bf16"}
                                                     : a.dtypes;
  std::vector<int> ms = a.ms.empty() ? std::vector<int>{64, 256, 1024} : a.ms;
  for (const Layer& l : layers_of(a)) {
    const Tensor wf = random_f32(l.N, l.K, rng);
    for (int M : ms) {
      const Tensor x = random_f32(M, l.K, rng);
      Tensor y = Tensor::empty({M, l.N});
      const double flops = 2.0 * M * l.K * l.N;
      for (size_t ti = 0; ti < a.threads.size(); ++ti) {
        const int T = a.threads[ti];
        ThreadPool pool(T);
        auto be = make_cpu_backend(pool, opt);
        auto emit = [&](const std::string& dt, const std::string& impl, double s) {
          print_row({l.model, l.name, dt, impl, M, l.K, l.N, T, s, flops / s / 1e9,
                     100.0 * flops / s / 1e9 / mc.fp32_peak[ti], 0.0},
                    a.csv, false);
        };
        for (const std::string& dt : dtypes) {
          const Tensor w = dtype_of(dt) == DType::kF32 ? wf : convert_weight(wf, dtype_of(dt));
          emit(dt, "huginn", best_time(a.min_time, a.cpu_time, T, [&] { be->matmul(x, w, y); }));
        }
#ifdef HUGINN_BENCH_OPENBLAS
        if (a.blas) {
          openblas_set_num_threads(T);
          emit("f32", "openblas", best_time(a.min_time, a.cpu_time, T, [&] { blas_sgemm(x, wf, y); }));
        }
#endif
      }
    }
  }
}

// Small-M sweep: weights streamed from memory through a rotation of copies.
void small(const Args& a, const Machine& mc, const CpuOptions& opt) {
  std::mt19937 rng(7);
  std::vector<std::string> dtypes =
      a.dtypes.empty() ? std::vector<std::string>{"f32", "bf16", "q8", "q4"} : a.dtypes;
  std::vector<int> ms = a.ms.empty() ? std::vector<int>{1, 2, 3, 4, 5, 8, 12, 16, 24, 32, 48, 64}
                                     : a.ms;
  const double llc = static_cast<double>(last_level_cache_bytes());
  const double set_bytes = a.mb > 0 ? a.mb * 1e6 : std::max(4 * llc, 512e6);
  for (const Layer& l : layers_of(a)) {
    const Tensor wf = random_f32(l.N, l.K, rng);
    for (const std::string& dt : dtypes) {
      const Tensor w = dtype_of(dt) == DType::kF32 ? wf : convert_weight(wf, dtype_of(dt));
      const double bytes = static_cast<double>(w.nbytes());
      const int64_t copies = std::max<int64_t>(2, static_cast<int64_t>(set_bytes / bytes) + 1);
      std::vector<Tensor> ws;
      for (int64_t c = 0; c < copies; ++c) ws.push_back(w.clone());
      for (int M : ms) {
        const Tensor x = random_f32(M, l.K, rng);
        Tensor y = Tensor::empty({M, l.N});
        const double flops = 2.0 * M * l.K * l.N;
        for (size_t ti = 0; ti < a.threads.size(); ++ti) {
          const int T = a.threads[ti];
          ThreadPool pool(T);
          auto be = make_cpu_backend(pool, opt);
          auto emit = [&](const std::string& impl, double s) {
            print_row({l.model, l.name, dt, impl, M, l.K, l.N, T, s, flops / s / 1e9,
                       100.0 * flops / s / 1e9 / mc.fp32_peak[ti], bytes / s / 1e9},
                      a.csv, true);
          };
          emit("huginn", best_time(a.min_time, a.cpu_time, T, [&] {
                 for (const Tensor& wc : ws) be->matmul(x, wc, y);
               }) / copies);
#ifdef HUGINN_BENCH_OPENBLAS
          if (a.blas && dt == "f32") {
            openblas_set_num_threads(T);
            emit("openblas", best_time(a.min_time, a.cpu_time, T, [&] {
                   for (const Tensor& wc : ws) blas_sgemm(x, wc, y);
                 }) / copies);
          }
#endif
        }
      }
    }
  }
}

int usage(int rc) {
  std::printf(
      "usage: bench_gemm [--threads 1,2] [--m 64,256,1024] [--models bench-m,huginn-0125]\n"
      "                  [--layers qkv,proj,fc,mlp_proj,adapter] [--dtypes f32,bf16,q8,q4]\n"
      "                  [--isa generic|avx2|avx512] [--min-time S] [--small] [--mb MB]\n"
      "                  [--no-blas] [--csv] [--cpu-time]\n"
      "GFLOP/s of y = x·wᵀ on the model's layer shapes, ours and OpenBLAS's in the same run;\n"
      "--small: M = 1..64 with weights streamed from memory (GB/s).\n");
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    auto next = [&] { return bench::next_arg(argc, argv, i); };
    if (s == "--threads") a.threads = bench::int_list(next(), "--threads");
    else if (s == "--m") a.ms = bench::int_list(next(), "--m");
    else if (s == "--models") a.models = split(next());
    else if (s == "--layers") a.layers = split(next());
    else if (s == "--dtypes") a.dtypes = split(next());
    else if (s == "--isa") a.isa = next();
    else if (s == "--min-time") a.min_time = bench::double_arg(argc, argv, i);
    else if (s == "--mb") a.mb = bench::int64_arg(argc, argv, i);
    else if (s == "--small") a.small = true;
    else if (s == "--no-blas") a.blas = false;
    else if (s == "--csv") a.csv = true;
    else if (s == "--cpu-time") a.cpu_time = true;
    else return usage(s == "--help" || s == "-h" ? 0 : 2);
  }
  CpuOptions opt;
  opt.isa = best_cpu_isa();
  if (!a.isa.empty()) {
    bool found = false;
    for (CpuIsa i : available_cpu_isas())
      if (a.isa == cpu_isa_name(i)) opt.isa = i, found = true;
    if (!found) {
      std::fprintf(stderr, "bench_gemm: --isa %s is not available on this CPU or build\n",
                   a.isa.c_str());
      return 2;
    }
  }
  std::printf("# %s, %d hardware threads, load average %.1f at start\n", cpu_model().c_str(),
              ThreadPool::hardware_threads(), load_average());
  std::printf("# huginn cpu backend: %s\n", describe(cpu_kernel_info(opt.isa)).c_str());
  std::printf("# timing: %s\n", a.cpu_time ? "process CPU time / threads" : "wall clock");
#ifdef HUGINN_BENCH_OPENBLAS
  std::printf("# OpenBLAS: %s, core %s\n", openblas_get_config(), openblas_get_corename());
#else
  std::printf("# OpenBLAS: not built in (libopenblas-dev missing at configure time)\n");
  a.blas = false;
#endif
  Machine mc;
  for (int T : a.threads) {
    ThreadPool pool(T);
    mc.fp32_peak.push_back(measure_fp32_peak(pool, 0.1, 3, nullptr, a.cpu_time));
    std::printf("# fp32 FMA peak at %d thread%s: %.1f GFLOP/s\n", T, T == 1 ? "" : "s",
                mc.fp32_peak.back());
  }
  if (a.small) {
    ThreadPool pool(1);
    const size_t llc = last_level_cache_bytes();
    mc.read_gbs = measure_read_bandwidth(pool, std::max<size_t>(4 * llc, size_t{512} << 20), 0.2, 3);
    std::printf("# read bandwidth from memory at 1 thread: %.1f GB/s\n", mc.read_gbs);
  }
  if (a.csv)
    std::printf("model,layer,M,K,N,dtype,impl,threads,seconds,gflops,pct_fp32_peak,weight_gbs\n");
  if (a.small) {
    small(a, mc, opt);
  } else {
    prefill(a, mc, opt);
  }
  std::printf("# load average %.1f at end\n", load_average());
  return 0;
}
