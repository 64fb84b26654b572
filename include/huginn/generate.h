// Text generation with a recurrent-depth model: a KV cache across prelude, every core
// recurrence and coda; per-token adaptive exit; KV-cache sharing across recurrences; continuous
// chain-of-thought (warm start); a sampler chain; stop ids and stop strings.
//
// Weights vs. state: a Generator holds only the const Model, the Backend and the options, so it
// may serve many sequences; everything that changes while generating (KV cache, scratch, warm
// state, sampler history and RNG, exit-policy memory, statistics) lives in a GenerationContext,
// one per sequence. Several contexts can run on one model in one process (one context is used
// by one thread at a time; contexts running on different threads at once should each use their
// own Backend, since a backend's thread pool serves one caller at a time).
//
// Calls follow the released generators (golden README items 11-16): call 0 runs the whole
// prompt in one batched pass (positions 0..L-1) and the next token comes from its last
// position; each later call runs the one new token at the next position against the cache.
// A call runs the prelude, then core recurrences (a fixed count, or until the exit policy
// fires), then the coda. Exits are decided by the last position for a prompt (the whole prompt
// exits together) and a call that exits early writes no core KV entries at deeper step indices.
//
// Warm start (continuous chain-of-thought): the first call starts from the initial state; each
// later single-token call starts from the previous call's last-position state. With
// WarmStart::kAuto that state is what the reference passes: ln_f(s_T) in the fixed-step
// generator (generate_minimal), the raw s_T at the exit step in the adaptive one
// (generate_with_adaptive_compute). kLatent / kRaw force one of the two. A later call of more
// than one token (e.g. a new chat turn) starts from the initial state.
//
// Checks and logits with --min-steps / --check-every: recurrence n (1-based) is checked when
// n >= max(min_steps, 1) and n % check_every == 0. Without an exit, the logits come from the
// last performed check for logit criteria (golden README item 15), and from a decode of the
// final state otherwise (or when no check ran).
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "huginn/exit.h"
#include "huginn/forward.h"
#include "huginn/sampler.h"

namespace huginn {

enum class WarmStart { kOff, kAuto, kLatent, kRaw };

struct GenerateOptions {
  // Recurrences per call: the fixed count, or the maximum when an exit criterion is set.
  // 0 = the config's mean_recurrence.
  int steps = 0;
  ExitSpec exit;          // criterion kNone: fixed steps
  int min_steps = 0;      // no exit check before this many recurrences
  int check_every = 1;    // check every n-th recurrence
  // KV cache: full, or `cache_slots` core slots shared by the compress-s rule (golden README
  // item 13, offset 2 as in the reference), compress-r, or the prelude-aware variant.
  KVCache::Strategy cache_strategy = KVCache::Strategy::kFull;
  int cache_slots = 0;
  WarmStart warm_start = WarmStart::kOff;
  double init_scale = 0.0;  // initial state: 0 = zeros, else the seeded truncated normal
  uint64_t init_seed = 0;   // call c draws with a seed derived from (init_seed, c)
  int max_new_tokens = 32;
  SamplingParams sampling;
  // Stop ids: 65504/65505/65508 (Huginn's begin_text/end_text/end_turn) when they are inside
  // the vocabulary and default_stop_ids is set, plus these (e.g. the tokenizer's eos).
  bool default_stop_ids = true;
  std::vector<int32_t> stop_ids;
  // Whole strings, matched on the decoded text across token boundaries (needs a TextStream).
  std::vector<std::string> stop_strings;
  int64_t context_length = 0;  // 0 = the model's RoPE table length
  bool truncate_left = false;  // a prompt too long for the context keeps its last tokens

