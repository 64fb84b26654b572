// The reference's speculative sampler (huginn/samplers.h), for a batch of prompts.
// R = rows of a pass, E = n_embd, V = vocabulary, L = lookahead_for_draft, N = --steps.
//
// Read from seal-rg/recurrent-pretraining, recpre/raven_modeling_minimal.py at 59e0b69,
// RavenForCausalLM.generate_speculative (draft_steps=32, lookahead_for_draft=8,
// verification_threshold=1, num_steps=32, cache "full"):
//  - prefill: the prompt at N recurrences; its last logits give the first token, which is not
//    yet in the cache ("last").
//  - a round: L single-token calls at draft_steps, each sampling the next draft d_1 .. d_L from
//    the one before (the first runs "last"); then those L KV entries are cleared and one pass at
//    N runs [last, d_1 .. d_{L-1}] at the same positions; row j's logits verify d_{j+1}.
//  - threshold >= 1: d_{j+1} passes when it is the argmax of row j; below 1: when
//    softmax(row j)[d_{j+1}] >= threshold · max softmax(row j) (plain softmax, no temperature,
//    so 0 accepts every draft). a = the first failing j, or L.
//  - a < L: d_1 .. d_a are kept plus one token sampled from row a's logits (a + 1 tokens); the
//    cache keeps the entries of last, d_1 .. d_a. a = L: d_1 .. d_L are kept, no bonus token
//    (d_L's own logits were never computed); the cache keeps last, d_1 .. d_{L-1}. Either way
//    the newest token is not in the cache, as after the prefill.
//  - stop: a round that produced a stop id ends that sequence; the output is cut after the first.
// Where we differ, and why:
//  - Batches: the reference pads every sequence to the longest acceptance with pad id 65509
//    and feeds the pads back as tokens; here each sequence keeps its own position and cache, so
//    a prompt's tokens do not depend on the batch it ran in.
//  - Boundaries: the reference checks max_new_tokens only before a round, so it can overshoot
//    by up to L - 1; here a round's lookahead is clamped to the tokens still wanted and the
//    positions left in the context. Clamping does not change the tokens produced before the cut.
//  - Each verified row runs as its own one-row sequence against the cache (rows in position
//    order, so row j sees rows < j at every step index, as a sequential call does); with
//    threshold 1 and greedy sampling the tokens and their logits are sequential decoding's at
//    N, bit for bit, with random initial states too (row j of a round draws call index
//    calls + j, as sequential decoding would).
//  - The token sampled after a rejected draft sees the accepted drafts in the sampler's history
//    (repetition penalty); the reference passes the history before the round.
//  - Not offered: continuous_compute (warm start), exit criteria, shared caches (the reference
//    runs the fixed-depth, full-cache case); they are refused naming the flag.
#include <algorithm>
#include <cmath>

#include "sampler_access.h"

