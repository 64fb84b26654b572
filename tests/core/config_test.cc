// ModelConfig: the golden configs and the released Huginn-0125 config.json load unchanged; every
// missing or inconsistent key is an error that names the key (and the value); to_json round-trips.
#include "huginn/config.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "huginn/error.h"

namespace huginn {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

const std::string kGolden = std::string(HUGINN_TEST_DATA) + "/golden";

// The released tomg-group-umd/huginn-0125 config.json key set (values as published).
const char* kReleased = R"({
  "activation_checkpoint_impl": "per-iteration",
  "architecture_class_name": "RecurrentGPT",
  "architectures": ["RavenForCausalLM"],
  "auto_map": {
    "AutoConfig": "raven_config_minimal.RavenConfig",
    "AutoModelForCausalLM": "raven_modeling_minimal.RavenForCausalLM"
  },
  "bias": false,
  "block_class_name": "SandwichBlock",
  "block_size": 4096,
  "bos_token_id": 65504,
  "effective_expected_depth": 132,
  "eos_token_id": 65505,
  "head_dim": 96,
  "init_orthogonal": false,
  "init_strategy": "takase",
  "init_values": {
    "embed_scale": 72.6636084983398,
    "embedding": 0.008703882797784892,
    "out_proj": 0.0005356869554443541,
    "std": 0.008703882797784892
  },
  "injection_type": "linear",
  "intermediate_size": 17920,
  "mean_backprop_depth": 8,
  "mean_recurrence": 32,
  "mlp_class_name": "GatedMLP",
  "model_type": "huginn_raven",
  "n_embd": 5280,
  "n_heads": 55,
  "n_layers": 8,
  "n_layers_in_coda": 2,
  "n_layers_in_prelude": 2,
  "n_layers_in_recurrent_block": 4,
  "nonlin_name": "SiLU",
  "norm_class_name": "RMSNorm_llama",
  "norm_eps": 1e-06,
  "num_key_value_heads": 55,
  "pad_token_id": 65509,
  "padded_vocab_size": 65536,
  "padding_multiple": 4096,
  "qk_bias": true,
  "rope_base": 50000,
  "sampling_scheme": "poisson-lognormal-filling",
  "state_init": "like-init",
  "test_time_noise": 0,
  "test_time_noise_type": "fixed",
  "tie_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.47.1",
  "vocab_size": 65536
})";

json golden_a() {
  std::ifstream f(kGolden + "/tiny-a/config.json");
  return json::parse(f);
}

ModelConfig parse(const json& j) { return ModelConfig::from_json(j.dump(), "test/config.json"); }

template <class F>
void expect_error(F fn, std::initializer_list<std::string> parts) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    return;
  }
  ADD_FAILURE() << "no huginn::Error thrown";
}

// golden tiny-a with `key` set to `value` (or removed when value is null), expected to fail.
void expect_bad(const std::string& key, const json& value, std::initializer_list<std::string> parts) {
  json j = golden_a();
  if (value.is_null()) {
    j.erase(key);
  } else {
    j[key] = value;
  }
  SCOPED_TRACE(key + " = " + value.dump());
  expect_error([&] { parse(j); }, parts);
}

void expect_same(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.n_embd, b.n_embd);
  EXPECT_EQ(a.n_heads, b.n_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.block_size, b.block_size);
  EXPECT_EQ(a.n_prelude, b.n_prelude);
  EXPECT_EQ(a.n_core, b.n_core);
  EXPECT_EQ(a.n_coda, b.n_coda);
  EXPECT_EQ(a.mean_recurrence, b.mean_recurrence);
  EXPECT_EQ(a.mean_backprop_depth, b.mean_backprop_depth);
  EXPECT_EQ(a.norm_eps, b.norm_eps);
  EXPECT_EQ(a.rope_base, b.rope_base);
  EXPECT_EQ(a.tie_embeddings, b.tie_embeddings);
  EXPECT_EQ(a.qk_bias, b.qk_bias);
  EXPECT_EQ(a.sampling_scheme, b.sampling_scheme);
}

