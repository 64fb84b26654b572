// Running the model: the three stages (prelude, one core recurrence, coda) as building blocks
// for the generator and trainer, and the plain forward pass built from them.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "huginn/backend.h"
#include "huginn/model.h"

namespace huginn {

class KVCache;

// Receives named intermediates (host copies) — the golden trace names: "embed_scaled",
// "prelude.0.attn.q_biased", "state.3.adapter_out", "coda.in", ...
class TraceSink {
 public:
  virtual ~TraceSink() = default;
  virtual bool wants(const std::string& name) const { return true; }
  virtual void record(const std::string& name, const Tensor& host) = 0;
};

// How the recurrence starts.
struct InitState {
  double scale = 0.0;  // 0: exact zeros; else truncated normal (std sqrt(2/5E)·scale, cut ±3 std) · sqrt(E)
  uint64_t seed = 0;
  Tensor given;        // [T, E] when defined: used as is, overrides scale
};

// The initial state for T tokens, on the host.
Tensor make_initial_state(const ModelConfig& config, int64_t T, const InitState& init);

struct ForwardOutput {
  Tensor logits;      // [T, V]
  Tensor latent;      // [T, E] = ln_f(final state), what the reference returns
  Tensor latent_raw;  // [T, E] final core state before ln_f
};

// A forward runner for one sequence: holds scratch buffers sized for up to T tokens. Weights
// stay const in the Model; everything mutable is here or in the KVCache.
class Runner {
 public:
  Runner(const Model& model, Backend& backend);
  ~Runner();
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

  const Model& model() const { return model_; }
  Backend& backend() { return be_; }
  void set_trace(TraceSink* trace) { trace_ = trace; }

  // e = prelude(embed(ids) · sqrt(E)).  Positions are absolute (RoPE and cache).
  // Throws huginn::Error for ids outside the vocabulary or positions past the RoPE table.
  // e is a view of this runner's scratch: valid until the next prelude() call (clone to keep).
  Tensor prelude(std::span<const int32_t> ids, std::span<const int32_t> positions,
                 KVCache* cache);
  // One recurrence, t = 0-based recurrence index: s <- core(adapter([s ; e])), in place.
  void core_step(Tensor& s, const Tensor& e, int t, std::span<const int32_t> positions,
                 KVCache* cache);
  // logits = lm_head(ln_f(coda(ln_f(s)))); latent (if given) receives ln_f(s). The coda runs on
  // every position (it writes the cache); with last_only the head runs on the last row only and
  // logits is [1, V], otherwise [T, V].
  void coda(const Tensor& s, std::span<const int32_t> positions, KVCache* cache, Tensor& logits,
            Tensor* latent, bool last_only = false);

  // The whole pass over `ids` at positions start..start+T-1 with `num_steps` recurrences.
  ForwardOutput forward(std::span<const int32_t> ids, int num_steps, const InitState& init,
                        KVCache* cache = nullptr, int32_t start_pos = 0);

 private:
  struct Scratch;
  void block(const BlockWeights& w, Tensor& x, std::span<const int32_t> positions,
             KVCache* cache, int step_index, const std::string& trace_prefix);
  void record(const std::string& name, const Tensor& t);
  Scratch& scratch(int64_t T);

  const Model& model_;
  Backend& be_;
  TraceSink* trace_ = nullptr;
  std::unique_ptr<Scratch> scratch_;
};

// Per-sequence attention cache. Every attention call site has a step index (prelude layer i ->
// i; core layer j at recurrence t -> P + t·C + j; coda layer m -> -(m+1)); a slot function
// maps step indices to storage slots (identity = "full"; compress-s{k} shares core slots).
// A slot holds rows for the positions written to it, in position order; writing a position
// that is already there overwrites it. Keys are stored after qk_bias and RoPE.
class KVCache {
 public:
  // kCompressS / kCompressR use the reference's hard-wired offset 2 (golden README item 13);
  // kCompressSPrelude is the prelude-aware variant: step index i >= P goes to slot
  // (i − P) mod k + P, so every core layer gets its share whatever the prelude depth (it equals
  // kCompressS when P = 2, as in the released model).
  enum class Strategy { kFull, kCompressS, kCompressR, kCompressSPrelude };
  KVCache(const ModelConfig& config, Backend& backend, Strategy strategy = Strategy::kFull,
          int k = 0);

  int slot_of(int step_index) const;
  // Writes k, v [T, E] for `positions` into the slot of `step_index`, then returns the slot's
  // whole key and value windows [S, E] (S = positions held) through k_out / v_out.
  void update(int step_index, std::span<const int32_t> positions, const Tensor& k,
              const Tensor& v, Tensor* k_out, Tensor* v_out);
  // Positions held by the slot of a step index (empty when the slot is unused).
  std::vector<int32_t> positions(int step_index) const;
  int32_t n_tokens() const { return n_tokens_; }  // grows when step index 0 is written
  size_t bytes() const;                           // allocated key + value bytes
  int n_slots() const;
  void clear();

 private:
  struct Slot {
    std::vector<int32_t> pos;
    Tensor k, v;  // [capacity, E]
  };
  Slot& slot(int step_index);
  const ModelConfig& config_;
  Backend& be_;
  Strategy strategy_;
  int k_;
  std::vector<std::pair<int, Slot>> slots_;  // (slot id, slot), few entries
  int32_t n_tokens_ = 0;
};

}  // namespace huginn
