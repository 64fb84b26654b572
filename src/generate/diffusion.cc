// The reference's diffusion-forcing sampler (huginn/samplers.h), for a batch of prompts.
// R = window rows of a pass (all sequences), S = one sequence's window, E = n_embd,
// V = vocabulary, I = inner_recurrence, N = --steps, h = headway, W = max_wavefront.
//
// Read from seal-rg/recurrent-pretraining, recpre/raven_modeling_minimal.py at 59e0b69,
// RavenForCausalLM.generate_diffusion_style (ema_embeds=0.1, state_noise_mixing=0.5,
// inner_recurrence=4, num_steps=32, freeze_strategy="latent-diff", headway=1,
// dampened_state_mixer=True, sqrt_mixer=False, continuous_compute=False, exit_t=0.03,
// max_wavefront=128, max_diffusion_steps=4096, full_prefill=True, batch size 1 only):
//  - full_prefill: the prompt runs at N recurrences and its last logits give the first token;
//    frozen = prompt + that token; the window is the frozen sequence's last position (c = its
//    position, F = frozen length = c + 1), with a fresh initial state. Without it the window
//    is the whole prompt from position 0 (refused when longer than W).
//  - one diffusion step over the window [c, c + S): the prelude of the window's current tokens;
//    with ema_embeds a > 0 the core's input is new·(1 - a) + old·a, old = the previous step's
//    mixed inputs of the same positions (positions that were not in the previous window get
//    new·(1 - a) alone); with state_noise_mixing m > 0 each state becomes
//    s·(1 - w) + w·noise (sqrt_mixer: s·sqrt(max(0, 1 - w)) + sqrt(w)·noise), w = m / (1 +
//    recurrences the position has had) when dampened, else m; then I core recurrences with step
//    indices 0 .. I-1 (KV entries of the window written at those indices), then the coda of
//    every row. Row i predicts position c + i + 1; rows from F - 1 - c on give the new tokens.
//  - the sequence becomes frozen + new tokens + (h - 1) random ids; h fresh states (or, with
//    continuous_compute, copies of the window's last h) are appended. When S + h > W the
//    window is cut to W positions: this step advances h' = W - S instead of h (a "standing
//    wave" when 0).
//  - token stability: every position whose token the step left unchanged (frozen ones
//    included) counts one more, cumulatively.
//  - freezing decides k, the new frozen length: latent-diff: the last window position whose
//    |s - s_prev| / |s| < exit_t (s_prev: the same position's state a step before); token-
//    stability: the last position counted more than N / I times; fixed: from step N / I + 1 on
//    (0-based step > N / I), F + h'. Then frozen = sequence[:k], the window starts at k - 1
//    (the last frozen position stays in it) and the cache keeps positions below k - 1; without
//    a freeze the cache drops the window again. The loop runs while fewer than max_new_tokens
//    are frozen, and at most max_diffusion_steps steps.
// Where we differ, and why:
//  - Batches: each sequence has its own window, cache and counters; one core pass carries every
//    sequence's window rows (attention never crosses sequences, matmuls are row-exact), so a
//    prompt's tokens do not depend on the batch it ran in.
//  - latent-diff compares each position with its own previous state. The reference saves the
//    previous states after cutting the window but slices them again by the window's move, so
//    after a freeze it compares position p with p + (move) of the step before.
//  - fixed with a cut window: the reference clears the cache to c + h where the window starts
//    at c + h' (they differ when h' < h, and later steps then run on a shifted cache); here
//    the cache always ends where the window starts. With fixed the window settles at
//    1 + h·(N/I + 1) positions, so W below 1 + h·(N/I + 2) would never advance: refused.
//  - Stop ids: the reference looks for them only after step N and returns every frozen token;
//    here each step's newly frozen tokens are checked and the output ends after the first stop
//    id (as sequential decoding). The output is cut at max_new_tokens (a freeze may pass it).
//  - The h - 1 random placeholder ids are drawn in [0, V) (the reference: [0, 65510)), from a
//    stream seeded by --seed; noise and new states are the generator's seeded initial states
//    (--init-scale; 0 gives zeros, so the noise only shrinks the states).
//  - Tokens are chosen by the sampler chain (greedy: argmax) with the frozen tokens as history;
//    a token's reported steps are the recurrences of the state that predicted it.
//  - latent-acceleration-1/-2 are not offered; the mixer and EMA work on the host (states and
//    prelude outputs go down and up once per step).
#include <algorithm>
#include <cmath>
#include <random>

#include "sampler_access.h"

