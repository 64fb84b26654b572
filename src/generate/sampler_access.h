// What the speculative and diffusion samplers (huginn/samplers.h) need beyond the public API:
// a context's cache, sampler and bookkeeping, the generator's seeded initial states; the rows
// of a batched pass built sequence by sequence; and how a sampler's result is closed.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "huginn/samplers.h"

namespace huginn {

struct SamplerAccess {
  static KVCache& cache(GenerationContext& c) { return *c.cache_; }
  static SamplerChain& sampler(GenerationContext& c) { return *c.sampler_; }
  static uint64_t calls(const GenerationContext& c) { return c.calls_; }
  static Backend& backend(const Generator& g) { return g.be_; }
  // The seeded s_0 [T, E] (host) sequential decoding would give call `call`.
  static Tensor initial_state(const Generator& g, const GenerationContext& c, int64_t T,
                              uint64_t call) {
    return g.initial_state(c, T, call);
  }
  // Tokens whose KV entries the cache now holds for good, as if run one call each: history,
  // position and call count advance (the next call's initial state is then sequential's).
  static void commit(const Generator& g, GenerationContext& c, std::span<const int32_t> ids) {
    g.end_calls(c, ids, ids.size());
  }
  // Draws that are not a call's (diffusion's noise and new positions) take call indices too.
  static uint64_t take_call(GenerationContext& c) { return c.calls_++; }
};

// The rows of one batched pass, sequence by sequence: S sequences, each a run of consecutive
// positions against its own cache (R rows in all).
struct PassRows {
  std::vector<int32_t> ids, positions;
  std::vector<int64_t> starts{0};
  std::vector<KVCache*> caches;
  void add(KVCache* cache, int32_t first_pos, std::span<const int32_t> toks) {
    for (size_t i = 0; i < toks.size(); ++i) {
      ids.push_back(toks[i]);
      positions.push_back(first_pos + static_cast<int32_t>(i));
    }
    starts.push_back(static_cast<int64_t>(ids.size()));
    caches.push_back(cache);
  }
  Rows rows() const { return Rows{positions, starts, caches, {}}; }
  int64_t count() const { return static_cast<int64_t>(ids.size()); }
  int64_t sequences() const { return static_cast<int64_t>(caches.size()); }
};

// A sampler's output for one request, token by token as the sampler commits them, with the
// rules of Generator::generate: at most max_new_tokens, ending after the first stop id
// ("stop"), the text stream and stop strings ("stop_string"), the request's on_token callback
// ("callback" when it returns false) and go_on predicate.
class TokenSink {
 public:
  void begin(const Generator& g, const SamplerRequest& req, int32_t prompt_tokens);
  // One committed token, its steps and the logits it was chosen from (may be empty); false
  // once the request has ended (then later tokens are ignored).
  bool push(int32_t id, int steps, std::span<const float> logits);
  // Whether the request goes on: not ended, and its go_on predicate (if any) agrees.
  bool proceed();
  bool ended() const { return ended_; }
  size_t size() const { return res_.tokens.size(); }
  // The result: `reason` when the sampler stopped it ("length" when empty), the trailing text
  // (and its id = -1 event), the times (decode_tok_s counts the tokens after the first), the
  // cache size; the tokens are added to `stats`.
  GenerateResult close(const std::string& reason, double prefill_s, double decode_s, SamplerStats& stats);

 private:
  void end(const char* reason);
  const Generator* g_ = nullptr;
  const SamplerRequest* req_ = nullptr;
  GenerateResult res_;
  std::unique_ptr<StopStringMatcher> matcher_;
  bool ended_ = false;
};

// Core recurrence t of every sequence of `rows` on `core` (each at step index t through
// Rows::iterations), or on `pass` when it is empty.
inline void core_step(ModelPass& pass, const CoreFn& core, Tensor& s, const Tensor& e, int t,
                      const Rows& rows) {
  if (!core) return pass.core_step(s, e, t, rows);
  const std::vector<int> at(static_cast<size_t>(rows.sequences()), t);
  core(s, e, Rows{rows.positions, rows.starts, rows.caches, at});
}

inline double seconds_between(std::chrono::steady_clock::time_point a,
                              std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace huginn
