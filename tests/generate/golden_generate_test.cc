// The generator against the golden cases of both tiny models: gen_greedy_* (tokens exact,
// step_logits), gen_klexit_* (tokens and steps exact, kl_values within 1e-3 relative) and the
// teacher-forced decode_* cases run through Generator::prefill / decode.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "huginn/generate.h"
#include "huginn/thread_pool.h"
#include "test_util.h"

namespace huginn {
namespace {

using test::golden_dir;

nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return nlohmann::json::parse(ss.str());
}

void set_cache(const std::string& strategy, GenerateOptions& o) {
  if (strategy == "full") return;
  ASSERT_EQ(strategy.rfind("compress-s", 0), 0u) << strategy;
  o.cache_strategy = KVCache::Strategy::kCompressS;
  o.cache_slots = std::stoi(strategy.substr(10));
}

// Max |got - want| / max |want| over one row of V logits.
double row_rel_err(std::span<const float> got, const float* want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    num = std::max(num, double(std::fabs(got[i] - want[i])));
    den = std::max(den, double(std::fabs(want[i])));
  }
  return num / den;
}

using Param = std::tuple<std::string, std::string, std::string>;  // set, case, backend
class GoldenGenerate : public ::testing::TestWithParam<Param> {};

TEST_P(GoldenGenerate, MatchesReference) {
  const auto& [set, name, backend] = GetParam();
  const std::string base = golden_dir(set) + "/" + name;
  const nlohmann::json spec = read_json(base + ".json");
  const nlohmann::json& p = spec["params"];
  auto want = test::load_tensors(base + ".safetensors");
  const std::vector<int32_t> prompt = test::load_ids(base + ".safetensors", "prompt");
  const std::vector<int32_t> tokens = test::load_ids(base + ".safetensors", "tokens");
  const bool klexit = spec["kind"] == "generate_kl_exit";

  ThreadPool pool(1);
  auto be = make_backend(backend, pool);
  auto model = Model::load(golden_dir(set), *be);
  const int64_t V = model->config().vocab_size;

  GenerateOptions o;
  o.max_new_tokens = p["max_new_tokens"].get<int>();
  o.init_scale = p["init_scale"].get<double>();
  set_cache(p["cache_strategy"].get<std::string>(), o);
  if (p["continuous_compute"].get<bool>()) o.warm_start = WarmStart::kAuto;
  if (klexit) {
    o.steps = p["max_steps"].get<int>();
    o.exit = ExitSpec::parse("kl:" + std::to_string(p["threshold"].get<double>()));
    o.exit.threshold = p["threshold"].get<double>();  // exactly the json's value
    o.min_steps = p["min_steps"].get<int>();
    o.check_every = p["check_every"].get<int>();
  } else {
    o.steps = p["num_steps"].get<int>();
  }
  Generator gen(*model, *be, o);
  auto ctx = gen.new_context();
  int call = 0;
  std::vector<std::vector<double>> kls;
  GenerateResult r = gen.generate(*ctx, prompt, [&](const TokenEvent& ev) {
    EXPECT_LE(row_rel_err(ev.logits, want["step_logits"].row(0) + call * V), 1e-4) << "call " << call;
    kls.emplace_back(ev.exit_values.begin(), ev.exit_values.end());
    ++call;
    return true;
  });
  ASSERT_EQ(r.tokens.size(), tokens.size() - prompt.size());
  for (size_t i = 0; i < r.tokens.size(); ++i)
    EXPECT_EQ(r.tokens[i], tokens[prompt.size() + i]) << "generated token " << i;
  EXPECT_EQ(r.finish_reason, "length");
  if (!klexit) {
    for (int s : r.steps) EXPECT_EQ(s, o.steps);
    return;
  }
  const auto& want_steps = spec["steps_per_call"];
  const auto& want_kl = spec["kl_values_per_call"];
  ASSERT_EQ(r.steps.size(), want_steps.size());
  for (size_t c = 0; c < r.steps.size(); ++c) {
    EXPECT_EQ(r.steps[c], want_steps[c].get<int>()) << "call " << c;
    ASSERT_EQ(kls[c].size(), want_kl[c].size()) << "call " << c;
    for (size_t j = 0; j < kls[c].size(); ++j) {
      const double w = want_kl[c][j].get<double>();
      EXPECT_LE(std::fabs(kls[c][j] - w), 1e-3 * std::fabs(w)) << "call " << c << " check " << j;
    }
  }
  // The safetensors kl_values agree with the json, NaN after the exit.
  const Tensor& kv = want["kl_values"];
  for (size_t c = 0; c < kls.size(); ++c)
    for (int64_t j = 0; j < kv.dim(1); ++j) {
      const float w = kv.row(static_cast<int64_t>(c))[j];
      if (j < static_cast<int64_t>(kls[c].size()))
        EXPECT_LE(std::fabs(kls[c][j] - w), 1e-3 * std::fabs(w));
      else
        EXPECT_TRUE(std::isnan(w));
    }
}

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  std::string n = std::get<0>(info.param) + "_" + std::get<1>(info.param) + "_" +
                  std::get<2>(info.param);
  for (char& ch : n)
    if (ch == '-') ch = '_';
  return n;
}

