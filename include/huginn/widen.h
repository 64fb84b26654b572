// A trained model embedded into a larger shape computing the same function (huginn widen): so
// that a small trained model's behaviour (draft acceptance, accuracy) can be measured at a
// memory-bound shape, up to Huginn-0125's. The construction (docs/widen.md derives it):
//   residual width E -> E': k = E' / E tiled copies of every coordinate, E' - kE zero
//     coordinates; maps reading the residual divide by k, RMSNorm weights carry sqrt(kE/E') and
//     norm_eps becomes eps · kE/E' (so the padded RMS is exact, eps included); the embedding is
//     scaled by sqrt(E/E') (the model multiplies by sqrt(E')); the LM head is untied (/k).
//   heads H -> H': head h' copies source head h' mod H, attn.proj columns / (its copy count).
//   head_dim D -> D' = tD: source RoPE pair i sits at pair t·i (same frequency), the other q/k
//     pairs are zero, q is scaled by sqrt(t); v is tiled t times (attn.proj columns / t).
//   intermediate I -> I': neuron n' copies n' mod I (gate and up), mlp.proj columns / count.
//   layers: a block's extra layers follow its last layer, whose norm_4 becomes all ones and moves
//     to the last extra layer; an extra layer's attn.proj and mlp.proj are zero and its norm_2,
//     norm_4 ones, so it passes its input through one more RMSNorm (identity up to a relative
//     eps·|1/mean(u²) − 1|/2, u the stream before the last real norm_4).
//   adapter: the state half reads copy 0 only (so a random initial state has the source's
//     distribution), the embedding half all copies / k.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "huginn/config.h"
#include "huginn/tensor.h"

namespace huginn {

// `shape`'s n_embd, n_heads, intermediate_size, layer counts and block_size applied to `source`
// (everything else kept; tie_embeddings off; norm_eps scaled as above). Throws huginn::Error
// naming the field when the target is smaller than the source or incompatible (head_dim not a
// multiple of the source's, another vocabulary).
ModelConfig widened_config(const ModelConfig& source, const ModelConfig& shape);

struct WidenStats {
  int64_t params = 0, zeros = 0;  // weights written, and how many of them are exactly zero
};

// Writes `dir`/config.json and `dir`/model.safetensors (and copies task.json, tokenizer.json: the
// vocabulary is kept) for the model at `source_dir` widened to widened_config(source, shape)
// (`shape` may be that config itself: widening to it again gives it back), atomic, one tensor at
// a time in row chunks (never a whole second copy of the model in memory), its floating-point
// tensors stored as `dtype` (F32 or BF16). progress(done_bytes, total_bytes) after each tensor.
WidenStats write_widened(const std::string& source_dir, const ModelConfig& shape,
                         const std::string& dir, DType dtype,
                         const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace huginn
