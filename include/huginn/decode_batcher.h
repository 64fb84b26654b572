// Continuous depth batching across threads: each sequence generates on its own thread
// (Generator::generate with a CallFn), and its model calls — the prompt, then one per token —
// meet those of the other sequences in one engine thread, which keeps them in one DepthBatch
// (huginn/generate.h): every pass over the core runs each admitted call at whatever depth it has
// reached; a call that exits leaves in that pass and its thread gets the result at once, and a
// waiting call (a new prompt, or another sequence's next token) joins at the next pass. Prelude
// and coda run for the calls that need them. A sequence becomes a member with its first call
// and leaves when its Member is destroyed.
//
// Passes run while calls are admitted. After an idle spell, the first pass waits for every
// member's call or `gather`, whichever comes first (members woken together arrive within
// milliseconds of each other on a busy machine). A pass carries at most max_batch slots: one
// per admitted call (its token, or a prompt's chunk, which prefill_chunk bounds) and one per row
// of another decoder riding it (below); waiting calls and riders are taken in arrival order. Prompts join the batch where Generator::batches_prompts(backend); elsewhere
// they run on their own thread's context, as a lone prefill. In the batch, prompts that split
// exactly run as chunks of `prefill_chunk` tokens (DepthBatch), so a long one holds up the
// others' next iteration for one chunk's pass at a time. Results are bit-identical to
// unbatched calls, so batching changes speed only.
// Other decoders' rows ride along (Member::core, a CoreFn): a wavefront decoder's lanes (each at
// its own depth) or a sampler's rows join the next pass beside the calls for one core
// recurrence (their prelude and coda passes stay on their own thread), with the bits of their
// own row-exact pass. A rider with no room beside the admitted calls gets the next pass of its
// own (with the riders behind it that fit) while the calls sit that pass out; a rider larger
// than max_batch gets one alone. So no waiting call or rider is overtaken, and none starves.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "huginn/generate.h"

namespace huginn {

class BatchRunner;

class DecodeBatcher {
 public:
  // Every generator used with this batcher must run on `model` and `backend`.
  // `prefill_chunk`: prompts run in chunks of about this many tokens (DepthBatch); 0 = whole.
  DecodeBatcher(const Model& model, Backend& backend, int max_batch,
                std::chrono::microseconds gather = std::chrono::microseconds(2000),
                int64_t prefill_chunk = 0);
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
    // One model call: what gen.prefill(ctx, ids) returns. `go_on` (optional) is asked on the
    // engine thread between a chunked prompt's chunks: false ends the call there, throwing
    // huginn::Cancelled (e.g. a server's cancel or deadline; the context holds the chunks done).
    CallResult call(const Generator& gen, GenerationContext& ctx, std::span<const int32_t> ids,
                    std::function<bool()> go_on = {});
    CallResult decode(const Generator& gen, GenerationContext& ctx, int32_t id) {
      return call(gen, ctx, std::span<const int32_t>(&id, 1));
    }
    // One core recurrence of another decoder's rows (a CoreFn: wavefront lanes) in the next
    // pass, beside the batch's calls; blocks until it ran. The rows' caches are the caller's
    // (nothing else may touch them meanwhile); s [n, E] comes back advanced by one recurrence.
    void core(Tensor& s, const Tensor& e, const Rows& rows);

   private:
    // Joins (first time), runs `queue` under the batcher's lock, waits until `done` is set.
    void submit(const std::function<void()>& queue, const bool& done);
    DecodeBatcher& b_;
    bool joined_ = false;
  };

  struct Stats {
    uint64_t ticks = 0;  // passes over the core
    uint64_t rows = 0;   // calls carried, summed over the passes (rows / ticks = mean batch)
    int max_rows = 0;    // most calls in one pass so far
    uint64_t calls = 0;  // calls finished
    uint64_t chunks = 0; // prompt chunks admitted after a prompt's first (chunked prefill)
    uint64_t rider_rows = 0;     // rows of other decoders (Member::core) carried by passes
    uint64_t shared_passes = 0;  // passes that carried such rows beside calls
    int64_t max_load = 0;        // most slots (calls + rider rows) in a pass, lone riders aside
    uint64_t lone_riders = 0;    // passes of one rider larger than max_batch, alone
    uint64_t calls_sat_out = 0;  // passes of riders alone while admitted calls waited
  };
  Stats stats() const;
  int max_batch() const { return max_batch_; }

 private:
  struct Pending;
  struct Rider;
  // A call or a rider waiting, and the slots it takes: one for a call (its token, or a prompt's
  // chunk, which prefill_chunk bounds), one per row for a rider.
  struct Waiting {
    Pending* call = nullptr;
    Rider* rider = nullptr;
    int64_t weight = 1;
  };
  struct Load {  // what the next pass carries
    std::vector<BatchedCall*> join;
    std::vector<Rider*> riders;
    bool alone = false;  // the riders without the admitted calls
  };
  void loop();
  Load plan();  // takes the pass's load off waiting_ (mu_ held)
  bool waiting() const { return !waiting_.empty(); }  // (mu_ held)

  void finish(std::vector<BatchedCall*>& done);  // hands results back (mu_ held)

  std::unique_ptr<BatchRunner> runner_;
  std::unique_ptr<DepthBatch> batch_;  // used by the engine thread only
  const bool batch_prompts_;
  const int max_batch_;
  const std::chrono::microseconds gather_;
  mutable std::mutex mu_;
  std::condition_variable arrived_, finished_;
  std::deque<Waiting> waiting_;  // calls and riders, in arrival order
  int members_ = 0;  // sequences that have joined and not left
  bool stop_ = false;
  Stats stats_;
  std::thread thread_;
};

}  // namespace huginn
