// The model configuration, read from a Hugging Face config.json with the keys of Huginn-0125's.
#pragma once

#include <cstdint>
#include <string>

namespace huginn {

struct ModelConfig {
  std::string name;
  int64_t n_embd = 0;             // E
  int64_t n_heads = 0;            // from num_attention_heads (or n_heads)
  int64_t head_dim = 0;           // always E / n_heads (a stale head_dim key is ignored)
  int64_t intermediate_size = 0;  // I; mlp.fc is [2I, E]
  int64_t vocab_size = 0;         // used as is, no padding
  int64_t block_size = 0;         // length of the stored RoPE table
  int n_prelude = 0;              // n_layers_in_prelude
  int n_core = 0;                 // n_layers_in_recurrent_block
  int n_coda = 0;                 // n_layers_in_coda
  int mean_recurrence = 32;
  int mean_backprop_depth = 8;
  double norm_eps = 1e-6;
  double rope_base = 50000.0;
  bool tie_embeddings = true;
  bool qk_bias = true;
  std::string sampling_scheme = "poisson-lognormal-filling";

  // Parses and validates. `source` names the file in error messages. Required keys: n_embd,
  // num_attention_heads or n_heads, intermediate_size, vocab_size (or padded_vocab_size),
  // n_layers_in_prelude, n_layers_in_recurrent_block, n_layers_in_coda. Unsupported variants
  // (bias: true, another norm/MLP/injection type, GQA) are rejected with the key named.
  static ModelConfig from_json(const std::string& text, const std::string& source);
  static ModelConfig from_file(const std::string& path);
  std::string to_json() const;  // HF-style keys, readable by from_json

  // Std of the initial-state draw before scaling: sqrt(2 / (5 E)).
  double init_std() const;
};

}  // namespace huginn
