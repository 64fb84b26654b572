// Training: reference initialisation, AdamW, learning-rate schedules, gradient clipping,
// checkpoints, and the training loop behind `huginn train` / `huginn init`.
//
// Determinism: every random draw of a run (initial weights, windows, iteration counts, initial
// states) is a pure function of the seed and the step, so a checkpoint needs only the step to
// resume its random streams, and a resumed run is bit-identical to a straight one with the same
// thread count.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "huginn/backward.h"
#include "huginn/config.h"
#include "huginn/model.h"

namespace huginn {

class Communicator;
class ThreadPool;

// Writes a freshly initialised checkpoint (TrainableModel::init's values, bit for bit in F32) to
// DIR/config.json and `shards` safetensors files in the HF layout: model.safetensors when 1, else
// model-0000i-of-0000n.safetensors split by size in checkpoint order plus
// model.safetensors.index.json. Every tensor is stored in `dtype` (F32 or BF16). One tensor at a
// time: peak memory is the largest tensor in F32, whatever the model's size (a
// Huginn-0125-shaped benchmark model). progress(bytes written, bytes in all) after each tensor.
void write_init_checkpoint(const ModelConfig& config, uint64_t seed, const std::string& dir,
                           DType dtype, int shards,
                           const std::function<void(int64_t, int64_t)>& progress = {});

// ---- trainable weights ------------------------------------------------------------------------

// A model whose F32 weights are owned by a backend (uploaded once) and updated in place by
// training (Backend::adamw_step). The Model it exposes views the same backend tensors.
class TrainableModel {
 public:
  // The reference initialisation (golden README, "The two models"; the released code's "takase"
  // strategy): every matrix and the embedding a truncated normal (±3 std) with
  // std = sqrt(2/(5E)); attn.proj, mlp.proj and the second (up) half of mlp.fc rows use
  // std / sqrt(2·(P + Q + C·mean_recurrence)); norms 1; qk_bias 0. An untied lm_head uses std.
  // Drawn on the host, then uploaded to `backend` (which must outlive the model).
  static std::unique_ptr<TrainableModel> init(const ModelConfig& config, uint64_t seed,
                                              Backend& backend);
  // A checkpoint directory's weights (config.json + safetensors) as F32 on `backend`.
  static std::unique_ptr<TrainableModel> load(const std::string& dir, Backend& backend);
  // The same in host memory (on a reference backend of its own), for tools and benchmarks
  // that hand the weights to a CPU backend.
  static std::unique_ptr<TrainableModel> init(const ModelConfig& config, uint64_t seed);
  static std::unique_ptr<TrainableModel> load(const std::string& dir);

  const Model& model() const { return *model_; }
  const ModelConfig& config() const { return model_->config(); }
  Backend& backend() const { return *be_; }
  // Every stored tensor under its HF checkpoint name (qk_bias as [2, 1, H, D], freqs_cis
  // [1, block_size, 1, D/2, 2]); lm_head only when untied. live_tensors: the backend's tensors
  // training updates; hf_tensors: host copies of them (downloaded).
  std::vector<std::pair<std::string, Tensor>> live_tensors() const;
  std::vector<std::pair<std::string, Tensor>> hf_tensors() const;
  // Writes DIR/config.json and DIR/model.safetensors (each atomically); DIR must exist.
  void save_hf(const std::string& dir) const;

 private:
  TrainableModel() = default;
  void build(ModelConfig config, std::map<std::string, Tensor> host);
  std::unique_ptr<Backend> own_be_;  // the host variants' reference backend
  Backend* be_ = nullptr;
  std::map<std::string, Tensor> owned_;  // HF name -> backend tensor
  std::unique_ptr<Model> model_;
};

// ---- optimizer ----------------------------------------------------------------------------------

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.1;
  bool decay_all = false;  // also decay norms, biases and embeddings (NamedParam::decay false)
};

