// huginn forward: one forward pass, logits and latent written as safetensors.
#include <algorithm>
#include <cstdio>
#include <memory>

#include "cli/command.h"
#include "huginn/forward.h"
#include "huginn/log.h"
#include "huginn/model.h"
#include "huginn/safetensors.h"
#include "huginn/thread_pool.h"

namespace huginn::cli {
namespace {

struct ForwardArgs {
  std::string model, ids, out, init_state;
  int steps = -1;
  double init_scale = 0.0;
  uint64_t seed = 0;
  int top = 0;
};

// Prints the `k` most likely next tokens at each position.
void print_top(const Tensor& logits, int k) {
  const int64_t T = logits.dim(0), V = logits.dim(1);
  for (int64_t t = 0; t < T; ++t) {
    const float* row = logits.row(t);
    std::vector<int32_t> idx(static_cast<size_t>(V));
    for (int64_t v = 0; v < V; ++v) idx[v] = static_cast<int32_t>(v);
    const int kk = static_cast<int>(std::min<int64_t>(k, V));
    std::partial_sort(idx.begin(), idx.begin() + kk, idx.end(), [&](int32_t a, int32_t b) {
      return row[a] > row[b] || (row[a] == row[b] && a < b);
    });
    std::printf("pos %3lld:", (long long)t);
    for (int i = 0; i < kk; ++i) std::printf("  %6d (%8.4f)", idx[i], row[idx[i]]);
    std::printf("\n");
  }
}

// --init-state: a tensor named input_state, [T, E] or [1, T, E].
Tensor read_init_state(const std::string& path, int64_t T, int64_t E) {
  auto f = SafetensorsFile::open(path);
  const SafetensorsEntry* e = f->find("input_state");
  if (!e) throw Error(path + ": no tensor named 'input_state'");
  const bool ok = (e->shape.size() == 2 && e->shape[0] == T && e->shape[1] == E) ||
                  (e->shape.size() == 3 && e->shape[0] == 1 && e->shape[1] == T && e->shape[2] == E);
  if (!ok)
    throw Error(path + ": tensor 'input_state' has shape " +
                Tensor::wrap(nullptr, std::span<const int64_t>(e->shape), DType::kF32).shape_str() +
                ", expected [" + std::to_string(T) + ", " + std::to_string(E) + "] or [1, " +
                std::to_string(T) + ", " + std::to_string(E) + "]");
  return f->as_f32("input_state").clone().reshape({T, E});
}

void run(const ForwardArgs& a, const Common& common) {
  std::vector<int> ids_int = parse_int_list(a.ids, "--ids");
  std::vector<int32_t> ids(ids_int.begin(), ids_int.end());
  ThreadPool pool(common.threads);
  auto backend = make_backend(common.backend, pool);
  auto model = Model::load(a.model, *backend, load_options(common));
  const ModelConfig& c = model->config();
  const int steps = a.steps >= 0 ? a.steps : c.mean_recurrence;
  InitState init;
  init.scale = a.init_scale;
  init.seed = a.seed;
  if (!a.init_state.empty())
    init.given = read_init_state(a.init_state, static_cast<int64_t>(ids.size()), c.n_embd);
  Runner runner(*model, *backend);
  ForwardOutput out = runner.forward(ids, steps, init);

  const int64_t T = static_cast<int64_t>(ids.size());
  Tensor logits = Tensor::empty({T, c.vocab_size}), latent = Tensor::empty({T, c.n_embd});
  backend->download(out.logits, logits.f32());
  backend->download(out.latent, latent.f32());
  SafetensorsWriter w;
  w.add("logits", logits);
  w.add("latent", latent);
  w.add_metadata("steps", std::to_string(steps));
  w.add_metadata("model", a.model);
  if (!a.out.empty()) w.write(a.out);
  if (a.top > 0) print_top(logits, a.top);
  if (!common.quiet && !a.out.empty())
    HUGINN_LOG_INFO("wrote %s: logits [%lld, %lld], latent [%lld, %lld], %d steps", a.out.c_str(),
                    (long long)T, (long long)c.vocab_size, (long long)T, (long long)c.n_embd, steps);
}

Registrar reg(20, [](CLI::App& app, Common& common) {
  auto a = std::make_shared<ForwardArgs>();
  CLI::App* sub = app.add_subcommand("forward", "Run one forward pass; write logits and latent");
  sub->add_option("--model", a->model, "model directory (config.json + safetensors)")->required();
  sub->add_option("--ids", a->ids, "token ids, comma-separated (e.g. 1,2,3)")->required();
  sub->add_option("--steps", a->steps, "recurrences r (default: the config's mean_recurrence)")
      ->check(CLI::NonNegativeNumber);
  auto* scale = sub->add_option("--init-scale", a->init_scale,
                                "initial state: 0 = zeros, S = truncated normal scaled by S")
                    ->check(CLI::NonNegativeNumber);
  sub->add_option("--seed", a->seed, "seed of the random initial state");
  sub->add_option("--init-state", a->init_state,
                  "safetensors file with 'input_state' [T, E] or [1, T, E]")
      ->excludes(scale)
      ->check(CLI::ExistingFile);
  sub->add_option("--out", a->out, "output .safetensors: logits [T, V], latent [T, E]");
  sub->add_option("--top", a->top, "print the K most likely next tokens per position")
      ->check(CLI::PositiveNumber);
  add_common_options(sub, common);
  add_dtype_option(sub, common);
  sub->callback([a, &common] {
    if (a->out.empty() && a->top == 0) throw Error("forward: give --out FILE and/or --top K");
    run(*a, common);
  });
});

}  // namespace
}  // namespace huginn::cli
