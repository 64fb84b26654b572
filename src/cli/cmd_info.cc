// huginn info: the config and parameter counts of a model.
#include <cstdio>
#include <memory>
#include <optional>
#include <set>

#include "cli/command.h"
#include "huginn/model.h"
#include "huginn/safetensors.h"

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

// Bytes the matrices take once loaded in `dt` (Q8: one int8 and 1/32 of an F16 scale a value;
// Q4: half a byte and the same scales).
double matrix_bytes(int64_t numel, DType dt) {
  if (dt == DType::kQ8) return numel * (1.0 + 2.0 / kQ8Block);
  if (dt == DType::kQ4) return numel * (0.5 + 2.0 / kQ4Block);
  return double(numel) * dtype_size(dt);
}

// From config.json and the safetensors headers only: no weight is read or converted, so this
// takes milliseconds and no memory whatever the model's size (it reports what is stored, not
// whether every tensor is present and well-formed: `huginn forward` loads and checks them).
void run(const std::string& dir, int r, const Common& common) {
  const ModelConfig c = ModelConfig::from_file(dir + "/config.json");
  const TensorStore store = TensorStore::open(dir);
  const bool tied = !store.contains(names::kLmHead);
  const ParamCounts p = count_params(c, tied);
  if (r < 0) r = c.mean_recurrence;
  std::printf("model            %s\n", c.name.empty() ? dir.c_str() : c.name.c_str());
  std::printf("n_embd           %lld\n", (long long)c.n_embd);
  std::printf("heads x dim      %lld x %lld\n", (long long)c.n_heads, (long long)c.head_dim);
  std::printf("intermediate     %lld\n", (long long)c.intermediate_size);
  std::printf("vocab            %lld\n", (long long)c.vocab_size);
  std::printf("layers           prelude %d, core %d (recurrent), coda %d\n", c.n_prelude, c.n_core, c.n_coda);
  std::printf("recurrence       mean %d, backprop depth %d\n", c.mean_recurrence, c.mean_backprop_depth);
  std::printf("norm_eps         %g\nrope_base        %g\n", c.norm_eps, c.rope_base);
  std::printf("tied embeddings  %s\nqk_bias          %s\n", tied ? "yes" : "no", c.qk_bias ? "yes" : "no");
  std::printf("\nparameters\n");
  std::printf("  embedding      %14lld  (%s)\n", (long long)p.embedding, human(p.embedding).c_str());
  std::printf("  prelude        %14lld  (%s)\n", (long long)p.prelude, human(p.prelude).c_str());
  std::printf("  adapter        %14lld  (%s)\n", (long long)p.adapter, human(p.adapter).c_str());
  std::printf("  core           %14lld  (%s)\n", (long long)p.core, human(p.core).c_str());
  std::printf("  coda + ln_f    %14lld  (%s)\n", (long long)p.coda, human(p.coda).c_str());
  std::printf("  head           %14lld  (%s)%s\n", (long long)p.head, human(p.head).c_str(), p.head ? "" : " tied to embedding");
  std::printf("  total          %14lld  (%s)\n", (long long)p.total(), human(p.total()).c_str());
  // The matrices as stored, and as --dtype would load them (a tied head gets its own copy
  // when not F32; "auto" keeps the stored format).
  int64_t numel = 0;
  std::set<std::string> stored;
  double disk = 0;
  for (const std::string& n : store.names()) {
    if (!names::is_matrix(n)) continue;
    const SafetensorsEntry& e = store.entry(n);
    numel += e.numel();
    disk += double(e.end - e.begin);
    stored.insert(dtype_name(e.dtype));
  }
  std::string kinds;
  for (const std::string& k : stored) kinds += (kinds.empty() ? "" : "+") + k;
  const std::optional<DType> want = parse_weight_dtype(common.dtype);
  const DType dt = want                   ? *want
                   : stored.count("I8")   ? DType::kQ8
                   : stored.count("U8")   ? DType::kQ4
                   : stored.count("BF16") ? DType::kBF16
                                          : DType::kF32;
  const int64_t loaded = numel + (tied && dt != DType::kF32 ? p.embedding : 0);
  std::printf("  matrices       %s, %.1f MB stored; %s, %.1f MB in memory with --dtype %s\n",
              kinds.empty() ? "none" : kinds.c_str(), disk / 1e6, dtype_name(dt),
              matrix_bytes(loaded, dt) / 1e6, common.dtype.c_str());
  std::printf("  materialized at r=%-3d %7lld  (%s)  layers per token: %d\n", r,
              (long long)p.materialized(r), human(p.materialized(r)).c_str(),
              c.n_prelude + r * c.n_core + c.n_coda);
}

Registrar reg(10, [](CLI::App& app, Common& common) {
  auto dir = std::make_shared<std::string>();
  auto r = std::make_shared<int>(-1);
  CLI::App* sub = app.add_subcommand("info", "Show a model's config and parameter counts (reads config.json and the safetensors headers, no weights)");
  sub->add_option("--model", *dir, "model directory (config.json + safetensors)")->required();
  sub->add_option("--steps", *r, "r for the materialized count (default: mean_recurrence)")
      ->check(CLI::NonNegativeNumber);
  add_dtype_option(sub, common);
  sub->callback([dir, r, &common] { run(*dir, *r, common); });
});

}  // namespace
}  // namespace huginn::cli