namespace huginn {

DiffusionOptions::Freeze DiffusionOptions::parse_freeze(const std::string& s) {
  if (s == "latent-diff") return Freeze::kLatentDiff;
  if (s == "token-stability") return Freeze::kTokenStability;
  if (s == "fixed") return Freeze::kFixed;
  throw Error("--freeze-strategy must be latent-diff, token-stability or fixed, got '" + s + "'");
}

std::string DiffusionOptions::freeze_name(Freeze f) {
  switch (f) {
    case Freeze::kLatentDiff: return "latent-diff";
    case Freeze::kTokenStability: return "token-stability";
    case Freeze::kFixed: return "fixed";
  }
  return "?";
}

void DiffusionOptions::validate(const GenerateOptions& g, int steps) const {
  auto need = [](bool ok, const std::string& msg) {
    if (!ok) throw Error(msg);
  };
  need(inner_recurrence >= 1, "--inner-recurrence must be >= 1, got " + std::to_string(inner_recurrence));
  need(headway >= 1, "--headway must be >= 1, got " + std::to_string(headway));
  need(max_wavefront >= 0, "--max-wavefront must be >= 0 (0 = no limit), got " + std::to_string(max_wavefront));
  need(max_diffusion_steps >= 1,
       "--max-diffusion-steps must be >= 1, got " + std::to_string(max_diffusion_steps));
  need(exit_t >= 0.0 && std::isfinite(exit_t), "--exit-t must be a finite number >= 0");
  need(ema_embeds >= 0.0 && ema_embeds < 1.0, "--ema-embeds must be in [0, 1), got " + std::to_string(ema_embeds));
  need(state_noise_mixing >= 0.0 && state_noise_mixing <= 1.0,
       "--state-noise-mixing must be in [0, 1], got " + std::to_string(state_noise_mixing));
  if (freeze_strategy == Freeze::kFixed && max_wavefront > 0) {
    const int settle = 1 + headway * (steps / inner_recurrence + 2);
    need(max_wavefront >= settle,
         "--max-wavefront " + std::to_string(max_wavefront) + " never advances with --freeze-strategy "
         "fixed: the window needs 1 + headway·(steps / inner-recurrence + 2) = " +
         std::to_string(settle) + " positions (or 0 = no limit)");
  }
  need(g.exit.criterion == ExitCriterion::kNone,
       "--decode diffusion freezes by --freeze-strategy: --exit must be none");
  need(g.warm_start == WarmStart::kOff, "--decode diffusion needs --warm-start off");
}

namespace {

using Freeze = DiffusionOptions::Freeze;

struct Seq {
  const SamplerRequest* req = nullptr;
  GenerationContext* ctx = nullptr;
  TokenSink out;                    // the tokens, streamed as they freeze
  int32_t prompt = 0;               // P
  std::vector<int32_t> seq;         // frozen tokens, then the window's guesses
  int32_t frozen = 0;               // F
  int32_t c = 0;                    // window start (= F - 1 after a prefill)
  std::vector<float> s;             // window states [S, E]
  std::vector<float> prev;          // the states a step before, from position c ([S', E])
  std::vector<float> old_e;         // the previous step's mixed prelude outputs, from old_c
  int32_t old_c = -1;               // -1: none yet
  std::vector<int> counter, stable; // per position: recurrences, unchanged-token count
  int step = 0;
  bool done = false;
  std::string reason;
  std::mt19937_64 rng;
  int64_t S(int64_t E) const { return static_cast<int64_t>(s.size()) / E; }
};

struct Diffusion {
  const Generator& g;
  const DiffusionOptions& o;
  SamplerStats& stats;
  ModelPass pass;
  int64_t E, V;

  Diffusion(const Generator& gen, const DiffusionOptions& opt, SamplerStats& st)
      : g(gen), o(opt), stats(st), pass(gen.model(), SamplerAccess::backend(gen)),
        E(gen.model().config().n_embd), V(gen.model().config().vocab_size) {
    pass.set_row_exact(true);
  }
  Backend& be() { return SamplerAccess::backend(g); }

  std::vector<float> draw(Seq& q, int64_t rows) {
    const Tensor t = SamplerAccess::initial_state(g, *q.ctx, rows, SamplerAccess::take_call(*q.ctx));
    return std::vector<float>(t.f32(), t.f32() + rows * E);
  }

