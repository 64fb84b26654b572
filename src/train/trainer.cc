// The one training loop: sequences from a TrainSource -> truncated-backprop gradients -> clip ->
// AdamW, with the source's evaluation, a JSONL metrics log and atomic, never-overwritten
// checkpoints. `huginn train` runs it on data shards (ShardSource below, validation at fixed
// depths); `huginn task train` on a built-in task (src/eval/task_train.cc).
//
// A run directory holds step-NNNNNNNN/ checkpoints (config.json + model.safetensors, loadable by
// Model::load and `huginn forward`, plus train_state.safetensors: AdamW moments and, as metadata,
// the step, seed and the options the run depends on, and checksums.json: the CRC-32 of each)
// and metrics.jsonl. Each checkpoint is written into a hidden temporary folder and renamed into
// place, so a checkpoint folder is always complete. One run at a time holds the directory's
// lock; at start it removes the temporaries of killed writes and cuts metrics.jsonl back to the
// step it starts from, so every step is logged once. `--resume` verifies the newest checkpoint's
// checksums, then the range and consistency of every value of its training state, and refuses it
// naming the file and field at fault.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "huginn/comm.h"
#include "huginn/data.h"
#include "huginn/error.h"
#include "huginn/log.h"
#include "huginn/safetensors.h"
#include "huginn/thread_pool.h"
#include "huginn/train.h"
#include "train/checkpoint.h"
#include "train/grad_sync.h"
#include "train/rank_check.h"
#include "train/zero.h"
#include "util/json.h"
#include "util/mapped_file.h"

namespace huginn {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

using ckpt::kStateFile;
// 2 added skipped_steps and checksums.json; a 1 (no checksums) is resumed with a warning.
constexpr const char* kStateFormat = "huginn-train-state-2";
constexpr const char* kStateFormatV1 = "huginn-train-state-1";

// What must match between a checkpoint and a resumed run for the trajectory to continue.
// "sequential" and "precision" are recorded only when not the default, so that checkpoints written
// before they existed resume.
json run_fingerprint(const TrainOptions& o, int seq_len, int mean_rec, int depth) {
  json run = json{{"steps", o.steps},       {"batch", o.batch},
              {"grad_accum", o.grad_accum}, {"seq_len", seq_len},
              {"lr", o.lr},             {"min_lr_ratio", o.min_lr_ratio},
              {"warmup", o.warmup},     {"cooldown", o.cooldown},
              {"schedule", o.schedule}, {"beta1", o.adam.beta1},
              {"beta2", o.adam.beta2},  {"eps", o.adam.eps},
              {"weight_decay", o.adam.weight_decay}, {"decay_all", o.adam.decay_all},
              {"grad_clip", o.grad_clip}, {"mean_recurrence", mean_rec},
              {"backprop_depth", depth}, {"init_scale", o.init_scale},
              {"seed", o.seed}};
  if (o.sequential) run["sequential"] = true;
  if (o.precision == MatmulPrecision::kBF16) run["precision"] = "bf16";
  return run;
}

// The first key whose value differs between two config.json texts, as a readable phrase.
std::string config_difference(const std::string& a, const std::string& b) {
  json ja = json::parse(a), jb = json::parse(b);
  for (auto& [k, v] : ja.items())
    if (!jb.contains(k) || jb[k] != v)
      return "'" + k + "' is " + v.dump() + " there, " + (jb.contains(k) ? jb[k].dump() : "absent") +
             " here";
  for (auto& [k, v] : jb.items())
    if (!ja.contains(k)) return "'" + k + "' is absent there, " + v.dump() + " here";
  return {};
}

// How a value read from a file reads in an error (bounded, whatever it holds).
std::string brief(const json& v) { return json_preview(v); }
// A scalar as its JSON text (strings bounded).
std::string scalar_text(const json& v) {
  return v.is_string() ? ckpt::quote(v.get<std::string>()) : v.is_primitive() ? v.dump() : brief(v);
}

const char* kind_of(const json& v) {
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "a boolean";
  return "a JSON value";
}

bool same_kind(const json& saved, const json& now) {
  if (now.is_number_integer()) return saved.is_number_integer();
  if (now.is_number()) return saved.is_number();
  return saved.type() == now.type();
}

// The first element of `t` that breaks `ok`, or -1.
template <class Pred>
int64_t first_bad(const Tensor& t, Pred ok) {
  const float* p = t.f32();
  for (int64_t i = 0, n = t.numel(); i < n; ++i)
    if (!ok(p[i])) return i;
  return -1;
}

void check_options(const TrainOptions& o) {
  auto finite = [](double v, double lo) { return std::isfinite(v) && v >= lo; };
  if (!finite(o.lr, 0)) throw Error("--lr must be finite and >= 0, got " + std::to_string(o.lr));
  if (!finite(o.min_lr_ratio, 0) || o.min_lr_ratio > 1)
    throw Error("--min-lr-ratio must be in 0..1, got " + std::to_string(o.min_lr_ratio));
  if (!finite(o.adam.beta1, 0) || o.adam.beta1 >= 1 || !finite(o.adam.beta2, 0) ||
      o.adam.beta2 >= 1)
    throw Error("--beta1 and --beta2 must be in [0, 1)");
  if (!finite(o.adam.eps, 0) || o.adam.eps == 0) throw Error("--adam-eps must be finite and > 0");
  if (!std::isfinite(o.adam.weight_decay)) throw Error("--weight-decay must be finite");
  if (!std::isfinite(o.grad_clip)) throw Error("--grad-clip must be finite");
  if (!finite(o.init_scale, 0)) throw Error("--init-scale must be finite and >= 0");
}

void check_writable_dir(const std::string& out) {
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec || !fs::is_directory(out))
    throw Error(out + ": cannot create the output directory: " +
                (ec ? ec.message() : std::string("a file of that name exists")));
  const std::string probe = out + "/.write-probe";
  try {
    write_file_atomic(probe, "", 0);
  } catch (const Error& e) {
    throw Error(out + ": output directory is not writable (" + e.what() + ")");
  }
  fs::remove(probe, ec);
}

