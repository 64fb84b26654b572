// Latent trajectories: how each token's state moves across core recurrences (paper §7).
// Record the states s_0..s_R of every token, decode every iteration through the coda (the
// "logit lens"), measure per-token statistics, and analyse each trajectory: PCA, a
// converging / orbiting / drifting classification, and path independence across initial states.
//
// Shape legend: T = tokens, R = recurrences (steps), E = n_embd, V = vocabulary, N = extra seeds.
// Iteration index t = 0..R: t = 0 is the initial state, t is the raw core state after t
// recurrences (the golden trace's "state.t", before ln_f). Every per-token grid is [T, R+1],
// row-major, NaN (or -1 for ids) where a value is undefined (t = 0 for anything that needs a
// previous state or a decode).
//
// Metrics at iteration t >= 1 of token i:
//   rel_change     ‖s_t − s_{t−1}‖ / ‖s_t‖                        (the latent-diff exit's value)
//   dist_to_final  ‖s_t − s_R‖ / ‖s_R‖                             (t = 0 included)
//   kl             KL(p_{t−1} ‖ p_t) = Σ_v p_{t−1}(v) (log p_{t−1}(v) − log p_t(v)), p_0 uniform,
//                  p_t = softmax of token i's logits decoded from s_t — exactly the value the
//                  KL exit rule (golden README item 15) computes when token i is the last
//                  position of a call
//   entropy        −Σ_v p_t(v) log p_t(v)   (nats)
//   top1           argmax_v logits_t(v), ties to the lowest id
//   exit step      per exit criterion: the first t at which the generation's ExitPolicy would
//                  fire for this token fed alone (as every decoded token is), 0 if it never
//                  fires within R
//
// Logits of iteration t decode the whole sequence's states s_t through the coda, uncached
// (Runner::coda with last_only = false), as the reference decodes intermediate states; the
// coda's attention sees the same iteration's states of earlier tokens.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "huginn/forward.h"
#include "huginn/tensor.h"

namespace huginn {

// A dense [rows, cols] grid of doubles (row-major).
struct Grid {
  int64_t rows = 0, cols = 0;
  std::vector<double> v;
  Grid() = default;
  Grid(int64_t r, int64_t c, double fill);
  double& at(int64_t r, int64_t c) { return v[static_cast<size_t>(r * cols + c)]; }
  double at(int64_t r, int64_t c) const { return v[static_cast<size_t>(r * cols + c)]; }
  std::span<const double> row(int64_t r) const { return {v.data() + r * cols, size_t(cols)}; }
};

// ---------------------------------------------------------------------------------------------
// Recording

struct TraceOptions {
  int steps = 0;  // R >= 1
  InitState init;  // the main trajectory's initial state
  // Which states to keep. Metrics are computed for every token and iteration regardless
  // (dist_to_final only where the state was kept, and for every token at t = R).
  std::vector<int64_t> record_tokens;  // token indices to keep (empty = all)
  int record_every = 1;                // keep t = 0, k, 2k, ... and always R
  bool record_adapter = false;         // also keep the adapter output of each recurrence
  bool decode = true;                  // logit lens every iteration (kl, entropy, top1, exits)
  // Exit criteria to evaluate, as ExitSpec::parse text ("kl", "kl:1e-3", "latent-diff:auto").
  // Without the generation layer only "kl[:thr]" is available (see kl_exit_steps).
  std::vector<std::string> exits = {"kl"};
  // Path independence: N extra initial states, truncated normal with `seed_scale` and seeds
  // init.seed + 1 .. init.seed + N, iterated alongside the main trajectory (same e).
  int extra_seeds = 0;
  double seed_scale = 1.0;
  // Bytes the recording may hold (kept states, per-iteration logits, seed states); 0 = no limit.
  size_t memory_limit = size_t(2) << 30;
};

// What recording the options would hold for T tokens: kept states, adapter outputs, the
// per-iteration logits and log-probabilities, the extra seeds' states.
size_t trace_memory_bytes(const ModelConfig& config, int64_t T, const TraceOptions& options);

// Throws huginn::Error naming the flag for steps < 1, record_every < 1, record_tokens outside
// [0, T), extra_seeds < 0, and for a recording larger than memory_limit (the message gives the
// size and how to record a subset).
void validate_trace_options(const ModelConfig& config, int64_t T, const TraceOptions& options);

// Which exit criteria fire when: filled per token.
struct ExitSteps {
  std::string spec;        // "kl:0.001"
  std::vector<int> step;   // [T]: first t that fires, 0 = never within R
};

struct PathIndependence {
  int seeds = 0;  // N
  // [T, R+1]: mean pairwise distance between the N+1 trajectories (main + seeds) at t, over the
  // mean state norm at t. Small at R: the end state does not depend on where it started.
  Grid spread;
  Tensor final_states;  // [N+1, T, E] raw s_R of main (row 0) and each seed
};

struct Trajectory {
  std::vector<int32_t> ids;              // [T]
  int steps = 0;                          // R
  int64_t n_embd = 0;
  std::vector<int64_t> token_index;      // kept tokens (Tk)
  std::vector<int> iteration_index;      // kept iterations (Ik), ascending, ends with R
  Tensor states;                          // [Tk, Ik, E] raw states
  Tensor adapter_out;                     // [Tk, Ik, E] (iteration 0: zeros) when recorded
  Tensor latent;                          // [T, E] ln_f(s_R): equals Runner::forward's latent
  Tensor logits;                          // [T, V] decoded from s_R: equals forward's logits
  Grid rel_change, dist_to_final, kl, entropy;  // [T, R+1] (kl, entropy: NaN without decode)
  std::vector<std::vector<int32_t>> top1;       // [T][R+1], -1 where undefined
  std::vector<ExitSteps> exits;
  PathIndependence paths;

