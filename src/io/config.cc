// ModelConfig from a Hugging Face config.json with the keys of Huginn-0125's (released key set:
// n_embd, n_heads, num_key_value_heads, head_dim, intermediate_size, vocab_size,
// padded_vocab_size, block_size, n_layers*, mean_recurrence, ..., init_values, auto_map).
// Keys this port does not need are ignored; keys that select an unsupported variant are errors.
#include "huginn/config.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>

#include "huginn/error.h"
#include "util/json.h"

namespace huginn {
namespace {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

constexpr size_t kMaxConfigBytes = size_t{16} << 20;  // released configs are about 2 KB

// Upper bounds on every number of a config.json (Huginn-0125's value in brackets). Far above any
// real model, low enough that no size derived from them overflows and that a typo fails here,
// not as a terabyte allocation later.
constexpr int64_t kMaxEmbd = 1 << 16;           // n_embd (5280)
constexpr int64_t kMaxHeads = 1 << 12;          // num_attention_heads (55)
constexpr int64_t kMaxIntermediate = 1 << 20;   // intermediate_size (17920)
constexpr int64_t kMaxVocab = 1 << 24;          // vocab_size (65536)
constexpr int64_t kMaxBlockSize = 1 << 20;      // block_size (4096): 1 Mi positions
constexpr int64_t kMaxLayers = 1 << 10;         // each of prelude, recurrent block, coda (2, 4, 2)
constexpr int64_t kMaxRecurrence = 1 << 12;     // mean_recurrence, mean_backprop_depth (32, 8)
constexpr double kMaxNormEps = 1.0;             // norm_eps (1e-6)
constexpr double kMaxRopeBase = 1e12;           // rope_base (50000)

std::string found(const json& v) { return json_preview(v); }

class Reader {
 public:
  Reader(const json& j, const std::string& source) : j_(j), src_(source) {}