void sync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort: the files themselves were fsynced
  ::fsync(fd);
  ::close(fd);
}

std::string fmt_eta(double seconds) {
  char buf[32];
  const long s = static_cast<long>(seconds + 0.5);
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, s / 60 % 60);
  else
    std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  return buf;
}

class MetricsLog {
 public:
  explicit MetricsLog(const std::string& path) : path_(path) {
    f_ = std::fopen(path.c_str(), "a");
    if (!f_) throw Error(path + ": cannot open the metrics log for appending");
  }
  ~MetricsLog() {
    if (f_) std::fclose(f_);
  }
  void write(const json& j) {
    const std::string line = j.dump() + "\n";
    if (std::fwrite(line.data(), 1, line.size(), f_) != line.size() || std::fflush(f_) != 0)
      throw Error(path_ + ": cannot write the metrics log");
  }

 private:
  std::string path_;
  FILE* f_ = nullptr;
};

// Token windows of data shards: sequence b of micro-batch a of step s is window
// (s·A + a)·B + b of the train split; validation is the mean loss of fixed windows of the val
// split at each depth of val_depths.
class ShardSource : public TrainSource {
 public:
  explicit ShardSource(const TrainOptions& o) : o_(o) {
    if (o_.data.empty()) throw Error("--data is required");
  }
  void open(const ModelConfig& config, const std::string& src) override {
    seq_len_ = o_.seq_len > 0 ? o_.seq_len : static_cast<int>(config.block_size);
    if (seq_len_ <= 0) throw Error("--seq-len is required (the model config has no block_size)");
    if (seq_len_ > std::max<int64_t>(config.block_size, 4096))
      throw Error("--seq-len " + std::to_string(seq_len_) + " exceeds the model's RoPE table (" +
                  std::to_string(std::max<int64_t>(config.block_size, 4096)) + " positions)");
    train_set_ = ShardSet::open(o_.data, "train");
    val_set_ = ShardSet::open(o_.data, "val", /*required=*/false);
    train_set_.check_vocab(config.vocab_size, src);
    val_set_.check_vocab(config.vocab_size, src);
    if (!val_set_.empty() && val_set_.tokenizer_hash() != train_set_.tokenizer_hash())
      throw Error(o_.data + ": val shards were made by a different tokenizer than the train shards");
    train_ = std::make_unique<WindowSampler>(train_set_, seq_len_ + 1, mix_seed(o_.seed, 1));
    if (!val_set_.empty())
      val_ = std::make_unique<WindowSampler>(val_set_, seq_len_ + 1, mix_seed(o_.seed, 2));
  }
  int seq_len() const override { return seq_len_; }
  void sequence(int64_t step, int a, int b, std::vector<int32_t>& ids,
                std::vector<int32_t>& labels, uint64_t* init_seed) override {
    const uint64_t index = (static_cast<uint64_t>(step) * o_.grad_accum + a) * o_.batch + b;
    win_.resize(static_cast<size_t>(seq_len_) + 1);
    train_->sample(index, win_);
    ids.assign(win_.begin(), win_.end() - 1);
    labels.assign(win_.begin() + 1, win_.end());
    *init_seed = mix_seed(o_.seed, 4, index);
  }
  uint64_t iteration_seed(int64_t step, int a) const override { return mix_seed(o_.seed, 3, step, a); }

  Evaluation evaluate(const Model& model, Backend& be) override {
    Evaluation ev;
    if (!val_) return ev;
    ev.key = "val_loss";
    if (!runner_ || &runner_->model() != &model) runner_ = std::make_unique<Runner>(model, be);
    const uint64_t P = val_->positions();
    const int K = static_cast<int>(std::min<uint64_t>(std::max(o_.val_windows, 1), P));
    win_.resize(static_cast<size_t>(seq_len_) + 1);
    std::span<const int32_t> ids(win_.data(), seq_len_), labels(win_.data() + 1, seq_len_);
    for (int r : o_.val_depths) {
      double sum = 0.0;
      for (int j = 0; j < K; ++j) {
        val_->at(static_cast<uint64_t>(j) * P / K, win_);
        InitState init;
        init.scale = o_.init_scale;
        init.seed = mix_seed(o_.seed, 5, j);  // the same states at every validation
        ForwardOutput out = runner_->forward(ids, r, init);
        sum += be.cross_entropy(out.logits, labels, 1.0f, nullptr);
      }
      ev.values[std::to_string(r)] = sum / K;
      ev.line += "  r=" + std::to_string(r) + " " + std::to_string(sum / K).substr(0, 6);
    }
    return ev;
  }

  std::map<std::string, std::string> state(int64_t step) const override {
    return {{"next_window_index",
             std::to_string(static_cast<uint64_t>(step) * o_.grad_accum * o_.batch)},
            {"tokenizer_hash", std::to_string(train_set_.tokenizer_hash())},
            {"vocab_size", std::to_string(train_set_.vocab_size())},
            {"train_tokens", std::to_string(train_set_.total_tokens())},
            {"data", o_.data}};
  }
  void check_state(const std::map<std::string, std::string>& meta, const std::string& path,
                   int64_t step) const override {
    const ckpt::Fields f(path, meta);
    const uint64_t windows = static_cast<uint64_t>(step) * o_.grad_accum * o_.batch;
    if (f.u64("next_window_index") != windows)
      throw Error(path + ": metadata 'next_window_index' is " + f.str("next_window_index") +
                  ", expected " + std::to_string(windows) + " (step x grad_accum x batch)");
    const uint64_t tok_hash = f.u64("tokenizer_hash");
    const int64_t vocab = f.integer("vocab_size", 1, UINT32_MAX);
    if (tok_hash != train_set_.tokenizer_hash() || vocab != train_set_.vocab_size())
      throw Error("cannot resume: " + fs::path(path).parent_path().string() +
                  " was trained on shards of a different tokenizer than " + o_.data);
  }