INSTANTIATE_TEST_SUITE_P(
    All, GoldenGenerate,
    ::testing::Combine(::testing::Values("tiny-a", "tiny-b"),
                       ::testing::Values("gen_greedy_full_s8", "gen_greedy_compress-s2_s8",
                                         "gen_greedy_compress-s4_s8", "gen_greedy_continuous_s8",
                                         "gen_klexit_max16", "gen_klexit_continuous_max16"),
                       ::testing::ValuesIn(test::kBackends)),
    param_name);

// decode_*: teacher-forced through the generator's prefill/decode; each call's last-position
// logits equal the golden row of that position.
using DecodeParam = std::tuple<std::string, std::string>;
class GoldenDecodeViaGenerator : public ::testing::TestWithParam<DecodeParam> {};

TEST_P(GoldenDecodeViaGenerator, MatchesReference) {
  const auto& [set, strategy] = GetParam();
  const std::string path = golden_dir(set) + "/decode_" + strategy + "_s8.safetensors";
  auto want = test::load_tensors(path);
  const std::vector<int32_t> ids = test::load_ids(path, "input_ids");
  ThreadPool pool(1);
  auto be = make_backend("cpu", pool);
  auto model = Model::load(golden_dir(set), *be);
  const int64_t V = model->config().vocab_size;
  GenerateOptions o;
  o.steps = 8;
  set_cache(strategy, o);
  Generator gen(*model, *be, o);
  auto ctx = gen.new_context();
  CallResult r = gen.prefill(*ctx, std::span<const int32_t>(ids.data(), 5));
  EXPECT_LE(row_rel_err(r.logits, want["logits"].row(0) + 4 * V), 1e-4);
  for (int p = 5; p < 12; ++p) {
    r = gen.decode(*ctx, ids[p]);
    EXPECT_EQ(r.steps, 8);
    EXPECT_LE(row_rel_err(r.logits, want["logits"].row(0) + p * V), 1e-4) << "position " << p;
  }
  EXPECT_EQ(ctx->n_past(), 12);
  EXPECT_EQ(ctx->cache().n_tokens(), 12);
}

INSTANTIATE_TEST_SUITE_P(All, GoldenDecodeViaGenerator,
                         ::testing::Combine(::testing::Values("tiny-a", "tiny-b"),
                                            ::testing::Values("full", "compress-s2",
                                                              "compress-s4")),
                         [](const auto& info) {
                           std::string n = std::get<0>(info.param) + "_" + std::get<1>(info.param);
                           for (char& ch : n)
                             if (ch == '-') ch = '_';
                           return n;
                         });

}  // namespace
}  // namespace huginn
