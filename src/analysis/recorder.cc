// Recording latent trajectories: prelude once, then per recurrence the core step, a host copy of
// the state, and (with decode) the coda on that state — the logit lens. T = tokens, R = steps,
// E = n_embd, V = vocabulary, N = extra seeds.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <string>

#include "huginn/host_math.h"
#include "huginn/trajectory.h"

#ifdef HUGINN_ANALYSIS_EXIT_POLICIES
#include "huginn/exit.h"
#endif

namespace huginn {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string human_bytes(size_t b) {
  char buf[64];
  if (b >= (size_t(1) << 30))
    std::snprintf(buf, sizeof buf, "%.2f GiB", double(b) / double(size_t(1) << 30));
  else
    std::snprintf(buf, sizeof buf, "%.1f MiB", double(b) / double(1 << 20));
  return buf;
}

std::vector<int> kept_iterations(int R, int every) {
  std::vector<int> its;
  for (int t = 0; t <= R; t += every) its.push_back(t);
  if (its.back() != R) its.push_back(R);
  return its;
}

int64_t kept_token_count(int64_t T, const TraceOptions& o) {
  return o.record_tokens.empty() ? T : static_cast<int64_t>(o.record_tokens.size());
}

double norm_diff(const float* a, const float* b, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(a[i]) - double(b[i]);
    s += d * d;
  }
  return std::sqrt(s);
}

double norm(const float* a, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += double(a[i]) * double(a[i]);
  return std::sqrt(s);
}

// Keeps "state.<t>.adapter_out" of the main trajectory into the adapter buffer.
class AdapterSink : public TraceSink {
 public:
  AdapterSink(Trajectory& tr, int64_t E) : tr_(tr), E_(E) {}
  int current = 0;  // the iteration being run (1-based)
  bool wants(const std::string& name) const override {
    return name == "state." + std::to_string(current) + ".adapter_out";
  }
  void record(const std::string&, const Tensor& host) override {
    const int ki = tr_.kept_iteration(current);
    if (ki < 0) return;
    const int64_t Ik = static_cast<int64_t>(tr_.iteration_index.size());
    for (size_t k = 0; k < tr_.token_index.size(); ++k) {
      float* dst = tr_.adapter_out.f32() + (int64_t(k) * Ik + ki) * E_;
      std::copy_n(host.row(tr_.token_index[k]), E_, dst);
    }
  }

 private:
  Trajectory& tr_;
  int64_t E_;
};

// Exit criteria, one evaluator per criterion and token.
class ExitEvaluator {
 public:
  virtual ~ExitEvaluator() = default;
  virtual bool needs_logits() const = 0;
  virtual std::string spec() const = 0;
  // Called with token i's initial state row before the first recurrence.
  virtual void begin(int64_t i, std::span<const float> s0, int64_t V) = 0;
  // Returns true when the criterion fires for token i at this step.
  virtual bool observe(int64_t i, int step, std::span<const float> logits,
                       std::span<const float> state) = 0;
};

#ifdef HUGINN_ANALYSIS_EXIT_POLICIES
// The generation layer's own policies, each token its own one-row call.
class PolicyEvaluator : public ExitEvaluator {
 public:
  PolicyEvaluator(const std::string& text, int64_t T) : spec_(ExitSpec::parse(text)) {
    if (spec_.criterion == ExitCriterion::kNone)
      throw Error("trace: exit criterion 'none' never fires; name a criterion (e.g. kl)");
    auto proto = make_exit_policy(spec_);
    for (int64_t i = 0; i < T; ++i) policies_.push_back(proto->clone());
  }
  bool needs_logits() const override { return policies_.front()->uses_logits(); }
  std::string spec() const override { return spec_.to_string(); }
  void begin(int64_t i, std::span<const float> s0, int64_t V) override {
    policies_[i]->begin(s0, 1, static_cast<int64_t>(s0.size()), V);
  }
  bool observe(int64_t i, int step, std::span<const float> logits,
               std::span<const float> state) override {
    ExitPolicy& p = *policies_[i];
    ExitObservation o;
    o.step = step;
    if (p.uses_logits()) o.logits = logits;
    if (p.uses_state()) o.state = state;
    o.rows = 1;
    o.width = static_cast<int64_t>(state.size());
    return p.should_exit(p.measure(o));
  }

 private:
  ExitSpec spec_;
  std::vector<std::unique_ptr<ExitPolicy>> policies_;
};
#endif