 private:
  const TrainOptions& o_;
  ShardSet train_set_, val_set_;
  std::unique_ptr<WindowSampler> train_, val_;
  std::unique_ptr<Runner> runner_;
  std::vector<int32_t> win_;
  int seq_len_ = 0;
};

// Everything one run needs, set up once.
class Trainer {
 public:
  Trainer(const TrainOptions& o, TrainSource& source);
  TrainResult run();

 private:
  void setup_model();
  void take_run_dir();
  void resume_from(const std::string& ckpt);
  void load_moments(const SafetensorsFile& state, int64_t adam_t);
  double train_step(int64_t step, int* n_out, int* k_out, double* gnorm_out, bool* finite_out,
                    int64_t* tokens_out);
  std::string save(int64_t step, const std::vector<std::pair<std::string, Tensor>>& moments);
  std::vector<std::pair<std::string, Tensor>> optimizer_state();
  void update(double lr);
  void report_optimizer_memory();
  int64_t bucket_floats() const {
    return std::max<int64_t>(1, static_cast<int64_t>(o_.bucket_mb * (1 << 20) / 4));
  }
  void setup_ranks();
  nlohmann::ordered_json rank_fingerprint() const;
  std::string data_parallel_state(int64_t step) const;
  void check_data_parallel_state(const ckpt::Fields& f, int64_t step) const;
  bool rank0() const { return comm_->rank() == 0; }

  TrainOptions o_;
  TrainSource& src_;
  ModelConfig config_;
  ThreadPool pool_;
  std::unique_ptr<Backend> be_;
  std::unique_ptr<TrainableModel> tm_;
  std::unique_ptr<BackwardRunner> runner_;
  std::unique_ptr<Grads> grads_;
  std::unique_ptr<AdamW> adam_;
  Schedule sched_;
  int seq_len_ = 0, mean_rec_ = 0, depth_ = 0;
  int64_t start_step_ = 0;
  int bad_in_row_ = 0;
  int64_t skipped_ = 0;         // steps skipped as non-finite since step 0
  bool verified_ = false;       // the resumed checkpoint had checksums.json and matched it
  std::unique_ptr<ckpt::RunLock> lock_;
  std::string last_ckpt_;
  // Data parallelism: this rank runs sequences [b0_, b1_) of each micro-batch.
  std::unique_ptr<Communicator> own_comm_;  // the single-process one, when options.comm is null
  Communicator* comm_ = nullptr;
  int b0_ = 0, b1_ = 0;
  std::unique_ptr<GradSync> sync_;   // all-reduce of whole gradients (--zero 0)
  std::unique_ptr<ZeroShard> zero_;  // ZeRO-1 (--zero 1, the default with several ranks)
  // This step's seconds in forward/backward, in the exchange, in clipping + AdamW.
  double t_compute_ = 0, t_comm_ = 0, t_optim_ = 0;
  int64_t optim_bytes_ = 0;  // the backend's bytes for AdamW's state on this rank
};

Trainer::Trainer(const TrainOptions& o, TrainSource& source)
    : o_(o), src_(source), pool_(o.threads) {
  if (o_.steps <= 0) throw Error("--steps must be positive, got " + std::to_string(o_.steps));
  if (o_.batch <= 0 || o_.grad_accum <= 0)
    throw Error("--batch and --grad-accum must be positive");
  if (o_.stop_at < 0 || o_.stop_at > o_.steps)
    throw Error("--stop-at " + std::to_string(o_.stop_at) + " is outside 0.." +
                std::to_string(o_.steps));
  if (o_.out.empty()) throw Error("--out is required");
  if (o_.max_bad_steps <= 0) throw Error("--max-bad-steps must be positive");
  check_options(o_);
  setup_ranks();
  sched_.kind = Schedule::parse(o_.schedule);
  be_ = make_backend(o_.backend, pool_);
  const std::string newest = latest_checkpoint(o_.out);
  if (!o_.resume && !newest.empty())
    throw Error(o_.out + ": already holds checkpoints (newest: " + newest +
                "); pass --resume to continue that run, or choose another --out");
  if (o_.resume && newest.empty())
    throw Error(o_.out + ": --resume, but there is no checkpoint (step-NNNNNNNN/) to resume from");
  if (o_.resume) {  // before any of the checkpoint's files is read
    take_run_dir();
    verified_ = verify_checkpoint_checksums(newest);
  }

  if (o_.model_config.empty() && !o_.resume) throw Error("--model-config is required");
  config_ = ModelConfig::from_file(o_.model_config.empty() ? newest + "/config.json" : o_.model_config);
  mean_rec_ = o_.mean_recurrence > 0 ? o_.mean_recurrence : config_.mean_recurrence;
  depth_ = o_.backprop_depth > 0 ? o_.backprop_depth : config_.mean_backprop_depth;
  src_.open(config_, o_.model_config.empty() ? newest + "/config.json" : o_.model_config);
  seq_len_ = src_.seq_len();

  sched_.lr = o_.lr;
  sched_.min_lr = o_.lr * o_.min_lr_ratio;
  sched_.warmup = o_.warmup;
  sched_.total = o_.steps;
  sched_.cooldown = o_.cooldown >= 0 ? o_.cooldown : o_.steps / 5;

  // After the inputs are validated: a failed start leaves no folder. Rank 0 alone writes there.
  if (rank0()) check_writable_dir(o_.out);
  if (o_.resume) {
    resume_from(newest);
  } else if (!o_.init_from.empty()) {
    take_run_dir();
    verify_checkpoint_checksums(o_.init_from);  // when it is one of our checkpoints
    tm_ = TrainableModel::load(o_.init_from, *be_);
    if (std::string d = config_difference(tm_->config().to_json(), config_.to_json()); !d.empty())
      throw Error(o_.init_from + "/config.json differs from " + o_.model_config + ": " + d);
    setup_model();
  } else {
    take_run_dir();
    tm_ = TrainableModel::init(config_, o_.seed, *be_);
    setup_model();
  }
  if (comm_->size() > 1) {
    if (!zero_) sync_ = std::make_unique<GradSync>(*comm_, *be_, bucket_floats());
    check_ranks_agree(*comm_, rank_fingerprint());
    report_optimizer_memory();
  }
}

