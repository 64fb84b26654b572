// huginn info: the config and parameter counts of a model.
#include <cstdio>
#include <memory>

#include "cli/command.h"
#include "huginn/model.h"
#include "huginn/thread_pool.h"

namespace huginn::cli {
namespace {

std::string human(int64_t n) {
  char buf[32];
  if (n >= 1000000000) std::snprintf(buf, sizeof buf, "%.2fB", n / 1e9);
  else if (n >= 1000000) std::snprintf(buf, sizeof buf, "%.2fM", n / 1e6);
  else if (n >= 1000) std::snprintf(buf, sizeof buf, "%.1fK", n / 1e3);
  else std::snprintf(buf, sizeof buf, "%lld", (long long)n);
  return buf;
}

void run(const std::string& dir, int r, const Common& common) {
  ThreadPool pool(1);
  auto backend = make_backend(common.backend, pool);
  auto model = Model::load(dir, *backend, load_options(common));
  const ModelConfig& c = model->config();
  const ParamCounts p = model->param_counts();
  if (r < 0) r = c.mean_recurrence;
  std::printf("model            %s\n", c.name.empty() ? dir.c_str() : c.name.c_str());
  std::printf("n_embd           %lld\n", (long long)c.n_embd);
  std::printf("heads x dim      %lld x %lld\n", (long long)c.n_heads, (long long)c.head_dim);
  std::printf("intermediate     %lld\n", (long long)c.intermediate_size);
  std::printf("vocab            %lld\n", (long long)c.vocab_size);
  std::printf("layers           prelude %d, core %d (recurrent), coda %d\n", c.n_prelude, c.n_core, c.n_coda);
  std::printf("recurrence       mean %d, backprop depth %d\n", c.mean_recurrence, c.mean_backprop_depth);
  std::printf("norm_eps         %g\nrope_base        %g\n", c.norm_eps, c.rope_base);
  std::printf("tied embeddings  %s\nqk_bias          %s\n", c.tie_embeddings ? "yes" : "no", c.qk_bias ? "yes" : "no");
  std::printf("\nparameters\n");
  std::printf("  embedding      %14lld  (%s)\n", (long long)p.embedding, human(p.embedding).c_str());
  std::printf("  prelude        %14lld  (%s)\n", (long long)p.prelude, human(p.prelude).c_str());
  std::printf("  adapter        %14lld  (%s)\n", (long long)p.adapter, human(p.adapter).c_str());
  std::printf("  core           %14lld  (%s)\n", (long long)p.core, human(p.core).c_str());
  std::printf("  coda + ln_f    %14lld  (%s)\n", (long long)p.coda, human(p.coda).c_str());
  std::printf("  head           %14lld  (%s)%s\n", (long long)p.head, human(p.head).c_str(), p.head ? "" : " tied to embedding");
  std::printf("  total          %14lld  (%s)\n", (long long)p.total(), human(p.total()).c_str());
  const Weights& w = model->weights();
  size_t mat = w.adapter.nbytes() + (p.head || w.head_tied ? w.lm_head.nbytes() : 0);
  for (const auto* blocks : {&w.prelude, &w.core, &w.coda})
    for (const BlockWeights& b : *blocks)
      mat += b.wqkv.nbytes() + b.attn_proj.nbytes() + b.mlp_fc.nbytes() + b.mlp_proj.nbytes();
  std::printf("  matrices       %s, %.1f MB in memory (--dtype %s)\n", dtype_name(w.adapter.dtype()),
              mat / 1e6, common.dtype.c_str());
  std::printf("  materialized at r=%-3d %7lld  (%s)  layers per token: %d\n", r,
              (long long)p.materialized(r), human(p.materialized(r)).c_str(),
              c.n_prelude + r * c.n_core + c.n_coda);
}

Registrar reg(10, [](CLI::App& app, Common& common) {
  auto dir = std::make_shared<std::string>();
  auto r = std::make_shared<int>(-1);
  CLI::App* sub = app.add_subcommand("info", "Show a model's config and parameter counts");
  sub->add_option("--model", *dir, "model directory (config.json + safetensors)")->required();
  sub->add_option("--steps", *r, "r for the materialized count (default: mean_recurrence)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--backend", common.backend, "compute backend")->check(CLI::IsMember({"cpu", "ref", "strict"}));
  add_dtype_option(sub, common);
  sub->callback([dir, r, &common] { run(*dir, *r, common); });
});

}  // namespace
}  // namespace huginn::cli
