// The generator: prefill, per-token decode calls with fixed or adaptive recurrence, warm start,
// sampling and stopping. T = tokens of a call, E = n_embd, V = vocabulary.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "huginn/generate.h"

namespace huginn {

namespace {

constexpr int32_t kHuginnStops[] = {65504, 65505, 65508};  // begin_text, end_text, end_turn

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Options

void GenerateOptions::validate(const ModelConfig& c) const {
  if (steps < 0) throw Error("steps must be >= 1, got " + std::to_string(steps));
  if (steps == 0 && c.mean_recurrence < 1)
    throw Error("steps: the config's mean_recurrence is " + std::to_string(c.mean_recurrence) +
                "; give steps >= 1");
  if (min_steps < 0) throw Error("min-steps must be >= 0, got " + std::to_string(min_steps));
  if (check_every < 1) throw Error("check-every must be >= 1, got " + std::to_string(check_every));
  if (cache_strategy != KVCache::Strategy::kFull && cache_slots < 1)
    throw Error("cache slots must be >= 1 for a shared cache, got " + std::to_string(cache_slots));
  if (!(init_scale >= 0.0) || !std::isfinite(init_scale))
    throw Error("init-scale must be a finite number >= 0");
  if (max_new_tokens < 1)
    throw Error("max-new must be >= 1, got " + std::to_string(max_new_tokens));
  if (context_length < 0) throw Error("context length must be >= 0 (0 = the model's)");
  for (const std::string& s : stop_strings)
    if (s.empty()) throw Error("stop strings must not be empty");
  sampling.validate();
}

double GenerateResult::prefill_tok_s() const {
  return prefill_seconds > 0 ? prompt_tokens / prefill_seconds : 0.0;
}
double GenerateResult::decode_tok_s() const {
  return decode_seconds > 0 ? decode_calls / decode_seconds : 0.0;
}

// ---------------------------------------------------------------------------------------------
// Context

GenerationContext::~GenerationContext() = default;

void GenerationContext::reset() {
  cache_->clear();
  sampler_->reset();
  history_.clear();
  warm_.clear();
  exit_values_.clear();
  n_past_ = 0;
  reused_ = 0;
  call_begin_ = 0;
  calls_ = 0;
}

// ---------------------------------------------------------------------------------------------
// Generator

Generator::Generator(const Model& model, Backend& backend, GenerateOptions options)
    : model_(model), be_(backend), options_(std::move(options)) {
  const ModelConfig& c = model_.config();
  options_.validate(c);
  steps_ = options_.steps > 0 ? options_.steps : c.mean_recurrence;
  context_ = options_.context_length > 0 ? options_.context_length : model_.max_positions();
  if (context_ > model_.max_positions())
    throw Error("context length " + std::to_string(context_) + " exceeds the model's " +
                std::to_string(model_.max_positions()) + " RoPE positions");
  if (options_.default_stop_ids)
    for (int32_t id : kHuginnStops)
      if (id < c.vocab_size) stop_ids_.push_back(id);
  for (int32_t id : options_.stop_ids)
    if (id >= 0 && id < c.vocab_size && !std::count(stop_ids_.begin(), stop_ids_.end(), id))
      stop_ids_.push_back(id);
  sampler_proto_ = make_sampler_chain(options_.sampling);
  policy_proto_ = make_exit_policy(options_.exit);
}

std::unique_ptr<GenerationContext> Generator::new_context() const {
  const ModelConfig& c = model_.config();
  std::unique_ptr<GenerationContext> ctx(new GenerationContext());
  ctx->runner_ = std::make_unique<Runner>(model_, be_);
  ctx->cache_ = std::make_unique<KVCache>(c, be_, options_.cache_strategy, options_.cache_slots);
  ctx->sampler_.reset(static_cast<SamplerChain*>(sampler_proto_->clone().release()));
  if (policy_proto_) ctx->policy_ = policy_proto_->clone();
  ctx->norm_dev_ = be_.alloc({1, c.n_embd});
  ctx->logits_.assign(static_cast<size_t>(c.vocab_size), 0.0f);
  return ctx;
}

std::vector<int32_t> Generator::prepare_prompt(std::span<const int32_t> prompt) const {
  const int64_t V = model_.config().vocab_size;
  if (prompt.empty()) throw Error("prompt is empty: give at least one token");
  for (size_t i = 0; i < prompt.size(); ++i)
    if (prompt[i] < 0 || prompt[i] >= V)
      throw Error("prompt token id " + std::to_string(prompt[i]) + " at index " +
                  std::to_string(i) + " is outside the vocabulary [0, " + std::to_string(V) + ")");
  const int64_t L = static_cast<int64_t>(prompt.size());
  // Room for the prompt and the max_new_tokens - 1 tokens fed back after it.
  const int64_t want = context_ - (options_.max_new_tokens - 1);
  if (L <= context_ && (L <= want || !options_.truncate_left))
    return {prompt.begin(), prompt.end()};
  if (!options_.truncate_left)
    throw Error("prompt of " + std::to_string(L) + " tokens does not fit the context of " +
                std::to_string(context_) + " positions (truncate it, or allow left truncation: " +
                "--truncate left)");
  const int64_t keep = std::max<int64_t>(1, std::min(L, want));
  return {prompt.end() - keep, prompt.end()};
}

void Generator::check_call(const GenerationContext& ctx, std::span<const int32_t> ids) const {
  const int64_t V = model_.config().vocab_size, T = static_cast<int64_t>(ids.size());
  if (ids.empty()) throw Error("prompt is empty: give at least one token");
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= V)
      throw Error("prompt token id " + std::to_string(ids[i]) + " at index " + std::to_string(i) +
                  " is outside the vocabulary [0, " + std::to_string(V) + ")");
  if (ctx.n_past_ + T > context_)
    throw Error("sequence of " + std::to_string(ctx.n_past_ + T) +
                " tokens does not fit the context of " + std::to_string(context_) + " positions");
}

Tensor Generator::initial_state(const GenerationContext& ctx, int64_t T) const {
  return initial_state(ctx, T, ctx.calls_);
}

bool Generator::checks_at(int steps) const {
  return steps >= std::max(options_.min_steps, 1) && steps % options_.check_every == 0;
}

Tensor Generator::initial_state(const GenerationContext& ctx, int64_t T, uint64_t call) const {
  const int64_t E = model_.config().n_embd;
  // Rows of ctx's next call already run (a reused prefix, chunks): these T follow them.
  const int64_t skip = call == ctx.calls_ ? ctx.n_past_ - ctx.call_begin_ : 0;
  // The warm state for a call of a single token after the first call, else s_0.
  if (options_.warm_start != WarmStart::kOff && T == 1 && skip == 0 && !ctx.warm_.empty()) {
    Tensor init = Tensor::empty({1, E});
    std::copy(ctx.warm_.begin(), ctx.warm_.end(), init.f32());
    return init;
  }
  InitState is;
  is.scale = options_.init_scale;
  is.seed = splitmix64(options_.init_seed ^ splitmix64(call));
  if (skip == 0 || is.scale == 0.0) return make_initial_state(model_.config(), T, is);
  return make_initial_state(model_.config(), skip + T, is).rows(skip, skip + T).clone();
}

bool Generator::splits_calls() const {
  return options_.exit.criterion == ExitCriterion::kNone &&
         options_.cache_strategy == KVCache::Strategy::kFull && batches_prompts(be_) &&
         be_.attention_split_rows() > 0;
}

int64_t Generator::first_chunk(int64_t chunk, int64_t T) const {
  if (chunk <= 0 || T <= chunk || !splits_calls()) return T;
  // The split's second part needs at least g rows (Backend::attention_split_rows): a short
  // tail stays with the chunk before it.
  const int64_t g = be_.attention_split_rows(), n = std::max(g, chunk - chunk % g);
  return T - n >= g ? n : T;
}

std::string Generator::prefix_key() const {
  if (!splits_calls()) return {};
  std::string key = "steps " + std::to_string(steps_);
  if (options_.init_scale != 0.0) {
    char b[64];
    std::snprintf(b, sizeof b, " init %.17g seed %llu", options_.init_scale,
                  static_cast<unsigned long long>(options_.init_seed));
    key += b;
  }
  return key;
}

int32_t Generator::prefix_split(int32_t shared, int32_t prompt_size) const {
  if (prefix_key().empty()) return 0;
  const int64_t g = be_.attention_split_rows();
  int64_t n = std::min<int64_t>(shared, prompt_size - g);
  n -= n % g;
  return n >= g ? static_cast<int32_t>(n) : 0;
}

void Generator::reuse_prefix(GenerationContext& ctx, const KVCache& src,
                             std::span<const int32_t> prompt, int32_t n) const {
  HUGINN_ASSERT(ctx.calls_ == 0 && ctx.n_past_ == 0 && n > 0 &&
                    n < static_cast<int32_t>(prompt.size()) && !prefix_key().empty(),
                "reuse_prefix: a fresh context, a proper prefix, options that allow reuse");
  ctx.cache_->assign_prefix(src, n);
  ctx.history_.assign(prompt.begin(), prompt.begin() + n);
  ctx.n_past_ = n;
  ctx.reused_ = n;
}

void Generator::end_call(GenerationContext& ctx, const Tensor& s,
                         std::span<const int32_t> ids) const {
  const ModelConfig& c = model_.config();
  const int64_t T = static_cast<int64_t>(ids.size()), E = c.n_embd;
  if (options_.warm_start != WarmStart::kOff) {
    const bool raw = options_.warm_start == WarmStart::kRaw ||
                     (options_.warm_start == WarmStart::kAuto && ctx.policy_ != nullptr);
    ctx.warm_.resize(static_cast<size_t>(E));
    Tensor last = s.rows(T - 1, T);
    if (raw) {
      be_.download(last, ctx.warm_.data());
    } else {
      be_.rmsnorm(last, model_.weights().ln_f, static_cast<float>(c.norm_eps), ctx.norm_dev_);
      be_.download(ctx.norm_dev_, ctx.warm_.data());
    }
  }
  end_calls(ctx, ids, 1);
}

void Generator::end_calls(GenerationContext& ctx, std::span<const int32_t> ids, uint64_t calls) const {
  end_chunk(ctx, ids);
  ctx.call_begin_ = ctx.n_past_;  // the next call starts here (no rows of it have run)
  ctx.calls_ += calls;
}

void Generator::end_chunk(GenerationContext& ctx, std::span<const int32_t> ids) const {
  ctx.history_.insert(ctx.history_.end(), ids.begin(), ids.end());
  ctx.n_past_ += static_cast<int32_t>(ids.size());
}

CallResult Generator::prefill(GenerationContext& ctx, std::span<const int32_t> ids) const {
  return run_call(ctx, ids);
}

CallResult Generator::decode(GenerationContext& ctx, int32_t id) const {
  return prefill(ctx, std::span<const int32_t>(&id, 1));
}

int32_t Generator::sample(GenerationContext& ctx, std::span<const float> logits) const {
  const int32_t id = ctx.sampler_->sample(logits);
  ctx.sampler_->accept(id);
  return id;
}

GenerateResult Generator::generate(GenerationContext& ctx, std::span<const int32_t> prompt_in,
                                   const TokenCallback& on_token, TextStream* text,
                                   const CallFn& call_fn) const {
  std::vector<int32_t> prompt;
  if (ctx.calls_ == 0) {
    prompt = prepare_prompt(prompt_in);
    // A reused prefix serves only the prompt it was taken for.
    const auto n = static_cast<size_t>(ctx.reused_);
    if (n > 0 && (n >= prompt.size() || !std::equal(prompt.begin(), prompt.begin() + n, ctx.history_.begin())))
      ctx.reset();
  } else {  // a continuation (e.g. the next chat turn): no truncation possible
    prompt.assign(prompt_in.begin(), prompt_in.end());
    if (static_cast<int64_t>(prompt.size()) + ctx.n_past_ > context_)
      throw Error("continuation of " + std::to_string(prompt.size()) + " tokens after " +
                  std::to_string(ctx.n_past_) + " does not fit the context of " +
                  std::to_string(context_) + " positions");
  }
  GenerateResult res;
  res.prompt_tokens = static_cast<int32_t>(prompt.size());
  res.cached_tokens = ctx.calls_ == 0 ? ctx.reused_ : 0;
  for (int32_t id : prompt) ctx.sampler_->accept(id);

  auto t0 = std::chrono::steady_clock::now();
  const std::span<const int32_t> run = std::span<const int32_t>(prompt).subspan(static_cast<size_t>(res.cached_tokens));
  CallResult r = call_fn ? call_fn(ctx, run) : prefill(ctx, run);
  res.prefill_seconds = seconds_since(t0);

  StopStringMatcher stops(options_.stop_strings);
  for (int i = 0;; ++i) {
    const int32_t tok = sample(ctx, r.logits);
    res.tokens.push_back(tok);
    res.steps.push_back(r.steps);
    const bool is_stop = std::count(stop_ids_.begin(), stop_ids_.end(), tok) > 0;
    std::string piece;
    if (!is_stop && text) piece = stops.push(text->push(tok));
    res.text += piece;
    if (on_token) {
      TokenEvent ev{tok, r.steps, piece, r.logits, r.exit_values};
      if (!on_token(ev)) {
        res.finish_reason = "callback";
        break;
      }
    }
    if (is_stop) {
      res.finish_reason = "stop";
      break;
    }
    if (stops.matched()) {
      res.finish_reason = "stop_string";
      break;
    }
    if (i + 1 >= options_.max_new_tokens || ctx.n_past_ >= context_) {
      res.finish_reason = "length";
      break;
    }
    auto td = std::chrono::steady_clock::now();
    r = call_fn ? call_fn(ctx, std::span<const int32_t>(&tok, 1)) : decode(ctx, tok);
    res.decode_seconds += seconds_since(td);
    ++res.decode_calls;
  }
  if (text && !stops.matched()) {
    std::string rest = stops.push(text->finish());
    if (!stops.matched()) rest += stops.flush();
    res.text += rest;
    if (!rest.empty() && on_token) on_token(TokenEvent{-1, 0, rest, {}, {}});
  }
  res.cache_bytes = ctx.cache_->bytes();
  return res;
}

// ---------------------------------------------------------------------------------------------
// Stop strings

StopStringMatcher::StopStringMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}