// Which sequences of each micro-batch this rank runs; only rank 0 prints progress.
void Trainer::setup_ranks() {
  if (!o_.comm) own_comm_ = make_single_communicator();
  comm_ = o_.comm ? o_.comm : own_comm_.get();
  const int N = comm_->size(), r = comm_->rank();
  if (o_.batch < N)
    throw Error("--batch " + std::to_string(o_.batch) + " is smaller than the " +
                std::to_string(N) + " ranks: each rank needs at least one sequence of the batch");
  if (o_.zero != 0 && o_.zero != 1)
    throw Error("--zero must be 0 (whole optimizer state on every rank) or 1 (ZeRO-1), got " +
                std::to_string(o_.zero));
  if (!(o_.bucket_mb > 0) || o_.bucket_mb > 1024)
    throw Error("--bucket-mb must be in (0, 1024], got " + std::to_string(o_.bucket_mb));
  b0_ = static_cast<int>(static_cast<int64_t>(o_.batch) * r / N);
  b1_ = static_cast<int>(static_cast<int64_t>(o_.batch) * (r + 1) / N);
  if (r != 0) o_.quiet = true;
}

// What the ranks must agree on: the model, the data, the run's options, where it starts, and the
// weights it starts from (a hash of their bytes, downloaded once).
nlohmann::ordered_json Trainer::rank_fingerprint() const {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over every live tensor, in order
  std::vector<float> host;
  for (const auto& [name, t] : tm_->live_tensors()) {
    host.resize(static_cast<size_t>(t.numel()));
    be_->download(t, host.data());
    const auto* p = reinterpret_cast<const unsigned char*>(host.data());
    for (size_t i = 0; i < host.size() * sizeof(float); ++i) h = (h ^ p[i]) * 1099511628211ull;
  }
  json data = json::object();
  for (const auto& [k, v] : src_.state(0)) data[k] = v;
  // In the order a difference is best reported: the model first, the weights (which differ
  // whenever anything above them does) last.
  nlohmann::ordered_json fp;
  fp["model"] = nlohmann::ordered_json::parse(config_.to_json());
  fp["data"] = data;
  fp["run"] = run_fingerprint(o_, seq_len_, mean_rec_, depth_);
  fp["start_step"] = start_step_;
  fp["backend"] = o_.backend;
  fp["zero"] = o_.zero;
  fp["bucket_mb"] = o_.bucket_mb;
  fp["initial_weights_fnv1a"] = std::to_string(h);
  return fp;
}

// Locks the run directory for this run and removes what killed writes left in it.
void Trainer::take_run_dir() {
  if (!rank0()) return;  // rank 0 alone writes the run directory
  lock_ = std::make_unique<ckpt::RunLock>(o_.out);
  for (const std::string& name : ckpt::remove_stale_temporaries(o_.out))
    HUGINN_LOG_WARN("%s/%s: removed, a temporary left by a killed write", o_.out.c_str(), name.c_str());
}

void Trainer::setup_model() {
  const Model& m = tm_->model();
  runner_ = std::make_unique<BackwardRunner>(m, *be_);
  grads_ = std::make_unique<Grads>(Grads::zeros_like(m, *be_));
  std::vector<NamedParam> params = named_params(m, *grads_);
  // The optimizer must update the very tensors a checkpoint saves.
  std::map<std::string, Tensor> stored;
  for (const auto& [name, t] : tm_->live_tensors()) stored[name] = t;
  for (const auto& p : params) {
    auto it = stored.find(p.name);
    HUGINN_ASSERT(it != stored.end() && it->second.same_data(p.value),
                  "named_params does not view the trainable model's tensors");
  }
  const int64_t before = be_->allocated_bytes();
  if (comm_->size() > 1 && o_.zero == 1) {
    zero_ = std::make_unique<ZeroShard>(*comm_, *be_, params, bucket_floats());
    adam_ = std::make_unique<AdamW>(std::move(params), o_.adam, *be_, zero_->begin(), zero_->end());
  } else {
    adam_ = std::make_unique<AdamW>(std::move(params), o_.adam, *be_);
  }
  optim_bytes_ = be_->allocated_bytes() - before;  // as the backend counts its memory
}

// Rank 0 prints every rank's optimizer-state bytes (what the backend allocated for AdamW's
// moments), so that a run shows what ZeRO-1 saves (and the tests can check it).
void Trainer::report_optimizer_memory() {
  int64_t mine = optim_bytes_;
  std::vector<int64_t> all(static_cast<size_t>(comm_->size()));
  comm_->all_gather(std::as_bytes(std::span<const int64_t>(&mine, 1)),
                    std::as_writable_bytes(std::span<int64_t>(all)));
  if (o_.quiet) return;
  std::string list;
  for (size_t r = 0; r < all.size(); ++r)
    list += (r ? ", " : "") + std::to_string(all[r]);
  const int64_t whole = 2 * static_cast<int64_t>(sizeof(float)) * flat_size(adam_->params());
  HUGINN_LOG_INFO("optimizer state (AdamW m, v) bytes per rank: %s (%s; one process holds %lld)",
                  list.c_str(), zero_ ? "ZeRO-1, sharded" : "--zero 0, whole on every rank",
                  (long long)whole);
}

