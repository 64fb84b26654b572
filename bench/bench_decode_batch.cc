// Batched decode vs one sequence at a time: B sequences each decode N tokens at r recurrences,
// either as N Generator::decode_batch calls of B rows (the weights read once per layer for all
// B) or as B·N single decode calls. Prints decode tokens/s of both, the speed-up, and whether
// the greedy tokens agree (they must: batching is exact). Random weights (the trainer's
// reference initialisation, seeded) unless --model is given; speed does not depend on values.
// Best of --repeat runs, in wall time and in process CPU time (the latter survives a busy
// machine; with --threads 1 all work is on the calling thread).
//
//   bench_decode_batch [--model DIR | --config FILE] [--batch 1,4,16] [--new N] [--steps r]
//                      [--threads N] [--repeat K]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "huginn/forward_batch.h"
#include "huginn/generate.h"
#include "huginn/model.h"
#include "huginn/thread_pool.h"
#include "huginn/train.h"
#include "bench_util.h"

using namespace huginn;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// CPU time of the whole process (all threads): on a busy machine it still measures the work.
double cpu_s() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

int32_t argmax(std::span<const float> v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

struct Run {
  double seconds = 1e30, cpu = 1e30;
  std::vector<std::vector<int32_t>> tokens;
};

// B sequences (prompt of 4 ids, different per sequence), then `n_new` decode calls each.
Run run(const Model& model, Backend& be, int B, int n_new, int steps, bool batched) {
  GenerateOptions o;
  o.steps = steps;
  Generator gen(model, be, o);
  std::vector<std::unique_ptr<GenerationContext>> ctx;
  std::vector<int32_t> next(B);
  const int32_t V = static_cast<int32_t>(model.config().vocab_size);
  for (int b = 0; b < B; ++b) {
    ctx.push_back(gen.new_context());
    const std::vector<int32_t> prompt = {(7 * b + 1) % V, (13 * b + 2) % V, (3 * b + 5) % V, 11 % V};
    next[b] = argmax(gen.prefill(*ctx[b], prompt).logits);
  }
  Run r;
  r.tokens.resize(B);
  BatchRunner br(model, be);
  const double t0 = now_s(), c0 = cpu_s();
  for (int i = 0; i < n_new; ++i) {
    if (batched) {
      std::vector<BatchedCall> calls;
      for (int b = 0; b < B; ++b) calls.push_back({&gen, ctx[b].get(), next[b], {}, nullptr, {}, {}});
      Generator::decode_batch(calls, br);
      for (int b = 0; b < B; ++b) r.tokens[b].push_back(next[b] = argmax(calls[b].result.logits));
    } else {
      for (int b = 0; b < B; ++b) r.tokens[b].push_back(next[b] = argmax(gen.decode(*ctx[b], next[b]).logits));
    }
  }
  r.seconds = now_s() - t0;
  r.cpu = cpu_s() - c0;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir, config_path;
  std::vector<int> batches = {1, 4, 16};
  int n_new = 8, steps = 8, threads = 1, repeat = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return bench::next_arg(argc, argv, i); };
    if (a == "--model") model_dir = next();
    else if (a == "--config") config_path = next();
    else if (a == "--batch") batches = bench::int_list(next(), "--batch");
    else if (a == "--new") n_new = bench::int_arg(argc, argv, i);
    else if (a == "--steps") steps = bench::int_arg(argc, argv, i);
    else if (a == "--threads") threads = bench::int_arg(argc, argv, i);
    else if (a == "--repeat") repeat = bench::int_arg(argc, argv, i);
    else {
      std::fprintf(stderr,
                   "usage: bench_decode_batch [--model DIR | --config FILE] [--batch 1,4,16] "
                   "[--new N] [--steps r] [--threads N] [--repeat K]\n"
                   "Without --model/--config: E=512, I=1536, 2/4/2 layers, V=32768.\n");
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  try {
    ThreadPool pool(threads);
    auto be = make_backend("cpu", pool);
    std::shared_ptr<const Model> model;
    if (!model_dir.empty()) {
      model = Model::load(model_dir, *be);
    } else {
      ModelConfig c;
      if (!config_path.empty()) {
        c = ModelConfig::from_file(config_path);
      } else {
        c = bench::preset_config("bench-512");
      }
      std::shared_ptr<TrainableModel> tm = TrainableModel::init(c, 1234);
      model = std::shared_ptr<const Model>(tm, &tm->model());
    }
    const ModelConfig& c = model->config();
    std::printf("model %s: E=%lld I=%lld V=%lld layers %d/%d/%d, r=%d, %d new tokens per sequence, "
                "%d threads, best of %d\n",
                c.name.c_str(), (long long)c.n_embd, (long long)c.intermediate_size,
                (long long)c.vocab_size, c.n_prelude, c.n_core, c.n_coda, steps, n_new,
                pool.size(), repeat);
    std::printf("%6s %11s %11s %9s %14s %14s %9s %5s\n", "batch", "solo tok/s", "batch tok/s",
                "speed-up", "solo tok/cpu-s", "batch tok/cpu-s", "speed-up", "same");
    for (int B : batches) {
      Run solo, batched;
      for (int k = 0; k < repeat; ++k) {
        Run s = run(*model, *be, B, n_new, steps, false);
        Run b = run(*model, *be, B, n_new, steps, true);
        solo.seconds = std::min(solo.seconds, s.seconds), solo.cpu = std::min(solo.cpu, s.cpu);
        batched.seconds = std::min(batched.seconds, b.seconds);
        batched.cpu = std::min(batched.cpu, b.cpu);
        solo.tokens = s.tokens, batched.tokens = b.tokens;
      }
      const double tok = double(B) * n_new;
      std::printf("%6d %11.1f %11.1f %8.2fx %14.1f %14.1f %8.2fx %5s\n", B, tok / solo.seconds,
                  tok / batched.seconds, solo.seconds / batched.seconds, tok / solo.cpu,
                  tok / batched.cpu, solo.cpu / batched.cpu,
                  solo.tokens == batched.tokens ? "yes" : "NO");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_decode_batch: %s\n", e.what());
    return 1;
  }
  return 0;
}
