// Generator::decode_batch: Generator::run_call for one token per sequence, with the model work
// of all sequences batched (BatchRunner). Every per-sequence decision is the solo call's: the
// initial (warm) state, each recurrence's exit check on the sequence's own policy, the logits
// of the last check or of a final decode, the warm state kept for the next call. B = calls in
// the batch, n = sequences still iterating, E = n_embd, V = vocabulary.
#include <algorithm>
#include <numeric>

#include "huginn/forward_batch.h"
#include "huginn/generate.h"

namespace huginn {

namespace {

// Rows `pick` of src (each a compact row index) into the first rows of dst.
void gather_rows(Backend& be, const Tensor& src, std::span<const int> pick, Tensor& dst) {
  for (size_t i = 0; i < pick.size(); ++i) {
    Tensor d = dst.rows(static_cast<int64_t>(i), static_cast<int64_t>(i) + 1);
    be.copy(src.rows(pick[i], pick[i] + 1), d);
  }
}

}  // namespace

void Generator::decode_batch(std::span<BatchedCall> calls, BatchRunner& br) {
  Backend& be = br.backend();
  const Model& model = br.model();
  const ModelConfig& c = model.config();
  const int64_t E = c.n_embd, V = c.vocab_size;

  // The sequence of each batch row; calls that cannot run get their error and stay out.
  struct Seq {
    BatchedCall* call;
    const Generator* g;
    GenerationContext* ctx;
    ExitPolicy* policy;
    int steps = 0;
    bool have_logits = false, exited = false;
  };
  std::vector<Seq> seqs;
  for (BatchedCall& call : calls) {
    call.result = CallResult{};
    call.error = nullptr;
    HUGINN_ASSERT(&call.generator->model_ == &model && &call.generator->be_ == &be,
                  "decode_batch: a generator on another model or backend");
    try {
      call.generator->check_call(*call.ctx, std::span<const int32_t>(&call.id, 1));
      seqs.push_back({&call, call.generator, call.ctx, call.ctx->policy_.get()});
    } catch (...) {
      call.error = std::current_exception();
    }
  }
  if (seqs.empty()) return;
  const int64_t B = static_cast<int64_t>(seqs.size());

  std::vector<int32_t> ids(B), pos(B);
  std::vector<KVCache*> caches(B);
  for (int64_t b = 0; b < B; ++b) {
    GenerationContext& ctx = *seqs[b].ctx;
    ids[b] = seqs[b].call->id;
    pos[b] = ctx.n_past_;
    ctx.positions_.assign(1, pos[b]);
    caches[b] = ctx.cache_.get();
  }
  // s, e: the iterating sequences' rows, compacted as sequences leave; fin: each sequence's
  // state when it left (row b = seqs[b]).
  Tensor e = be.alloc({B, E}), s = be.alloc({B, E}), fin = be.alloc({B, E});
  Tensor gathered = be.alloc({B, E}), logits = be.alloc({B, V});
  br.prelude(ids, pos, caches, e);
  for (int64_t b = 0; b < B; ++b) {
    Seq& q = seqs[b];
    Tensor init = q.g->initial_state(*q.ctx, 1);
    if (q.policy) q.policy->begin(std::span<const float>(init.f32(), E), 1, E, V);
    Tensor row = s.rows(b, b + 1);
    be.copy(be.upload(init), row);
    q.ctx->exit_values_.clear();
  }

  // Logits for sequences `which` (indices into seqs) from rows `rows` of `src`.
  auto decode = [&](const Tensor& src, std::span<const int> rows, std::span<const int> which) {
    const int64_t m = static_cast<int64_t>(which.size());
    std::vector<int32_t> p(m);
    std::vector<KVCache*> cs(m);
    for (int64_t i = 0; i < m; ++i) p[i] = pos[which[i]], cs[i] = caches[which[i]];
    Tensor g = gathered.rows(0, m), l = logits.rows(0, m);
    gather_rows(be, src, rows, g);
    br.coda(g, p, cs, l);
    for (int64_t i = 0; i < m; ++i) {
      Seq& q = seqs[which[i]];
      be.download(l.rows(i, i + 1), q.ctx->logits_.data());
      q.have_logits = true;
    }
  };

  std::vector<int> live(B);  // compact row k holds seqs[live[k]]
  std::iota(live.begin(), live.end(), 0);
  std::vector<int32_t> live_pos(pos);
  std::vector<KVCache*> live_caches(caches);
  for (int t = 0; !live.empty(); ++t) {
    const int64_t n = static_cast<int64_t>(live.size());
    Tensor sn = s.rows(0, n), en = e.rows(0, n);
    br.core_step(sn, en, t, live_pos, live_caches);

    // Exit checks: the ones that need logits decode together.
    std::vector<int> check, check_rows, logit_rows, logit_seqs;
    for (int64_t k = 0; k < n; ++k) {
      Seq& q = seqs[live[k]];
      q.steps = t + 1;
      const GenerateOptions& o = q.g->options_;
      if (!q.policy || q.steps < std::max(o.min_steps, 1) || q.steps % o.check_every != 0) continue;
      check.push_back(live[k]);
      check_rows.push_back(static_cast<int>(k));
      if (q.policy->uses_logits()) {
        logit_rows.push_back(static_cast<int>(k));
        logit_seqs.push_back(live[k]);
      }
    }
    if (!logit_seqs.empty()) decode(sn, logit_rows, logit_seqs);
    for (size_t i = 0; i < check.size(); ++i) {
      Seq& q = seqs[check[i]];
      GenerationContext& ctx = *q.ctx;
      ExitObservation obs;
      obs.step = q.steps;
      obs.rows = 1;
      obs.width = E;
      if (q.policy->uses_logits()) obs.logits = ctx.logits_;
      if (q.policy->uses_state()) {
        ctx.host_state_.resize(static_cast<size_t>(E));
        be.download(sn.rows(check_rows[i], check_rows[i] + 1), ctx.host_state_.data());
        obs.state = ctx.host_state_;
      }
      const double v = q.policy->measure(obs);
      ctx.exit_values_.push_back(v);
      if (q.policy->should_exit(v)) q.exited = true;
    }

    // Sequences that exited or reached their step count leave; the rest move up.
    int64_t kept = 0;
    for (int64_t k = 0; k < n; ++k) {
      const int b = live[k];
      Seq& q = seqs[b];
      if (q.exited || q.steps >= q.g->steps_) {
        Tensor f = fin.rows(b, b + 1);
        be.copy(sn.rows(k, k + 1), f);
        continue;
      }
      if (kept != k) {
        Tensor sd = s.rows(kept, kept + 1), ed = e.rows(kept, kept + 1);
        be.copy(s.rows(k, k + 1), sd);
        be.copy(e.rows(k, k + 1), ed);
      }
      live[kept] = b;
      live_pos[kept] = live_pos[k];
      live_caches[kept] = live_caches[k];
      ++kept;
    }
    live.resize(kept);
    live_pos.resize(kept);
    live_caches.resize(kept);
  }

  // Logits from a final decode for sequences without a check's logits.
  std::vector<int> need;
  for (int64_t b = 0; b < B; ++b)
    if (!seqs[b].have_logits) need.push_back(static_cast<int>(b));
  if (!need.empty()) decode(fin, need, need);

  for (int64_t b = 0; b < B; ++b) {
    Seq& q = seqs[b];
    q.g->end_call(*q.ctx, fin.rows(b, b + 1), std::span<const int32_t>(&q.call->id, 1));
    CallResult& r = q.call->result;
    r.steps = q.steps;
    r.logits = q.ctx->logits_;
    r.exit_values = q.ctx->exit_values_;
    r.exited = q.exited;
  }
}

}  // namespace huginn
