// The one loop behind every model call of the generator, continuous depth batching
// (huginn/generate.h, DepthBatch): Generator::prefill / decode run one call on the context's own
// pass, Generator::decode_batch several on a row-exact batched pass, and the server's
// DecodeBatcher keeps one DepthBatch running as calls come and go. A call runs the prelude,
// then core recurrences until its own exit policy fires or its step count is reached, then the
// coda; every per-sequence decision (initial or warm state, which recurrences are checked, the
// logits of the last check or of a final decode, the warm state kept for the next call) is made
// here once, for one sequence or many. Each core pass carries every admitted call at its own
// depth (Rows::iterations); calls leave as they finish and the rest move up. With chunked
// prefill a long call runs as chunks, each leaving like a finished call (coda included, for the
// coda KV the next chunk attends to) and coming back as the next chunk behind the others.
// R = rows of the admitted calls (their tokens), n = rows of a subset, E = n_embd,
// V = vocabulary.
#include <algorithm>
#include <limits>
#include <numeric>

#include "huginn/error.h"
#include "huginn/forward_batch.h"
#include "huginn/generate.h"

namespace huginn {

// One sequence's call inside a DepthBatch.
struct Generator::Call {
  const Generator* g = nullptr;
  GenerationContext* ctx = nullptr;
  BatchedCall* owner = nullptr;
  std::span<const int32_t> ids;   // the tokens of this pass's part: the call's, or a chunk's
  std::span<const int32_t> rest;  // the chunks after it (empty: the call ends with this part)
  int64_t row = 0;  // first row in the batch's state (moves up as calls before it leave)
  int steps = 0;    // recurrences done
  bool have_logits = false, exited = false;
  int64_t size() const { return static_cast<int64_t>(ids.size()); }
};

// The Rows of some calls whose rows are laid one after another from row 0.
struct DepthBatch::RowSet {
  std::vector<int32_t> positions;
  std::vector<int64_t> starts{0};
  std::vector<KVCache*> caches;
  std::vector<int> iterations;
  Rows rows() const { return Rows{positions, starts, caches, iterations}; }
};

DepthBatch::DepthBatch(ModelPass& pass, int64_t prefill_chunk)
    : pass_(pass), prefill_chunk_(prefill_chunk) {}
DepthBatch::~DepthBatch() = default;

bool Generator::batches_prompts(const Backend& backend) {
  return backend.matmul_exact_rows() == std::numeric_limits<int64_t>::max();
}

DepthBatch::RowSet DepthBatch::row_set(std::span<Call* const> calls, bool own_depth) const {
  RowSet set;
  for (const Call* q : calls) {
    for (int64_t t = 0; t < q->size(); ++t)
      set.positions.push_back(q->ctx->n_past_ + static_cast<int32_t>(t));
    set.starts.push_back(set.starts.back() + q->size());
    set.caches.push_back(q->ctx->cache_.get());
    if (own_depth) set.iterations.push_back(q->steps);
  }
  return set;
}

void DepthBatch::admit(std::span<BatchedCall* const> calls, std::vector<BatchedCall*>& failed) {
  std::vector<Call*> added;
  for (BatchedCall* bc : calls) {
    bc->result = CallResult{};
    bc->error = nullptr;
    HUGINN_ASSERT(&bc->generator->model_ == &pass_.model() && &bc->generator->be_ == &pass_.backend(),
                  "DepthBatch: a generator on another model or backend");
    try {  // calls that cannot run get their error and stay out
      bc->generator->check_call(*bc->ctx, bc->tokens());
    } catch (...) {
      bc->error = std::current_exception();
      failed.push_back(bc);
      continue;
    }
    auto q = std::make_unique<Call>();
    q->g = bc->generator;
    q->ctx = bc->ctx;
    q->owner = bc;
    const std::span<const int32_t> all = bc->tokens();
    const auto first = static_cast<size_t>(q->g->first_chunk(prefill_chunk_, static_cast<int64_t>(all.size())));
    q->ids = all.first(first);
    q->rest = all.subspan(first);
    added.push_back(q.get());
    live_.push_back(std::move(q));
  }
  start(added);
}

void DepthBatch::start(std::span<Call* const> added) {
  if (added.empty()) return;
  const ModelConfig& c = pass_.model().config();
  Backend& be = pass_.backend();
  const int64_t E = c.n_embd, V = c.vocab_size;
  std::vector<int32_t> ids;
  for (Call* q : added) {
    q->row = rows_ + static_cast<int64_t>(ids.size());
    ids.insert(ids.end(), q->ids.begin(), q->ids.end());
  }
  // The prelude of the new rows alone; its output joins the batch's e after the live rows.
  const int64_t R = static_cast<int64_t>(ids.size());
  reserve_row_pair(be, s_, e_, rows_, rows_ + R, E);
  const RowSet set = row_set(added, false);
  Tensor e = pass_.scratch_e(R);
  pass_.prelude(ids, set.rows(), e);
  Tensor ed = e_.rows(rows_, rows_ + R);
  be.copy(e, ed);
  Tensor init = Tensor::empty({R, E});
  for (Call* q : added) {
    Tensor mine = q->g->initial_state(*q->ctx, q->size());
    init.rows(q->row - rows_, q->row - rows_ + q->size()).copy_from(mine);
    if (ExitPolicy* policy = q->ctx->policy_.get())
      policy->begin(std::span<const float>(mine.f32(), static_cast<size_t>(q->size() * E)), q->size(), E, V);
    q->ctx->exit_values_.clear();
  }
  Tensor sd = s_.rows(rows_, rows_ + R);
  be.copy(be.upload(init), sd);
  rows_ += R;
}

// Logits of the calls `which` from their rows of `src` (at each call's `row`): one coda over
// them, the head on each call's last row.
void DepthBatch::coda_logits(const Tensor& src, std::span<Call* const> which) {
  Backend& be = pass_.backend();
  const int64_t E = pass_.model().config().n_embd, V = pass_.model().config().vocab_size;
  const RowSet set = row_set(which, false);
  const int64_t n = set.starts.back(), m = static_cast<int64_t>(which.size());
  bool leading = true;  // already the leading rows of src, in order
  for (int64_t i = 0; i < m; ++i) leading = leading && which[i]->row == set.starts[i];
  Tensor rows = src.rows(0, n);
  if (!leading) {
    rows = pass_.buffer(1, n, E);
    for (int64_t i = 0; i < m; ++i) {
      Tensor dst = rows.rows(set.starts[i], set.starts[i + 1]);
      be.copy(src.rows(which[i]->row, which[i]->row + which[i]->size()), dst);
    }
  }
  Tensor logits = pass_.buffer(2, m, V);
  pass_.coda(rows, set.rows(), logits, nullptr, /*last_only=*/true);
  for (int64_t i = 0; i < m; ++i) {
    be.download(logits.rows(i, i + 1), which[i]->ctx->logits_.data());
    which[i]->have_logits = true;
  }
}

// The exit checks due after the recurrence just run: the calls that need logits decode together.
void DepthBatch::check_exits(const Tensor& s) {
  Backend& be = pass_.backend();
  const int64_t E = pass_.model().config().n_embd;
  std::vector<Call*> check, with_logits;
  for (const auto& qp : live_) {
    Call& q = *qp;
    ExitPolicy* policy = q.ctx->policy_.get();
    if (!policy || !q.g->checks_at(q.steps)) continue;
    check.push_back(&q);
    if (policy->uses_logits()) with_logits.push_back(&q);
  }
  if (!with_logits.empty()) coda_logits(s, with_logits);
  for (Call* q : check) {
    GenerationContext& ctx = *q->ctx;
    ExitPolicy& policy = *ctx.policy_;
    ExitObservation obs;
    obs.step = q->steps;
    obs.rows = q->size();
    obs.width = E;
    if (policy.uses_logits()) obs.logits = ctx.logits_;
    if (policy.uses_state()) {
      ctx.host_state_.resize(static_cast<size_t>(q->size() * E));
      be.download(s.rows(q->row, q->row + q->size()), ctx.host_state_.data());
      obs.state = ctx.host_state_;
    }
    const double v = policy.measure(obs);
    ctx.exit_values_.push_back(v);
    if (policy.should_exit(v)) q->exited = true;
  }
}

void DepthBatch::ride(Tensor& s, const Tensor& e, const Rows& rows) {
  HUGINN_ASSERT(static_cast<int64_t>(rows.caches.size()) == rows.sequences(),
                "DepthBatch::ride: one cache entry per sequence (null for none)");
  riders_.push_back(Rider{&s, &e, rows});
}

int64_t DepthBatch::board(RowSet& set, int64_t base) {
  Backend& be = pass_.backend();
  const int64_t E = pass_.model().config().n_embd;
  int64_t n = 0;
  for (const Rider& r : riders_) n += r.rows.count();
  reserve_row_pair(be, s_, e_, rows_, rows_ + n, E);
  int64_t at = rows_;
  for (const Rider& r : riders_) {
    const int64_t k = r.rows.count();
    Tensor sd = s_.rows(at, at + k), ed = e_.rows(at, at + k);
    be.copy(*r.s, sd);
    be.copy(*r.e, ed);
    set.positions.insert(set.positions.end(), r.rows.positions.begin(), r.rows.positions.end());
    for (int64_t q = 0; q < r.rows.sequences(); ++q) {
      set.starts.push_back(at - base + r.rows.starts[q + 1]);
      set.caches.push_back(r.rows.caches[q]);
      set.iterations.push_back(r.rows.iterations.empty() ? 0 : r.rows.iterations[q]);
    }
    at += k;
  }
  return n;
}

std::vector<BatchedCall*> DepthBatch::step(bool calls) {
  std::vector<BatchedCall*> finished;
  if ((live_.empty() || !calls) && riders_.empty()) return finished;
  Backend& be = pass_.backend();
  std::vector<Call*> all;
  if (calls)
    for (auto& q : live_) all.push_back(q.get());
  // Without the calls, the riders' rows (after the calls') run alone from row rows_ on.
  const int64_t base = calls ? 0 : rows_;
  RowSet set = row_set(all, true);
  const int64_t ridden = board(set, base);
  {
    Tensor s = s_.rows(base, rows_ + ridden), e = e_.rows(base, rows_ + ridden);
    pass_.core_step(s, e, 0, set.rows());
    int64_t at = rows_;
    for (const Rider& r : riders_) {
      be.copy(s_.rows(at, at + r.rows.count()), *r.s);
      at += r.rows.count();
    }
    rider_rows_ += static_cast<uint64_t>(ridden);
    if (ridden > 0 && !all.empty()) ++shared_passes_;
    riders_.clear();
  }
  if (all.empty()) return finished;
  Tensor s = s_.rows(0, rows_);
  for (Call* q : all) ++q->steps;
  check_exits(s);

  // Calls that exited or reached their step count leave: logits from a final decode for those
  // without a check's, the warm state, the result. A chunk with more to come runs its coda too
  // (the coda KV entries the later chunks attend to) and comes back as the next chunk.
  std::vector<Call*> leave, need;
  for (Call* q : all)
    if (q->exited || q->steps >= q->g->steps_) {
      leave.push_back(q);
      if (!q->have_logits) need.push_back(q);
    }
  if (leave.empty()) return finished;
  if (!need.empty()) coda_logits(s, need);
  for (Call* q : leave) {
    if (!q->rest.empty()) {
      q->g->end_chunk(*q->ctx, q->ids);
      if (!q->owner->go_on || q->owner->go_on()) continue;
      q->rest = {};  // stopped between chunks: it leaves with the others
      q->owner->error = std::make_exception_ptr(Cancelled("the call was stopped between prompt chunks"));
      finished.push_back(q->owner);
      continue;
    }
    q->g->end_call(*q->ctx, s.rows(q->row, q->row + q->size()), q->ids);
    CallResult& r = q->owner->result;
    r.steps = q->steps;
    r.logits = q->ctx->logits_;
    r.exit_values = q->ctx->exit_values_;
    r.exited = q->exited;
    finished.push_back(q->owner);
  }
  // The rest move up; next chunks go after them.
  size_t kept = 0;
  int64_t at = 0;
  std::vector<std::unique_ptr<Call>> next;
  for (size_t k = 0; k < live_.size(); ++k) {
    Call* q = live_[k].get();
    const int64_t T = q->size();
    if (q->exited || q->steps >= q->g->steps_) {
      if (!q->rest.empty()) next.push_back(std::move(live_[k]));
      continue;
    }
    if (at != q->row) {
      Tensor sd = s_.rows(at, at + T), ed = e_.rows(at, at + T);
      be.copy(s_.rows(q->row, q->row + T), sd);
      be.copy(e_.rows(q->row, q->row + T), ed);
      q->row = at;
    }
    live_[kept++] = std::move(live_[k]);
    at += T;
  }
  live_.resize(kept);
  rows_ = at;
  std::vector<Call*> again;
  for (auto& q : next) {
    const auto n = static_cast<size_t>(q->g->first_chunk(prefill_chunk_, static_cast<int64_t>(q->rest.size())));
    q->ids = q->rest.first(n);
    q->rest = q->rest.subspan(n);
    q->steps = 0;
    q->have_logits = false;
    again.push_back(q.get());
    live_.push_back(std::move(q));
  }
  chunks_ += again.size();
  start(again);
  return finished;
}

std::vector<BatchedCall*> DepthBatch::abort(std::exception_ptr error) {
  std::vector<BatchedCall*> failed;
  for (auto& q : live_) {
    q->owner->error = error;
    failed.push_back(q->owner);
  }
  live_.clear();
  riders_.clear();
  rows_ = 0;
  return failed;
}

CallResult Generator::run_call(GenerationContext& ctx, std::span<const int32_t> ids) const {
  BatchedCall call{this, &ctx, -1, {}, nullptr, ids};
  BatchedCall* one = &call;
  std::vector<BatchedCall*> failed;
  DepthBatch batch(ctx.runner_->pass());
  batch.admit(std::span<BatchedCall* const>(&one, 1), failed);
  if (call.error) std::rethrow_exception(call.error);
  while (batch.size() > 0) batch.step();
  return call.result;
}

void Generator::decode_batch(std::span<BatchedCall> calls, BatchRunner& br) {
  std::vector<BatchedCall*> all, failed;
  for (BatchedCall& bc : calls) all.push_back(&bc);
  DepthBatch batch(br.pass());
  batch.admit(all, failed);
  while (batch.size() > 0) batch.step();
}

}  // namespace huginn