namespace huginn {

namespace {

int32_t argmax(std::span<const float> v) {  // the first maximum, as the greedy sampler
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// The reference's verification of one draft against its row's verified logits.
bool verified(std::span<const float> logits, int32_t draft, double threshold) {
  if (threshold >= 1.0) return argmax(logits) == draft;
  const float mx = *std::max_element(logits.begin(), logits.end());
  // p(draft) / max p = exp(logit(draft) - max logit): the softmax's normaliser cancels.
  return std::exp(static_cast<double>(logits[static_cast<size_t>(draft)]) - mx) >= threshold;
}

struct Seq {
  const SamplerRequest* req = nullptr;
  GenerationContext* ctx = nullptr;
  TokenSink out;     // the tokens, streamed as rounds accept them
  int32_t last = 0;  // newest token, not in the cache yet
  int lookahead = 0; // this round's L
  bool done = false;
  std::vector<int32_t> drafts;
  std::unique_ptr<Sampler> draft_sampler;
  std::vector<std::vector<float>> logits;  // this round's verified rows [L][V]
};

}  // namespace

void SpeculativeOptions::validate(const GenerateOptions& g) const {
  if (draft_steps < 0)
    throw Error("--draft-steps must be >= 1 (0 = steps / 4), got " + std::to_string(draft_steps));
  if (lookahead_for_draft < 1)
    throw Error("--lookahead-for-draft must be >= 1, got " + std::to_string(lookahead_for_draft));
  if (!(verification_threshold >= 0.0 && verification_threshold <= 1.0))
    throw Error("--verification-threshold must be in [0, 1] (1: the draft must be the verified "
                "argmax; below: p(draft) >= threshold · max p), got " +
                std::to_string(verification_threshold));
  if (g.exit.criterion != ExitCriterion::kNone)
    throw Error("--decode speculative runs a fixed depth (the reference's num_steps): --exit "
                "must be none");
  if (g.cache_strategy != KVCache::Strategy::kFull)
    throw Error("--decode speculative needs the full cache: --cache-slots must be 0 (a draft's "
                "entries in a shared slot would replace verified ones)");
  if (g.warm_start != WarmStart::kOff)
    throw Error("--decode speculative needs --warm-start off (the reference's continuous_compute "
                "is not offered)");
}

void TokenSink::begin(const Generator& g, const SamplerRequest& req, int32_t prompt_tokens) {
  g_ = &g;
  req_ = &req;
  res_.prompt_tokens = prompt_tokens;
  matcher_ = std::make_unique<StopStringMatcher>(g.options().stop_strings);
}

void TokenSink::end(const char* reason) {
  res_.finish_reason = reason;
  ended_ = true;
}

bool TokenSink::push(int32_t id, int steps, std::span<const float> logits) {
  if (ended_) return false;
  res_.tokens.push_back(id);
  res_.steps.push_back(steps);
  const auto& stops = g_->stop_ids();
  const bool is_stop = std::count(stops.begin(), stops.end(), id) > 0;
  std::string piece;  // the stop id has no text
  if (!is_stop && req_->text) piece = matcher_->push(req_->text->push(id));
  res_.text += piece;
  if (req_->on_token && !req_->on_token(TokenEvent{id, steps, piece, logits, {}})) end("callback");
  else if (is_stop) end("stop");
  else if (matcher_->matched()) end("stop_string");
  else if (res_.tokens.size() >= static_cast<size_t>(g_->options().max_new_tokens)) end("length");
  return !ended_;
}

bool TokenSink::proceed() {
  if (!ended_ && req_->go_on && !req_->go_on()) end("callback");
  return !ended_;
}

GenerateResult TokenSink::close(const std::string& reason, double prefill_s, double decode_s,
                                SamplerStats& stats) {
  if (!ended_) end(reason.empty() ? "length" : reason.c_str());
  if (req_->text && !matcher_->matched()) {
    std::string rest = matcher_->push(req_->text->finish());
    if (matcher_->matched()) res_.finish_reason = "stop_string";
    else rest += matcher_->flush();
    res_.text += rest;
    if (!rest.empty() && req_->on_token) req_->on_token(TokenEvent{-1, 0, rest, {}, {}});
  }
  res_.prefill_seconds = prefill_s;
  res_.decode_seconds = decode_s;
  res_.cache_bytes = req_->ctx->cache().bytes();
  res_.decode_calls = std::max(0, static_cast<int>(res_.tokens.size()) - 1);  // decode_tok_s: tokens after the first
  stats.tokens += static_cast<int64_t>(res_.tokens.size());
  return std::move(res_);
}

namespace {

struct Speculative {
  const Generator& g;
  const SpeculativeOptions& o;
  SamplerStats& stats;
  ModelPass pass;
  int draft_steps;
  std::vector<Seq>& seqs;

  Speculative(const Generator& gen, const SpeculativeOptions& opt, SamplerStats& st,
              std::vector<Seq>& s)
      : g(gen), o(opt), stats(st), pass(gen.model(), SamplerAccess::backend(gen)),
        draft_steps(opt.draft_steps > 0 ? opt.draft_steps : std::max(1, gen.steps() / 4)),
        seqs(s) {
    pass.set_row_exact(true);
  }

  Backend& be() { return SamplerAccess::backend(g); }

