// Wavefront decoding (huginn/wavefront.h): lanes = positions in flight, oldest first, each with
// its token (given, or drafted from the previous lane), its depth and its state row. One round:
// a batched core pass over every lane allowed to advance, then one batched coda pass over the
// exit checks, final decodes and drafts that are ready, then the prelude of a drafted lane.
// n = rows of a pass, E = n_embd, V = vocabulary, P / C = prelude / core layers.
#include "huginn/wavefront.h"

#include <algorithm>
#include <deque>

namespace huginn {

struct WavefrontDecoder::Lane {
  int32_t pos = 0, token = 0;
  uint64_t call = 0;          // the call index sequential decoding gives this position
  bool draft = false;         // token drafted, not yet confirmed by decode()
  int steps = 0;              // recurrences done
  Tensor s, e;                // [1, E]
  std::unique_ptr<ExitPolicy> policy;
  std::vector<double> exit_values;
  std::vector<float> logits;  // [V]: the last check's, or the final decode's
  bool have_logits = false;   // from a check (a logit criterion)
  bool exited = false, check_pending = false, final = false, drafted_next = false;
};

namespace {

int32_t argmax(std::span<const float> v) {  // the first maximum, as the greedy sampler
  size_t best = 0;
  for (size_t i = 1; i < v.size(); ++i)
    if (v[i] > v[best]) best = i;
  return static_cast<int32_t>(best);
}

}  // namespace

void WavefrontOptions::validate(const GenerateOptions& g, int steps) const {
  if (!g.sampling.greedy && g.sampling.temperature > 0.0f)
    throw Error("--decode wavefront is greedy only: --temperature must be 0 (it would need "
                "distribution-exact speculative acceptance to sample)");
  if (g.warm_start != WarmStart::kOff)
    throw Error("--decode wavefront needs --warm-start off (a warm start needs the previous "
                "position's final state before the next can start)");
  if (draft_depth < 0 || draft_depth >= steps)
    throw Error("--draft-depth must be 1 to steps - 1 = " + std::to_string(steps - 1) +
                " (0 = steps / 4), got " + std::to_string(draft_depth));
  if (max_lanes < 2)
    throw Error("--lanes must be >= 2 (positions in flight), got " + std::to_string(max_lanes));
}

struct WavefrontDecoder::Impl {
  Impl(const Generator& g, WavefrontOptions o)
      : gen(g), opt(o), pass(g.model_, g.be_),
        depth(o.draft_depth > 0 ? o.draft_depth : std::max(1, g.steps_ / 4)) {
    pass.set_row_exact(true);
  }
  const Generator& gen;
  WavefrontOptions opt;
  ModelPass pass;
  int depth;
  std::deque<std::unique_ptr<Lane>> lanes;  // oldest first, consecutive positions
  std::unique_ptr<Lane> returned;           // the last decode's lane (its logits are returned)
  int32_t limit = -1;                       // last position worth drafting; -1: set at next decode
  WavefrontStats* stats = nullptr;

  const ModelConfig& config() const { return gen.model_.config(); }
  Backend& be() { return gen.be_; }
  bool uses_logits() const { return gen.policy_proto_ && gen.policy_proto_->uses_logits(); }
  bool iterating(const Lane& l) const { return !l.exited && l.steps < gen.steps_; }

  // Whether an older lane `o` will still run a core step whose KV slot is one of `slots`.
  bool will_touch(const KVCache& cache, const Lane& o, std::span<const int> slots) const {
    if (o.final || !iterating(o)) return false;
    const ModelConfig& c = config();
    for (int t = o.steps; t < gen.steps_; ++t)
      for (int j = 0; j < c.n_core; ++j)
        if (std::count(slots.begin(), slots.end(), cache.slot_of(c.n_prelude + t * c.n_core + j)))
          return true;
    return false;
  }
  // Lane k may run its next recurrence: no older lane still writes or reads one of its slots.
  bool may_step(const KVCache& cache, size_t k) const {
    const Lane& l = *lanes[k];
    if (l.final || l.check_pending || !iterating(l)) return false;
    const ModelConfig& c = config();
    std::vector<int> slots;
    for (int j = 0; j < c.n_core; ++j) slots.push_back(cache.slot_of(c.n_prelude + l.steps * c.n_core + j));
    for (size_t o = 0; o < k; ++o)
      if (will_touch(cache, *lanes[o], slots)) return false;
    return true;
  }
  bool older_final(size_t k) const {
    for (size_t o = 0; o < k; ++o)
      if (!lanes[o]->final) return false;
    return true;
  }

