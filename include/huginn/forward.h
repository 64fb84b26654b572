// Running the model: the three stages (prelude, one core recurrence, coda) over the rows of one
// or more sequences, written once (ModelPass, src/model/forward.cc) for the single-sequence
// runner, batched decode and the training forward, and the plain forward pass built from them.
#pragma once

#include <cstdint>
#include <memory>
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
  // Removes the entries of positions >= `position` from the slots of `step_indices` (every
  // slot when empty): a draft's rows that turned out wrong, or stale ones a pass must not see.
  void drop_from(int32_t position, std::span<const int> step_indices = {});
  // Positions held by the slot of a step index (empty when the slot is unused).
  std::vector<int32_t> positions(int step_index) const;
  int32_t n_tokens() const { return n_tokens_; }  // grows when step index 0 is written
  size_t bytes() const;                           // allocated key + value bytes
  int n_slots() const;
  void clear();
  // Becomes a copy of src's entries for positions below n (src: same config and strategy), in
  // memory of its own (the prefix cache's snapshots, and a request starting from one).
  void assign_prefix(const KVCache& src, int32_t n);
  Strategy strategy() const { return strategy_; }

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

// Makes room for `need` rows in a, b [capacity, E] that hold `n` rows, keeping them (the KV
// cache's keys and values, a batch's states and prelude outputs).
void reserve_row_pair(Backend& be, Tensor& a, Tensor& b, int64_t n, int64_t need, int64_t E);

// ---- one pass of the model over rows of one or more sequences ------------------------------

// Which sequence each row of a pass belongs to: S sequences, each a run of consecutive rows with
// its own absolute positions and (optionally) its own KV cache. Attention never crosses
// sequences; every other op is row-wise or a matmul over all rows.
struct Rows {
  std::span<const int32_t> positions;  // [R]
  std::span<const int64_t> starts;     // [S + 1]: sequence s is rows starts[s] .. starts[s+1]
  std::span<KVCache* const> caches;    // [S] (entries may be null), or empty: no caches
  // [S], or empty (all 0): sequence s runs recurrence t + iterations[s] in core_step(t), so
  // one core pass can carry sequences at different depths (continuous depth batching).
  std::span<const int> iterations;
  int64_t count() const { return static_cast<int64_t>(positions.size()); }
  int64_t sequences() const { return static_cast<int64_t>(starts.size()) - 1; }
};

// A sandwich block's activations, each [R, ·]:
//   x0 = input, h1 = norm_1(x0), qkv, ctx = attention, u1 = attn_proj(ctx) + x0, x1 = norm_2(u1),
//   h3 = norm_3(x1), fc, act = swiglu(fc), u2 = mlp_proj(act) + x1, output norm_4(u2);
//   tmp receives each projection before its residual add.
// Inference points x0, u1, x1, u2 at the block's own x and h1, h3 at one buffer; training gives
// each its own buffer and keeps them for the backward pass (tmp = x: the input is saved in x0).
struct BlockActs {
  Tensor x0, h1, qkv, ctx, u1, x1, h3, fc, act, u2, tmp;
};
// What the training pass keeps of one tracked recurrence and of the coda.
struct StepActs {
  Tensor cat;                     // [R, 2E] = [s_in ; e], the adapter input
  std::vector<BlockActs> blocks;  // one per core layer
};
struct CodaActs {
  Tensor xc;                      // [R, E]: ln_f(s), then the coda's output (in place)
  Tensor xf;                      // [R, E]: ln_f(coda output), the head's input
  std::vector<BlockActs> blocks;  // one per coda layer
};

// The model's three stages over Rows, written once for every caller: the single-sequence
// Runner (forward, prefill, decode, the logit lens), batched decode (BatchRunner), and the
// training forward (BackwardRunner, which passes activation stores to keep). Scratch buffers for
// up to R rows live here; weights stay const in the Model.
class ModelPass {
 public:
  ModelPass(const Model& model, Backend& backend);
  ~ModelPass();
  ModelPass(const ModelPass&) = delete;
  ModelPass& operator=(const ModelPass&) = delete;