void Trainer::resume_from(const std::string& ckpt) {
  const std::string here = o_.model_config.empty() ? ckpt + "/config.json" : o_.model_config;
  const ModelConfig saved = ModelConfig::from_file(ckpt + "/config.json");
  if (std::string d = config_difference(saved.to_json(), config_.to_json()); !d.empty())
    throw Error("cannot resume: " + ckpt + "/config.json differs from " + here + ": " + d);
  auto state = SafetensorsFile::open(ckpt + "/" + kStateFile);
  const std::string& path = state->path();
  const ckpt::Fields f(path, state->metadata());
  const std::string& format = f.str("format");
  const bool v1 = format == kStateFormatV1;
  if (!v1 && format != kStateFormat)
    throw Error(path + ": metadata 'format' is " + ckpt::quote(format) + ", expected " +
                kStateFormat + " (or the older " + kStateFormatV1 + ")");
  if (!verified_ && !v1)
    throw Error(ckpt + "/" + ckpt::kChecksumFile + ": missing, but a " + kStateFormat +
                " checkpoint is always written with one; its files cannot be verified");
  if (!verified_)
    HUGINN_LOG_WARN("%s: no %s (written by an older huginn): its bytes cannot be verified, only the "
                    "ranges of its values", ckpt.c_str(), ckpt::kChecksumFile);

  // The options the run was trained with: each present, of its type, equal to this run's.
  const json saved_run = parse_json(f.str("run"), path + ": metadata 'run'");
  if (!saved_run.is_object())
    throw Error(path + ": metadata 'run' is " + brief(saved_run) +
                ", expected a JSON object (the options of the run)");
  const json now = run_fingerprint(o_, seq_len_, mean_rec_, depth_);
  if (saved_run.contains("sequential") != now.contains("sequential"))
    throw Error("cannot resume: " + ckpt + " was trained with its sequences " +
                (o_.sequential ? "batched" : "one after another (--sequential)") + ", this run " +
                (o_.sequential ? "runs them one after another" : "batches them") +
                " (resuming must continue the same run)");
  if (saved_run.contains("precision") != now.contains("precision"))
    throw Error("cannot resume: " + ckpt + " was trained with --precision " +
                (now.contains("precision") ? "f32" : "bf16") + ", this run has --precision " +
                (now.contains("precision") ? "bf16" : "f32") +
                " (resuming must continue the same run)");
  for (auto& [k, v] : now.items()) {
    if (!saved_run.contains(k))
      throw Error(path + ": metadata 'run' has no '" + k + "' (expected " + kind_of(v) + ")");
    const json& sv = saved_run[k];
    if (!same_kind(sv, v))
      throw Error(path + ": metadata 'run." + k + "' is " + brief(sv) + ", expected " + kind_of(v));
    if (sv == v) continue;
    if (k == "steps") {  // a longer or shorter schedule: allowed, but no longer the same run
      HUGINN_LOG_WARN("resuming with --steps %s (the checkpoint's run had %s): the schedule changes",
                      v.dump().c_str(), scalar_text(sv).c_str());
      continue;
    }
    throw Error("cannot resume: " + ckpt + " was trained with " + k + " = " + scalar_text(sv) +
                ", this run has " + v.dump() + " (resuming must continue the same run)");
  }
  const json& run_steps = saved_run["steps"];
  if (!run_steps.is_number_unsigned() || run_steps.get<uint64_t>() < 1 ||
      run_steps.get<uint64_t>() > (uint64_t{1} << 62))
    throw Error(path + ": metadata 'run.steps' is " + brief(run_steps) + ", expected 1..2^62");

  // The counters: in range and consistent with each other and with the folder's name.
  const int64_t step = f.integer("step", 0, run_steps.get<int64_t>(),
                                 "a checkpoint lies within its run's 'run.steps'");
  if (checkpoint_name(step) != fs::path(ckpt).filename().string())
    throw Error(path + ": metadata 'step' is " + std::to_string(step) + ", but the folder is " +
                fs::path(ckpt).filename().string());
  const int64_t adam_t = f.integer("adam_t", 0, step, "optimizer steps taken, at most 'step'");
  const int64_t skipped = v1 ? step - adam_t : f.integer("skipped_steps", 0, step);
  if (adam_t + skipped != step)
    throw Error(path + ": metadata 'adam_t' is " + std::to_string(adam_t) + " and 'skipped_steps' " +
                std::to_string(skipped) + ", expected them to add up to 'step' " +
                std::to_string(step) + " (every step updates the optimizer or is skipped)");
  const int64_t bad = f.integer("bad_in_row", 0, skipped,
                                "the last bad_in_row steps were skipped, so at most 'skipped_steps'");
  if (const uint64_t seed = f.u64("seed"); seed != o_.seed)
    throw Error(path + ": metadata 'seed' is " + std::to_string(seed) + ", expected " +
                std::to_string(o_.seed) + " (the seed in 'run' and of this run)");
  src_.check_state(state->metadata(), path, step);
  check_data_parallel_state(f, step);

  tm_ = TrainableModel::load(ckpt, *be_);
  for (const auto& [name, t] : tm_->live_tensors()) {
    int64_t i = -1;
    if (be_->count_non_finite(t, &i) == 0) continue;
    Tensor host = Tensor::empty(t.shape());  // only to name the value
    be_->download(t, host.f32());
    throw Error(ckpt + "/model.safetensors: tensor '" + name + "' holds " +
                std::to_string(host.f32()[i]) + " at element " + std::to_string(i) +
                ", expected finite weights (training skips non-finite steps)");
  }
  setup_model();
  load_moments(*state, adam_t);
  start_step_ = step;
  bad_in_row_ = static_cast<int>(bad);
  skipped_ = skipped;
  last_ckpt_ = ckpt;
  if (start_step_ >= (o_.stop_at > 0 ? o_.stop_at : o_.steps))
    throw Error(ckpt + " is at step " + std::to_string(start_step_) +
                ": nothing left to train (raise --steps or --stop-at)");
}

// Every rank's data position after `step` steps: the slice [b0, b1) of each micro-batch it ran
// and the index (s·A + a)·B + b of its next sequence. A function of the step and the rank count,
// recorded so that a checkpoint says how it was trained and a resume can re-split it.
std::string Trainer::data_parallel_state(int64_t step) const {
  const int N = comm_->size();
  json slices = json::array(), next = json::array();
  for (int r = 0; r < N; ++r) {
    const int64_t b0 = static_cast<int64_t>(o_.batch) * r / N;
    const int64_t b1 = static_cast<int64_t>(o_.batch) * (r + 1) / N;
    slices.push_back({b0, b1});
    next.push_back(static_cast<uint64_t>(step) * o_.grad_accum * o_.batch + b0);
  }
  return json{{"ranks", N}, {"batch_slices", slices}, {"next_sequence", next}}.dump();
}