  const json* get(const char* key) const {
    auto it = j_.find(key);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  [[noreturn]] void fail(const std::string& key, const std::string& msg) const {
    throw Error(src_ + ": '" + key + "' " + msg);
  }
  int64_t integer(const char* key, const json& v) const {
    if (!v.is_number_integer()) fail(key, "must be an integer, found " + found(v));
    if (v.is_number_unsigned() &&
        v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail(key, "= " + std::to_string(v.get<uint64_t>()) +
                    " is too large (it does not fit in a 64-bit integer)");
    return v.get<int64_t>();
  }
  int64_t required_int(const char* key) const {
    const json* v = get(key);
    if (!v) throw Error(src_ + ": missing required key '" + key + "'");
    return integer(key, *v);
  }
  int64_t optional_int(const char* key, int64_t dflt) const {
    const json* v = get(key);
    return v ? integer(key, *v) : dflt;
  }
  double number(const char* key, double dflt) const {
    const json* v = get(key);
    if (!v) return dflt;
    if (!v->is_number()) fail(key, "must be a number, found " + found(*v));
    return v->get<double>();
  }
  bool boolean(const char* key, bool dflt) const {
    const json* v = get(key);
    if (!v) return dflt;
    if (!v->is_boolean()) fail(key, "must be true or false, found " + found(*v));
    return v->get<bool>();
  }
  std::string string(const char* key, const std::string& dflt) const {
    const json* v = get(key);
    if (!v) return dflt;
    if (!v->is_string()) fail(key, "must be a string, found " + found(*v));
    return v->get<std::string>();
  }
  // A key that selects an architecture variant: absent or exactly `supported`.
  void require_value(const char* key, const char* supported) const {
    const json* v = get(key);
    if (!v) return;
    if (!v->is_string() || v->get<std::string>() != supported)
      fail(key, "= " + json_preview(*v) + " is not supported (only \"" + supported + "\")");
  }
  // v in [1, hi] (or [0, hi] for non_negative): the upper bounds keep every size product that
  // follows from a config (weights, RoPE table, activations) far from int64 overflow.
  void positive(const char* key, int64_t v, int64_t hi) const {
    if (v <= 0) fail(key, "must be positive, found " + std::to_string(v));
    at_most(key, v, hi);
  }
  void non_negative(const char* key, int64_t v, int64_t hi) const {
    if (v < 0) fail(key, "must be >= 0, found " + std::to_string(v));
    at_most(key, v, hi);
  }
  void at_most(const char* key, int64_t v, int64_t hi) const {
    if (v > hi)
      fail(key, "= " + std::to_string(v) + " is too large (the limit is " + std::to_string(hi) + ")");
  }
  // A finite number in (0, hi].
  void positive_number(const char* key, double v, double hi) const {
    if (!(v > 0) || !std::isfinite(v)) fail(key, "must be a positive number, found " + num(v));
    if (v > hi) fail(key, "= " + num(v) + " is too large (the limit is " + num(hi) + ")");
  }
  static std::string num(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.9g", v);
    return buf;
  }
  // An int field in [lo, hi] (lo is 0 or 1), checked before narrowing.
  int small(const char* key, int64_t v, int64_t lo, int64_t hi) const {
    if (lo > 0) positive(key, v, hi);
    else non_negative(key, v, hi);
    return static_cast<int>(v);
  }

 private:
  const json& j_;
  const std::string& src_;
};

int64_t read_heads(const Reader& r, const std::string& source) {
  const json* a = r.get("num_attention_heads");
  const json* b = r.get("n_heads");
  if (!a && !b)
    throw Error(source + ": missing required key 'num_attention_heads' (or 'n_heads')");
  if (a && b) {
    const int64_t ha = r.integer("num_attention_heads", *a), hb = r.integer("n_heads", *b);
    if (ha != hb)
      throw Error(source + ": 'num_attention_heads' = " + std::to_string(ha) + " and 'n_heads' = " +
                  std::to_string(hb) + " disagree");
    return ha;
  }
  return a ? r.integer("num_attention_heads", *a) : r.integer("n_heads", *b);
}

void check_variants(const Reader& r, const ModelConfig& c) {
  if (r.boolean("bias", false))
    r.fail("bias", "= true is not supported (Huginn-0125 has no bias vectors)");
  r.require_value("architecture_class_name", "RecurrentGPT");
  r.require_value("block_class_name", "SandwichBlock");
  r.require_value("norm_class_name", "RMSNorm_llama");
  r.require_value("mlp_class_name", "GatedMLP");
  r.require_value("nonlin_name", "SiLU");
  r.require_value("injection_type", "linear");
  if (const json* v = r.get("num_key_value_heads")) {
    const int64_t kv = r.integer("num_key_value_heads", *v);
    if (kv != c.n_heads)
      r.fail("num_key_value_heads", "= " + std::to_string(kv) + " differs from the " +
                                        std::to_string(c.n_heads) +
                                        " attention heads (grouped-query attention is not supported)");
  }
  if (r.number("test_time_noise", 0.0) != 0.0)
    r.fail("test_time_noise", "is not supported (only 0)");
}

void check_sizes(const Reader& r, const ModelConfig& c) {
  r.positive("n_embd", c.n_embd, kMaxEmbd);
  r.positive("num_attention_heads", c.n_heads, kMaxHeads);
  r.positive("intermediate_size", c.intermediate_size, kMaxIntermediate);
  r.positive("vocab_size", c.vocab_size, kMaxVocab);
  r.positive("block_size", c.block_size, kMaxBlockSize);
  if (c.n_embd % c.n_heads != 0)
    r.fail("n_embd", "= " + std::to_string(c.n_embd) + " is not divisible by the " +
                         std::to_string(c.n_heads) + " attention heads ('num_attention_heads')");
  if (c.head_dim % 2 != 0)
    r.fail("n_embd", "/ heads = head_dim " + std::to_string(c.head_dim) +
                         " must be even (RoPE rotates feature pairs)");
  r.positive_number("norm_eps", c.norm_eps, kMaxNormEps);
  r.positive_number("rope_base", c.rope_base, kMaxRopeBase);
  if (const json* v = r.get("n_layers")) {
    const int64_t n = r.integer("n_layers", *v);
    r.non_negative("n_layers", n, 3 * kMaxLayers);
    const int64_t sum = int64_t{c.n_prelude} + c.n_core + c.n_coda;
    if (n != sum)
      r.fail("n_layers", "= " + std::to_string(n) + " differs from prelude + recurrent block + coda = " +
                             std::to_string(sum));
  }
}

}  // namespace

namespace {

ModelConfig from_value(const json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source + ": expected a JSON object, found " + found(j));
  const Reader r(j, source);
  ModelConfig c;
  c.name = r.string("name", "");
  c.n_embd = r.required_int("n_embd");
  c.n_heads = read_heads(r, source);
  c.intermediate_size = r.required_int("intermediate_size");
  if (r.get("vocab_size")) {
    c.vocab_size = r.required_int("vocab_size");  // as is: no padding to padding_multiple
  } else if (r.get("padded_vocab_size")) {
    c.vocab_size = r.required_int("padded_vocab_size");
  } else {
    throw Error(source + ": missing required key 'vocab_size' (or 'padded_vocab_size')");
  }
  c.block_size = r.optional_int("block_size", 4096);  // the released default
  c.n_prelude = r.small("n_layers_in_prelude", r.required_int("n_layers_in_prelude"), 0, kMaxLayers);
  c.n_core = r.small("n_layers_in_recurrent_block", r.required_int("n_layers_in_recurrent_block"), 1,
                     kMaxLayers);
  c.n_coda = r.small("n_layers_in_coda", r.required_int("n_layers_in_coda"), 0, kMaxLayers);
  c.mean_recurrence = r.small("mean_recurrence", r.optional_int("mean_recurrence", 32), 1, kMaxRecurrence);
  c.mean_backprop_depth =
      r.small("mean_backprop_depth", r.optional_int("mean_backprop_depth", 8), 0, kMaxRecurrence);
  c.norm_eps = r.number("norm_eps", 1e-6);
  c.rope_base = r.number("rope_base", 50000.0);  // absent from some released configs
  const bool tie_hf = r.boolean("tie_word_embeddings", true);
  c.tie_embeddings = r.boolean("tie_embeddings", tie_hf);
  c.qk_bias = r.boolean("qk_bias", true);
  c.sampling_scheme = r.string("sampling_scheme", c.sampling_scheme);
  // head_dim is derived; a stale 'head_dim' key (the released config class can leave one) is
  // deliberately ignored.
  if (c.n_heads > 0 && c.n_embd > 0) c.head_dim = c.n_embd / c.n_heads;
  check_sizes(r, c);
  check_variants(r, c);
  return c;
}

}  // namespace

ModelConfig ModelConfig::from_json(const std::string& text, const std::string& source) {
  return from_value(parse_json(text, source), source);
}

ModelConfig ModelConfig::from_file(const std::string& path) {
  JsonLimits lim;
  lim.max_bytes = kMaxConfigBytes;
  return from_value(read_json_file(path, lim), path);
}

std::string ModelConfig::to_json() const {
  ojson j;
  j["name"] = name;
  j["architectures"] = {"RavenForCausalLM"};
  j["model_type"] = "huginn_raven";
  j["block_size"] = block_size;
  j["vocab_size"] = vocab_size;
  j["tie_embeddings"] = tie_embeddings;
  j["num_attention_heads"] = n_heads;
  j["num_key_value_heads"] = n_heads;
  j["n_heads"] = n_heads;
  j["n_embd"] = n_embd;
  j["intermediate_size"] = intermediate_size;
  j["bias"] = false;
  j["architecture_class_name"] = "RecurrentGPT";
  j["block_class_name"] = "SandwichBlock";
  j["norm_class_name"] = "RMSNorm_llama";
  j["norm_eps"] = norm_eps;
  j["mlp_class_name"] = "GatedMLP";
  j["nonlin_name"] = "SiLU";
  j["state_init"] = "like-init";
  j["injection_type"] = "linear";
  j["n_layers"] = n_prelude + n_core + n_coda;
  j["n_layers_in_recurrent_block"] = n_core;
  j["mean_recurrence"] = mean_recurrence;
  j["sampling_scheme"] = sampling_scheme;
  j["mean_backprop_depth"] = mean_backprop_depth;
  j["n_layers_in_prelude"] = n_prelude;
  j["n_layers_in_coda"] = n_coda;
  j["qk_bias"] = qk_bias;
  j["rope_base"] = rope_base;
  return j.dump(2) + "\n";
}

double ModelConfig::init_std() const { return std::sqrt(2.0 / (5.0 * static_cast<double>(n_embd))); }

}  // namespace huginn