  void start(Seq& q, std::span<const int32_t> prompt) {
    GenerationContext& ctx = *q.ctx;
    const size_t room = static_cast<size_t>(g.context_length()) + 1;
    q.counter.assign(room, 0);
    q.stable.assign(room, 0);
    q.prompt = static_cast<int32_t>(prompt.size());
    q.seq.assign(prompt.begin(), prompt.end());
    q.rng.seed(g.options().init_seed ^ 0x9e3779b97f4a7c15ull);
    for (int32_t id : prompt) SamplerAccess::sampler(ctx).accept(id);
    if (!o.full_prefill) {
      if (o.max_wavefront > 0 && q.prompt > o.max_wavefront)
        throw Error("prompt of " + std::to_string(q.prompt) + " tokens does not fit --max-wavefront " +
                    std::to_string(o.max_wavefront) + " without --full-prefill");
      q.frozen = q.prompt;
      q.c = 0;
      q.s = draw(q, q.prompt);
      q.prev = q.s;
      return;
    }
    const CallResult r = o.prefill ? o.prefill(ctx, prompt) : g.prefill(ctx, prompt);
    const int32_t t0 = g.sample(ctx, r.logits);
    if (!q.out.push(t0, r.steps, r.logits)) q.done = true;
    q.seq.push_back(t0);
    q.frozen = q.prompt + 1;
    q.c = q.prompt;
    for (int32_t p = 0; p < q.frozen; ++p) q.counter[static_cast<size_t>(p)] += g.steps();
    q.s = draw(q, 1);
    q.prev = q.s;
    if (q.c >= g.context_length()) q.done = true;  // the prompt filled the context
  }

  // Prelude outputs of the window, mixed with the previous step's (ema_embeds), in e [R, E].
  void ema(std::span<Seq* const> live, const PassRows& rows, Tensor& e) {
    if (o.ema_embeds <= 0.0) return;
    const int64_t R = rows.count();
    Tensor host = Tensor::empty({R, E});
    be().download(e, host.f32());
    const float a = static_cast<float>(o.ema_embeds), keep = 1.0f - a;
    for (size_t k = 0; k < live.size(); ++k) {
      Seq& q = *live[k];
      float* x = host.f32() + rows.starts[k] * E;
      const int64_t S = rows.starts[k + 1] - rows.starts[k];
      // First step: the reference's old embeddings are this step's own (recomputed).
      const std::vector<float> old = q.old_c < 0 ? std::vector<float>(x, x + S * E) : q.old_e;
      const int64_t shift = q.old_c < 0 ? 0 : q.c - q.old_c;
      const int64_t have = static_cast<int64_t>(old.size()) / E - shift;
      for (int64_t i = 0; i < S * E; ++i) x[i] = x[i] * keep;
      for (int64_t i = 0; i < std::min(S, have); ++i)
        for (int64_t j = 0; j < E; ++j) x[i * E + j] += old[static_cast<size_t>((i + shift) * E + j)] * a;
      q.old_e.assign(x, x + S * E);
      q.old_c = q.c;
    }
    Tensor dev = be().upload(host);
    be().copy(dev, e);
  }

  void mix_noise(Seq& q) {
    if (o.state_noise_mixing <= 0.0) return;
    const int64_t S = q.S(E);
    const std::vector<float> noise = draw(q, S);
    for (int64_t i = 0; i < S; ++i) {
      const double w = o.dampened_state_mixer
                           ? o.state_noise_mixing / (1.0 + q.counter[static_cast<size_t>(q.c + i)])
                           : o.state_noise_mixing;
      const float ks = static_cast<float>(o.sqrt_mixer ? std::sqrt(std::max(0.0, 1.0 - w)) : 1.0 - w);
      const float kn = static_cast<float>(o.sqrt_mixer ? std::sqrt(w) : w);
      for (int64_t j = 0; j < E; ++j) {
        float& x = q.s[static_cast<size_t>(i * E + j)];
        x = x * ks + kn * noise[static_cast<size_t>(i * E + j)];
      }
    }
  }

  // The window rows of these sequences, one after another.
  static PassRows window(std::span<Seq* const> live, int64_t E) {
    PassRows rows;
    for (Seq* q : live)
      rows.add(&SamplerAccess::cache(*q->ctx), q->c,
               std::span<const int32_t>(q->seq).subspan(static_cast<size_t>(q->c), static_cast<size_t>(q->S(E))));
    return rows;
  }

