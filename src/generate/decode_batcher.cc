// DecodeBatcher: the engine thread that gathers decode calls from generating threads and runs
// them as one Generator::decode_batch.
#include "huginn/decode_batcher.h"

#include <algorithm>
#include <vector>

#include "huginn/forward_batch.h"
#include "huginn/log.h"

namespace huginn {

struct DecodeBatcher::Pending {
  BatchedCall call;
  bool done = false;
};

DecodeBatcher::DecodeBatcher(const Model& model, Backend& backend, int max_batch,
                             std::chrono::microseconds gather)
    : runner_(std::make_unique<BatchRunner>(model, backend)),
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
  b_.arrived_.notify_all();  // the tick may have been waiting for this sequence
}

CallResult DecodeBatcher::Member::decode(const Generator& gen, GenerationContext& ctx,
                                         int32_t id) {
  Pending p;
  p.call.generator = &gen;
  p.call.ctx = &ctx;
  p.call.id = id;
  {
    std::unique_lock<std::mutex> lock(b_.mu_);
    if (b_.stop_) throw Error("the decode batcher has stopped");
    if (!joined_) ++b_.members_;
    joined_ = true;
    b_.pending_.push_back(&p);
    b_.arrived_.notify_all();
    b_.finished_.wait(lock, [&] { return p.done; });
  }
  if (p.call.error) std::rethrow_exception(p.call.error);
  return p.call.result;
}

void DecodeBatcher::loop() {
  std::unique_lock<std::mutex> lock(mu_);
  std::chrono::steady_clock::duration last_tick{0};
  for (;;) {
    arrived_.wait(lock, [&] { return stop_ || !pending_.empty(); });
    if (pending_.empty()) return;  // stopping, nothing left to run
    // Wait for the other members' next calls: at most `gather`, or a quarter of the last
    // tick when that is longer (waking a dozen threads on a busy machine takes milliseconds;
    // a wait short against the tick costs little and lets the batch fill).
    const auto wait = std::max<std::chrono::steady_clock::duration>(gather_, last_tick / 4);
    const auto until = std::chrono::steady_clock::now() + wait;
    arrived_.wait_until(lock, until, [&] {
      const size_t want = static_cast<size_t>(std::min(members_, max_batch_));
      return stop_ || pending_.size() >= want;
    });
    const size_t n = std::min(pending_.size(), static_cast<size_t>(max_batch_));
    std::vector<Pending*> tick(pending_.begin(), pending_.begin() + static_cast<long>(n));
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<long>(n));
    lock.unlock();

    const auto tick_start = std::chrono::steady_clock::now();
    std::vector<BatchedCall> calls;
    calls.reserve(n);
    for (Pending* p : tick) calls.push_back(p->call);
    try {
      Generator::decode_batch(calls, *runner_);
    } catch (...) {
      // Not a per-call error (those are in `calls`): every call of the tick fails with it.
      for (BatchedCall& c : calls) c.error = std::current_exception();
    }

    last_tick = std::min<std::chrono::steady_clock::duration>(
        std::chrono::steady_clock::now() - tick_start, std::chrono::milliseconds(200));
    lock.lock();
    for (size_t i = 0; i < n; ++i) {
      tick[i]->call.result = calls[i].result;
      tick[i]->call.error = calls[i].error;
      tick[i]->done = true;
    }
    ++stats_.ticks;
    stats_.rows += n;
    stats_.max_rows = std::max(stats_.max_rows, static_cast<int>(n));
    finished_.notify_all();
  }
}

}  // namespace huginn