  // Throws huginn::Error naming the option for invalid values (steps < 1 once resolved, ...).
  void validate(const ModelConfig& config) const;
};

// Incremental detokenisation for streaming and stop strings: push(id) returns the text that
// became final with this token; finish() returns what is left at the end.
class TextStream {
 public:
  virtual ~TextStream() = default;
  virtual std::string push(int32_t id) = 0;
  virtual std::string finish() { return {}; }
};

// One model call (the prompt, or one token).
struct CallResult {
  int steps = 0;                       // recurrences run
  std::span<const float> logits;       // last position's logits [V] (valid until the next call)
  std::span<const double> exit_values; // one value per performed check (empty without a policy)
  bool exited = false;                 // the policy fired before the limit
};

// Streamed once per generated token. `text` is the text that became final (held back while it
// may still begin a stop string). After the last token, one more event with id = -1 carries
// any remaining text (only when there is some).
struct TokenEvent {
  int32_t id = -1;
  int steps = 0;
  std::string_view text;
  std::span<const float> logits;  // the logits the token was chosen from
  std::span<const double> exit_values;
};
using TokenCallback = std::function<bool(const TokenEvent&)>;  // false stops generation

class GenerationContext;
// Runs one model call of generate() — the prompt, then each token fed back — in place of
// Generator::prefill / decode (e.g. by batching it with other sequences' calls); must behave
// exactly like prefill(ctx, ids).
using CallFn = std::function<CallResult(GenerationContext&, std::span<const int32_t>)>;

// Runs one core recurrence ModelPass::core_step(s, e, 0, rows) for a decoder's own rows, each
// sequence at its own step index (rows.iterations), in place of the decoder's pass: e.g. inside
// the server's depth batch beside other requests' calls (DecodeBatcher::Member::core). s, e
// [n, E] on the backend; must give the bits of a row-exact pass.
using CoreFn = std::function<void(Tensor& s, const Tensor& e, const Rows& rows)>;

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (a stop id that ended generation included)
  std::vector<int> steps;       // recurrences of the call that produced each token
  std::string text;             // decoded text of the generated tokens (stop id/string excluded)
  std::string finish_reason;    // "stop", "stop_string", "length", "callback"
  int32_t prompt_tokens = 0;    // after truncation
  int32_t cached_tokens = 0;    // prompt tokens whose KV came from a reused prefix
  int decode_calls = 0;         // single-token calls after the prefill
  double prefill_seconds = 0.0, decode_seconds = 0.0;
  size_t cache_bytes = 0;       // KV cache after generation
  double prefill_tok_s() const;
  double decode_tok_s() const;  // tokens after the first / decode time
};

class Generator;
class BatchRunner;

// One model call of a batch (Generator::decode_batch, DepthBatch): one token fed back, or a
// prompt (or continuation) of several.
struct BatchedCall {
  const Generator* generator = nullptr;  // the sequence's own options (depth, exit, warm start)
  GenerationContext* ctx = nullptr;
  int32_t id = -1;            // the token fed back (when `ids` is empty)
  CallResult result;          // what prefill(*ctx, tokens()) returns
  std::exception_ptr error;   // instead of a result: the call could not run (nothing changed)
  std::span<const int32_t> ids;  // non-empty: the call's tokens, in place of `id`
  // Asked between a chunked call's chunks (DepthBatch): false ends the call there with `error`
  // huginn::Cancelled (its context then holds the chunks done). Runs on the batch's thread.
  std::function<bool()> go_on{};
  std::span<const int32_t> tokens() const { return ids.empty() ? std::span<const int32_t>(&id, 1) : ids; }
};

// The per-sequence state. Create with Generator::new_context.
class GenerationContext {
 public:
  ~GenerationContext();
  GenerationContext(const GenerationContext&) = delete;
  GenerationContext& operator=(const GenerationContext&) = delete;

  int32_t n_past() const { return n_past_; }
  const KVCache& cache() const { return *cache_; }
  Runner& runner() { return *runner_; }
  // Tokens evaluated so far (prompt + generated ones fed back).
  const std::vector<int32_t>& history() const { return history_; }
  // Back to empty: cache cleared, warm state dropped, sampler and exit policy reset.
  void reset();

 private:
  friend class Generator;
  friend class WavefrontDecoder;
  friend class DepthBatch;
  friend struct SamplerAccess;  // the speculative and diffusion samplers (samplers.h)
  GenerationContext() = default;
  std::unique_ptr<Runner> runner_;
  std::unique_ptr<KVCache> cache_;
  std::unique_ptr<SamplerChain> sampler_;
  std::unique_ptr<ExitPolicy> policy_;
  std::vector<int32_t> history_;
  std::vector<float> warm_;           // [E], the warm-start state (empty: none)
  std::vector<float> logits_, host_state_;
  std::vector<double> exit_values_;
  Tensor norm_dev_;                   // [1, E]
  int32_t n_past_ = 0;
  int32_t reused_ = 0;                // prompt tokens taken from a prefix cache before call 0
  int32_t call_begin_ = 0;            // position of the current call's first token (a reused
                                      // prefix and a chunked prompt's done chunks are part of it)
  uint64_t calls_ = 0;
};

class Generator {
 public:
  // Validates the options against the model (throws huginn::Error).
  Generator(const Model& model, Backend& backend, GenerateOptions options);

