// The one loop behind every model call of the generator: Generator::prefill / decode (one call
// of T tokens on the context's own pass) and Generator::decode_batch (one token for each of B
// sequences on a row-exact batched pass). A call runs the prelude, then core recurrences until
// its own exit policy fires or its step count is reached, then the coda; every per-sequence
// decision (initial or warm state, which recurrences are checked, the logits of the last check
// or of a final decode, the warm state kept for the next call) is made here once, for one
// sequence or many. Sequences leave the batch as they finish; the rest move up.
// B = calls, R = rows of all calls (the tokens), n = rows still iterating, E = n_embd,
// V = vocabulary.
#include <algorithm>
#include <numeric>

#include "huginn/forward_batch.h"
#include "huginn/generate.h"

namespace huginn {

// One sequence's call inside run_calls.
struct Generator::Call {
  const Generator* g = nullptr;
  GenerationContext* ctx = nullptr;
  std::span<const int32_t> ids;
  CallResult* result = nullptr;
  int64_t row = 0;  // first row in the pass (and in `fin`)
  int steps = 0;
  bool have_logits = false, exited = false;
  int64_t size() const { return static_cast<int64_t>(ids.size()); }
};

namespace {

// The Rows of the calls `pick` when their rows lie one after another from row 0 (row_of[i]
// receives each call's first row).
struct RowSet {
  std::vector<int32_t> positions;
  std::vector<int64_t> starts{0};
  std::vector<KVCache*> caches;
  Rows rows() const { return Rows{positions, starts, caches}; }
};

}  // namespace

void Generator::run_calls(std::span<Call> calls, ModelPass& pass) {
  Backend& be = pass.backend();
  const ModelConfig& c = pass.model().config();
  const int64_t E = c.n_embd, V = c.vocab_size, B = static_cast<int64_t>(calls.size());

  // All rows: each call's tokens at its context's next positions, its initial state.
  RowSet all;
  std::vector<int32_t> ids;
  for (Call& q : calls) {
    q.row = static_cast<int64_t>(ids.size());
    ids.insert(ids.end(), q.ids.begin(), q.ids.end());
    for (int64_t t = 0; t < q.size(); ++t) all.positions.push_back(q.ctx->n_past_ + static_cast<int32_t>(t));
    all.starts.push_back(static_cast<int64_t>(ids.size()));
    all.caches.push_back(q.ctx->cache_.get());
  }
  const int64_t R = static_cast<int64_t>(ids.size());
  Tensor e = pass.scratch_e(R);
  pass.prelude(ids, all.rows(), e);
  Tensor init = Tensor::empty({R, E});
  for (Call& q : calls) {
    Tensor mine = q.g->initial_state(*q.ctx, q.size());
    init.rows(q.row, q.row + q.size()).copy_from(mine);
    ExitPolicy* policy = q.ctx->policy_.get();
    if (policy)
      policy->begin(std::span<const float>(mine.f32(), static_cast<size_t>(q.size() * E)), q.size(), E, V);
    q.ctx->exit_values_.clear();
  }
  Tensor s = be.upload(init);
  Tensor fin = pass.buffer(0, R, E);  // each call's state when it left, at its own rows

  // Logits of calls `which` from their rows in `src` (first rows `from`): one coda over them,
  // the head on each call's last row.
  auto decode = [&](const Tensor& src, std::span<const int64_t> from, std::span<Call* const> which) {
    RowSet set;
    for (Call* q : which) {
      for (int64_t t = 0; t < q->size(); ++t) set.positions.push_back(q->ctx->n_past_ + static_cast<int32_t>(t));
      set.starts.push_back(set.starts.back() + q->size());
      set.caches.push_back(q->ctx->cache_.get());
    }
    const int64_t n = set.starts.back(), m = static_cast<int64_t>(which.size());
    Tensor rows = src.rows(0, n);
    if (!(from.size() == 1 && from[0] == 0)) {  // gather when not already the leading rows
      rows = pass.buffer(1, n, E);
      for (int64_t i = 0; i < m; ++i) {
        Tensor dst = rows.rows(set.starts[i], set.starts[i + 1]);
        be.copy(src.rows(from[i], from[i] + which[i]->size()), dst);
      }
    }
    Tensor logits = pass.buffer(2, m, V);
    pass.coda(rows, set.rows(), logits, nullptr, /*last_only=*/true);
    for (int64_t i = 0; i < m; ++i) {
      be.download(logits.rows(i, i + 1), which[i]->ctx->logits_.data());
      which[i]->have_logits = true;
    }
  };

  // live[k]: the k-th iterating call; its rows start at live_row[k] (compacted as calls leave).
  std::vector<Call*> live;
  for (Call& q : calls) live.push_back(&q);
  std::vector<int64_t> live_row(B);
  for (int64_t b = 0; b < B; ++b) live_row[b] = calls[b].row;
  for (int t = 0; !live.empty(); ++t) {
    RowSet set;
    for (Call* q : live) {
      for (int64_t i = 0; i < q->size(); ++i) set.positions.push_back(q->ctx->n_past_ + static_cast<int32_t>(i));
      set.starts.push_back(set.starts.back() + q->size());
      set.caches.push_back(q->ctx->cache_.get());
    }
    const int64_t n = set.starts.back();
    Tensor sn = s.rows(0, n), en = e.rows(0, n);
    pass.core_step(sn, en, t, set.rows());

    // Exit checks: the calls that need logits decode together.
    std::vector<Call*> check, with_logits;
    std::vector<int64_t> logit_rows;
    for (size_t k = 0; k < live.size(); ++k) {
      Call& q = *live[k];
      q.steps = t + 1;
      ExitPolicy* policy = q.ctx->policy_.get();
      if (!policy || !q.g->checks_at(q.steps)) continue;
      check.push_back(&q);
      if (policy->uses_logits()) {
        with_logits.push_back(&q);
        logit_rows.push_back(set.starts[k]);
      }
    }
    if (!with_logits.empty()) {
      if (with_logits.size() == live.size()) logit_rows.assign(1, 0);  // all of sn, in order
      decode(sn, logit_rows, with_logits);
    }
    for (Call* q : check) {
      GenerationContext& ctx = *q->ctx;
      ExitPolicy& policy = *ctx.policy_;
      ExitObservation obs;
      obs.step = q->steps;
      obs.rows = q->size();
      obs.width = E;
      if (policy.uses_logits()) obs.logits = ctx.logits_;
      if (policy.uses_state()) {
        const int64_t k = std::find(live.begin(), live.end(), q) - live.begin();
        ctx.host_state_.resize(static_cast<size_t>(q->size() * E));
        be.download(sn.rows(set.starts[k], set.starts[k] + q->size()), ctx.host_state_.data());
        obs.state = ctx.host_state_;
      }
      const double v = policy.measure(obs);
      ctx.exit_values_.push_back(v);
      if (policy.should_exit(v)) q->exited = true;
    }

    // Calls that exited or reached their step count leave; the rest move up.
    size_t kept = 0;
    int64_t at = 0;
    for (size_t k = 0; k < live.size(); ++k) {
      Call* q = live[k];
      const int64_t r0 = set.starts[k], T = q->size();
      if (q->exited || q->steps >= q->g->steps_) {
        Tensor f = fin.rows(q->row, q->row + T);
        be.copy(sn.rows(r0, r0 + T), f);
        continue;
      }
      if (at != r0) {
        Tensor sd = s.rows(at, at + T), ed = e.rows(at, at + T);
        be.copy(s.rows(r0, r0 + T), sd);
        be.copy(e.rows(r0, r0 + T), ed);
      }
      live[kept++] = q;
      at += T;
    }
    live.resize(kept);
  }

  // Logits from a final decode for the calls without a check's logits.
  std::vector<Call*> need;
  std::vector<int64_t> from;
  for (Call& q : calls)
    if (!q.have_logits) {
      need.push_back(&q);
      from.push_back(q.row);
    }
  if (!need.empty()) decode(fin, need.size() == calls.size() ? std::vector<int64_t>{0} : from, need);

  for (Call& q : calls) {
    q.g->end_call(*q.ctx, fin.rows(q.row, q.row + q.size()), q.ids);
    CallResult& r = *q.result;
    r.steps = q.steps;
    r.logits = q.ctx->logits_;
    r.exit_values = q.ctx->exit_values_;
    r.exited = q.exited;
  }
}

CallResult Generator::run_call(GenerationContext& ctx, std::span<const int32_t> ids) const {
  check_call(ctx, ids);
  CallResult r;
  Call call;
  call.g = this;
  call.ctx = &ctx;
  call.ids = ids;
  call.result = &r;
  run_calls(std::span<Call>(&call, 1), ctx.runner_->pass());
  return r;
}

void Generator::decode_batch(std::span<BatchedCall> batch, BatchRunner& br) {
  std::vector<Call> calls;
  for (BatchedCall& bc : batch) {
    bc.result = CallResult{};
    bc.error = nullptr;
    HUGINN_ASSERT(&bc.generator->model_ == &br.model() && &bc.generator->be_ == &br.backend(),
                  "decode_batch: a generator on another model or backend");
    try {  // calls that cannot run get their error and stay out
      bc.generator->check_call(*bc.ctx, std::span<const int32_t>(&bc.id, 1));
      Call q;
      q.g = bc.generator;
      q.ctx = bc.ctx;
      q.ids = std::span<const int32_t>(&bc.id, 1);
      q.result = &bc.result;
      calls.push_back(q);
    } catch (...) {
      bc.error = std::current_exception();
    }
  }
  if (!calls.empty()) run_calls(calls, br.pass());
}

}  // namespace huginn
