// huginn widen: a trained model embedded into a larger shape that computes the same function (up
// to float rounding), to measure a small model's behaviour at a memory-bound shape. The
// construction is huginn/widen.h's; docs/widen.md derives it.
#include <chrono>
#include <filesystem>
#include <memory>

#include "cli/command.h"
#include "huginn/log.h"
#include "huginn/widen.h"

namespace huginn::cli {
namespace {

struct WidenArgs {
  std::string model, shape, out, dtype = "f32";
  bool force = false;
};

// Huginn-0125's shapes (bench/huginn-0125-shape.json, the released config) with the source's
// vocabulary, which a widened model keeps.
ModelConfig preset(const std::string& name, const ModelConfig& source) {
  if (name != "huginn-0125")
    throw Error("--shape " + name + ": no such file, and not a preset (huginn-0125)");
  ModelConfig g = source;
  g.n_embd = 5280;
  g.n_heads = 55;
  g.head_dim = 96;
  g.intermediate_size = 17920;
  g.n_prelude = 2;
  g.n_core = 4;
  g.n_coda = 2;
  g.block_size = 4096;
  return g;
}

void run(const WidenArgs& a, const Common& common) {
  namespace fs = std::filesystem;
  const ModelConfig source = ModelConfig::from_file((fs::path(a.model) / "config.json").string());
  const ModelConfig shape =
      fs::exists(a.shape) ? ModelConfig::from_file(a.shape) : preset(a.shape, source);
  const ModelConfig target = widened_config(source, shape);
  for (const char* f : {"/config.json", "/model.safetensors", "/model.safetensors.index.json"})
    if (!a.force && fs::exists(a.out + f))
      throw Error(a.out + f + ": already exists; refusing to overwrite it (pass --force)");
  if (fs::exists(a.out) && fs::equivalent(a.out, a.model))
    throw Error("--out " + a.out + ": must differ from the model directory");
  const auto t0 = std::chrono::steady_clock::now();
  const WidenStats st = write_widened(
      a.model, target, a.out, a.dtype == "bf16" ? DType::kBF16 : DType::kF32,
      [&](int64_t done, int64_t total) {
        if (common.quiet) return;
        const double s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const double rate = done / std::max(s, 1e-9);
        HUGINN_LOG_INFO("widen: %.2f of %.2f GB, %.0f MB/s, ETA %.0f s", done / 1e9, total / 1e9,
                        rate / 1e6, (total - done) / std::max(rate, 1.0));
      });
  std::printf(
      "wrote %s: n_embd %lld -> %lld, heads %lld -> %lld, head_dim %lld -> %lld, "
      "intermediate %lld -> %lld, layers %d/%d/%d -> %d/%d/%d, vocab %lld (kept), %s; "
      "%lld weights, %.1f %% of them zero\n",
      a.out.c_str(), (long long)source.n_embd, (long long)target.n_embd, (long long)source.n_heads,
      (long long)target.n_heads, (long long)source.head_dim, (long long)target.head_dim,
      (long long)source.intermediate_size, (long long)target.intermediate_size, source.n_prelude,
      source.n_core, source.n_coda, target.n_prelude, target.n_core, target.n_coda,
      (long long)target.vocab_size, a.dtype.c_str(), (long long)st.params,
      100.0 * double(st.zeros) / double(st.params));
}

Registrar reg(81, [](CLI::App& app, Common& common) {
  auto a = std::make_shared<WidenArgs>();
  CLI::App* sub = app.add_subcommand(
      "widen",
      "Embed a model into a larger shape computing the same function (up to float rounding): "
      "residual coordinates tiled (the remainder zero), heads and MLP neurons copied, head_dim "
      "grown by moving each RoPE pair to the pair of equal frequency, extra layers that pass "
      "their input through (docs/widen.md)");
  sub->add_option("--model", a->model, "source model directory (config.json + safetensors)")
      ->required()
      ->check(CLI::ExistingDirectory);
  sub->add_option("--shape", a->shape,
                  "target shape: a config.json (its n_embd, num_attention_heads, "
                  "intermediate_size, layer counts and block_size are used; its vocab_size must "
                  "equal the source's) or the preset huginn-0125 (its shapes, the source's "
                  "vocabulary)")
      ->required();
  sub->add_option("--out", a->out, "output model directory")->required();
  sub->add_option("--dtype", a->dtype, "stored dtype of the tensors: f32 or bf16")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  sub->add_flag("--force", a->force, "overwrite a model in --out");
  sub->add_flag("-q,--quiet", common.quiet, "no progress lines");
  sub->callback([a, &common] { run(*a, common); });
});

}  // namespace
}  // namespace huginn::cli