// A checkpoint's data_parallel record (absent before data parallelism: one rank), checked against
// the step and batch it was saved with; any rank count may resume it (the position is re-split).
void Trainer::check_data_parallel_state(const ckpt::Fields& f, int64_t step) const {
  if (!f.has("data_parallel")) return;
  const std::string field = f.path() + ": metadata 'data_parallel'";
  const json dp = parse_json(f.str("data_parallel"), field);
  if (!dp.is_object() || !dp.contains("ranks") || !dp["ranks"].is_number_unsigned() ||
      dp["ranks"].get<uint64_t>() < 1 ||
      dp["ranks"].get<uint64_t>() > static_cast<uint64_t>(o_.batch))
    throw Error(field + " is " + brief(dp) + ", expected an object with 'ranks' in 1.." +
                std::to_string(o_.batch) + " (at most one rank per sequence of the batch)");
  const int R = dp["ranks"].get<int>();
  const int B = o_.batch;
  for (const char* key : {"batch_slices", "next_sequence"})
    if (!dp.contains(key) || !dp[key].is_array() || dp[key].size() != static_cast<size_t>(R))
      throw Error(field + " has 'ranks' " + std::to_string(R) + " but its '" + key + "' is " +
                  (dp.contains(key) ? brief(dp[key]) : std::string("absent")) + ", expected " +
                  std::to_string(R) + " entries");
  for (int r = 0; r < R; ++r) {
    const int64_t b0 = static_cast<int64_t>(B) * r / R, b1 = static_cast<int64_t>(B) * (r + 1) / R;
    const uint64_t next = static_cast<uint64_t>(step) * o_.grad_accum * B + b0;
    if (dp["batch_slices"][r] != json{b0, b1} || dp["next_sequence"][r] != next)
      throw Error(field + ": rank " + std::to_string(r) + " has slice " +
                  brief(dp["batch_slices"][r]) + " and next sequence " +
                  brief(dp["next_sequence"][r]) + ", expected [" + std::to_string(b0) + "," +
                  std::to_string(b1) + "] and " + std::to_string(next) + " (step " +
                  std::to_string(step) + ", batch " + std::to_string(B) + ", " +
                  std::to_string(R) + " ranks)");
  }
  if (R != comm_->size() && rank0())
    HUGINN_LOG_INFO("resuming a %d-rank checkpoint on %d rank(s): its data position (step %lld) is "
                    "re-split over the ranks", R, comm_->size(), (long long)step);
}

// AdamW's moments, checked: finite, second moments >= 0, and all zero before the first update.
void Trainer::load_moments(const SafetensorsFile& state, int64_t adam_t) {
  std::map<std::string, Tensor> moments;
  for (const auto& e : state.entries()) {
    Tensor t = state.as_f32(e.name);
    const bool second = e.name.rfind("adam.v.", 0) == 0;
    int64_t i = first_bad(t, [&](float x) { return std::isfinite(x) && (!second || x >= 0); });
    const char* want = second ? "finite and >= 0 (a running mean of squared gradients)" : "finite";
    if (i < 0 && adam_t == 0) {
      i = first_bad(t, [](float x) { return x == 0.0f; });
      want = "0 ('adam_t' is 0: no update has been made)";
    }
    if (i >= 0)
      throw Error(state.path() + ": optimizer tensor '" + e.name + "' holds " +
                  std::to_string(t.f32()[i]) + " at element " + std::to_string(i) + ", expected " +
                  want);
    moments.emplace(e.name, t);
  }
  adam_->set_state(moments, adam_t, state.path());
}

double Trainer::train_step(int64_t step, int* n_out, int* k_out, double* gnorm_out,
                           bool* finite_out, int64_t* tokens_out) {
  const auto t0 = std::chrono::steady_clock::now();
  grads_->zero(*be_);
  // The scale is the global batch's: the sum over ranks is then the one-process gradient.
  const int B = b1_ - b0_, A = o_.grad_accum;
  const float scale = 1.0f / static_cast<float>(A * o_.batch);
  std::vector<std::vector<int32_t>> ids(static_cast<size_t>(B)), labels(static_cast<size_t>(B));
  std::vector<TrainSequence> batch(static_cast<size_t>(B));
  std::vector<float> losses(static_cast<size_t>(B));
  double loss = 0.0;
  *tokens_out = 0;
  for (int a = 0; a < A; ++a) {
    // One iteration count per micro-batch, drawn from a stream keyed by (seed, step, micro),
    // shared by its B sequences, which run as one pass (as the reference trains).
    IterationSampler sampler(mean_rec_, depth_, src_.iteration_seed(step, a));
    auto [n, k] = sampler.next();
    *n_out = n;
    *k_out = k;
    for (int b = 0; b < B; ++b) {
      src_.sequence(step, a, b0_ + b, ids[b], labels[b], &batch[b].init_seed);
      batch[b].ids = ids[b];
      batch[b].labels = labels[b];
      batch[b].grad_scale = scale;
      *tokens_out += static_cast<int64_t>(ids[b].size());
    }
    LossOptions lo;
    lo.n_no_grad = n;
    lo.n_with_grad = k;
    lo.init.scale = o_.init_scale;
    lo.precision = o_.precision;
    lo.weights_version = static_cast<uint64_t>(step) + 1;  // the weights change once per step
    if (o_.sequential) {
      // One sequence per pass, in order: each weight gradient sums sequence by sequence, as the
      // trainer did before batched training, so those runs are reproduced bit for bit.
      for (size_t b = 0; b < batch.size(); ++b)
        runner_->loss_and_grad(std::span<const TrainSequence>(batch).subspan(b, 1), lo, *grads_,
                               std::span<float>(losses).subspan(b, 1));
    } else {
      runner_->loss_and_grad(batch, lo, *grads_, losses);
    }
    for (float l : losses) loss += l * static_cast<double>(scale);
  }
  const auto t1 = std::chrono::steady_clock::now();
  std::vector<NamedParam> params = adam_->params();
  if (zero_) zero_->reduce_scatter(params);
  if (sync_) sync_->all_reduce(params);
  if (comm_->size() > 1) {
    double sums[2] = {loss, static_cast<double>(*tokens_out)};
    comm_->all_reduce_sum(std::span<double>(sums, 2));
    loss = sums[0];
    *tokens_out = static_cast<int64_t>(sums[1]);
  }
  const auto t2 = std::chrono::steady_clock::now();
  // Under ZeRO-1 only this rank's slice of the gradients is the sum over the ranks here (the
  // hook is the single-process tests'; a change outside the slice does not reach the update).
  if (o_.after_backward) o_.after_backward(step, params, *be_);
  // ZeRO-1: each rank clips its slice by the global norm (the only summed part of its gradients).
  const double gnorm = zero_ ? zero_->clip(params, o_.grad_clip)
                             : clip_grad_norm(*be_, adam_->params(), o_.grad_clip);
  t_compute_ = std::chrono::duration<double>(t1 - t0).count();
  t_comm_ = std::chrono::duration<double>(t2 - t1).count();
  t_optim_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t2).count();
  *gnorm_out = gnorm;
  *finite_out = std::isfinite(loss) && std::isfinite(gnorm);
  return loss;
}

