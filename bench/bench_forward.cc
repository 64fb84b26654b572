// Forward-pass throughput: tokens/s and GFLOP/s of one prefill-style forward over T tokens at r
// recurrences, for a model directory or a config with random weights (speed doesn't depend on
// the values). Prints one row per (threads, r).
//
//   bench_forward [--model DIR | --config FILE] [--tokens T] [--steps 4,8,32] [--threads 1,2]
//                 [--backend cpu|ref] [--reps N]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "huginn/forward.h"
#include "huginn/model.h"
#include "huginn/thread_pool.h"
#include "huginn/train.h"
#include "bench_util.h"

using namespace huginn;

namespace {

// Weights don't change speed: the reference initialisation of the trainer, seeded.
std::shared_ptr<const Model> random_model(const ModelConfig& c) {
  std::shared_ptr<TrainableModel> tm = TrainableModel::init(c, 1234);
  return std::shared_ptr<const Model>(tm, &tm->model());
}

// Multiply-adds x2 of one forward over T tokens (attention counted with its causal half).
double forward_flops(const ModelConfig& c, int64_t T, int r) {
  const double E = c.n_embd, I = c.intermediate_size, V = c.vocab_size;
  const double per_layer = 2.0 * T * (3 * E * E + E * E + 2 * I * E + I * E) + 2.0 * E * T * (T + 1);
  const int layers = c.n_prelude + r * c.n_core + c.n_coda;
  return layers * per_layer + r * 2.0 * T * 2 * E * E + 2.0 * T * V * E;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir, config_path;
  int64_t T = 64;
  std::vector<int> steps = {4, 8, 32}, threads = {1, 2};
  std::string backend = "cpu";
  int reps = 3;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return bench::next_arg(argc, argv, i); };
    if (a == "--model") model_dir = next();
    else if (a == "--config") config_path = next();
    else if (a == "--tokens") T = bench::int64_arg(argc, argv, i);
    else if (a == "--steps") steps = bench::int_list(next(), "--steps");
    else if (a == "--threads") threads = bench::int_list(next(), "--threads");
    else if (a == "--backend") backend = next();
    else if (a == "--reps") reps = bench::int_arg(argc, argv, i);
    else {
      std::printf("usage: bench_forward [--model DIR | --config FILE] [--tokens T] [--steps 4,8,32]\n"
                  "                     [--threads 1,2] [--backend cpu|ref] [--reps N]\n"
                  "Without --model/--config: a 0.1B-class config (E=768, I=2048, 2/4/2 layers).\n");
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  try {
    std::shared_ptr<const Model> model;
    ThreadPool load_pool(1);
    auto load_be = make_backend(backend, load_pool);
    if (!model_dir.empty()) {
      model = Model::load(model_dir, *load_be);
    } else {
      ModelConfig c;
      if (!config_path.empty()) {
        c = ModelConfig::from_file(config_path);
      } else {
        c = bench::preset_config("bench-768");
      }
      model = random_model(c);
    }
    const ModelConfig& c = model->config();
    std::printf("model %s: E=%lld I=%lld V=%lld layers %d/%d/%d, T=%lld tokens, backend %s\n",
                c.name.c_str(), (long long)c.n_embd, (long long)c.intermediate_size,
                (long long)c.vocab_size, c.n_prelude, c.n_core, c.n_coda, (long long)T, backend.c_str());
    std::printf("%8s %5s %12s %12s %10s\n", "threads", "r", "ms/forward", "tokens/s", "GFLOP/s");
    std::vector<int32_t> ids(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) ids[t] = static_cast<int32_t>((t * 7919) % c.vocab_size);
    for (int th : threads) {
      ThreadPool pool(th);
      auto be = make_backend(backend, pool);
      Runner runner(*model, *be);
      for (int r : steps) {
        runner.forward(ids, r, InitState{});  // warm-up (scratch allocation, caches)
        double best = 1e30;
        for (int k = 0; k < reps; ++k) {
          auto t0 = std::chrono::steady_clock::now();
          runner.forward(ids, r, InitState{});
          best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }
        std::printf("%8d %5d %12.2f %12.1f %10.2f\n", th, r, best * 1e3, T / best,
                    forward_flops(c, T, r) / best / 1e9);
        std::fflush(stdout);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
