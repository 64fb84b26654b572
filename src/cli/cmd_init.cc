// huginn init: a freshly initialised model (the reference initialisation) in the HF layout.
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
};

void run(const InitArgs& a, const Common& common) {
  ModelConfig config = ModelConfig::from_file(a.model_config);
  std::error_code ec;
  std::filesystem::create_directories(a.out, ec);
  if (ec || !std::filesystem::is_directory(a.out))
    throw Error(a.out + ": cannot create the output directory" + (ec ? ": " + ec.message() : ""));
  for (const char* f : {"/config.json", "/model.safetensors"})
    if (!a.force && std::filesystem::exists(a.out + f))
      throw Error(a.out + f + ": already exists; refusing to overwrite it (pass --force)");
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
  sub->add_flag("-q,--quiet", common.quiet, "no summary line");
  sub->callback([a, &common] { run(*a, common); });
});

}  // namespace
}  // namespace huginn::cli