  // Between two recurrences of a step: sequences whose request stopped (go_on) leave it at once,
  // their window's KV entries dropped; the others' rows of s and e move into the other pair of
  // buffers (`pair`). False when none is left.
  bool leave_stopped(std::vector<Seq*>& live, PassRows& rows, Tensor& s, Tensor& e, int& pair) {
    std::vector<Seq*> kept;
    for (Seq* q : live) {
      if (q->out.proceed()) {
        kept.push_back(q);
        continue;
      }
      q->done = true;
      SamplerAccess::cache(*q->ctx).drop_from(q->c);
    }
    if (kept.size() == live.size()) return true;
    if (kept.empty()) return false;
    PassRows next = window(kept, E);
    pair ^= 1;
    Tensor s2 = pass.buffer(pair ? 3 : 0, next.count(), E), e2 = pass.buffer(pair ? 4 : 1, next.count(), E);
    for (size_t k = 0, j = 0; k < live.size(); ++k) {
      if (j == kept.size() || live[k] != kept[j]) continue;
      const int64_t a = rows.starts[k], b = rows.starts[k + 1], to = next.starts[j++];
      Tensor sd = s2.rows(to, to + b - a), ed = e2.rows(to, to + b - a);
      be().copy(s.rows(a, b), sd);
      be().copy(e.rows(a, b), ed);
    }
    live = std::move(kept);
    rows = std::move(next);
    s = s2;
    e = e2;
    return true;
  }

  // One diffusion step for every live sequence: the batched pass, then each one's bookkeeping.
  // A request that stops during the step leaves it before the next core recurrence.
  void step(std::vector<Seq*> live) {
    PassRows rows = window(live, E);
    int64_t R = rows.count();
    Tensor e = pass.buffer(1, R, E), s = pass.buffer(0, R, E);
    pass.prelude(rows.ids, rows.rows(), e);
    ema(live, rows, e);
    Tensor host = Tensor::empty({R, E});
    for (size_t k = 0; k < live.size(); ++k) {
      mix_noise(*live[k]);
      std::copy(live[k]->s.begin(), live[k]->s.end(), host.f32() + rows.starts[k] * E);
    }
    Tensor dev = be().upload(host);
    be().copy(dev, s);
    int pair = 0;
    for (int t = 0; t < o.inner_recurrence; ++t) {
      if (t > 0 && !leave_stopped(live, rows, s, e, pair)) return;
      core_step(pass, o.core, s, e, t, rows.rows());
      ++stats.core_passes;
      stats.core_rows += rows.count();
    }
    R = rows.count();
    const Rows r = rows.rows();
    Tensor logits = pass.buffer(2, R, V);
    pass.coda(s, r, logits, nullptr, /*last_only=*/false);
    if (host.numel() != R * E) host = Tensor::empty({R, E});
    be().download(s, host.f32());
    std::vector<float> lg(static_cast<size_t>(V));
    for (size_t k = 0; k < live.size(); ++k) {
      Seq& q = *live[k];
      const int64_t r0 = rows.starts[k], S = rows.starts[k + 1] - r0;
      std::copy(host.f32() + r0 * E, host.f32() + (r0 + S) * E, q.s.begin());
      for (int64_t i = 0; i < S; ++i) q.counter[static_cast<size_t>(q.c + i)] += o.inner_recurrence;
      // New tokens: rows from F - 1 - c on predict positions F .. c + S.
      std::vector<int32_t> fresh;
      for (int64_t i = std::max<int64_t>(q.frozen - 1 - q.c, 0); i < S; ++i) {
        be().download(logits.rows(r0 + i, r0 + i + 1), lg.data());
        fresh.push_back(SamplerAccess::sampler(*q.ctx).sample(lg));
      }
      advance(q, fresh);
      ++stats.rounds;
    }
  }

