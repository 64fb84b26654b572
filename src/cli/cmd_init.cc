// huginn init: a freshly initialised model (the reference initialisation) in the HF layout.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>

#include "cli/command.h"
#include "huginn/log.h"
#include "huginn/train.h"

namespace huginn::cli {
namespace {

struct InitArgs {
  std::string model_config, out;
  uint64_t seed = 0;
  bool force = false;
  std::string dtype;  // set: streamed, sharded writer (write_init_checkpoint)
  int shards = 1;
};

// One tensor at a time, so that a model larger than memory (the Huginn-0125 shape, 7 GB in
// BF16) can be written; progress with rate and ETA.
void run_streamed(const InitArgs& a, const ModelConfig& config, const Common& common) {
  const DType dt = a.dtype == "bf16" ? DType::kBF16 : DType::kF32;
  const auto t0 = std::chrono::steady_clock::now();
  write_init_checkpoint(config, a.seed, a.out, dt, a.shards, [&](int64_t done, int64_t total) {
    if (common.quiet) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double rate = done / std::max(s, 1e-9);
    HUGINN_LOG_INFO("init: %.2f of %.2f GB, %.0f MB/s, ETA %.0f s", done / 1e9, total / 1e9,
                    rate / 1e6, (total - done) / std::max(rate, 1.0));
  });
  if (!common.quiet)
    HUGINN_LOG_INFO("wrote %s: %s in %d shard%s, seed %llu", a.out.c_str(), dtype_name(dt),
                    a.shards, a.shards > 1 ? "s" : "", (unsigned long long)a.seed);
}

void run(const InitArgs& a, const Common& common) {
  ModelConfig config = ModelConfig::from_file(a.model_config);
  std::error_code ec;
  std::filesystem::create_directories(a.out, ec);
  if (ec || !std::filesystem::is_directory(a.out))
    throw Error(a.out + ": cannot create the output directory" + (ec ? ": " + ec.message() : ""));
  for (const char* f : {"/config.json", "/model.safetensors", "/model.safetensors.index.json"})
    if (!a.force && std::filesystem::exists(a.out + f))
      throw Error(a.out + f + ": already exists; refusing to overwrite it (pass --force)");
  if (!a.dtype.empty() || a.shards > 1) return run_streamed(a, config, common);
  auto m = TrainableModel::init(config, a.seed);
  m->save_hf(a.out);
  if (!common.quiet)
    HUGINN_LOG_INFO("wrote %s: %lld parameters, seed %llu", a.out.c_str(),
                    (long long)m->model().param_counts().total(), (unsigned long long)a.seed);
}

Registrar reg(60, [](CLI::App& app, Common& common) {
  auto a = std::make_shared<InitArgs>();
  CLI::App* sub = app.add_subcommand("init", "Write a freshly initialised model (config.json + model.safetensors)");
  sub->add_option("--model-config", a->model_config, "config.json of the model")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("--out", a->out, "output model directory")->required();
  sub->add_option("--seed", a->seed, "initialisation seed");
  sub->add_flag("--force", a->force, "overwrite an existing model in --out");
  sub->add_option("--dtype", a->dtype,
                  "store every tensor as f32 or bf16, written one tensor at a time (for models "
                  "larger than memory; freqs_cis is not stored)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  sub->add_option("--shards", a->shards,
                  "split into N files + model.safetensors.index.json (Huginn-0125: 4); streamed "
                  "as --dtype")
      ->check(CLI::Range(1, 10000));
  sub->add_flag("-q,--quiet", common.quiet, "no summary line");
  sub->callback([a, &common] { run(*a, common); });
});

}  // namespace
}  // namespace huginn::cli
