// The server's engine: one const Model, Backend and Tokenizer shared by every request; each
// request runs in its own GenerationContext with its own GenerateOptions (depth, exit rule,
// cache, warm start, sampling), so concurrent requests never share mutable state.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "huginn/decode_batcher.h"
#include "huginn/generate.h"
#include "huginn/samplers.h"
#include "huginn/server.h"
#include "huginn/tokenizer.h"

namespace huginn {
class Backend;
class Model;
class ThreadPool;
}  // namespace huginn

namespace huginn::server {

class PrefixCache;
using Clock = std::chrono::steady_clock;

struct EngineRequest {
  std::vector<int32_t> prompt;
  GenerateOptions options;
  int top_logprobs = -1;        // -1: no logprobs; else the chosen token's and this many others'
  bool prompt_logprobs = false;  // also score the prompt tokens (completions echo + logprobs)
  // sequential, wavefront, speculative or diffusion; with batching on, all in the engine's depth
  // batch (the others' prompt and core passes; prelude, coda and bookkeeping on the request's
  // thread). Every decoder streams each token as it is committed and stops at `cancel` or
  // `deadline` (the samplers also between their rounds / steps); logprobs for all but diffusion
  // (refused by the request parser).
  std::string decode = "sequential";
  SpeculativeOptions speculative;
  DiffusionOptions diffusion;
  std::shared_ptr<std::atomic<bool>> cancel;  // set by the HTTP layer (client gone)
  Clock::time_point deadline = Clock::time_point::max();
};

struct TokenLogprob {
  int32_t id = -1;
  double logprob = 0.0;
  std::vector<std::pair<int32_t, double>> top;  // most likely first
};

struct EngineEvent {
  int32_t id = -1;  // -1: trailing text after the last token
  int steps = 0;
  // The exit criterion's value at the token's last check (the one that decided its depth);
  // NaN when no check ran (no exit criterion, or min_steps above the depth).
  double exit_value = 0.0;
  std::string_view text;
  const TokenLogprob* logprob = nullptr;  // when asked for and id >= 0
};
using EngineCallback = std::function<void(const EngineEvent&)>;

struct EngineResult {
  GenerateResult gen;
  std::vector<TokenLogprob> logprobs;         // one per generated token (stop id included)
  std::vector<TokenLogprob> prompt_logprobs;  // one per prompt token; [0] has no logprob
  std::vector<double> exit_values;            // EngineEvent::exit_value of each generated token
  bool cancelled = false, timed_out = false;
};

// log-softmax of `logits` at `id`, and the k most likely tokens.
TokenLogprob token_logprob(std::span<const float> logits, int32_t id, int k);

class Engine {
 public:
  explicit Engine(const ServerOptions& options);
  ~Engine();

  // Generates for one request on the calling thread. Throws huginn::Error for options or
  // prompts the model cannot take (the caller turns that into a 400).
  EngineResult run(const EngineRequest& request, const EngineCallback& on_token) const;

  const Tokenizer& tokenizer() const { return *tok_; }
  const Model& model() const { return *model_; }
  int64_t context_length() const;
  int default_steps() const;
  // eos ids of the model directory and the tokenizer's end markers.
  const std::vector<int32_t>& stop_ids() const { return stop_ids_; }
  // Decode batching: the largest batch (1 = off) and the batcher's counters (zero when off).
  int max_batch() const { return batcher_ ? batcher_->max_batch() : 1; }
  DecodeBatcher::Stats batch_stats() const { return batcher_ ? batcher_->stats() : DecodeBatcher::Stats{}; }
  const PrefixCache* prefix_cache() const { return prefix_.get(); }

 private:
  void run_decoder(const EngineRequest& rq, const Generator& gen, GenerationContext& ctx,
                   std::span<const int32_t> prompt, const TokenCallback& cb,
                   const std::function<bool()>& go_on, TextStream* stream, const CoreFn& core,
                   const CallFn& prefill, EngineResult& res) const;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<Backend> backend_;
  std::shared_ptr<const Model> model_;
  std::shared_ptr<const Tokenizer> tok_;
  std::vector<int32_t> stop_ids_;
  std::unique_ptr<DecodeBatcher> batcher_;  // null when batching is off
  std::unique_ptr<PrefixCache> prefix_;     // null when off
};

}  // namespace huginn::server