  void spawn(GenerationContext& ctx, int32_t pos, int32_t token, uint64_t call, bool draft) {
    const ModelConfig& c = config();
    auto l = std::make_unique<Lane>();
    l->pos = pos;
    l->token = token;
    l->call = call;
    l->draft = draft;
    l->e = be().alloc({1, c.n_embd});
    const int64_t starts[2] = {0, 1};
    KVCache* cache = ctx.cache_.get();
    pass.prelude(std::span<const int32_t>(&token, 1),
                 Rows{std::span<const int32_t>(&l->pos, 1), starts, std::span<KVCache* const>(&cache, 1), {}},
                 l->e);
    const Tensor init = gen.initial_state(ctx, 1, call);
    l->s = be().upload(init);
    if (gen.policy_proto_) {
      l->policy = gen.policy_proto_->clone();
      l->policy->begin(std::span<const float>(init.f32(), static_cast<size_t>(c.n_embd)), 1,
                       c.n_embd, c.vocab_size);
    }
    lanes.push_back(std::move(l));
    if (draft) ++stats->drafts;
  }

  // Whether the newest lane may have a successor drafted now (prelude slots free of older use).
  bool may_draft(GenerationContext& ctx) const {
    const Lane& l = *lanes.back();
    const int32_t next = l.pos + 1;
    if (l.drafted_next || next > limit || next >= gen.context_ ||
        static_cast<int>(lanes.size()) >= opt.max_lanes)
      return false;
    std::vector<int> slots;
    for (int i = 0; i < config().n_prelude; ++i) slots.push_back(ctx.cache_->slot_of(i));
    for (const auto& o : lanes)
      if (will_touch(*ctx.cache_, *o, slots)) return false;
    return true;
  }

  void draft_from(GenerationContext& ctx, Lane& l, std::span<const float> logits) {
    l.drafted_next = true;
    spawn(ctx, l.pos + 1, argmax(logits), l.call + 1, true);
  }

  // One batched recurrence over every lane allowed to advance; false when none was.
  bool core_round(GenerationContext& ctx) {
    std::vector<size_t> pick;
    for (size_t k = 0; k < lanes.size(); ++k)
      if (may_step(*ctx.cache_, k)) pick.push_back(k);
    if (pick.empty()) return false;
    const int64_t n = static_cast<int64_t>(pick.size()), E = config().n_embd;
    Tensor s = pass.buffer(0, n, E), e = pass.buffer(1, n, E);
    std::vector<int32_t> pos;
    std::vector<int64_t> starts{0};
    std::vector<KVCache*> caches;
    std::vector<int> rec;
    for (int64_t i = 0; i < n; ++i) {
      Lane& l = *lanes[pick[i]];
      Tensor si = s.rows(i, i + 1), ei = e.rows(i, i + 1);
      be().copy(l.s, si);
      be().copy(l.e, ei);
      pos.push_back(l.pos);
      starts.push_back(i + 1);
      caches.push_back(ctx.cache_.get());
      rec.push_back(l.steps);
    }
    const Rows rows{pos, starts, caches, rec};
    if (opt.core) opt.core(s, e, rows);
    else pass.core_step(s, e, 0, rows);
    ++stats->core_passes;
    stats->core_rows += n;
    for (int64_t i = 0; i < n; ++i) {
      Lane& l = *lanes[pick[i]];
      be().copy(s.rows(i, i + 1), l.s);
      ++l.steps;
      after_step(ctx, l);
    }
    return true;
  }