  const GenerateOptions& options() const { return options_; }
  const Model& model() const { return model_; }
  int steps() const { return steps_; }            // resolved recurrences per call
  int64_t context_length() const { return context_; }
  const std::vector<int32_t>& stop_ids() const { return stop_ids_; }

  std::unique_ptr<GenerationContext> new_context() const;

  // The prompt in one batched pass at positions n_past.. (normally 0). Throws huginn::Error for
  // an empty prompt, ids outside the vocabulary, or a prompt past the context.
  CallResult prefill(GenerationContext& ctx, std::span<const int32_t> ids) const;
  // One token at the next position.
  CallResult decode(GenerationContext& ctx, int32_t id) const;
  // The sampler chain on these logits; the chosen id is accepted into the sampler's history.
  int32_t sample(GenerationContext& ctx, std::span<const float> logits) const;

  // Prompt -> up to max_new_tokens tokens, streaming each through `on_token` (may be empty).
  // `text` (optional) decodes the tokens for the result text, the events and stop strings.
  // The context should be fresh (or reset); the prompt is truncated or rejected per options.
  // `call_fn` (optional) runs the model calls (prompt, then each token) in place of prefill().
  GenerateResult generate(GenerationContext& ctx, std::span<const int32_t> prompt,
                          const TokenCallback& on_token = {}, TextStream* text = nullptr,
                          const CallFn& call_fn = {}) const;

  // One decode call for each of several sequences, batched (src/generate/calls.cc): the
  // B new tokens go through the model together (huginn/forward_batch.h), each sequence with its
  // own generator's options, cache, position, recurrence count and exit rule; a sequence
  // leaves the batch when it exits or reaches its step count, so the batch shrinks within the
  // token. Each result is bit-identical to decode(*call.ctx, call.id). Every generator must
  // run on `runner`'s model and backend. Calls that cannot run (an id outside the vocabulary,
  // past the context) get `error` and leave their context unchanged.
  static void decode_batch(std::span<BatchedCall> calls, BatchRunner& runner);
  // True when a call of many tokens may share a batched pass with others and still get the
  // bits of a lone prefill: the backend's matmul is row-exact for any number of rows.
  static bool batches_prompts(const Backend& backend);

  // The prompt as generate() will use it: validated ids, truncated on the left if allowed.
  std::vector<int32_t> prepare_prompt(std::span<const int32_t> prompt) const;

  // Whether a call of many tokens may run in parts, each a multiple of
  // Backend::attention_split_rows rows (a reused prefix, then the rest; or prefill chunks), and
  // keep every bit of a run over all its rows at once. It needs:
  // - a fixed depth (no exit criterion). With one, the whole call exits together at the step
  //   its last token decides (golden README item 15): an earlier part cannot know how deep to
  //   go, its core KV entries must stop at that step, and every check's coda reads the coda KV
  //   of all the call's positions at that check's depth, which a part run earlier does not
  //   keep (each check overwrites them). So its entries depend on tokens after it.
  // - a full cache (a slot per step index). With shared slots (compress-s/-r) a later
  //   recurrence overwrites an earlier one's keys in the slot they share (item 13), so once a
  //   part has run all its recurrences, its keys at step index i are gone, and the rest of the
  //   call, which at recurrence i must attend to exactly those, would see a later step's keys.
  //   Exactness there would take a per-step copy of the part's keys: a full cache for the
  //   prompt, the memory the slots exist to save.
  // - row-exact matmuls for any number of rows (batches_prompts) and an attention whose query
  //   blocks start at multiples of attention_split_rows (so a split there changes no row's
  //   reduction order).
  bool splits_calls() const;
  // The rows of a call of T tokens to run first when prompts are cut into chunks of about
  // `chunk` tokens (rounded down to a multiple of attention_split_rows, at least one; a tail
  // shorter than that stays with the chunk before it): T when chunk <= 0, T fits one chunk, or
  // these options do not split calls exactly.
  int64_t first_chunk(int64_t chunk, int64_t T) const;

  // Prefix reuse (the server's prefix cache). A prompt's KV entries at positions below n depend
  // only on its first n tokens where splits_calls(); then they serve any later prompt with
  // those first tokens under the same key: the depth and the initial state. "" when these
  // options, or the backend's kernels, do not allow reuse.
  std::string prefix_key() const;
  // How many of a prompt's first `shared` tokens (of `prompt_size`) a reused prefix may cover
  // and keep every bit: 0, or a split the backend's attention allows.
  int32_t prefix_split(int32_t shared, int32_t prompt_size) const;
  // Starts a fresh context from src's entries for the first n tokens of `prompt` (src made by a
  // generator with the same prefix_key(), holding them; 0 < n < prompt size): generate(ctx,
  // prompt) then runs only the rest, with the bits of a run over the whole prompt.
  void reuse_prefix(GenerationContext& ctx, const KVCache& src, std::span<const int32_t> prompt,
                    int32_t n) const;