// The flat parameter space: every parameter flattened and concatenated in order (named_params'
// order). A FlatPiece is the part of a run [lo, hi) of it that lies in one parameter: that
// parameter's elements [begin, end), at offset `at` from lo.
struct FlatPiece {
  size_t param;
  int64_t begin, end, at;
};
int64_t flat_size(const std::vector<NamedParam>& params);
// The pieces of flat elements [lo, hi), in order (0 <= lo <= hi <= flat_size).
std::vector<FlatPiece> flat_pieces(const std::vector<NamedParam>& params, int64_t lo, int64_t hi);
// A piece's elements of `t` (a contiguous tensor of that parameter's size, e.g. its value or
// gradient), as a view in t's memory: t itself when the piece is the whole tensor, else [1, n].
Tensor piece_view(const Tensor& t, const FlatPiece& piece);

// AdamW as torch.optim.AdamW: decoupled decay p ← p·(1 − lr·wd), then with bias corrections
// bc1 = 1 − β1^t, bc2 = 1 − β2^t:  m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;
// p ← p − (lr / bc1) · m / (sqrt(v) / sqrt(bc2) + eps). The moments live on the backend of the
// parameters and each update is one Backend::adamw_step per parameter (elementwise, so results
// do not depend on the thread count).
//
// Sharded (ZeRO-1, src/train/zero.h): given a slice [begin, end) of the flat parameter space,
// it holds the moments of that slice only and updates only those elements (one adamw_step per
// piece of a parameter in the slice; elementwise, so every element gets the bits the whole update
// gives it). The default slice is everything.
class AdamW {
 public:
  AdamW(std::vector<NamedParam> params, AdamWOptions options, Backend& backend,
        int64_t begin = 0, int64_t end = -1);
  // Uses each param's current grad (within the slice).
  void step(double lr);
  int64_t steps_taken() const { return t_; }
  const std::vector<NamedParam>& params() const { return params_; }
  int64_t begin() const { return begin_; }
  int64_t end() const { return end_; }
  // Bytes of the backend tensors holding the moments (m and v of the slice).
  int64_t state_bytes() const;
  // Host copies of the moments keyed "adam.m.<name>" / "adam.v.<name>" (unsharded only);
  // set_state validates names and shapes of whole-model moments, then uploads this slice of them.
  std::vector<std::pair<std::string, Tensor>> state() const;
  void set_state(const std::map<std::string, Tensor>& state, int64_t t, const std::string& source);
  // The slice's first (second = false) or second moments, flat, on the host: end − begin floats.
  std::vector<float> slice_state(bool second) const;

 private:
  std::vector<NamedParam> params_;
  int64_t begin_ = 0, end_ = 0;
  std::vector<FlatPiece> pieces_;
  std::vector<Tensor> m_, v_;  // per piece
  AdamWOptions opt_;
  Backend& be_;
  int64_t t_ = 0;
};

// Global L2 norm of all gradients (accumulated in double in a fixed order: one running sum of
// Backend::sum_squares over the params in order); when max_norm > 0 and the norm exceeds it,
// scales every gradient by max_norm / (norm + 1e-6). Returns the norm before clipping (NaN/inf
// when a gradient is not finite; nothing is scaled then).
double clip_grad_norm(Backend& backend, const std::vector<NamedParam>& params, double max_norm);
// The same over `grads`, where each rank of `sum_over` holds its own part of the gradients (ZeRO-1:
// its slice): the sums of squares are added over the ranks (nullptr: one process) before the root.
double clip_grad_norm(Backend& backend, std::span<const Tensor> grads, double max_norm,
                      Communicator* sum_over);

// ---- schedules ------------------------------------------------------------------------------------

enum class ScheduleKind { kCosine, kLinear, kConstant };  // constant = warmup-stable-cooldown

struct Schedule {
  ScheduleKind kind = ScheduleKind::kCosine;
  double lr = 3e-4, min_lr = 3e-5;
  int64_t warmup = 0, total = 1;
  int64_t cooldown = 0;  // constant only: steps of linear decay to min_lr at the end
  // The rate for 0-based step s: warmup lr·(s+1)/warmup for s < warmup; then cosine or linear
  // from lr to min_lr over the remaining steps (reaching min_lr at s = total − 1), or constant lr
  // until total − cooldown and a linear cooldown to min_lr at s = total − 1.
  double at(int64_t step) const;
  static ScheduleKind parse(const std::string& name);  // "cosine" | "linear" | "constant"
};