std::string StopStringMatcher::push(std::string_view piece) {
  if (matched_) return {};
  const size_t old = text_.size();
  text_.append(piece);
  // The earliest match that ends in the new text.
  size_t cut = std::string::npos;
  for (const std::string& s : stops_) {
    const size_t from = old >= s.size() ? old - s.size() + 1 : 0;
    const size_t at = text_.find(s, from);
    if (at != std::string::npos) cut = std::min(cut, at);
  }
  if (cut != std::string::npos) {
    matched_ = true;
    std::string out = text_.substr(emitted_, cut > emitted_ ? cut - emitted_ : 0);
    emitted_ = text_.size();
    return out;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const std::string& s : stops_)
    for (size_t k = std::min(s.size() - 1, text_.size()); k > hold; --k)
      if (text_.compare(text_.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
  const size_t safe = std::max(emitted_, text_.size() - hold);
  std::string out = text_.substr(emitted_, safe - emitted_);
  emitted_ = safe;
  return out;
}

std::string StopStringMatcher::flush() {
  if (matched_) return {};
  std::string out = text_.substr(emitted_);
  emitted_ = text_.size();
  return out;
}

// ---------------------------------------------------------------------------------------------
// UTF-8

void validate_utf8(std::string_view s, const std::string& what) {
  size_t i = 0;
  auto bad = [&](size_t at) {
    throw Error(what + " is not valid UTF-8 (bad byte 0x" +
                [&] {
                  char b[8];
                  std::snprintf(b, sizeof b, "%02x", static_cast<unsigned char>(s[at]));
                  return std::string(b);
                }() +
                " at byte offset " + std::to_string(at) + ")");
  };
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    int n = 0;
    uint32_t cp = 0;
    if (c < 0x80) { ++i; continue; }
    if (c >= 0xC2 && c <= 0xDF) { n = 1; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { n = 2; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { n = 3; cp = c & 0x07; }
    else bad(i);
    for (int k = 1; k <= n; ++k) {
      if (i + k >= s.size()) bad(i);
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) bad(i + k);
      cp = (cp << 6) | (d & 0x3F);
    }
    // Overlong 3/4-byte forms, surrogates, and code points past U+10FFFF.
    if ((n == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
      bad(i);
    i += static_cast<size_t>(n) + 1;
  }
}

}  // namespace huginn