// Without the generation layer: "kl[:threshold]" only, read off the kl grid afterwards.
[[maybe_unused]] double parse_kl_only(const std::string& text) {
  if (text == "kl" || text == "kl:auto") return 1e-3;
  if (text.rfind("kl:", 0) == 0) {
    char* end = nullptr;
    const double v = std::strtod(text.c_str() + 3, &end);
    if (end && *end == '\0' && std::isfinite(v) && v >= 0) return v;
    throw Error("trace: exit '" + text + "': threshold must be a non-negative number");
  }
  throw Error("trace: exit criterion '" + text +
              "' needs the generation layer (huginn_generate), which this build lacks; only "
              "kl[:threshold] is available");
}

std::string kl_spec_text(double thr) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "kl:%g", thr);
  return buf;
}

}  // namespace

Grid::Grid(int64_t r, int64_t c, double fill)
    : rows(r), cols(c), v(static_cast<size_t>(r * c), fill) {}

int64_t Trajectory::kept_token(int64_t i) const {
  for (size_t k = 0; k < token_index.size(); ++k)
    if (token_index[k] == i) return static_cast<int64_t>(k);
  return -1;
}

int Trajectory::kept_iteration(int t) const {
  auto it = std::lower_bound(iteration_index.begin(), iteration_index.end(), t);
  return (it != iteration_index.end() && *it == t) ? int(it - iteration_index.begin()) : -1;
}

Tensor Trajectory::token_states(int64_t i) const {
  const int64_t k = kept_token(i);
  HUGINN_ASSERT(k >= 0, "token_states: token not kept");
  const int64_t Ik = static_cast<int64_t>(iteration_index.size());
  return states.rows(k, k + 1).reshape({Ik, n_embd});
}

bool trajectory_uses_exit_policies() {
#ifdef HUGINN_ANALYSIS_EXIT_POLICIES
  return true;
#else
  return false;
#endif
}

std::vector<int> kl_exit_steps(const Grid& kl, double threshold) {
  std::vector<int> steps(static_cast<size_t>(kl.rows), 0);
  for (int64_t i = 0; i < kl.rows; ++i)
    for (int64_t t = 1; t < kl.cols; ++t)
      if (kl.at(i, t) < threshold) {  // NaN compares false: never fires
        steps[i] = static_cast<int>(t);
        break;
      }
  return steps;
}

size_t trace_memory_bytes(const ModelConfig& c, int64_t T, const TraceOptions& o) {
  const size_t E = size_t(c.n_embd), V = size_t(c.vocab_size), Tz = size_t(T);
  const int R = std::max(o.steps, 1);
  const size_t Ik = kept_iterations(R, std::max(o.record_every, 1)).size();
  const size_t Tk = size_t(kept_token_count(T, o));
  size_t b = Tk * Ik * E * 4 * (o.record_adapter ? 2 : 1);
  b += Tz * E * 4 * 3;                         // host state now / before, latent
  if (o.decode) b += Tz * V * (4 * 2 + 8);     // logits on the backend and host, prev log-probs
  const size_t policies = o.exits.size();
  b += policies * Tz * V * 8 * 2;              // a logit policy's memory per token (prev, cur)
  b += size_t(std::max(o.extra_seeds, 0)) * Tz * E * 4 * 3;  // backend + host states, finals
  b += Tz * size_t(R + 1) * (8 * 5 + 4);       // grids and top-1
  return b;
}

void validate_trace_options(const ModelConfig& c, int64_t T, const TraceOptions& o) {
  if (T < 1) throw Error("trace: no tokens to trace");
  if (o.steps < 1)
    throw Error("trace: --steps must be at least 1 (recurrences to record), got " +
                std::to_string(o.steps));
  if (o.record_every < 1)
    throw Error("trace: --record-every must be at least 1, got " + std::to_string(o.record_every));
  if (o.extra_seeds < 0)
    throw Error("trace: --seeds must be >= 0, got " + std::to_string(o.extra_seeds));
  if (o.extra_seeds > 0 && !(o.seed_scale > 0))
    throw Error("trace: --seeds needs a positive initial-state scale for the extra seeds");
  for (int64_t i : o.record_tokens)
    if (i < 0 || i >= T)
      throw Error("trace: --record-tokens names token " + std::to_string(i) +
                  ", outside the " + std::to_string(T) + " tokens [0, " + std::to_string(T) + ")");
  const size_t need = trace_memory_bytes(c, T, o);
  if (o.memory_limit > 0 && need > o.memory_limit) {
    const size_t Ik = kept_iterations(o.steps, o.record_every).size();
    throw Error("trace: recording " + std::to_string(kept_token_count(T, o)) + " tokens x " +
                std::to_string(Ik) + " iterations x " + std::to_string(c.n_embd) +
                " floats (plus per-iteration logits) needs " + human_bytes(need) +
                ", over the memory limit of " + human_bytes(o.memory_limit) +
                "; record a subset with --record-tokens (e.g. 0-15) and/or --record-every K, "
                "skip the logit lens with --no-decode, or raise --memory-limit");
  }
}