  // prelude, `steps` recurrences and the coda over one-row sequences (row i: rows.positions[i]
  // with initial state of call calls[i]); returns each row's logits [V] on the host.
  std::vector<std::vector<float>> run(const PassRows& rows, std::span<GenerationContext* const> ctxs,
                                      std::span<const uint64_t> calls, int steps) {
    const ModelConfig& c = g.model().config();
    const int64_t n = rows.count(), E = c.n_embd, V = c.vocab_size;
    Tensor e = pass.buffer(1, n, E), s = pass.buffer(0, n, E);
    const Rows r = rows.rows();
    pass.prelude(rows.ids, r, e);
    Tensor init = Tensor::empty({n, E});
    for (int64_t i = 0; i < n; ++i) {
      const Tensor one = SamplerAccess::initial_state(g, *ctxs[i], 1, calls[i]);
      std::copy(one.f32(), one.f32() + E, init.f32() + i * E);
    }
    Tensor dev = be().upload(init);
    be().copy(dev, s);
    for (int t = 0; t < steps; ++t) core_step(pass, o.core, s, e, t, r);
    stats.core_passes += steps;
    stats.core_rows += steps * n;
    Tensor logits = pass.buffer(2, n, V);
    pass.coda(s, r, logits, nullptr, /*last_only=*/true);
    std::vector<std::vector<float>> out(static_cast<size_t>(n), std::vector<float>(static_cast<size_t>(V)));
    for (int64_t i = 0; i < n; ++i) be().download(logits.rows(i, i + 1), out[i].data());
    return out;
  }

  // L single-token calls at draft_steps for every live sequence (a sequence stops drafting at
  // its own lookahead); then their KV entries are dropped.
  void draft(std::span<Seq* const> live) {
    int most = 0;
    for (Seq* q : live) {
      q->drafts.clear();
      q->draft_sampler = SamplerAccess::sampler(*q->ctx).clone();
      most = std::max(most, q->lookahead);
    }
    for (int j = 0; j < most; ++j) {
      PassRows rows;
      std::vector<GenerationContext*> ctxs;
      std::vector<uint64_t> calls;
      std::vector<Seq*> in;
      for (Seq* q : live) {
        if (j >= q->lookahead) continue;
        const int32_t tok = j == 0 ? q->last : q->drafts[static_cast<size_t>(j - 1)];
        rows.add(&SamplerAccess::cache(*q->ctx), q->ctx->n_past() + j, std::span<const int32_t>(&tok, 1));
        ctxs.push_back(q->ctx);
        calls.push_back(SamplerAccess::calls(*q->ctx) + static_cast<uint64_t>(j));
        in.push_back(q);
      }
      const auto logits = run(rows, ctxs, calls, draft_steps);
      for (size_t i = 0; i < in.size(); ++i) {
        auto* chain = static_cast<SamplerChain*>(in[i]->draft_sampler.get());
        const int32_t d = chain->sample(logits[i]);
        chain->accept(d);
        in[i]->drafts.push_back(d);
      }
    }
    for (Seq* q : live) SamplerAccess::cache(*q->ctx).drop_from(q->ctx->n_past());
  }

  // One pass at full depth over [last, d_1 .. d_{L-1}] of every live sequence.
  void verify(std::span<Seq* const> live) {
    PassRows rows;
    std::vector<GenerationContext*> ctxs;
    std::vector<uint64_t> calls;
    for (Seq* q : live)
      for (int j = 0; j < q->lookahead; ++j) {
        const int32_t tok = j == 0 ? q->last : q->drafts[static_cast<size_t>(j - 1)];
        rows.add(&SamplerAccess::cache(*q->ctx), q->ctx->n_past() + j, std::span<const int32_t>(&tok, 1));
        ctxs.push_back(q->ctx);
        calls.push_back(SamplerAccess::calls(*q->ctx) + static_cast<uint64_t>(j));
      }
    auto logits = run(rows, ctxs, calls, g.steps());
    size_t at = 0;
    for (Seq* q : live) {
      q->logits.assign(std::make_move_iterator(logits.begin() + static_cast<ptrdiff_t>(at)),
                       std::make_move_iterator(logits.begin() + static_cast<ptrdiff_t>(at + q->lookahead)));
      at += static_cast<size_t>(q->lookahead);
    }
  }

