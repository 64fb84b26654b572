// CLI plumbing: each src/cli/cmd_*.cc registers its subcommand with a static Registrar, so a new
// command is one new file. Commands throw huginn::Error for bad input; main() prints it and
// exits 1.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "huginn/model.h"

namespace huginn::cli {

// Options every command shares (threads, backend, verbosity).
struct Common {
  int threads = 0;  // 0 = one per core
  std::string backend = "cpu";
  bool quiet = false;
  std::string dtype = "f32";  // weight format for inference (add_dtype_option)
};

using Setup = std::function<void(CLI::App& app, Common& common)>;

// Registers `setup`, which adds one subcommand to `app` and sets its callback.
struct Registrar {
  Registrar(int order, Setup setup);
};

void setup_all(CLI::App& app, Common& common);

// Adds --threads and --backend to a subcommand.
void add_common_options(CLI::App* sub, Common& common);

// Adds --dtype f32|bf16|q8|q4|auto (the format of the big weight matrices) to a subcommand that
// loads a model for inference; pass load_options(common) to Model::load. Training commands do
// not offer it: they train F32 weights.
void add_dtype_option(CLI::App* sub, Common& common);
Model::LoadOptions load_options(const Common& common);

// Adds --precision f32|bf16 to a training command (huginn train, huginn task train: the Linear
// layers' GEMMs, TrainOptions::precision); read the flag's value after parsing with precision_of.
std::shared_ptr<std::string> add_precision_option(CLI::App* sub);
MatmulPrecision precision_of(const std::string& flag);

// Parses "1,2,3" into ints; throws huginn::Error naming `what` on a malformed list.
std::vector<int> parse_int_list(const std::string& s, const std::string& what);

}  // namespace huginn::cli