  // After the pass: new tokens in, window grown (and cut), freeze, cache trimmed.
  void advance(Seq& q, const std::vector<int32_t>& fresh) {
    const int64_t S = q.S(E);
    const int32_t F = q.frozen, c = q.c;
    // Token stability over the sequence as it was: positions below F always match.
    for (size_t p = 0; p < q.seq.size(); ++p) {
      const int32_t edit = p < static_cast<size_t>(F) ? q.seq[p] : fresh[p - static_cast<size_t>(F)];
      if (q.seq[p] == edit) ++q.stable[p];
    }
    q.seq.resize(static_cast<size_t>(F));
    q.seq.insert(q.seq.end(), fresh.begin(), fresh.end());
    std::uniform_int_distribution<int32_t> any(0, static_cast<int32_t>(V - 1));
    for (int i = 1; i < o.headway; ++i) q.seq.push_back(any(q.rng));
    // New positions' states.
    std::vector<float> add;
    if (o.continuous_compute && S >= o.headway) add.assign(q.s.end() - o.headway * E, q.s.end());
    else add = draw(q, o.headway);
    q.s.insert(q.s.end(), add.begin(), add.end());
    int64_t hs = o.headway;  // h': positions this step adds
    int64_t W = o.max_wavefront > 0 ? o.max_wavefront : INT64_MAX;
    W = std::min<int64_t>(W, g.context_length() - c);
    if (S + o.headway > W) {
      hs = W - S;
      q.s.resize(static_cast<size_t>(W * E));
      q.seq.resize(static_cast<size_t>(c + W));
      ++stats.standing_waves;
    }
    int32_t k = -1;  // new frozen length, -1: none
    if (o.freeze_strategy == Freeze::kLatentDiff) {
      const int64_t n = std::min<int64_t>(static_cast<int64_t>(q.prev.size()) / E, q.S(E));
      for (int64_t i = 0; i < n; ++i) {
        double d = 0, m = 0;
        for (int64_t j = 0; j < E; ++j) {
          const double x = q.s[static_cast<size_t>(i * E + j)], y = q.prev[static_cast<size_t>(i * E + j)];
          d += (x - y) * (x - y);
          m += x * x;
        }
        if (std::sqrt(d) / std::sqrt(m) < o.exit_t) k = c + static_cast<int32_t>(i) + 1;
      }
    } else if (o.freeze_strategy == Freeze::kTokenStability) {
      const int limit = g.steps() / o.inner_recurrence;
      for (size_t p = 0; p < q.stable.size(); ++p)
        if (q.stable[p] > limit) k = static_cast<int32_t>(p) + 1;
    } else if (q.step > g.steps() / o.inner_recurrence) {
      k = F + static_cast<int32_t>(hs);
    }
    KVCache& cache = SamplerAccess::cache(*q.ctx);
    if (k > F) {
      // Out at once; the end of the request (stop id, stop string, length, callback) ends it.
      for (int32_t p = F; p < k && !q.done; ++p) {
        const int32_t id = q.seq[static_cast<size_t>(p)];
        q.done = !q.out.push(id, q.counter[static_cast<size_t>(p - 1)], {});
        SamplerAccess::sampler(*q.ctx).accept(id);
      }
      q.s.erase(q.s.begin(), q.s.begin() + static_cast<ptrdiff_t>((k - 1 - c) * E));
      q.frozen = k;
      q.c = k - 1;
    }
    cache.drop_from(q.c);
    q.prev = q.s;
    ++q.step;
    if (q.frozen - q.prompt >= g.options().max_new_tokens) q.done = true;
    if (!q.done && q.step >= o.max_diffusion_steps) {
      q.done = true;
      q.reason = "diffusion_steps";
    }
    if (!q.done && q.c + q.S(E) >= g.context_length()) q.done = true;  // no room for a new position
  }
};

}  // namespace

std::vector<GenerateResult> generate_diffusion(const Generator& g,
                                               std::span<const SamplerRequest> requests,
                                               const DiffusionOptions& o, SamplerStats* stats_out) {
  o.validate(g.options(), g.steps());
  SamplerStats stats;
  std::vector<std::vector<int32_t>> prompts;
  for (const SamplerRequest& r : requests) prompts.push_back(g.prepare_prompt(r.prompt));
  Diffusion d(g, o, stats);
  std::vector<Seq> seqs(requests.size());
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < requests.size(); ++i) {
    seqs[i].req = &requests[i];
    seqs[i].ctx = requests[i].ctx;
    HUGINN_ASSERT(seqs[i].ctx->n_past() == 0, "generate_diffusion: a fresh context per request");
    seqs[i].out.begin(g, requests[i], static_cast<int32_t>(prompts[i].size()));
    seqs[i].done = !seqs[i].out.proceed();
    if (!seqs[i].done) d.start(seqs[i], prompts[i]);
  }
  const auto t1 = std::chrono::steady_clock::now();
  for (;;) {
    std::vector<Seq*> live;
    for (Seq& q : seqs) {
      if (!q.done) q.done = !q.out.proceed();
      if (!q.done) live.push_back(&q);
    }
    if (live.empty()) break;
    d.step(live);
  }
  const auto t2 = std::chrono::steady_clock::now();
  std::vector<GenerateResult> out;
  const double prefill_s = seconds_between(t0, t1) / static_cast<double>(seqs.size());
  for (Seq& q : seqs) out.push_back(q.out.close(q.reason, prefill_s, seconds_between(t1, t2), stats));
  if (stats_out) *stats_out = stats;
  return out;
}

}  // namespace huginn
