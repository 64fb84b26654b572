// The tiny training fixture shared by the training-loop tests: a learnable token pattern in
// train/val shards, a 32-wide model config, default options, and helpers to read results.
#pragma once

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "huginn/data.h"
#include "huginn/error.h"
#include "huginn/train.h"
#include "test_util.h"

namespace huginn::train_test {
namespace fs = std::filesystem;

constexpr uint32_t kVocab = 32;

inline std::string read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Documents of a learnable pattern: a uniformly random first token in 1..31, then a fixed
// permutation cycle for 8..39 tokens, then the end-of-text token 0. Every token but a document's
// first (and the eot) is determined by the one before it.
inline std::vector<uint32_t> pattern_stream(size_t n, uint64_t seed) {
  std::mt19937_64 rng(7);  // the permutation is the same for train and val
  std::vector<uint32_t> perm(kVocab - 1);
  for (uint32_t i = 0; i < perm.size(); ++i) perm[i] = i + 1;
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<uint32_t> next(kVocab);
  for (size_t i = 0; i < perm.size(); ++i) next[perm[i]] = perm[(i + 1) % perm.size()];
  rng.seed(seed);
  std::vector<uint32_t> out;
  while (out.size() < n) {
    uint32_t t = 1 + rng() % (kVocab - 1);
    const int len = 8 + static_cast<int>(rng() % 32);
    for (int i = 0; i < len; ++i, t = next[t]) out.push_back(t);
    out.push_back(0);
  }
  out.resize(n);
  return out;
}

// Entropy (nats) of the unigram distribution of `s`: the best loss of a model that ignores context.
inline double unigram_entropy(const std::vector<uint32_t>& s) {
  std::map<uint32_t, double> count;
  for (uint32_t t : s) count[t] += 1;
  double h = 0;
  for (auto& [t, c] : count) h -= c / s.size() * std::log(c / s.size());
  return h;
}

inline std::string write_config(const std::string& dir, int64_t n_embd = 32) {
  nlohmann::json c{{"n_embd", n_embd},
                   {"num_attention_heads", 2},
                   {"intermediate_size", 64},
                   {"vocab_size", kVocab},
                   {"block_size", 32},
                   {"n_layers_in_prelude", 1},
                   {"n_layers_in_recurrent_block", 1},
                   {"n_layers_in_coda", 1},
                   {"mean_recurrence", 4},
                   {"mean_backprop_depth", 2},
                   {"tie_embeddings", true},
                   {"qk_bias", true}};
  const std::string p = dir + "/config-" + std::to_string(n_embd) + ".json";
  std::ofstream(p) << c.dump(1);
  return p;
}

struct Fixture {
  std::string dir, data, config;
  std::vector<uint32_t> train_tokens;
  explicit Fixture(const std::string& tag) {
    dir = test::make_temp_dir(tag);
    data = dir + "/data";
    fs::create_directories(data);
    train_tokens = pattern_stream(20000, 1);
    write_shard(data + "/train-00000.bin", train_tokens, kVocab, 0);
    write_shard(data + "/val-00000.bin", pattern_stream(4000, 2), kVocab, 0);
    config = write_config(dir);
  }
  ~Fixture() { fs::remove_all(dir); }
  TrainOptions options(const std::string& out) const {
    TrainOptions o;
    o.model_config = config;
    o.data = data;
    o.out = dir + "/" + out;
    o.steps = 20;
    o.batch = 2;
    o.seq_len = 16;
    o.lr = 3e-3;
    o.warmup = 3;
    o.threads = 2;
    o.val_depths = {2};
    o.val_windows = 2;
    o.quiet = true;
    return o;
  }
};

inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Every file under a directory with its bytes, to prove nothing saved was changed.
inline std::map<std::string, std::string> snapshot(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename() != "metrics.jsonl")
      out[e.path().string()] = read_file(e.path().string());
  return out;
}

}  // namespace huginn::train_test