// AdamW's state as a checkpoint holds it (whole): on rank 0, gathered from the shards under
// ZeRO-1 (a collective: every rank calls it); empty on the other ranks.
std::vector<std::pair<std::string, Tensor>> Trainer::optimizer_state() {
  if (zero_) return zero_->gather_state(*adam_);
  if (!rank0()) return {};
  return adam_->state();
}

// The optimizer step, then (ZeRO-1) every rank's updated slice of the weights to every rank.
void Trainer::update(double lr) {
  const auto t0 = std::chrono::steady_clock::now();
  adam_->step(lr);
  const auto t1 = std::chrono::steady_clock::now();
  t_optim_ += std::chrono::duration<double>(t1 - t0).count();
  if (!zero_) return;
  zero_->all_gather(adam_->params());
  t_comm_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
}

std::string Trainer::save(int64_t step,
                          const std::vector<std::pair<std::string, Tensor>>& moments) {
  const std::string name = checkpoint_name(step);
  const std::string final_dir = o_.out + "/" + name;
  std::error_code ec;
  if (fs::exists(final_dir, ec))
    throw Error(final_dir + ": already exists; refusing to overwrite a saved checkpoint");
  const std::string tmp = o_.out + "/." + name + ".tmp-" + std::to_string(::getpid());
  fs::remove_all(tmp, ec);
  if (!fs::create_directory(tmp, ec))
    throw Error(tmp + ": cannot create the checkpoint folder: " + ec.message());
  tm_->save_hf(tmp);
  SafetensorsWriter w;
  for (const auto& [key, t] : moments) w.add(key, t);
  w.add_metadata("format", kStateFormat);
  w.add_metadata("step", std::to_string(step));
  w.add_metadata("adam_t", std::to_string(adam_->steps_taken()));
  w.add_metadata("bad_in_row", std::to_string(bad_in_row_));
  w.add_metadata("skipped_steps", std::to_string(skipped_));
  // The random streams (windows, iteration counts, initial states) are functions of
  // (seed, step), so the step is the whole RNG and data-position state.
  w.add_metadata("seed", std::to_string(o_.seed));
  w.add_metadata("run", run_fingerprint(o_, seq_len_, mean_rec_, depth_).dump());
  for (const auto& [key, value] : src_.state(step)) w.add_metadata(key, value);
  w.add_metadata("data_parallel", data_parallel_state(step));
  w.write(tmp + "/" + kStateFile);
  write_checkpoint_checksums(tmp);  // last: it covers the files above
  fs::rename(tmp, final_dir, ec);
  if (ec) {
    fs::remove_all(tmp);
    throw Error(final_dir + ": cannot move the checkpoint into place: " + ec.message());
  }
  sync_dir(o_.out);  // make the rename itself durable
  last_ckpt_ = final_dir;
  return final_dir;
}

