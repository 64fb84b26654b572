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
                                       std::span<const int32_t> ids) {
  // A prompt in a pass whose matmuls are row-exact only for a few rows would not get a lone
  // prefill's bits: it runs here, on the context's own pass.
  if (ids.size() > 1 && !b_.batch_prompts_) return gen.prefill(ctx, ids);
  Pending p;
  p.generator = &gen;
  p.ctx = &ctx;
  p.ids = ids;
  submit([&] { b_.pending_.push_back(&p); }, p.done);
  if (p.error) std::rethrow_exception(p.error);
  return p.result;
}

void DecodeBatcher::Member::core(Tensor& s, const Tensor& e, const Rows& rows) {
  Rider r{&s, &e, &rows};
  submit([&] { b_.riders_.push_back(&r); }, r.done);
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

void DecodeBatcher::loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (batch_->size() == 0) {
      arrived_.wait(lock, [&] { return stop_ || waiting(); });
      if (!waiting()) return;  // stopping, nothing left to run
      // After an idle spell, let the members' calls arrive together (at most `gather`).
      arrived_.wait_until(lock, std::chrono::steady_clock::now() + gather_, [&] {
        return stop_ || pending_.size() + riders_.size() >= static_cast<size_t>(std::min(members_, max_batch_));
      });
    }
    // Waiting calls take the places of those that left.
    const size_t room = static_cast<size_t>(max_batch_) - std::min<size_t>(batch_->size(), max_batch_);
    const size_t n = std::min(pending_.size(), room);
    std::vector<BatchedCall*> join;
    for (size_t i = 0; i < n; ++i) join.push_back(pending_[i]);
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<long>(n));
    std::vector<Rider*> riders;  // every waiting rider rides this pass
    riders.swap(riders_);
    lock.unlock();

    std::vector<BatchedCall*> done;
    size_t carried = 0;
    try {
      if (!join.empty()) batch_->admit(join, done);  // calls that cannot run come back failed
      carried = batch_->size();
      for (Rider* r : riders) batch_->ride(*r->s, *r->e, *r->rows);
      std::vector<BatchedCall*> left = batch_->step();
      done.insert(done.end(), left.begin(), left.end());
    } catch (...) {
      // Not a per-call error: every call in the batch, and every rider, fails with it.
      for (Rider* r : riders) r->error = std::current_exception();
      std::vector<BatchedCall*> failed = batch_->abort(std::current_exception());
      done.insert(done.end(), failed.begin(), failed.end());
    }

    lock.lock();
    if (carried > 0) {
      ++stats_.ticks;
      stats_.rows += carried;
      stats_.max_rows = std::max(stats_.max_rows, static_cast<int>(carried));
    }
    stats_.chunks = batch_->chunks();
    stats_.rider_rows = batch_->rider_rows();
    stats_.shared_passes = batch_->shared_passes();
    for (Rider* r : riders) r->done = true;
    if (!riders.empty()) finished_.notify_all();
    finish(done);
  }
}

}  // namespace huginn