// ---- the training loop ------------------------------------------------------------------------------

// Where a run's sequences come from, and how it is evaluated: token windows of data shards
// (huginn train, ShardSource in trainer.cc) or a built-in task's examples with the loss on the
// answers only (huginn task train, src/eval/task_train.cc). The training loop (train()) is the
// same for both: checkpoints, exact resume, the bad-step policy, schedules, clipping, AdamW.
// Every method is a pure function of the run's seed and its arguments, so that a resumed run
// draws what a straight one draws.
class TrainSource {
 public:
  virtual ~TrainSource() = default;
  // Called once the model config is known (before anything is trained): checks that the data
  // fits the model (vocabulary, lengths), throwing huginn::Error naming what does not.
  virtual void open(const ModelConfig& config, const std::string& config_source) = 0;
  // Tokens per sequence when fixed (0 when each sequence has its own length); part of the run's
  // fingerprint.
  virtual int seq_len() const = 0;
  // Sequence b of micro-batch `micro` of optimizer step `step`: ids and shifted labels (-100: no
  // loss there), and the seed of its initial state.
  virtual void sequence(int64_t step, int micro, int b, std::vector<int32_t>& ids,
                        std::vector<int32_t>& labels, uint64_t* init_seed) = 0;
  // The seed of micro-batch `micro`'s (n, k) draw (IterationSampler).
  virtual uint64_t iteration_seed(int64_t step, int micro) const = 0;

  // The run's evaluation at eval_every and at the end: `key` names the metrics record's field
  // ("val_loss", "heldout_acc"), `values` its entries, `line` what the progress log says.
  struct Evaluation {
    std::string key;
    std::map<std::string, double> values;
    std::string line;
  };
  // Empty key: nothing to evaluate (e.g. no validation shards).
  virtual Evaluation evaluate(const Model& model, Backend& backend) = 0;

  // What a checkpoint records of the data (train_state metadata) after `step` steps, and the
  // check of those records on resume (throws huginn::Error naming `path` and the field).
  virtual std::map<std::string, std::string> state(int64_t step) const = 0;
  virtual void check_state(const std::map<std::string, std::string>& meta, const std::string& path,
                           int64_t step) const = 0;
};

