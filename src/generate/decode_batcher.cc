// DecodeBatcher: the engine thread that keeps the generating threads' model calls in one
// DepthBatch, a pass over the core at a time (continuous depth batching).
#include "huginn/decode_batcher.h"

#include <algorithm>
#include <vector>

#include "huginn/forward_batch.h"
#include "huginn/log.h"

namespace huginn {

// A waiting call; the engine hands it around as the BatchedCall it is.
struct DecodeBatcher::Pending : BatchedCall {
  bool done = false;
};

// Another decoder's rows waiting for a pass (Member::core).
struct DecodeBatcher::Rider {
  Tensor* s;
  const Tensor* e;
  const Rows* rows;
  bool done = false;
  std::exception_ptr error{};
};

DecodeBatcher::DecodeBatcher(const Model& model, Backend& backend, int max_batch,
                             std::chrono::microseconds gather, int64_t prefill_chunk)
    : runner_(std::make_unique<BatchRunner>(model, backend)),
      batch_(std::make_unique<DepthBatch>(runner_->pass(), prefill_chunk)),
      batch_prompts_(Generator::batches_prompts(backend)),
      max_batch_(std::max(1, max_batch)),
      gather_(gather) {
  thread_ = std::thread([this] { loop(); });
}

DecodeBatcher::~DecodeBatcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  arrived_.notify_all();
  thread_.join();
}

DecodeBatcher::Stats DecodeBatcher::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

DecodeBatcher::Member::~Member() {
  if (!joined_) return;
  {
    std::lock_guard<std::mutex> lock(b_.mu_);
    --b_.members_;
  }
  b_.arrived_.notify_all();  // the first pass may have been waiting for this sequence
}

CallResult DecodeBatcher::Member::call(const Generator& gen, GenerationContext& ctx,
                                       std::span<const int32_t> ids, std::function<bool()> go_on) {
  // A prompt in a pass whose matmuls are row-exact only for a few rows would not get a lone
  // prefill's bits: it runs here, on the context's own pass.
  if (ids.size() > 1 && !b_.batch_prompts_) return gen.prefill(ctx, ids);
  Pending p;
  p.generator = &gen;
  p.ctx = &ctx;
  p.ids = ids;
  p.go_on = std::move(go_on);
  submit([&] { b_.waiting_.push_back(Waiting{&p, nullptr, 1}); }, p.done);
  if (p.error) std::rethrow_exception(p.error);
  return p.result;
}

void DecodeBatcher::Member::core(Tensor& s, const Tensor& e, const Rows& rows) {
  Rider r{&s, &e, &rows};
  submit([&] { b_.waiting_.push_back(Waiting{nullptr, &r, rows.count()}); }, r.done);
  if (r.error) std::rethrow_exception(r.error);
}

void DecodeBatcher::Member::submit(const std::function<void()>& queue, const bool& done) {
  std::unique_lock<std::mutex> lock(b_.mu_);
  if (b_.stop_) throw Error("the decode batcher has stopped");
  if (!joined_) ++b_.members_;
  joined_ = true;
  queue();
  b_.arrived_.notify_all();
  b_.finished_.wait(lock, [&] { return done; });
}

void DecodeBatcher::finish(std::vector<BatchedCall*>& done) {
  for (BatchedCall* c : done) static_cast<Pending*>(c)->done = true;
  stats_.calls += done.size();
  if (!done.empty()) finished_.notify_all();
}

// This pass's load within the budget (max_batch): the admitted calls, then the waiting calls and
// riders in arrival order up to the first that does not fit (none overtakes another, so none
// waits for ever: the admitted calls leave within their step count). A rider at the head that
// does not fit beside the calls gets a pass of its own, with the riders after it that fit, while
// the calls sit that one pass out; alone, a rider larger than the budget still gets its pass.
DecodeBatcher::Load DecodeBatcher::plan() {
  Load load;
  const int64_t budget = max_batch_;
  int64_t used = static_cast<int64_t>(batch_->size());
  size_t taken = 0;
  for (; taken < waiting_.size() && used + waiting_[taken].weight <= budget; ++taken) {
    used += waiting_[taken].weight;
    if (waiting_[taken].call) load.join.push_back(waiting_[taken].call);
    else load.riders.push_back(waiting_[taken].rider);
  }
  if (taken == 0 && !waiting_.empty() && waiting_.front().rider) {
    load.alone = true;
    used = 0;
    for (; taken < waiting_.size() && waiting_[taken].rider; ++taken) {
      if (taken > 0 && used + waiting_[taken].weight > budget) break;
      used += waiting_[taken].weight;
      load.riders.push_back(waiting_[taken].rider);
    }
  }
  waiting_.erase(waiting_.begin(), waiting_.begin() + static_cast<long>(taken));
  return load;
}

void DecodeBatcher::loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (batch_->size() == 0) {
      arrived_.wait(lock, [&] { return stop_ || waiting(); });
      if (!waiting()) return;  // stopping, nothing left to run
      // After an idle spell, let the members' calls arrive together (at most `gather`).
      arrived_.wait_until(lock, std::chrono::steady_clock::now() + gather_, [&] {
        return stop_ || waiting_.size() >= static_cast<size_t>(std::min(members_, max_batch_));
      });
    }
    Load load = plan();
    lock.unlock();

    std::vector<BatchedCall*> done;
    size_t carried = 0;
    try {
      if (!load.join.empty()) batch_->admit(load.join, done);  // calls that cannot run come back failed
      carried = load.alone ? 0 : batch_->size();
      for (Rider* r : load.riders) batch_->ride(*r->s, *r->e, *r->rows);
      std::vector<BatchedCall*> left = batch_->step(!load.alone);
      done.insert(done.end(), left.begin(), left.end());
    } catch (...) {
      // Not a per-call error: every call in the batch, and every rider, fails with it.
      for (Rider* r : load.riders) r->error = std::current_exception();
      std::vector<BatchedCall*> failed = batch_->abort(std::current_exception());
      done.insert(done.end(), failed.begin(), failed.end());
    }

    lock.lock();
    if (carried > 0) {
      ++stats_.ticks;
      stats_.rows += carried;
      stats_.max_rows = std::max(stats_.max_rows, static_cast<int>(carried));
    }
    // The slots the pass really carried: its calls, its riders' rows.
    int64_t slots = static_cast<int64_t>(carried);
    for (Rider* r : load.riders) slots += r->rows->count();
    if (carried == 0 && load.riders.size() == 1 && slots > max_batch_) ++stats_.lone_riders;
    else stats_.max_load = std::max(stats_.max_load, slots);
    if (load.alone && batch_->size() > 0) ++stats_.calls_sat_out;
    stats_.chunks = batch_->chunks();
    stats_.rider_rows = batch_->rider_rows();
    stats_.shared_passes = batch_->shared_passes();
    for (Rider* r : load.riders) r->done = true;
    if (!load.riders.empty()) finished_.notify_all();
    finish(done);
  }
}

}  // namespace huginn