Trajectory record_trajectory(Runner& runner, std::span<const int32_t> ids,
                             const TraceOptions& o) {
  const ModelConfig& c = runner.model().config();
  Backend& be = runner.backend();
  const int64_t T = static_cast<int64_t>(ids.size()), E = c.n_embd, V = c.vocab_size;
  validate_trace_options(c, T, o);
  const int R = o.steps;

  Trajectory tr;
  tr.ids.assign(ids.begin(), ids.end());
  tr.steps = R;
  tr.n_embd = E;
  if (o.record_tokens.empty()) {
    for (int64_t i = 0; i < T; ++i) tr.token_index.push_back(i);
  } else {
    tr.token_index = o.record_tokens;
  }
  tr.iteration_index = kept_iterations(R, o.record_every);
  const int64_t Tk = static_cast<int64_t>(tr.token_index.size());
  const int64_t Ik = static_cast<int64_t>(tr.iteration_index.size());
  tr.states = Tensor::empty({Tk, Ik, E});
  if (o.record_adapter) tr.adapter_out = Tensor::empty({Tk, Ik, E});
  tr.rel_change = Grid(T, R + 1, kNaN);
  tr.dist_to_final = Grid(T, R + 1, kNaN);
  tr.kl = Grid(T, R + 1, kNaN);
  tr.entropy = Grid(T, R + 1, kNaN);
  tr.top1.assign(static_cast<size_t>(T), std::vector<int32_t>(static_cast<size_t>(R + 1), -1));

  // Exit criteria.
  std::vector<std::unique_ptr<ExitEvaluator>> evals;
  std::vector<double> kl_only;  // thresholds read off the kl grid (no generation layer)
  for (const std::string& text : o.exits) {
#ifdef HUGINN_ANALYSIS_EXIT_POLICIES
    evals.push_back(std::make_unique<PolicyEvaluator>(text, T));
    if (evals.back()->needs_logits() && !o.decode)
      throw Error("trace: exit criterion '" + text + "' needs the per-iteration logits; drop "
                  "--no-decode or choose latent-diff / cosine");
#else
    kl_only.push_back(parse_kl_only(text));
    if (!o.decode)
      throw Error("trace: exit criterion '" + text + "' needs the per-iteration logits; drop "
                  "--no-decode");
#endif
  }

  std::vector<int32_t> positions(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) positions[i] = static_cast<int32_t>(i);
  const Tensor e = runner.prelude(ids, positions, nullptr);

  Tensor s = be.upload(make_initial_state(c, T, o.init));
  Tensor prev = Tensor::empty({T, E}), cur = Tensor::empty({T, E});
  be.download(s, prev.f32());

  // Extra seeds for path independence, iterated in lockstep with the main state.
  const int N = o.extra_seeds;
  std::vector<Tensor> seed_dev;
  std::vector<Tensor> seed_host;
  for (int j = 0; j < N; ++j) {
    InitState init;
    init.scale = o.seed_scale;
    init.seed = o.init.seed + uint64_t(j) + 1;
    seed_dev.push_back(be.upload(make_initial_state(c, T, init)));
    seed_host.push_back(Tensor::empty({T, E}));
    be.download(seed_dev.back(), seed_host.back().f32());
  }
  tr.paths.seeds = N;
  tr.paths.spread = Grid(T, R + 1, kNaN);
  auto spread_at = [&](int t, const Tensor& main_host) {
    if (N == 0) return;
    for (int64_t i = 0; i < T; ++i) {
      std::vector<const float*> rows = {main_host.row(i)};
      for (const Tensor& h : seed_host) rows.push_back(h.row(i));
      double dist = 0.0, nrm = 0.0;
      int pairs = 0;
      for (size_t a = 0; a < rows.size(); ++a) {
        nrm += norm(rows[a], E);
        for (size_t b = a + 1; b < rows.size(); ++b, ++pairs) dist += norm_diff(rows[a], rows[b], E);
      }
      nrm /= double(rows.size());
      tr.paths.spread.at(i, t) = nrm > 0 ? (dist / pairs) / nrm : 0.0;
    }
  };

  auto keep_states = [&](int t, const Tensor& host) {
    const int ki = tr.kept_iteration(t);
    if (ki < 0) return;
    for (int64_t k = 0; k < Tk; ++k)
      std::copy_n(host.row(tr.token_index[k]), E, tr.states.f32() + (k * Ik + ki) * E);
  };
  keep_states(0, prev);
  spread_at(0, prev);
  for (auto& ev : evals)
    for (int64_t i = 0; i < T; ++i) ev->begin(i, {prev.row(i), size_t(E)}, V);
  std::vector<std::vector<int>> fired(evals.size(), std::vector<int>(size_t(T), 0));

  Tensor logits_dev = be.alloc({T, V}), latent_dev = be.alloc({T, E});
  Tensor logits_host;
  std::vector<double> prev_lp, cur_lp(static_cast<size_t>(V));
  if (o.decode) {
    logits_host = Tensor::empty({T, V});
    prev_lp.assign(static_cast<size_t>(T * V), std::log(1.0 / double(V)));
  }

  AdapterSink sink(tr, E);
  for (int t = 1; t <= R; ++t) {
    if (o.record_adapter) {
      sink.current = t;
      runner.set_trace(&sink);
    }
    runner.core_step(s, e, t - 1, positions, nullptr);
    runner.set_trace(nullptr);
    be.download(s, cur.f32());
    keep_states(t, cur);
    for (int64_t i = 0; i < T; ++i) {
      const double n = norm(cur.row(i), E);
      tr.rel_change.at(i, t) = norm_diff(cur.row(i), prev.row(i), E) / n;
    }
    if (o.decode || t == R) {
      runner.coda(s, positions, nullptr, logits_dev, t == R ? &latent_dev : nullptr, false);
    }
    if (o.decode) {
      be.download(logits_dev, logits_host.f32());
      for (int64_t i = 0; i < T; ++i) {
        std::span<const float> row(logits_host.row(i), size_t(V));
        log_softmax_f64(row, cur_lp);
        double* pl = prev_lp.data() + i * V;
        tr.kl.at(i, t) = kl_divergence(std::span<const double>(pl, size_t(V)), cur_lp);
        tr.entropy.at(i, t) = entropy(cur_lp);
        tr.top1[i][t] = static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
        std::copy(cur_lp.begin(), cur_lp.end(), pl);
      }
    }
    for (size_t k = 0; k < evals.size(); ++k)
      for (int64_t i = 0; i < T; ++i) {
        if (fired[k][i]) continue;
        std::span<const float> lg;
        if (o.decode) lg = {logits_host.row(i), size_t(V)};
        if (evals[k]->observe(i, t, lg, {cur.row(i), size_t(E)})) fired[k][i] = t;
      }
    for (int j = 0; j < N; ++j) {
      runner.core_step(seed_dev[j], e, t - 1, positions, nullptr);
      be.download(seed_dev[j], seed_host[j].f32());
    }
    spread_at(t, cur);
    std::swap(prev, cur);
  }
  // prev now holds s_R.
  tr.latent = Tensor::empty({T, E});
  be.download(latent_dev, tr.latent.f32());
  tr.logits = Tensor::empty({T, V});
  be.download(logits_dev, tr.logits.f32());

  for (int64_t i = 0; i < T; ++i) {
    const double nf = norm(prev.row(i), E);
    tr.dist_to_final.at(i, R) = 0.0;
    const int64_t k = tr.kept_token(i);
    if (k < 0) continue;
    for (int64_t ki = 0; ki < Ik; ++ki)
      tr.dist_to_final.at(i, tr.iteration_index[ki]) =
          norm_diff(tr.states.f32() + (k * Ik + ki) * E, prev.row(i), E) / nf;
  }
  for (size_t k = 0; k < evals.size(); ++k) tr.exits.push_back({evals[k]->spec(), fired[k]});
  for (double thr : kl_only) tr.exits.push_back({kl_spec_text(thr), kl_exit_steps(tr.kl, thr)});

  tr.paths.final_states = Tensor::empty({N + 1, T, E});
  std::copy_n(prev.f32(), T * E, tr.paths.final_states.f32());
  for (int j = 0; j < N; ++j)
    std::copy_n(seed_host[j].f32(), T * E, tr.paths.final_states.f32() + (j + 1) * T * E);
  return tr;
}

}  // namespace huginn