struct TrainOptions {
  std::string model_config;  // config.json of the model to train (from scratch or resumed)
  std::string data;          // data directory of train-*.bin (and val-*.bin) shards
  std::string out;           // run directory: checkpoints step-NNNNNNNN/, metrics.jsonl
  std::string init_from;     // optional: start from this checkpoint's weights instead of init
  int64_t steps = 100;       // schedule length (total optimizer steps)
  int64_t stop_at = 0;       // > 0: stop (and save) after this step; the schedule still spans steps
  int batch = 8;             // sequences per micro-batch
  int grad_accum = 1;        // micro-batches per optimizer step
  int seq_len = 0;           // 0 = the config's block_size
  // Run a micro-batch's sequences one after another instead of as one [B·T, E] pass: the same
  // gradient up to float summation order, bit for bit what builds before batched training
  // trained (for reproducing their runs), and slower.
  bool sequential = false;
  // The Linear layers' GEMMs, forward and backward: F32, or BF16 mixed precision as the
  // reference trains under bf16 autocast (LossOptions::precision). Master weights, gradients and
  // AdamW state are F32 either way; validation runs in F32 (as inference does).
  MatmulPrecision precision = MatmulPrecision::kF32;
  double lr = 3e-4, min_lr_ratio = 0.1;
  int64_t warmup = 0, cooldown = -1;  // cooldown -1 = 20% of steps (constant schedule)
  std::string schedule = "cosine";
  AdamWOptions adam;
  double grad_clip = 1.0;  // <= 0: no clipping
  int mean_recurrence = 0;       // 0 = the config's
  int backprop_depth = 0;        // 0 = the config's mean_backprop_depth
  double init_scale = 1.0;       // initial recurrent state: truncated normal · this (0: zeros)
  int64_t eval_every = 0;        // 0 = only at the end
  int64_t save_every = 0;        // 0 = only at the end
  std::vector<int> val_depths = {1, 4, 8, 16, 32};
  int val_windows = 16;          // fixed validation windows per depth
  int max_bad_steps = 5;         // non-finite loss/gradient steps in a row before stopping
  bool resume = false;           // continue from the newest checkpoint in `out`
  uint64_t seed = 0;
  int threads = 0;
  std::string backend = "cpu";
  bool quiet = false;
  int log_every = 1;             // a progress line every N steps (and at the first, last, skipped)
  // Data-parallel training over the ranks of `comm` (huginn/comm.h; nullptr: one process). Every
  // rank runs the same options: `batch` is the global batch, and rank r of N runs sequences
  // [r·B/N, (r+1)·B/N) of each micro-batch (the windows one process would run there: no overlap,
  // and the data position is still the step, so a checkpoint resumes on any number of ranks).
  // All ranks draw the same (n, k) per micro-batch (seeded from the step), the gradients are
  // summed over the ranks in buckets of bucket_mb MiB (reduce-scattered under ZeRO-1, see
  // `zero`), and the weights take the same clipped AdamW step on every rank. Rank 0 alone writes checkpoints, metrics.jsonl and progress lines. At start the
  // ranks check that they agree on model, data, flags, start step and initial weights.
  Communicator* comm = nullptr;
  double bucket_mb = 64;
  // With more than one rank: 1 = ZeRO-1 (src/train/zero.h: gradients reduce-scattered, each
  // rank's AdamW updates and holds the state of its slice of the parameters only, then the
  // weights are all-gathered); 0 = every rank holds the whole optimizer state and the gradients
  // are all-reduced. Both give the same weights (the same sums, an elementwise update); a
  // checkpoint holds the whole state either way, so a run may resume with either and on any
  // number of ranks. One process ignores it.
  int zero = 1;
  // Called after each step with its loss (optional).
  std::function<void(int64_t step, double loss)> on_step;
  // Test hook: called after the gradients of a step are complete, before the finiteness check
  // (the tensors are the backend's: change them with backend ops).
  std::function<void(int64_t step, std::vector<NamedParam>& params, Backend& backend)>
      after_backward;
};

struct TrainResult {
  int64_t final_step = 0;
  double last_loss = 0;
  std::map<int, double> val_loss;   // shards: depth -> loss of the last validation
  TrainSource::Evaluation evaluation;  // the source's last evaluation
  std::string last_checkpoint;      // directory
};

// Runs training on `source` (options.data is not read). Throws huginn::Error on bad input (data,
// configs, flags, an out dir that cannot be written or already holds a different run) and when
// max_bad_steps non-finite steps occur in a row; what was saved before stays intact.
TrainResult train(const TrainOptions& options, TrainSource& source);
// The same on the data shards of options.data (token windows of seq_len + 1).
TrainResult train(const TrainOptions& options);

// Checkpoint helpers: `out/step-NNNNNNNN` names, newest complete checkpoint (empty when none).
std::string checkpoint_name(int64_t step);
std::string latest_checkpoint(const std::string& out_dir);

// Checkpoint integrity. DIR/checksums.json records the size and CRC-32 of config.json,
// model.safetensors and train_state.safetensors, and of each safetensors header and tensor so
// that damage is reported by name. The training loop writes it before a checkpoint folder is
// renamed into place, and `--resume` verifies it before reading anything else.
void write_checkpoint_checksums(const std::string& dir);
// Throws huginn::Error naming the file, and the header or tensor, whose bytes or size differ from
// DIR/checksums.json (or what is wrong with the manifest). Returns false when DIR has none (a
// checkpoint written before checksums existed).
bool verify_checkpoint_checksums(const std::string& dir);

}  // namespace huginn
