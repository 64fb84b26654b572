// Lossless depth-parallel greedy decoding ("wavefront"): while position p runs its last core
// recurrences, position p+1 already runs its first ones with a token drafted from p's logits at
// an intermediate depth; the rows of all positions in flight, each at its own depth, go through
// the core together, so each pass over the core weights serves several (position, depth) pairs
// (one batched ModelPass::core_step with Rows::recurrences, row-exact matmuls). When p finishes,
// its token is chosen from its full-depth logits exactly as in sequential decoding; a draft it
// contradicts is dropped with everything built on it (lanes and KV entries) and recomputed.
//
// Exactness: every row sees exactly the keys sequential decoding shows it. A row of position q
// at recurrence t runs only when no older position in flight will still write (or read) a KV
// slot of that step (full cache: the older one is past depth t; a shared cache: past its last
// step in that slot), a logit exit check or final coda of q runs only when every older
// position is final, and drafting codas never leave entries an older position would see. The
// tokens, per-token recurrence counts, logits and exit values equal Generator::decode's bit for
// bit, with fixed steps or an exit criterion, with a full or a shared cache (wavefront_test).
// With a logit exit criterion the drafts come from the exit checks' own logits and a position
// waits at its first check until the one before it is final, so overlap is smaller.
//
// Refused (huginn::Error naming the flag): sampling (temperature > 0: acceptance would have to
// be distribution-exact), warm start (a position's initial state needs the previous final one).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "huginn/generate.h"

namespace huginn {

struct WavefrontOptions {
  int draft_depth = 0;  // recurrences before a position drafts the next token; 0 = steps / 4
  int max_lanes = 8;    // positions in flight at most
  // Where the passes run (empty: on the decoder's own pass): `core` runs each batched core
  // recurrence of the lanes, `prefill` the prompt's call (generate_wavefront), e.g. both in the
  // server's depth batch beside other requests (DecodeBatcher::Member::core / call). The bits
  // are the same either way; prelude and coda passes stay on the decoder's pass.
  CoreFn core{};
  CallFn prefill{};
  // Throws huginn::Error naming --draft-depth / --lanes / --temperature / --warm-start.
  void validate(const GenerateOptions& g, int steps) const;
};

struct WavefrontStats {
  int64_t core_passes = 0, core_rows = 0;  // batched core recurrences, (position, depth) rows
  int64_t coda_passes = 0, coda_rows = 0;
  int64_t drafts = 0, accepted = 0, rejected = 0;
  int64_t tokens = 0;  // positions finalized
  double rows_per_core_pass() const { return core_passes ? double(core_rows) / core_passes : 0.0; }
  double acceptance() const {
    return accepted + rejected ? double(accepted) / double(accepted + rejected) : 0.0;
  }
};

// One sequence's wavefront state; decode() is a drop-in DecodeFn for Generator::generate.
class WavefrontDecoder {
 public:
  WavefrontDecoder(const Generator& generator, WavefrontOptions options);
  ~WavefrontDecoder();
  // What generator.decode(ctx, id) returns, bit for bit; lanes beyond it stay in flight.
  CallResult decode(GenerationContext& ctx, int32_t id);
  // Drops every lane past ctx.n_past() and its KV entries: the context is then exactly what
  // sequential decoding leaves (call after the last decode, before reusing the context).
  void finish(GenerationContext& ctx);
  const WavefrontStats& stats() const { return stats_; }

 private:
  struct Lane;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  WavefrontStats stats_;
};

// generator.generate(ctx, prompt, ...) with wavefront decode calls, then finish().
GenerateResult generate_wavefront(const Generator& generator, GenerationContext& ctx,
                                  std::span<const int32_t> prompt, const WavefrontOptions& options,
                                  const TokenCallback& on_token = {}, TextStream* text = nullptr,
                                  WavefrontStats* stats = nullptr);

}  // namespace huginn
