#include <cstdio>
#include <map>

#include "cli/command.h"
#include "huginn/error.h"
#include "huginn/thread_pool.h"

namespace huginn::cli {
namespace {
std::multimap<int, Setup>& registry() {
  static std::multimap<int, Setup> r;
  return r;
}
}  // namespace

Registrar::Registrar(int order, Setup setup) { registry().emplace(order, std::move(setup)); }

void setup_all(CLI::App& app, Common& common) {
  for (auto& [order, setup] : registry()) setup(app, common);
}

void add_common_options(CLI::App* sub, Common& common) {
  sub->add_option("--threads", common.threads, "worker threads (default: one per core)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--backend", common.backend,
                  "compute backend: cpu (fast), ref (scalar) or strict (the CPU kernels on memory "
                  "host code cannot touch: a check of the backend contract, for tests)")
      ->check(CLI::IsMember({"cpu", "ref", "strict"}));
  sub->add_flag("-q,--quiet", common.quiet, "print results only, no progress or summaries");
}

void add_dtype_option(CLI::App* sub, Common& common) {
  sub->add_option("--dtype", common.dtype,
                  "weight format of the matrices: f32, bf16, q8 (int8 + F16 scale per 32), q4 "
                  "(4-bit + F16 scale per 32), or auto (as the checkpoint stores them)")
      ->check(CLI::IsMember({"f32", "bf16", "q8", "q4", "auto"}))
      ->capture_default_str();
}

std::shared_ptr<std::string> add_precision_option(CLI::App* sub) {
  auto precision = std::make_shared<std::string>("f32");
  sub->add_option("--precision", *precision,
                  "the Linear layers' GEMMs, forward and backward: f32, or bf16 = mixed precision as "
                  "the reference trains (PyTorch bf16 autocast): inputs rounded to BF16, F32 "
                  "accumulation; weights, gradients and AdamW state stay F32")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  return precision;
}

MatmulPrecision precision_of(const std::string& flag) {
  return flag == "bf16" ? MatmulPrecision::kBF16 : MatmulPrecision::kF32;
}

Model::LoadOptions load_options(const Common& common) {
  Model::LoadOptions o;
  o.weight_dtype = parse_weight_dtype(common.dtype);
  return o;
}

std::vector<int> parse_int_list(const std::string& s, const std::string& what) {
  std::vector<int> out;
  size_t i = 0;
  while (i <= s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    std::string tok = s.substr(i, j - i);
    try {
      size_t used = 0;
      long v = std::stol(tok, &used);
      if (used != tok.size() || v < INT32_MIN || v > INT32_MAX) throw std::invalid_argument(tok);
      out.push_back(static_cast<int>(v));
    } catch (const std::exception&) {
      throw Error(what + ": '" + tok + "' is not an integer (expected a comma-separated list)");
    }
    i = j + 1;
  }
  return out;
}

}  // namespace huginn::cli

int main(int argc, char** argv) {
  CLI::App app{"huginn: train, run, serve and study recurrent-depth language models"};
  app.require_subcommand(1);
  huginn::cli::Common common;
  huginn::cli::setup_all(app, common);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