TrainResult Trainer::run() {
  // Records after start_step_ were written by a run killed after its last checkpoint (or, at
  // step 0, before its first): this run writes those steps again.
  std::unique_ptr<MetricsLog> log;  // rank 0's
  if (rank0()) {
    ckpt::truncate_metrics(o_.out + "/metrics.jsonl", start_step_);
    log = std::make_unique<MetricsLog>(o_.out + "/metrics.jsonl");
  }
  const int64_t end = o_.stop_at > 0 ? o_.stop_at : o_.steps;
  TrainResult res;
  const auto t_start = std::chrono::steady_clock::now();
  if (!o_.quiet)
    HUGINN_LOG_INFO("training %s from step %lld to %lld: %lld params, %d×%d sequences of %s "
                    "tokens/step, mean recurrence %d, backprop depth %d, %d threads%s",
                    config_.name.c_str(), (long long)start_step_, (long long)end,
                    (long long)tm_->model().param_counts().total(), o_.grad_accum, o_.batch,
                    seq_len_ > 0 ? std::to_string(seq_len_).c_str() : "varying", mean_rec_,
                    depth_, pool_.size(),
                    comm_->size() > 1 ? (" per rank, " + std::to_string(comm_->size()) +
                                         " ranks (" + comm_->name() + ")").c_str()
                                      : "");
  int64_t tokens = 0;
  for (int64_t s = start_step_; s < end; ++s) {
    const auto t0 = std::chrono::steady_clock::now();
    int n = 0, k = 0;
    double gnorm = 0;
    bool finite = true;
    const double lr = sched_.at(s);
    int64_t step_tokens = 0;
    const uint64_t bytes0 = comm_->bytes();
    const double loss = train_step(s, &n, &k, &gnorm, &finite, &step_tokens);
    tokens += step_tokens;
    if (finite) {
      update(lr);
      bad_in_row_ = 0;
    } else if (++skipped_; ++bad_in_row_ >= o_.max_bad_steps) {
      // Every rank sees the same summed loss and norm, so every rank stops here together.
      throw CollectiveError("step " + std::to_string(s + 1) + ": " + std::to_string(bad_in_row_) +
                  " steps in a row with a non-finite loss or gradient (loss " +
                  std::to_string(loss) + ", gradient norm " + std::to_string(gnorm) +
                  "); stopping. The last good checkpoint is " +
                  (last_ckpt_.empty() ? std::string("(none saved yet)") : last_ckpt_) +
                  ", left untouched");
    }
    const uint64_t step_bytes = comm_->bytes() - bytes0;
    const auto t1 = std::chrono::steady_clock::now();
    const double dt = std::chrono::duration<double>(t1 - t0).count();
    const double elapsed = std::chrono::duration<double>(t1 - t_start).count();
    const double eta = elapsed / static_cast<double>(s + 1 - start_step_) * (end - s - 1);
    const double tok_s = static_cast<double>(step_tokens) / std::max(dt, 1e-9);
    // With a fixed length the count is exact for a resumed run too; otherwise it counts this run.
    const int64_t total = seq_len_ > 0 ? (s + 1) * o_.batch * o_.grad_accum * seq_len_ : tokens;
    // Telemetry: rank 0's split of the step and the bytes it passed to collectives.
    if (log)
      log->write({{"step", s + 1}, {"loss", finite ? json(loss) : json(nullptr)}, {"lr", lr},
                  {"n", n}, {"k", k},
                  {"grad_norm", std::isfinite(gnorm) ? json(gnorm) : json(nullptr)},
                  {"tokens", total}, {"tok_s", tok_s}, {"skipped", !finite},
                  {"ranks", comm_->size()}, {"comm_bytes", step_bytes},
                  {"time_s", {{"compute", t_compute_}, {"comm", t_comm_}, {"optim", t_optim_}}}});
    res.last_loss = loss;
    const bool last = s + 1 == end;
    if (!o_.quiet && (last || (s + 1) % std::max(o_.log_every, 1) == 0 || s == start_step_ || !finite))
      HUGINN_LOG_INFO("step %lld/%lld  loss %.4f  lr %.3e  n+k %d+%d  gnorm %.3f  %.0f tok/s  ETA %s%s",
                      (long long)(s + 1), (long long)o_.steps, loss, lr, n, k, gnorm, tok_s,
                      fmt_eta(eta).c_str(), finite ? "" : "  (skipped: non-finite)");
    if (!o_.quiet && comm_->size() > 1 &&
        (last || (s + 1) % std::max(o_.log_every, 1) == 0 || s == start_step_))
      HUGINN_LOG_INFO("  %d ranks: compute %.3f s, communication %.3f s (%.2f MB in %lld buckets, "
                      "%s), optimizer %.3f s; communication/compute %.3f",
                      comm_->size(), t_compute_, t_comm_, step_bytes / 1e6,
                      (long long)(zero_ ? zero_->buckets_last() : sync_->buckets_last()),
                      zero_ ? "ZeRO-1: reduce-scatter + all-gather" : "all-reduce", t_optim_,
                      t_comm_ / std::max(t_compute_, 1e-9));
    if (last || (o_.eval_every > 0 && (s + 1) % o_.eval_every == 0)) {
      TrainSource::Evaluation ev = src_.evaluate(tm_->model(), *be_);
      if (!ev.key.empty()) {
        json v = json::object();
        for (auto& [name, value] : ev.values) v[name] = value;
        if (log) log->write({{"step", s + 1}, {ev.key, v}});
        if (!o_.quiet)
          HUGINN_LOG_INFO("%s at step %lld/%lld:%s  (ETA %s)", ev.key.c_str(), (long long)(s + 1),
                          (long long)o_.steps, ev.line.c_str(), fmt_eta(eta).c_str());
        res.evaluation = std::move(ev);
      }
    }
    if (o_.on_step) o_.on_step(s + 1, loss);
    if (last || (o_.save_every > 0 && (s + 1) % o_.save_every == 0)) {
      // Rank 0 writes; the others wait for it, so that every rank returns a checkpoint that exists.
      // Under ZeRO-1 every rank first sends rank 0 its slice of the optimizer state.
      const auto moments = optimizer_state();
      const std::string dir =
          rank0() ? save(s + 1, moments) : o_.out + "/" + checkpoint_name(s + 1);
      comm_->barrier();
      last_ckpt_ = dir;
      if (!o_.quiet) HUGINN_LOG_INFO("saved %s", dir.c_str());
    }
    res.final_step = s + 1;
  }
  res.last_checkpoint = last_ckpt_;
  return res;
}

}  // namespace

std::string checkpoint_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

std::string latest_checkpoint(const std::string& out_dir) {
  std::error_code ec;
  std::string best;
  if (!fs::is_directory(out_dir, ec)) return best;
  for (const auto& ent : fs::directory_iterator(out_dir, ec)) {
    const std::string name = ent.path().filename().string();
    if (name.size() != 13 || name.rfind("step-", 0) != 0 ||
        name.find_first_not_of("0123456789", 5) != std::string::npos)
      continue;
    const fs::path p = ent.path();
    if (!fs::exists(p / "config.json") || !fs::exists(p / "model.safetensors") ||
        !fs::exists(p / kStateFile))
      continue;
    if (best.empty() || name > fs::path(best).filename().string()) best = p.string();
  }
  return best;
}

TrainResult train(const TrainOptions& options, TrainSource& source) {
  Trainer t(options, source);
  return t.run();
}

TrainResult train(const TrainOptions& options) {
  ShardSource source(options);
  TrainResult r = train(options, source);
  for (const auto& [depth, loss] : r.evaluation.values) r.val_loss[std::stoi(depth)] = loss;
  return r;
}

}  // namespace huginn
