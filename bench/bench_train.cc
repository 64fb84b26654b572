// Training-step throughput and memory: tokens/s of loss_and_grad (forward + backward) and peak
// memory for n = 0 and n = 24 untracked recurrences at a fixed backprop depth k, showing that
// activation memory does not grow with n (only the k tracked steps keep activations).
//
//   bench_train [MODEL_DIR] [--threads N] [--tokens T] [--k K] [--iters I]
// MODEL_DIR defaults to tests/data/golden/tiny-b (run from the repository root).
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

#include "huginn/backward.h"
#include "huginn/thread_pool.h"

using namespace huginn;

static double max_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;  // Linux: KiB
}

int main(int argc, char** argv) {
  std::string dir = "tests/data/golden/tiny-b";
  int threads = 0, k = 8, iters = 3;
  int64_t T = 64;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::atol(argv[++i]) : 0L; };
    if (a == "--threads") threads = static_cast<int>(next());
    else if (a == "--tokens") T = next();
    else if (a == "--k") k = static_cast<int>(next());
    else if (a == "--iters") iters = static_cast<int>(next());
    else dir = a;
  }
  try {
    ThreadPool pool(threads);
    auto be = make_cpu_backend(pool);
    auto model = Model::load(dir, *be);
    const ModelConfig& c = model->config();
    T = std::min<int64_t>(T, model->max_positions() - 1);
    std::mt19937 rng(1);
    std::vector<int32_t> seq(static_cast<size_t>(T + 1));
    for (auto& t : seq) t = static_cast<int32_t>(rng() % c.vocab_size);
    std::vector<int32_t> ids(seq.begin(), seq.end() - 1), labels(seq.begin() + 1, seq.end());
    std::printf("model %s: E=%lld, layers %d/%d/%d, V=%lld; T=%lld tokens, k=%d, %d threads\n",
                dir.c_str(), (long long)c.n_embd, c.n_prelude, c.n_core, c.n_coda,
                (long long)c.vocab_size, (long long)T, k, pool.size());
    std::printf("%4s %4s %12s %14s %18s %14s\n", "n", "k", "ms/step", "tokens/s",
                "peak_act_MiB", "max_rss_MiB");
    Grads grads = Grads::zeros_like(*model, *be);
    for (int n : {0, 24}) {
      BackwardRunner runner(*model, *be);  // fresh per n: its peak is this n's alone
      LossOptions opt;
      opt.n_no_grad = n;
      opt.n_with_grad = k;
      runner.loss_and_grad(ids, labels, opt, grads);  // warm-up
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < iters; ++i) runner.loss_and_grad(ids, labels, opt, grads);
      const double s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
      std::printf("%4d %4d %12.2f %14.0f %18.3f %14.1f\n", n, k, s * 1e3, T / s,
                  runner.peak_activation_bytes() / 1048576.0, max_rss_mib());
    }
    std::printf("(max RSS is the process high-water mark, so an unchanged value from n=0 to n=24\n"
                " means the n=24 steps needed no memory beyond the n=0 ones)\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