// ---- valid configs ------------------------------------------------------------------------------

TEST(Config, GoldenTinyA) {
  ModelConfig c = ModelConfig::from_file(kGolden + "/tiny-a/config.json");
  EXPECT_EQ(c.name, "huginn-tiny-a");
  EXPECT_EQ(c.n_embd, 64);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.intermediate_size, 128);
  EXPECT_EQ(c.vocab_size, 256);  // padding_multiple 4096 is not applied
  EXPECT_EQ(c.block_size, 64);
  EXPECT_EQ(c.n_prelude, 1);
  EXPECT_EQ(c.n_core, 2);
  EXPECT_EQ(c.n_coda, 1);
  EXPECT_EQ(c.mean_recurrence, 32);
  EXPECT_EQ(c.mean_backprop_depth, 8);
  EXPECT_EQ(c.norm_eps, 1e-6);
  EXPECT_EQ(c.rope_base, 50000.0);
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_TRUE(c.qk_bias);
  EXPECT_EQ(c.sampling_scheme, "poisson-lognormal-filling");
  EXPECT_DOUBLE_EQ(c.init_std(), std::sqrt(2.0 / (5.0 * 64)));
}

TEST(Config, GoldenTinyB) {
  ModelConfig c = ModelConfig::from_file(kGolden + "/tiny-b/config.json");
  EXPECT_EQ(c.n_embd, 96);
  EXPECT_EQ(c.n_heads, 6);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.intermediate_size, 256);
  EXPECT_EQ(c.vocab_size, 300);
  EXPECT_EQ(c.n_prelude, 2);
  EXPECT_EQ(c.n_core, 4);
  EXPECT_EQ(c.n_coda, 2);
  EXPECT_FALSE(c.tie_embeddings);
}

TEST(Config, ReleasedHuginn0125LoadsUnchanged) {
  ModelConfig c = ModelConfig::from_json(kReleased, "huginn-0125/config.json");
  EXPECT_EQ(c.n_embd, 5280);
  EXPECT_EQ(c.n_heads, 55);
  EXPECT_EQ(c.head_dim, 96);
  EXPECT_EQ(c.intermediate_size, 17920);
  EXPECT_EQ(c.vocab_size, 65536);
  EXPECT_EQ(c.block_size, 4096);
  EXPECT_EQ(c.n_prelude, 2);
  EXPECT_EQ(c.n_core, 4);
  EXPECT_EQ(c.n_coda, 2);
  EXPECT_EQ(c.rope_base, 50000.0);
  EXPECT_TRUE(c.tie_embeddings);
}

TEST(Config, RopeBaseDefaultsTo50000) {
  json j = json::parse(kReleased);
  j.erase("rope_base");
  EXPECT_EQ(parse(j).rope_base, 50000.0);
  j["rope_base"] = 10000.5;
  EXPECT_EQ(parse(j).rope_base, 10000.5);
}

TEST(Config, StaleHeadDimIsIgnored) {
  json j = golden_a();
  j["head_dim"] = 96;  // what the released config class leaves behind
  EXPECT_EQ(parse(j).head_dim, 16);
}

TEST(Config, HeadCountFromEitherKey) {
  json j = golden_a();
  j.erase("n_heads");
  EXPECT_EQ(parse(j).n_heads, 4);
  j = golden_a();
  j.erase("num_attention_heads");
  EXPECT_EQ(parse(j).n_heads, 4);
  j["n_heads"] = 8;
  j["num_key_value_heads"] = 8;
  EXPECT_EQ(parse(j).head_dim, 8);
}

TEST(Config, VocabUsedAsIsOrFromPaddedVocab) {
  json j = golden_a();
  j["vocab_size"] = 257;
  EXPECT_EQ(parse(j).vocab_size, 257);
  j.erase("vocab_size");
  j["padded_vocab_size"] = 512;
  EXPECT_EQ(parse(j).vocab_size, 512);
}

