// Generation throughput: prefill and decode tokens/s at r recurrences, and KV-cache bytes with
// the full cache vs. --cache-slots K (compress-s), for a model directory or a config with
// random weights (speed does not depend on the values). One row per (r, cache).
//
//   bench_generate [--model DIR | --config FILE] [--prompt T] [--new N] [--steps 4,8,32]
//                  [--slots K] [--threads N] [--backend cpu|ref] [--dtype f32|bf16|q8|auto]
//                  [--bench-m]
// "weight GB/s" is the matrix bytes one decoded token reads (prelude + r·(adapter + core) +
// coda + lm_head) times decode tok/s: compare it with the machine's read bandwidth.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "huginn/generate.h"
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

// Bytes of the matrices one decoded token at r recurrences reads.
double weight_bytes_per_token(const Model& m, int r) {
  const Weights& w = m.weights();
  auto block = [](const BlockWeights& b) {
    return double(b.wqkv.nbytes() + b.attn_proj.nbytes() + b.mlp_fc.nbytes() + b.mlp_proj.nbytes());
  };
  double pre = 0, core = 0, coda = 0;
  for (const auto& b : w.prelude) pre += block(b);
  for (const auto& b : w.core) core += block(b);
  for (const auto& b : w.coda) coda += block(b);
  return pre + r * (core + double(w.adapter.nbytes())) + coda + double(w.lm_head.nbytes());
}


}  // namespace

int main(int argc, char** argv) {
  std::string model_dir, config_path, backend = "cpu", dtype = "f32";
  bool bench_m = false;
  int prompt_len = 64, n_new = 32, slots = 4, threads = 0;
  std::vector<int> steps = {4, 8, 32};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return bench::next_arg(argc, argv, i); };
    auto next_int = [&] { return bench::int_arg(argc, argv, i); };
    if (a == "--model") model_dir = next();
    else if (a == "--config") config_path = next();
    else if (a == "--prompt") prompt_len = next_int();
    else if (a == "--new") n_new = next_int();
    else if (a == "--steps") steps = bench::int_list(next(), "--steps");
    else if (a == "--slots") slots = next_int();
    else if (a == "--threads") threads = next_int();
    else if (a == "--backend") backend = next();
    else if (a == "--dtype") dtype = next();
    else if (a == "--bench-m") bench_m = true;
    else {
      std::printf(
          "usage: bench_generate [--model DIR | --config FILE] [--prompt T] [--new N]\n"
          "                      [--steps 4,8,32] [--slots K] [--threads N] [--backend cpu|ref]\n"
          "                      [--dtype f32|bf16|q8|auto] [--bench-m]\n"
          "Without --model/--config: a 0.1B-class config (E=768, I=2048, 2/4/2 layers);\n"
          "--bench-m: E=1024, 16 heads, I=2816, V=32768, 2/4/2 layers, tied.\n");
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  try {
    ThreadPool pool(threads);
    auto be = make_backend(backend, pool);
    std::shared_ptr<const Model> model;
    if (!model_dir.empty()) {
      Model::LoadOptions lo;
      lo.weight_dtype = parse_weight_dtype(dtype);
      model = Model::load(model_dir, *be, lo);
    } else {
      ModelConfig c;
      if (!config_path.empty()) {
        c = ModelConfig::from_file(config_path);
      } else {
        c = bench::preset_config(bench_m ? "bench-m" : "bench-768");
      }
      model = random_model(c);
      const auto dt = parse_weight_dtype(dtype);
      if (dt && *dt != DType::kF32) model = model->with_weight_dtype(*dt, *be);
    }
    const ModelConfig& c = model->config();
    std::printf("model %s: E=%lld V=%lld layers %d/%d/%d, prompt %d, %d new tokens, %d threads, "
                "backend %s, matrices %s\n",
                c.name.c_str(), (long long)c.n_embd, (long long)c.vocab_size, c.n_prelude,
                c.n_core, c.n_coda, prompt_len, n_new, pool.size(), backend.c_str(),
                dtype_name(model->weights().adapter.dtype()));
    std::printf("%5s %10s %14s %14s %14s %8s %12s\n", "r", "cache", "prefill tok/s",
                "decode tok/s", "cache MB", "vs full", "weight GB/s");
    std::vector<int32_t> prompt(static_cast<size_t>(prompt_len));
    for (int t = 0; t < prompt_len; ++t) prompt[t] = static_cast<int32_t>((t * 7919) % c.vocab_size);
    for (int r : steps) {
      size_t full_bytes = 0;
      for (int shared = 0; shared < 2; ++shared) {
        GenerateOptions o;
        o.steps = r;
        o.max_new_tokens = n_new;
        o.default_stop_ids = false;
        if (shared) {
          o.cache_strategy = KVCache::Strategy::kCompressS;
          o.cache_slots = slots;
        }
        Generator gen(*model, *be, o);
        auto ctx = gen.new_context();
        gen.generate(*ctx, std::span<const int32_t>(prompt.data(), 4));  // warm-up
        ctx->reset();
        const GenerateResult res = gen.generate(*ctx, prompt);
        if (!shared) full_bytes = res.cache_bytes;
        const std::string name = shared ? "slots " + std::to_string(slots) : "full";
        std::printf("%5d %10s %14.1f %14.2f %14.3f %8.4f %12.1f\n", r, name.c_str(),
                    res.prefill_tok_s(), res.decode_tok_s(), res.cache_bytes / 1e6,
                    double(res.cache_bytes) / double(full_bytes),
                    weight_bytes_per_token(*model, r) * res.decode_tok_s() / 1e9);
        std::fflush(stdout);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