  // Exit checks that need no logits run at once; a logit check waits for a coda pass.
  void after_step(GenerationContext& ctx, Lane& l) {
    if (!l.policy || !gen.checks_at(l.steps)) return;
    if (l.policy->uses_logits()) {
      l.check_pending = true;
      return;
    }
    ctx.host_state_.resize(static_cast<size_t>(config().n_embd));
    be().download(l.s, ctx.host_state_.data());
    ExitObservation obs;
    obs.step = l.steps;
    obs.rows = 1;
    obs.width = config().n_embd;
    obs.state = ctx.host_state_;
    const double v = l.policy->measure(obs);
    l.exit_values.push_back(v);
    if (l.policy->should_exit(v)) l.exited = true;
  }

  enum class Kind { kCheck, kFinal, kDraft };
  // One batched coda pass over what is ready: logit checks and final decodes of lanes whose
  // older lanes are all final, and the newest lane's draft; then the drafted lane's prelude.
  bool coda_round(GenerationContext& ctx) {
    std::vector<std::pair<size_t, Kind>> rows;
    bool progress = false;
    for (size_t k = 0; k < lanes.size(); ++k) {
      Lane& l = *lanes[k];
      if (l.final) continue;
      const bool ready = older_final(k);
      if (l.check_pending && ready) {
        rows.push_back({k, Kind::kCheck});
      } else if (!iterating(l) && ready) {
        if (l.have_logits) {
          l.final = true;  // the last check's logits, as Generator::decode (no final decode)
          progress = true;
        } else {
          rows.push_back({k, Kind::kFinal});
        }
      }
    }
    Lane& newest = *lanes.back();
    const bool draft_row = !uses_logits() && !newest.final && !newest.drafted_next &&
                           newest.steps >= depth && iterating(newest) && may_draft(ctx) &&
                           (rows.empty() || rows.back().first != lanes.size() - 1);
    if (draft_row) rows.push_back({lanes.size() - 1, Kind::kDraft});
    if (!rows.empty()) run_coda(ctx, rows);
    if (newest.final && !newest.drafted_next && may_draft(ctx)) draft_from(ctx, newest, newest.logits);
    return progress || !rows.empty();
  }