  const Model& model() const { return model_; }
  Backend& backend() { return be_; }
  // Row-exact: every row comes out with the bits a one-row pass gives it (batched decode), by
  // handing the backend at most matmul_exact_rows() rows per matmul.
  void set_row_exact(bool on) { row_exact_ = on; }
  // Named intermediates of a single-sequence inference pass (the golden trace names).
  void set_trace(TraceSink* trace) { trace_ = trace; }
  // The Linear layers' precision (training's --precision bf16; F32 weights only, not row-exact).
  void set_precision(MatmulPrecision p) { precision_ = p; }
  // The weights this pass computes with in place of the model's (null: the model's): training's
  // BF16 copies of the Linear matrices (Backend::round_bf16) beside the model's other tensors.
  // They must outlive the passes that use them.
  void set_weights(const Weights* w) { weights_ = w; }

  // e = prelude(embed(ids) · sqrt(E)) into e [R, E]; keep: one BlockActs per prelude layer.
  // Throws huginn::Error for ids outside the vocabulary or positions past the RoPE table.
  void prelude(std::span<const int32_t> ids, const Rows& rows, Tensor& e,
               std::span<BlockActs> keep = {});
  // Recurrence t (0-based; plus rows.iterations[s] for sequence s) on every row:
  // s <- core(adapter([s ; e])), in place.
  void core_step(Tensor& s, const Tensor& e, int t, const Rows& rows, StepActs* keep = nullptr);
  // logits = lm_head(ln_f(coda(ln_f(s)))); latent (if given) receives ln_f(s). The coda runs on
  // every row (it writes the caches); with last_only the head runs on the last row of each
  // sequence (logits [S, V]), otherwise on every row ([R, V]).
  void coda(const Tensor& s, const Rows& rows, Tensor& logits, Tensor* latent, bool last_only,
            CodaActs* keep = nullptr);
  // y = x · wᵀ (row-exact when set: rows in groups of matmul_exact_rows(); F32 weights in column
  // tiles of preferred_tile_bytes() so that a tile stays in cache while the groups pass).
  void linear(const Tensor& x, const Tensor& w, Tensor& y);
  // The prelude's output buffer of this pass's scratch, [R, E].
  Tensor scratch_e(int64_t R);
  // Hands a host copy of t to the trace sink, when there is one and it wants `name`.
  void record(const std::string& name, const Tensor& t);
  // A [rows, cols] F32 tensor for a caller's per-pass data (the generator's final states and
  // logits), one per slot, kept and grown across calls so that decoding allocates nothing.
  Tensor buffer(int slot, int64_t rows, int64_t cols);

 private:
  struct Scratch;
  Scratch& scratch(int64_t R);
  BlockActs scratch_acts(int64_t R);
  void block(const BlockWeights& w, Tensor& x, const Rows& rows, int step_index,
             const BlockActs& a, const std::string& trace_prefix);
  void attend(const Tensor& q, const Tensor& k, const Tensor& v, const Rows& rows,
              int step_index, Tensor& ctx);
  void check(std::span<const int32_t> ids, const Rows& rows) const;

  const Model& model_;
  Backend& be_;
  bool row_exact_ = false;
  MatmulPrecision precision_ = MatmulPrecision::kF32;
  const Weights* weights_ = nullptr;
  const Weights& weights() const { return weights_ ? *weights_ : model_.weights(); }
  TraceSink* trace_ = nullptr;
  std::unique_ptr<Scratch> scratch_;
  std::vector<Tensor> buffers_;
};

// A forward runner for one sequence (a ModelPass over one sequence of T rows).
class Runner {
 public:
  Runner(const Model& model, Backend& backend);
  ~Runner();
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

  const Model& model() const { return pass_.model(); }
  Backend& backend() { return pass_.backend(); }
  ModelPass& pass() { return pass_; }
  void set_trace(TraceSink* trace) { pass_.set_trace(trace); }

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
  Rows one(std::span<const int32_t> positions, KVCache*& cache);
  ModelPass pass_;
  int64_t starts_[2] = {0, 0};
};

}  // namespace huginn