  int64_t n_tokens() const { return static_cast<int64_t>(ids.size()); }
  // Position of token i in states / of iteration t in the kept iterations; -1 when not kept.
  int64_t kept_token(int64_t i) const;
  int kept_iteration(int t) const;
  // Token i's kept states as a [Ik, E] view into `states` (token must be kept).
  Tensor token_states(int64_t i) const;
};

// Runs prelude once, then for t = 1..R: core_step and (with decode) the coda on s_t.
// Throws huginn::Error for invalid options (validate_trace_options) or ids.
Trajectory record_trajectory(Runner& runner, std::span<const int32_t> ids,
                             const TraceOptions& options);

// The KL exit rule alone (golden README item 15) applied per token to a kl grid: the first t
// with kl < threshold (strict), 0 if none. Used for "kl" when the generation layer's
// ExitPolicy objects are not built in; with them, record_trajectory uses the policies.
std::vector<int> kl_exit_steps(const Grid& kl, double threshold);

// True when record_trajectory evaluates exits through the generation layer's ExitPolicy.
bool trajectory_uses_exit_policies();

// ---------------------------------------------------------------------------------------------
// Metrics from saved states (the same definitions as above, recomputed in double)

// states: [n, E] rows s_0..s_{n-1} of one token. Returns rel_change [n] (NaN at 0) and
// dist_to_final [n].
struct StateMetrics {
  std::vector<double> rel_change, dist_to_final;
};
StateMetrics state_metrics(const Tensor& states);

// KL(p ‖ q) of two logit rows, through log-softmax in double; entropy of softmax(logits).
double kl_from_logits(std::span<const float> p_logits, std::span<const float> q_logits);
double entropy_from_logits(std::span<const float> logits);

// ---------------------------------------------------------------------------------------------
// PCA

// Eigen-decomposition of a symmetric n x n matrix (row-major) by cyclic Jacobi rotations.
// values descending; vectors[k * n + j] = component j of eigenvector k (unit length).
struct SymmetricEigen {
  std::vector<double> values, vectors;
};
SymmetricEigen symmetric_eigen(std::vector<double> a, int n);

// PCA of n points in `dim` dimensions (rows of x, [n, dim]), centred on their mean. Computed on
// the smaller of the covariance (dim x dim) and the Gram matrix (n x n) — for a trajectory
// n = R+1 is far below E. variance[k] = eigenvalue of the covariance (divisor n − 1, or 1 for
// n = 1); projection[i * k + j] = (x_i − mean) · component_j.
struct Pca {
  int k = 0;
  int64_t dim = 0, n = 0;
  std::vector<double> mean;         // [dim]
  std::vector<double> components;   // [k, dim], orthonormal rows
  std::vector<double> variance;     // [k], descending
  std::vector<double> projection;   // [n, k]
  double total_variance = 0.0;      // trace of the covariance
  double explained(int j) const { return total_variance > 0 ? variance[j] / total_variance : 0; }
};
Pca pca(const Tensor& x, int k);

// ---------------------------------------------------------------------------------------------
// Classification
//
// With the tail window W = max(min_window, round(window_fraction · R)) iterations (capped at R):
//   tail_change  median of rel_change over t = R−W+1 .. R
//   contraction  the per-iteration factor by which the step ‖s_t − s_{t−1}‖ shrinks across the
//                window: (mean of its last m steps / mean of its first m steps)^(1/(W−m)),
//                m = clamp(W/2, 1, 2)  (< 1: the steps shrink; ~1: they keep their size)
//   straightness ‖s_R − s_{R−W}‖ / Σ_{t=R−W+1..R} ‖s_t − s_{t−1}‖  (1: a straight line, ~0: a loop)
//   return lag   the k in [2, W] minimising ‖s_R − s_{R−k}‖ (the orbit's period estimate)
// Rule, in order:
//   converging  tail_change < converge_tol (the state has (nearly) stopped moving), or
//               contraction < converge_contraction (still moving, but every step is at least
//               10% shorter than the last, by default: a spiral into a fixed point, not an orbit)
//   drifting    straightness >= drift_straightness (it keeps moving in one direction)
//   orbiting    otherwise (it keeps moving but comes back near where it was: a loop)
// Fewer than 2 recurrences: "undetermined".
enum class TrajectoryClass { kConverging, kOrbiting, kDrifting, kUndetermined };
const char* trajectory_class_name(TrajectoryClass c);

struct ClassifyOptions {
  double converge_tol = 0.01;
  double converge_contraction = 0.9;
  double drift_straightness = 0.5;
  int min_window = 4;
  double window_fraction = 0.25;
};

struct Classification {
  TrajectoryClass cls = TrajectoryClass::kUndetermined;
  int window = 0;
  double tail_change = 0.0, contraction = 0.0, straightness = 0.0;
  int return_lag = 0;          // 0 when the window is below 2
  double return_distance = 0;  // ‖s_R − s_{R−lag}‖ / ‖s_R‖
};

// states: [R+1, E] rows s_0..s_R of one token (every iteration).
Classification classify_trajectory(const Tensor& states, const ClassifyOptions& options = {});

// ---------------------------------------------------------------------------------------------
// Analysis of a recorded trajectory and its outputs

// One kept token: its classification (on its kept iterations) and the PCA of its trajectory.
struct TokenAnalysis {
  int64_t token = 0;
  Classification cls;
  Pca pca;
};
std::vector<TokenAnalysis> analyse_trajectory(const Trajectory& tr, int pca_components = 4,
                                              const ClassifyOptions& options = {});

// Creates `dir` if needed and checks that a file can be created in it. Throws huginn::Error
// naming the directory (and the reason) otherwise. Call before long work.
void ensure_output_dir(const std::string& dir);

struct TraceOutputOptions {
  std::vector<std::string> token_text;    // a label per token (e.g. decoded text); optional
  std::vector<std::pair<std::string, std::string>> settings;  // echoed into summary.json
  bool plots = true;
  std::vector<std::string> formats = {"png", "svg"};
  std::vector<int64_t> plot_tokens;       // PCA panels (kept tokens); empty = up to 6 spread out
};

// Writes, atomically, into `dir`:
//   trajectory.safetensors  states [Tk, Ik, E], adapter_out (if recorded), latent [T, E],
//                           logits [T, V], input_ids, token_index, iteration_index (I64),
//                           metrics.{rel_change,dist_to_final,kl,entropy} [T, R+1] F32,
//                           metrics.top1 [T, R+1] I64, exit.<criterion> [T] I64,
//                           pca.projection [Tk, Ik, k], pca.explained [Tk, k],
//                           seeds.final_states [N+1, T, E], seeds.spread [T, R+1] (with seeds)
//   summary.json            settings, per token: id, label, class and its numbers, exit steps,
//                           final top-1, PCA explained variance, final seed spread; class counts
//   pca.{png,svg}           PC1 vs PC2 of selected tokens' trajectories (start ●, end ■)
//   convergence.{png,svg}   rel_change over iterations, one line per token (log scale)
//   heatmap.{png,svg}       tokens x iterations of rel_change, the first exit criterion's
//                           iteration marked per token
// Returns the paths written.
std::vector<std::string> write_trace_outputs(const std::string& dir, const Trajectory& tr,
                                             const std::vector<TokenAnalysis>& analysis,
                                             const TraceOutputOptions& options);

}  // namespace huginn