  // Acceptance for one sequence: the drafts that pass, then (at a failure) one sampled token.
  void accept(Seq& q) {
    const int L = q.lookahead;
    int a = 0;
    while (a < L && verified(q.logits[static_cast<size_t>(a)], q.drafts[static_cast<size_t>(a)],
                             o.verification_threshold))
      ++a;
    stats.drafted += L;
    stats.accepted += a;
    ++stats.rounds;
    GenerationContext& ctx = *q.ctx;
    SamplerChain& chain = SamplerAccess::sampler(ctx);
    std::vector<int32_t> run{q.last};  // tokens whose entries the cache keeps
    // Each accepted token goes out at once, with the verified row it was chosen from; one that
    // ends the request (stop id, stop string, length, callback) ends the round there.
    // The cache keeps what sequential decoding would have fed back: not the last token.
    for (int j = 0; j < a && !q.done; ++j) {
      const int32_t d = q.drafts[static_cast<size_t>(j)];
      chain.accept(d);
      q.done = !q.out.push(d, g.steps(), q.logits[static_cast<size_t>(j)]);
      if (j + 1 < L && !q.done) run.push_back(d);
    }
    if (!q.done && a < L) {
      const std::span<const float> row = q.logits[static_cast<size_t>(a)];
      q.last = g.sample(ctx, row);
      q.done = !q.out.push(q.last, g.steps(), row);
    } else if (!q.done) {
      q.last = q.drafts.back();
    }
    const int32_t p = ctx.n_past();
    SamplerAccess::cache(ctx).drop_from(p + static_cast<int32_t>(run.size()));
    SamplerAccess::commit(g, ctx, run);
  }

  // This round's lookahead: at most L, the tokens still wanted, the positions left.
  void plan(Seq& q) {
    const int64_t want = g.options().max_new_tokens - static_cast<int64_t>(q.out.size());
    const int64_t room = g.context_length() - q.ctx->n_past();
    q.lookahead = static_cast<int>(std::min<int64_t>({o.lookahead_for_draft, want, room}));
    if (q.lookahead < 1) q.done = true;
  }
};

}  // namespace

std::vector<GenerateResult> generate_speculative(const Generator& g,
                                                 std::span<const SamplerRequest> requests,
                                                 const SpeculativeOptions& o, SamplerStats* stats_out) {
  o.validate(g.options());
  SamplerStats stats;
  std::vector<Seq> seqs(requests.size());
  std::vector<std::vector<int32_t>> prompts;
  for (const SamplerRequest& r : requests) prompts.push_back(g.prepare_prompt(r.prompt));
  Speculative sp(g, o, stats, seqs);
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < requests.size(); ++i) {  // each prompt alone, as sequential decoding
    Seq& q = seqs[i];
    q.req = &requests[i];
    q.ctx = requests[i].ctx;
    HUGINN_ASSERT(q.ctx->n_past() == 0, "generate_speculative: a fresh context per request");
    q.out.begin(g, requests[i], static_cast<int32_t>(prompts[i].size()));
    q.done = !q.out.proceed();
    if (q.done) continue;
    for (int32_t id : prompts[i]) SamplerAccess::sampler(*q.ctx).accept(id);
    const CallResult r = o.prefill ? o.prefill(*q.ctx, prompts[i]) : g.prefill(*q.ctx, prompts[i]);
    q.last = g.sample(*q.ctx, r.logits);
    q.done = !q.out.push(q.last, r.steps, r.logits);
  }
  const auto t1 = std::chrono::steady_clock::now();
  for (;;) {
    std::vector<Seq*> live;
    for (Seq& q : seqs) {
      if (!q.done) q.done = !q.out.proceed();
      if (!q.done) sp.plan(q);
      if (!q.done) live.push_back(&q);
    }
    if (live.empty()) break;
    sp.draft(live);
    sp.verify(live);
    for (Seq* q : live) sp.accept(*q);
  }
  const auto t2 = std::chrono::steady_clock::now();
  std::vector<GenerateResult> out;
  const double prefill_s = seconds_between(t0, t1) / static_cast<double>(seqs.size());
  for (Seq& q : seqs) out.push_back(q.out.close("", prefill_s, seconds_between(t1, t2), stats));
  if (stats_out) *stats_out = stats;
  return out;
}

}  // namespace huginn