TEST(Config, TieWordEmbeddingsFallback) {
  json j = golden_a();
  j.erase("tie_embeddings");
  j["tie_word_embeddings"] = false;
  EXPECT_FALSE(parse(j).tie_embeddings);
}

TEST(Config, ToJsonRoundTrips) {
  for (const std::string& text :
       {golden_a().dump(), json::parse(std::ifstream(kGolden + "/tiny-b/config.json")).dump(),
        std::string(kReleased)}) {
    ModelConfig a = ModelConfig::from_json(text, "in");
    ModelConfig b = ModelConfig::from_json(a.to_json(), "round-trip");
    expect_same(a, b);
  }
  // Non-default values survive too.
  json j = golden_a();
  j["norm_eps"] = 1e-5;
  j["rope_base"] = 12345.0;
  j["qk_bias"] = false;
  j["tie_embeddings"] = false;
  j["mean_recurrence"] = 7;
  j["name"] = "x \"quoted\"";
  ModelConfig a = parse(j);
  expect_same(a, ModelConfig::from_json(a.to_json(), "round-trip"));
}

// ---- bad configs --------------------------------------------------------------------------------

TEST(ConfigBad, NotJsonOrNotObject) {
  expect_error([] { ModelConfig::from_json("{\"n_embd\": ", "x/config.json"); },
               {"x/config.json", "not valid JSON"});
  expect_error([] { ModelConfig::from_json("[64]", "x/config.json"); }, {"x/config.json", "JSON object"});
}

TEST(ConfigBad, MissingFile) {
  expect_error([] { ModelConfig::from_file("/nonexistent/dir/config.json"); }, {"/nonexistent/dir/config.json"});
}

TEST(ConfigBad, MissingRequiredKeys) {
  for (const char* key : {"n_embd", "intermediate_size", "n_layers_in_prelude",
                          "n_layers_in_recurrent_block", "n_layers_in_coda"}) {
    expect_bad(key, nullptr, {"test/config.json", "missing required key", std::string("'") + key + "'"});
  }
  json j = golden_a();
  j.erase("n_heads");
  j.erase("num_attention_heads");
  expect_error([&] { parse(j); }, {"missing required key", "'num_attention_heads'"});
  j = golden_a();
  j.erase("vocab_size");
  expect_error([&] { parse(j); }, {"missing required key", "'vocab_size'"});
}

TEST(ConfigBad, EmbeddingNotDivisibleByHeads) {
  json j = golden_a();
  j["n_embd"] = 66;
  expect_error([&] { parse(j); }, {"'n_embd'", "66", "not divisible", "4"});
}

TEST(ConfigBad, OddHeadDim) {
  json j = golden_a();
  j["n_embd"] = 60;  // 60 / 4 = 15
  expect_error([&] { parse(j); }, {"head_dim 15", "even"});
}

TEST(ConfigBad, HeadKeysDisagree) {
  expect_bad("n_heads", 8, {"'num_attention_heads' = 4", "'n_heads' = 8"});
}

TEST(ConfigBad, NonPositiveSizes) {
  expect_bad("n_embd", 0, {"'n_embd'", "positive", "0"});
  expect_bad("intermediate_size", -128, {"'intermediate_size'", "-128"});
  expect_bad("vocab_size", 0, {"'vocab_size'", "positive"});
  expect_bad("block_size", 0, {"'block_size'", "positive"});
  expect_bad("n_layers_in_recurrent_block", 0, {"'n_layers_in_recurrent_block'", "positive"});
  expect_bad("n_layers_in_prelude", -1, {"'n_layers_in_prelude'", "-1"});
  expect_bad("norm_eps", 0, {"'norm_eps'", "positive"});
  expect_bad("rope_base", -1, {"'rope_base'", "positive"});
}