 private:
  CallResult run_call(GenerationContext& ctx, std::span<const int32_t> ids) const;
  // Checks that the call fits the context; throws huginn::Error otherwise.
  void check_call(const GenerationContext& ctx, std::span<const int32_t> ids) const;
  friend class WavefrontDecoder;  // runs calls ahead, each as DepthBatch would (wavefront.h)
  // The call's initial state [T, E] on the host: the warm one or a seeded s_0 (of call index
  // `call`: ctx's next call by default). When ctx's next call began before ctx's position (a
  // reused prefix, finished chunks), its T rows are the rest of the whole call's draw (row p of
  // a draw depends only on the rows before it) and never the warm state.
  Tensor initial_state(const GenerationContext& ctx, int64_t T) const;
  Tensor initial_state(const GenerationContext& ctx, int64_t T, uint64_t call) const;
  // Whether recurrence `steps` (1-based) is an exit check: >= max(min_steps, 1), a multiple of
  // check_every.
  bool checks_at(int steps) const;
  // After a call whose final state is s [T, E]: warm state, history, position, call count.
  void end_call(GenerationContext& ctx, const Tensor& s, std::span<const int32_t> ids) const;
  // After `calls` calls of `ids` in all whose KV entries the cache keeps (end_call's without the
  // warm state; the samplers' committed tokens, one call each): history, position, the next
  // call's start and the call count.
  void end_calls(GenerationContext& ctx, std::span<const int32_t> ids, uint64_t calls) const;
  // After a chunk of a call that goes on: history and position only.
  void end_chunk(GenerationContext& ctx, std::span<const int32_t> ids) const;
  friend class DepthBatch;  // the one loop of model calls (src/generate/calls.cc)
  friend struct SamplerAccess;  // the speculative and diffusion samplers (samplers.h)
  struct Call;

  const Model& model_;
  Backend& be_;
  GenerateOptions options_;
  int steps_ = 0;
  int64_t context_ = 0;
  std::vector<int32_t> stop_ids_;
  std::unique_ptr<SamplerChain> sampler_proto_;
  std::unique_ptr<ExitPolicy> policy_proto_;
};

// Continuous depth batching (src/generate/calls.cc), the one loop behind every model call:
// calls of one or many sequences scheduled as (sequence, iteration) work items on one pass.
// admit() runs the prelude of new calls together and sets their initial states; each step() is
// one pass over the core for every admitted call at whatever depth it has reached, then their
// exit checks; a call that exits or reaches its step count leaves in that step (its coda runs
// with the other leavers') and is returned finished while the others go on. So calls join and
// leave between any two core iterations, and each result is bit-identical to
// prefill(*call.ctx, call.tokens()) run alone: rows never mix except in matmuls, which the
// pass keeps row-exact (admit calls of several tokens only where batches_prompts()).
// Chunked prefill: with prefill_chunk > 0, a call of more tokens (a long prompt) runs as chunks
// of that many (Generator::first_chunk; only where Generator::splits_calls()): a chunk runs all
// its recurrences and its coda, its KV entries stay in the call's cache, and the next chunk joins
// the following pass and attends to them, so a pass never carries more than a chunk of any
// prompt and the other calls in the batch advance at every pass while it prefills. The result
// (returned after the last chunk) is bit-identical to the unchunked call.
// R = rows of the admitted calls (their tokens), E = n_embd.
class DepthBatch {
 public:
  // `pass`: row-exact when calls are batched. `prefill_chunk`: tokens per prompt chunk, 0 = off.
  explicit DepthBatch(ModelPass& pass, int64_t prefill_chunk = 0);
  ~DepthBatch();
  DepthBatch(const DepthBatch&) = delete;
  DepthBatch& operator=(const DepthBatch&) = delete;

