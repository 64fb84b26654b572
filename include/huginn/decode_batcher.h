// Continuous batching of decode calls across threads: each sequence generates on its own thread
// (Generator::generate with a DecodeFn), and its per-token decode calls meet those of the other
// sequences in one engine thread, which runs them together with Generator::decode_batch. A
// sequence joins the batch with its first decode call and leaves when its Member is destroyed,
// so sequences come and go between tokens; inside a token the batch shrinks as sequences exit.
//
// A tick (one batched decode) starts when every member has its next call waiting, or, after
// the first call arrived, `gather` or a quarter of the previous tick's time, whichever is longer
// (a member busy elsewhere, e.g. sampling or a slow callback, holds the others back no longer),
// and takes at most max_batch calls, oldest first. Results are bit-identical to unbatched decode calls (see decode_batch), so batching
// changes speed only.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "huginn/generate.h"

namespace huginn {

class BatchRunner;

class DecodeBatcher {
 public:
  // Every generator used with this batcher must run on `model` and `backend`.
  DecodeBatcher(const Model& model, Backend& backend, int max_batch,
                std::chrono::microseconds gather = std::chrono::microseconds(2000));
  ~DecodeBatcher();  // finishes the tick in progress; later decode calls throw huginn::Error
  DecodeBatcher(const DecodeBatcher&) = delete;
  DecodeBatcher& operator=(const DecodeBatcher&) = delete;

  // One sequence's membership: decode() blocks until the call ran in some tick; the result is
  // what gen.decode(ctx, id) returns (its errors are rethrown here). One thread per Member.
  class Member {
   public:
    explicit Member(DecodeBatcher& batcher) : b_(batcher) {}
    ~Member();
    Member(const Member&) = delete;
    Member& operator=(const Member&) = delete;
    CallResult decode(const Generator& gen, GenerationContext& ctx, int32_t id);

   private:
    DecodeBatcher& b_;
    bool joined_ = false;
  };

  struct Stats {
    uint64_t ticks = 0;  // batched decode calls run
    uint64_t rows = 0;   // sequence-tokens decoded (rows / ticks = mean batch size)
    int max_rows = 0;    // largest batch so far
  };
  Stats stats() const;
  int max_batch() const { return max_batch_; }

 private:
  struct Pending;
  void loop();

  std::unique_ptr<BatchRunner> runner_;
  const int max_batch_;
  const std::chrono::microseconds gather_;
  mutable std::mutex mu_;
  std::condition_variable arrived_, finished_;
  std::deque<Pending*> pending_;
  int members_ = 0;  // sequences that have joined and not left
  bool stop_ = false;
  Stats stats_;
  std::thread thread_;
};

}  // namespace huginn