TEST(ConfigBad, WrongTypes) {
  expect_bad("n_embd", "64", {"'n_embd'", "integer", "string"});
  expect_bad("n_embd", 64.5, {"'n_embd'", "integer"});
  expect_bad("tie_embeddings", "yes", {"'tie_embeddings'", "true or false"});
  expect_bad("norm_eps", "1e-6", {"'norm_eps'", "number"});
}

TEST(ConfigBad, GroupedQueryAttention) {
  expect_bad("num_key_value_heads", 2, {"'num_key_value_heads'", "= 2", "grouped-query"});
}

TEST(ConfigBad, BiasTrue) { expect_bad("bias", true, {"'bias'", "true", "not supported"}); }

TEST(ConfigBad, UnsupportedVariants) {
  expect_bad("mlp_class_name", "BaseMLP", {"'mlp_class_name'", "BaseMLP", "GatedMLP"});
  expect_bad("norm_class_name", "LayerNorm", {"'norm_class_name'", "LayerNorm", "RMSNorm_llama"});
  expect_bad("injection_type", "add", {"'injection_type'", "add", "linear"});
  expect_bad("block_class_name", "TransformerPreNormBlock", {"'block_class_name'", "TransformerPreNormBlock"});
  expect_bad("nonlin_name", "GELU", {"'nonlin_name'", "GELU"});
  expect_bad("test_time_noise", 0.5, {"'test_time_noise'"});
}

TEST(ConfigBad, LayerCountInconsistent) {
  expect_bad("n_layers", 5, {"'n_layers'", "5", "4"});
}

// Every integer and number has an upper bound, named with the file, the field and the value:
// block_size 2^58 wrapped the RoPE table's size product and wrote far past a 64-byte buffer.
TEST(ConfigBad, SizesAboveTheirBounds) {
  expect_bad("block_size", int64_t{576460752303423488},
             {"test/config.json", "'block_size'", "576460752303423488", "too large", "1048576"});
  expect_bad("block_size", int64_t{1} << 24, {"'block_size'", "16777216", "1048576"});
  expect_bad("n_embd", int64_t{1} << 17, {"'n_embd'", "131072", "65536"});
  expect_bad("intermediate_size", int64_t{1} << 40, {"'intermediate_size'", "1048576"});
  expect_bad("vocab_size", int64_t{1} << 25, {"'vocab_size'", "16777216"});
  expect_bad("n_layers_in_recurrent_block", 5000, {"'n_layers_in_recurrent_block'", "5000", "1024"});
  expect_bad("n_layers_in_coda", int64_t{1} << 40, {"'n_layers_in_coda'", "1024"});
  expect_bad("mean_recurrence", 100000, {"'mean_recurrence'", "100000", "4096"});
  expect_bad("mean_backprop_depth", 100000, {"'mean_backprop_depth'", "4096"});
  expect_bad("norm_eps", 2.0, {"'norm_eps'", "= 2 is too large", "limit is 1)"});
  expect_bad("rope_base", 1e13, {"'rope_base'", "1e+13", "too large", "1e+12"});
  expect_bad("block_size", uint64_t{18446744073709551615u}, {"'block_size'", "too large"});
}

// A large negative int64 once narrowed to a small positive int (-4294967295 -> 1) and passed.
TEST(ConfigBad, NegativeLayerCountsAreNotNarrowed) {
  expect_bad("n_layers_in_prelude", int64_t{-4294967295}, {"'n_layers_in_prelude'", "-4294967295"});
  expect_bad("mean_recurrence", int64_t{-4294967295}, {"'mean_recurrence'", "-4294967295"});
}

TEST(Config, BoundsThemselvesAreAccepted) {
  json j = golden_a();
  j["block_size"] = 1 << 20;
  j["vocab_size"] = 1 << 24;
  j["mean_recurrence"] = 4096;
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.block_size, 1 << 20);
  EXPECT_EQ(c.vocab_size, 1 << 24);
  EXPECT_EQ(c.mean_recurrence, 4096);
}

}  // namespace
}  // namespace huginn