  void run_coda(GenerationContext& ctx, std::span<const std::pair<size_t, Kind>> rows) {
    const ModelConfig& c = config();
    const int64_t n = static_cast<int64_t>(rows.size()), E = c.n_embd, V = c.vocab_size;
    // Coda entries of positions from the first row on are stale drafts or about to be
    // rewritten; an older row must not see a younger position's.
    std::vector<int> coda_steps;
    for (int m = 0; m < c.n_coda; ++m) coda_steps.push_back(-(m + 1));
    ctx.cache_->drop_from(lanes[rows[0].first]->pos, coda_steps);
    Tensor s = pass.buffer(0, n, E);
    std::vector<int32_t> pos;
    std::vector<int64_t> starts{0};
    std::vector<KVCache*> caches;
    for (int64_t i = 0; i < n; ++i) {
      Lane& l = *lanes[rows[i].first];
      Tensor si = s.rows(i, i + 1);
      be().copy(l.s, si);
      pos.push_back(l.pos);
      starts.push_back(i + 1);
      caches.push_back(ctx.cache_.get());
    }
    Tensor logits = pass.buffer(2, n, V);
    pass.coda(s, Rows{pos, starts, caches, {}}, logits, nullptr, /*last_only=*/true);
    ++stats->coda_passes;
    stats->coda_rows += n;
    std::vector<float> draft(static_cast<size_t>(V));
    for (int64_t i = 0; i < n; ++i) {
      Lane& l = *lanes[rows[i].first];
      const Kind kind = rows[i].second;
      if (kind == Kind::kDraft) {
        be().download(logits.rows(i, i + 1), draft.data());
        draft_from(ctx, l, draft);
        continue;
      }
      l.logits.resize(static_cast<size_t>(V));
      be().download(logits.rows(i, i + 1), l.logits.data());
      if (kind == Kind::kFinal) {
        l.final = true;
        continue;
      }
      ExitObservation obs;  // a logit check, exactly as Generator's loop measures it
      obs.step = l.steps;
      obs.rows = 1;
      obs.width = E;
      obs.logits = l.logits;
      const double v = l.policy->measure(obs);
      l.exit_values.push_back(v);
      l.exited = l.policy->should_exit(v);
      l.have_logits = true;
      l.check_pending = false;
      if (!iterating(l)) l.final = true;
      if (&l == lanes.back().get() && !l.drafted_next && may_draft(ctx)) draft_from(ctx, l, l.logits);
    }
  }
};

WavefrontDecoder::WavefrontDecoder(const Generator& g, WavefrontOptions o) {
  o.validate(g.options(), g.steps());
  impl_ = std::make_unique<Impl>(g, o);
  impl_->stats = &stats_;
}

WavefrontDecoder::~WavefrontDecoder() = default;

CallResult WavefrontDecoder::decode(GenerationContext& ctx, int32_t id) {
  Impl& m = *impl_;
  const Generator& g = m.gen;
  g.check_call(ctx, std::span<const int32_t>(&id, 1));
  const int32_t p = ctx.n_past_;
  if (m.limit < 0) m.limit = p + g.options_.max_new_tokens - 2;
  auto& lanes = m.lanes;
  const bool hit = !lanes.empty() && lanes[0]->pos == p && lanes[0]->token == id;
  if (hit) {
    if (lanes[0]->draft) ++stats_.accepted;
  } else {
    if (!lanes.empty() && lanes[0]->pos == p && lanes[0]->draft) ++stats_.rejected;
    lanes.clear();
    ctx.cache_->drop_from(p);  // everything built on the wrong draft
    m.spawn(ctx, p, id, ctx.calls_, false);
  }
  while (!lanes[0]->final) {
    const bool stepped = m.core_round(ctx);
    const bool coded = m.coda_round(ctx);
    HUGINN_ASSERT(stepped || coded, "wavefront: no lane could advance");
  }
  m.returned = std::move(lanes[0]);
  lanes.pop_front();
  Lane& l = *m.returned;
  g.end_call(ctx, l.s, std::span<const int32_t>(&id, 1));
  ++stats_.tokens;
  CallResult r;
  r.steps = l.steps;
  r.logits = l.logits;
  r.exit_values = l.exit_values;
  r.exited = l.exited;
  return r;
}

void WavefrontDecoder::finish(GenerationContext& ctx) {
  impl_->lanes.clear();
  impl_->limit = -1;
  ctx.cache_->drop_from(ctx.n_past_);
}

GenerateResult generate_wavefront(const Generator& g, GenerationContext& ctx,
                                  std::span<const int32_t> prompt, const WavefrontOptions& o,
                                  const TokenCallback& on_token, TextStream* text,
                                  WavefrontStats* stats) {
  WavefrontDecoder dec(g, o);
  GenerateResult r;
  try {
    bool prompt_done = false;  // generate()'s first call is the prompt, the rest one token each
    r = g.generate(ctx, prompt, on_token, text,
                   [&](GenerationContext& c, std::span<const int32_t> ids) {
                     if (!prompt_done) {
                       prompt_done = true;
                       return o.prefill ? o.prefill(c, ids) : g.prefill(c, ids);
                     }
                     HUGINN_ASSERT(ids.size() == 1, "generate_wavefront: one token per decode call");
                     return dec.decode(c, ids[0]);
                   });
  } catch (...) {
    dec.finish(ctx);
    throw;
  }
  dec.finish(ctx);
  r.cache_bytes = ctx.cache().bytes();
  if (stats) *stats = dec.stats();
  return r;
}

}  // namespace huginn