  // Checks each call; one that cannot run (ids outside the vocabulary, past the context) gets
  // `error`, keeps its context unchanged and is appended to `failed`. The others' prelude runs.
  // Calls must stay alive, and their contexts untouched, until they are returned finished.
  void admit(std::span<BatchedCall* const> calls, std::vector<BatchedCall*>& failed);
  // One core iteration for every admitted call; returns the calls that finished in it. With
  // calls = false only the riders' rows run (the admitted calls sit this pass out, unchanged:
  // e.g. a rider that does not fit beside them in a pass's row budget, DecodeBatcher).
  std::vector<BatchedCall*> step(bool calls = true);
  // Rows of another decoder (wavefront lanes, a sampler's rows: see CoreFn) for the next step's
  // core pass, after the calls' rows: s and e are copied in, the recurrence runs, s is copied
  // back; prelude, coda and exit checks stay the rider's. rows (one cache entry per sequence,
  // and what it points to), s and e must live until that step returns. A step with riders runs
  // even with no call admitted.
  void ride(Tensor& s, const Tensor& e, const Rows& rows);
  uint64_t rider_rows() const { return rider_rows_; }      // rows carried for riders so far
  uint64_t shared_passes() const { return shared_passes_; } // passes with riders and calls
  // Every admitted call fails with `error` (a fault of the pass itself) and is returned.
  std::vector<BatchedCall*> abort(std::exception_ptr error);
  size_t size() const { return live_.size(); }  // calls admitted and not finished
  int64_t rows() const { return rows_; }
  uint64_t chunks() const { return chunks_; }  // prompt chunks admitted after a call's first

 private:
  struct RowSet;
  using Call = Generator::Call;
  RowSet row_set(std::span<Call* const> calls, bool own_depth) const;
  void coda_logits(const Tensor& src, std::span<Call* const> which);
  void check_exits(const Tensor& s);
  // Prelude and initial states of calls just appended to live_ (rows from rows_ on).
  void start(std::span<Call* const> calls);

  struct Rider {
    Tensor* s;
    const Tensor* e;
    Rows rows;
  };
  // The riders' rows into rows [rows_, ...) of s_ / e_ and their Rows into `set`, whose row 0
  // is row `base` of s_.
  int64_t board(RowSet& set, int64_t base);

  ModelPass& pass_;
  const int64_t prefill_chunk_;
  uint64_t chunks_ = 0;
  std::vector<Rider> riders_;
  uint64_t rider_rows_ = 0, shared_passes_ = 0;
  std::vector<std::unique_ptr<Call>> live_;  // in row order; rows 0 .. rows_-1 of s_ and e_
  Tensor s_, e_;                             // [capacity, E]: states and prelude outputs
  int64_t rows_ = 0;
};

// Matches whole stop strings on text arriving in pieces: push() returns the text that is safe
// to emit (a suffix that could begin a stop string is held back); after a match, matched() is
// true and nothing from the stop string on is ever emitted.
class StopStringMatcher {
 public:
  explicit StopStringMatcher(std::vector<std::string> stops);
  std::string push(std::string_view piece);
  std::string flush();  // the held-back text (at the end, when nothing matched)
  bool matched() const { return matched_; }

 private:
  std::vector<std::string> stops_;
  std::string text_;
  size_t emitted_ = 0;
  bool matched_ = false;
};

// Throws huginn::Error naming `what` and the byte offset when `text` is not valid UTF-8.
void validate_utf8(std::string_view text, const std::string& what);

class Tokenizer;
// Generated ids as text through the tokenizer's incremental decoder (huginn::StreamDecoder), for
// generate()'s TextStream; the CLI's and the server's. Throws huginn::Error in a build without the
// tokenizer layer.
std::unique_ptr<TextStream> tokenizer_text_stream(std::shared_ptr<const Tokenizer> tokenizer);

// The stop rule of the CLI and the server, in one place: the eos ids of read_eos_ids(model_dir),
// then, with a tokenizer, its eos and the ids of the markers the released generators stop on
// (<|begin_text|>, <|end_text|>, <|end_turn|>: 65504/65505/65508 in Huginn's vocabulary, elsewhere
// in a smaller one) and ChatML's <|im_end|>. GenerateOptions::stop_ids takes them; its
// default_stop_ids adds 65504/65505/65508 when they are inside the vocabulary.
std::vector<int32_t> model_stop_ids(const std::string& model_dir, const Tokenizer* tokenizer);

// eos ids named by DIR/generation_config.json or DIR/config.json ("eos_token_id": int or list);
// empty when neither names one. Malformed files throw huginn::Error naming the file: not a JSON
// object, nested over 64 deep, over 16 MB, ids outside [0, 2^31 - 1] or more than 1024 of them.
std::vector<int32_t> read_eos_ids(const std::string& model_dir);
// The eos ids of one such file's text (`source` names it in messages); for fuzzing and tests.
std::vector<int32_t> eos_ids_from_json(std::string_view text, const std::string& source);

}  // namespace huginn
