// Per-op throughput of the fast CPU backend at 1 and 2 threads, as GFLOP/s or GB/s and as a
// percentage of this machine's peak, which the program measures first (fp32 FMA throughput and
// read bandwidth). Best of several runs, since the machine may be shared.
//
//   bench_ops [--quick] [--cpu-time] [--isa generic|avx2|avx512] [--filter SUBSTRING]
//
// --cpu-time times by the process's CPU time divided by the thread count instead of the wall
// clock: on a machine shared with other jobs this discounts the time the threads were not
// running (the wall clock then measures the other jobs); spinning workers are counted as busy.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "huginn/backend.h"
#include "huginn/thread_pool.h"
#include "eval/machine_peak.h"
#include "kernels/cpu/cpu_backend.h"

namespace huginn {
namespace {

bool g_cpu_time = false;

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

double process_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Best time of fn() over repeats filling about `budget` seconds (at least 3 runs), on the wall
// clock or (--cpu-time) as process CPU time / threads.
double best_time(const std::function<void()>& fn, double budget, int threads) {
  auto clock = [&] { return g_cpu_time ? process_cpu_seconds() / threads : now(); };
  fn();  // warm up (page faults, scratch buffers)
  double best = 1e30;
  const double start = now();
  for (int i = 0; i < 3 || now() - start < budget; ++i) {
    const double t0 = clock();
    fn();
    best = std::min(best, clock() - t0);
    if (i > 1000) break;
  }
  return best;
}

Tensor random_tensor(std::initializer_list<int64_t> shape, std::mt19937& rng) {
  Tensor t = Tensor::empty(shape);
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = d(rng);
  return t;
}

struct Peak {
  double gflops[2], gbs[2];  // at 1 and 2 threads
  double bf16_gflops[2];     // vdpbf16ps; 0 where absent
};

struct Bench {
  std::string name;
  double flops, bytes;  // per call; bytes = main memory traffic the op cannot avoid
  std::function<void(Backend&, ThreadPool&)> run;
  bool bf16 = false;  // % of the bf16 peak rather than the fp32 one
};

void report(const Bench& b, const double secs[2], const Peak& peak) {
  std::printf("%-44s", b.name.c_str());
  for (int i = 0; i < 2; ++i) {
    const double gf = b.flops / secs[i] / 1e9, gb = b.bytes / secs[i] / 1e9;
    // An op is bound by whichever resource it uses the larger share of.
    const double fpeak = b.bf16 && peak.bf16_gflops[i] > 0 ? peak.bf16_gflops[i] : peak.gflops[i];
    const double pf = 100 * gf / fpeak, pb = 100 * gb / peak.gbs[i];
    if (pf >= pb)
      std::printf(" | %8.1f GFLOP/s %5.1f%% peak", gf, pf);
    else
      std::printf(" | %8.1f GB/s    %5.1f%% bw  ", gb, pb);
  }
  std::printf("\n");
  std::fflush(stdout);
}

std::vector<Bench> benches(std::mt19937& rng, bool quick) {
  std::vector<Bench> out;
  auto matmul = [&](const char* what, int64_t M, int64_t K, int64_t N) {
    auto x = std::make_shared<Tensor>(random_tensor({M, K}, rng));
    auto w = std::make_shared<Tensor>(random_tensor({N, K}, rng));
    auto y = std::make_shared<Tensor>(Tensor::empty({M, N}));
    char name[96];
    std::snprintf(name, sizeof name, "matmul %-9s M%-4ld K%-5ld N%ld", what, static_cast<long>(M),
                  static_cast<long>(K), static_cast<long>(N));
    out.push_back({name, 2.0 * M * N * K, 4.0 * (N * K + M * K + M * N),
                   [=](Backend& b, ThreadPool&) { b.matmul(*x, *w, *y); }});
  };
  // Huginn-0125: E=5280, I=17920 (fc is [2I, E]); the tiny test models have E = 64 / 96.
  matmul("decode", 1, 5280, 5280);
  matmul("decode", 1, 5280, 3 * 5280);
  if (!quick) matmul("decode", 1, 5280, 2 * 17920);
  matmul("decode", 1, 17920, 5280);
  matmul("decode", 4, 5280, 5280);
  matmul("prefill", 64, 5280, 5280);
  matmul("prefill", 256, 5280, 5280);
  if (!quick) matmul("prefill", 512, 5280, 5280);
  if (!quick) matmul("prefill", 256, 5280, 2 * 17920);
  matmul("prefill", 256, 17920, 5280);
  matmul("bench-m", 256, 1024, 2 * 2816);
  matmul("bench-m", 256, 2816, 1024);
  matmul("tiny", 64, 64, 192);
  matmul("tiny", 96, 96, 288);
  // bench-m (E 1024, I 2816, V 32768): attention in/out, MLP in (fused gate+up) and out,
  // adapter, LM head; prefill of 256 tokens and a training batch of 4 x 256.
  const std::vector<std::pair<int64_t, int64_t>> bench_m_kn = {
      {1024, 3072}, {1024, 1024}, {1024, 2816}, {1024, 2 * 2816}, {2816, 1024}, {2048, 1024},
      {1024, 32768}};
  auto gemm_bf16 = [&](int64_t M, int64_t K, int64_t N) {
    auto x = std::make_shared<Tensor>(random_tensor({M, K}, rng));
    auto w = std::make_shared<Tensor>(convert_weight(random_tensor({N, K}, rng), DType::kBF16));
    auto y = std::make_shared<Tensor>(Tensor::empty({M, N}));
    char name[96];
    std::snprintf(name, sizeof name, "matmul bf16 bench-m M%-4ld K%-5ld N%ld", static_cast<long>(M),
                  static_cast<long>(K), static_cast<long>(N));
    out.push_back({name, 2.0 * M * N * K, 2.0 * N * K + 4.0 * (M * K + M * N),
                   [=](Backend& b, ThreadPool&) { b.matmul(*x, *w, *y); }});
  };
  for (int64_t M : {256, 1024})
    for (auto [K, N] : bench_m_kn) {
      if (quick && M == 1024) continue;
      matmul("bench-m", M, K, N);
      gemm_bf16(M, K, N);
    }

  auto attention = [&](const char* what, int64_t T, int64_t S, int H, int64_t D) {
    auto q = std::make_shared<Tensor>(random_tensor({T, H * D}, rng));
    auto k = std::make_shared<Tensor>(random_tensor({S, H * D}, rng));
    auto v = std::make_shared<Tensor>(random_tensor({S, H * D}, rng));
    auto o = std::make_shared<Tensor>(Tensor::empty({T, H * D}));
    const double pairs = static_cast<double>(T) * (S - T) + T * (T + 1) / 2.0;  // causal
    char name[96];
    std::snprintf(name, sizeof name, "attention %-7s T%-4ld S%-5ld H%d D%ld", what,
                  static_cast<long>(T), static_cast<long>(S), H, static_cast<long>(D));
    out.push_back({name, 4.0 * pairs * H * D, 4.0 * 2 * S * H * D,
                   [=](Backend& b, ThreadPool&) { b.attention(*q, *k, *v, H, *o); }});
  };
  attention("decode", 1, 4096, 55, 96);
  attention("prefill", 512, 512, 55, 96);
  attention("prefill", 256, 256, 16, 64);

  const int64_t T = 512, E = 5280, I = 17920;
  auto x = std::make_shared<Tensor>(random_tensor({T, E}, rng));
  auto x2 = std::make_shared<Tensor>(random_tensor({T, E}, rng));
  auto w = std::make_shared<Tensor>(random_tensor({E}, rng));
  auto y = std::make_shared<Tensor>(Tensor::empty({T, E}));
  const double tb = 4.0 * T * E;
  out.push_back({"rmsnorm T512 E5280", 4.0 * T * E, 2 * tb,
                 [=](Backend& b, ThreadPool&) { b.rmsnorm(*x, *w, 1e-6f, *y); }});
  out.push_back({"add T512 E5280", 1.0 * T * E, 3 * tb, [=](Backend& b, ThreadPool&) { b.add(*x, *x2, *y); }});
  out.push_back({"add_bias T512 E5280", 1.0 * T * E, 2 * tb,
                 [=](Backend& b, ThreadPool&) { b.add_bias(*y, *w); }});
  out.push_back({"copy T512 E5280", 0, 2 * tb, [=](Backend& b, ThreadPool&) { b.copy(*x, *y); }});
  auto cs = std::make_shared<Tensor>(random_tensor({T, 48, 2}, rng));
  auto pos = std::make_shared<std::vector<int32_t>>(T);
  for (int64_t t = 0; t < T; ++t) (*pos)[t] = static_cast<int32_t>(t);
  out.push_back({"rope T512 H55 D96", 6.0 * T * E, 2 * tb,
                 [=](Backend& b, ThreadPool&) { b.rope(*y, *cs, *pos, 96); }});
  const int64_t Ts = quick ? 64 : 256;
  auto fc = std::make_shared<Tensor>(random_tensor({Ts, 2 * I}, rng));
  auto act = std::make_shared<Tensor>(Tensor::empty({Ts, I}));
  out.push_back({"swiglu T" + std::to_string(Ts) + " I17920", 20.0 * Ts * I, 4.0 * 3 * Ts * I,
                 [=](Backend& b, ThreadPool&) { b.swiglu(*fc, *act); }});
  auto cat = std::make_shared<Tensor>(Tensor::empty({T, 2 * E}));
  out.push_back({"concat_cols T512 2x5280", 0, 4 * tb,
                 [=](Backend& b, ThreadPool&) { b.concat_cols(*x, *x2, *cat); }});
  auto logits = std::make_shared<Tensor>(random_tensor({64, 65536}, rng));
  auto lp = std::make_shared<Tensor>(Tensor::empty({64, 65536}));
  out.push_back({"log_softmax T64 V65536", 20.0 * 64 * 65536, 4.0 * 2 * 64 * 65536,
                 [=](Backend& b, ThreadPool&) { b.log_softmax(*logits, *lp); }});
  auto table = std::make_shared<Tensor>(random_tensor({65536, E}, rng));
  auto ids = std::make_shared<std::vector<int32_t>>(T);
  for (int64_t t = 0; t < T; ++t) (*ids)[t] = static_cast<int32_t>((t * 7919) % 65536);
  out.push_back({"embedding T512 E5280", 1.0 * T * E, 2 * tb,
                 [=](Backend& b, ThreadPool&) { b.embedding(*table, *ids, 72.7f, *y); }});
  return out;
}

int main(int argc, char** argv) {
  bool quick = false;
  std::string filter;
  CpuOptions opt;
  opt.isa = best_cpu_isa();
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") {
      quick = true;
    } else if (a == "--cpu-time") {
      g_cpu_time = true;
    } else if (a == "--filter" && i + 1 < argc) {
      filter = argv[++i];
    } else if (a == "--isa" && i + 1 < argc) {
      const std::string want = argv[++i];
      bool found = false;
      for (CpuIsa isa : available_cpu_isas())
        if (want == cpu_isa_name(isa)) opt.isa = isa, found = true;
      if (!found) {
        std::fprintf(stderr, "bench_ops: --isa %s is not available here\n", want.c_str());
        return 2;
      }
    } else {
      std::fprintf(stderr,
                   "usage: bench_ops [--quick] [--cpu-time] [--isa generic|avx2|avx512] "
                   "[--filter S]\n");
      return a == "--help" ? 0 : 2;
    }
  }
  ThreadPool pools[2] = {ThreadPool(1), ThreadPool(2)};
  Peak peak;
  for (int i = 0; i < 2; ++i) {  // the ISA's FMA loop chosen at run time (eval/machine_peak.h)
    peak.gflops[i] = measure_fp32_peak(pools[i], 0.1, 3);
    peak.gbs[i] = measure_read_bandwidth(pools[i], size_t{1} << 30, 0.2, 3);
    peak.bf16_gflops[i] = measure_bf16_peak(pools[i], 0.1, 3);
  }
  std::printf("machine peak: fp32 FMA %.1f / %.1f GFLOP/s, bf16 dot %.1f / %.1f GFLOP/s, "
              "read bandwidth %.1f / %.1f GB/s (1 / 2 threads)\n",
              peak.gflops[0], peak.gflops[1], peak.bf16_gflops[0], peak.bf16_gflops[1],
              peak.gbs[0], peak.gbs[1]);
  double load = 0;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &load) != 1) load = 0;
    std::fclose(f);
  }
  std::printf("load average %.1f on %d hardware threads%s; timing by %s\n", load,
              ThreadPool::hardware_threads(),
              load > ThreadPool::hardware_threads() ? " (busy machine: numbers are low)" : "",
              g_cpu_time ? "CPU time / threads" : "wall clock");
  std::printf("backend cpu, isa %s\n%-44s | %-32s | %s\n", cpu_isa_name(opt.isa), "op",
              "1 thread", "2 threads");
  std::mt19937 rng(1);
  std::unique_ptr<Backend> backends[2] = {make_cpu_backend(pools[0], opt),
                                          make_cpu_backend(pools[1], opt)};
  for (const Bench& b : benches(rng, quick)) {
    if (!filter.empty() && b.name.find(filter) == std::string::npos) continue;
    double secs[2];
    for (int i = 0; i < 2; ++i)
      secs[i] = best_time([&] { b.run(*backends[i], pools[i]); }, quick ? 0.2 : 0.5, i + 1);
    report(b, secs, peak);
  }
  return 0;
}

}  // namespace
}  // namespace huginn

int main(int argc, char** argv) { return huginn::main(argc, argv); }
