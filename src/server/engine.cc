// Engine: one request = one GenerationContext on the shared const Model.
#include "server/engine.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <numeric>
#include <optional>

#include "huginn/backend.h"
#include "huginn/error.h"
#include "huginn/forward.h"
#include "huginn/host_math.h"
#include "huginn/model.h"
#include "huginn/thread_pool.h"
#include "huginn/wavefront.h"
#include "server/prefix_cache.h"

namespace huginn::server {

TokenLogprob token_logprob(std::span<const float> logits, int32_t id, int k) {
  TokenLogprob lp;
  lp.id = id;
  if (logits.empty()) return lp;
  const double lse = log_sum_exp(logits);
  if (id >= 0 && static_cast<size_t>(id) < logits.size()) lp.logprob = logits[id] - lse;
  k = std::min<int>(k, static_cast<int>(logits.size()));
  if (k > 0) {
    std::vector<int32_t> idx(logits.size());
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (int i = 0; i < k; ++i) lp.top.emplace_back(idx[i], logits[idx[i]] - lse);
  }
  return lp;
}

Engine::Engine(const ServerOptions& o) {
  if (o.model_dir.empty()) throw Error("--model: give the model directory");
  std::string tok_path = o.tokenizer_path;
  if (tok_path.empty()) tok_path = o.model_dir + "/tokenizer.json";
  if (!std::filesystem::exists(tok_path))
    throw Error("the server needs a tokenizer: " + tok_path +
                " does not exist (give --tokenizer FILE)");
  tok_ = Tokenizer::load(tok_path);
  pool_ = std::make_unique<ThreadPool>(o.threads);
  backend_ = make_backend(o.backend, *pool_);
  Model::LoadOptions lo;
  lo.weight_dtype = parse_weight_dtype(o.weight_dtype);
  model_ = Model::load(o.model_dir, *backend_, lo);
  if (tok_->id_limit() > model_->config().vocab_size)
    throw Error(tok_path + ": the tokenizer has ids up to " + std::to_string(tok_->id_limit() - 1) +
                " but the model's vocabulary has " + std::to_string(model_->config().vocab_size));
  stop_ids_ = model_stop_ids(o.model_dir, tok_.get());
  // 0 = automatic: batch only where streaming the weights once per batch pays. Measured on an
  // idle 2-core machine (scripts/bench-server-batch.sh): a 14 M-parameter model went from 6.4
  // to 11.2 req/s batched at 4 clients with --threads 2, while tiny-b (0.3 M) fell from 121 to
  // 30 req/s at 16 clients — its whole decode step is shorter than the batcher's wait for the
  // other requests' calls.
  const int max_batch = o.max_batch > 0                            ? o.max_batch
                        : model_->param_counts().total() >= 4000000 ? o.parallel
                                                                    : 1;
  if (max_batch > 1) batcher_ = std::make_unique<DecodeBatcher>(*model_, *backend_, max_batch, std::chrono::microseconds(2000), o.prefill_chunk);
  if (o.prefix_cache_mb > 0)
    prefix_ = std::make_unique<PrefixCache>(model_->config(), *backend_,
                                            static_cast<size_t>(o.prefix_cache_mb) << 20);
}

Engine::~Engine() = default;

int64_t Engine::context_length() const { return model_->max_positions(); }
int Engine::default_steps() const { return static_cast<int>(model_->config().mean_recurrence); }

EngineResult Engine::run(const EngineRequest& rq, const EngineCallback& on_token) const {
  EngineResult res;
  Generator gen(*model_, *backend_, rq.options);
  if (rq.prompt_logprobs) {
    // Every prompt position's next-token distribution, at the request's depth and initial state.
    Runner runner(*model_, *backend_);
    InitState init{rq.options.init_scale, rq.options.init_seed, {}};
    ForwardOutput out = runner.forward(rq.prompt, gen.steps(), init);
    const int64_t V = model_->config().vocab_size;
    std::vector<float> host(static_cast<size_t>(out.logits.numel()));
    backend_->download(out.logits, host.data());
    res.prompt_logprobs.push_back(TokenLogprob{rq.prompt[0], 0.0, {}});
    for (size_t i = 1; i < rq.prompt.size(); ++i) {
      std::span<const float> row(host.data() + (i - 1) * V, static_cast<size_t>(V));
      res.prompt_logprobs.push_back(token_logprob(row, rq.prompt[i], std::max(rq.top_logprobs, 0)));
    }
  }
  auto ctx = gen.new_context();
  // The prompt's first tokens from the prefix cache, where an earlier prompt shares them.
  const std::vector<int32_t> prompt = gen.prepare_prompt(rq.prompt);
  const int32_t L = static_cast<int32_t>(prompt.size());
  // (The other decoders start from an empty context.)
  const std::string key = prefix_ && rq.decode == "sequential" ? gen.prefix_key() : std::string();
  if (!key.empty()) {
    const PrefixCache::Hit hit = prefix_->find(key, prompt);
    const int32_t n = hit.entry ? gen.prefix_split(hit.shared, L) : 0;
    if (n > 0) gen.reuse_prefix(*ctx, *hit.entry->cache, prompt, n);
  }
  std::unique_ptr<TextStream> stream = tokenizer_text_stream(tok_);
  // A client gone or the request's deadline passed: asked at every token of every decoder, and
  // by the samplers before each of their rounds or steps too (a step may commit no token).
  auto go_on = [&] {
    if (rq.cancel && rq.cancel->load()) {
      res.cancelled = true;
      return false;
    }
    if (Clock::now() > rq.deadline) {
      res.timed_out = true;
      return false;
    }
    return true;
  };
  TokenCallback cb = [&](const TokenEvent& ev) {
    // One per token in res.gen.tokens, stopped ones included.
    const double exit_value = ev.exit_values.empty() ? std::numeric_limits<double>::quiet_NaN()
                                                     : ev.exit_values.back();
    if (ev.id >= 0) res.exit_values.push_back(exit_value);
    if (!go_on()) return false;
    EngineEvent e{ev.id, ev.steps, exit_value, ev.text, nullptr};
    if (rq.top_logprobs >= 0 && ev.id >= 0) {  // (refused where a decoder has no logits)
      res.logprobs.push_back(token_logprob(ev.logits, ev.id, rq.top_logprobs));
      e.logprob = &res.logprobs.back();
    }
    if (on_token) on_token(e);
    return true;
  };
  // With batching on, the other decoders' prompt and core passes join the engine's depth batch
  // (their prelude and coda passes run here).
  std::optional<DecodeBatcher::Member> member;
  CoreFn core;
  CallFn prefill;
  if (batcher_ && rq.decode != "sequential") {
    member.emplace(*batcher_);
    core = [&](Tensor& s, const Tensor& e, const Rows& rows) { member->core(s, e, rows); };
    prefill = [&](GenerationContext& c, std::span<const int32_t> ids) { return member->call(gen, c, ids, go_on); };
  }
  try {
    run_decoder(rq, gen, *ctx, prompt, cb, go_on, stream.get(), core, prefill, res);
  } catch (const Cancelled&) {
    // go_on said no between a prompt's chunks (res says why); nothing was generated.
    res.gen.finish_reason = "callback";
    res.gen.prompt_tokens = L;
    return res;
  }
  // Kept for later prompts when one that extends it could reuse some of it.
  if (!key.empty() && res.gen.cached_tokens < L && gen.prefix_split(L, L + L) > 0)
    prefix_->insert(key, prompt, ctx->cache());
  return res;
}

// The request's decoder on `ctx` (its prompt prepared), into res.gen.
void Engine::run_decoder(const EngineRequest& rq, const Generator& gen, GenerationContext& ctx,
                         std::span<const int32_t> prompt, const TokenCallback& cb,
                         const std::function<bool()>& go_on, TextStream* stream, const CoreFn& core,
                         const CallFn& prefill, EngineResult& res) const {
  if (rq.decode == "speculative" || rq.decode == "diffusion") {
    // Each token streamed as the sampler commits it; cancel and deadline between rounds/steps.
    const SamplerRequest one{&ctx, prompt, stream, cb, go_on};
    const std::span<const SamplerRequest> reqs(&one, 1);
    SpeculativeOptions so = rq.speculative;
    DiffusionOptions dso = rq.diffusion;
    so.core = dso.core = core;
    so.prefill = dso.prefill = prefill;
    res.gen = rq.decode == "speculative" ? generate_speculative(gen, reqs, so)[0]
                                         : generate_diffusion(gen, reqs, dso)[0];
    return;
  }
  if (rq.decode == "wavefront") {
    WavefrontOptions wo;
    wo.core = core;
    wo.prefill = prefill;
    res.gen = generate_wavefront(gen, ctx, prompt, wo, cb, stream);
  } else if (batcher_) {
    // The prompt and every token's call join the engine's depth batch.
    DecodeBatcher::Member member(*batcher_);
    res.gen = gen.generate(ctx, prompt, cb, stream,
                           [&](GenerationContext& c, std::span<const int32_t> ids) {
                             return member.call(gen, c, ids, go_on);
                           });
  } else {
    res.gen = gen.generate(ctx, prompt, cb, stream);
  }
}

}  // namespace huginn::server
