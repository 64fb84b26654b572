// The task trainer: a built-in task's train split as a source for the one training loop
// (huginn/train.h, train()): one sequence per example, cross-entropy on the answer tokens only
// (labels -100 elsewhere), truncated backprop through a recurrence drawn per step from the
// log-normal Poisson (IterationSampler), AdamW with a warmup + cosine schedule, checkpoints,
// exact resume and the bad-step policy. Everything is a pure function of the seed, so a run is
// reproducible for a thread count.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "huginn/backend.h"
#include "huginn/backward.h"
#include "huginn/error.h"
#include "huginn/eval.h"
#include "huginn/forward.h"
#include "huginn/thread_pool.h"
#include "huginn/train.h"
#include "util/mapped_file.h"

namespace huginn {
namespace {

namespace fs = std::filesystem;

uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t x = a * 0x9e3779b97f4a7c15ULL + b + 0x632be59bd9b4e019ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The levels of step s under a curriculum of `steps` steps: the top level grows linearly from
// the task's lowest to its highest over those steps (all levels afterwards).
TaskSpec curriculum_spec(TaskSpec spec, int64_t steps, int64_t s) {
  if (steps <= 0 || s >= steps) return spec;
  const int span = spec.max_level - spec.min_level;
  spec.max_level = spec.min_level + static_cast<int>((span + 1) * s / steps);
  return spec;
}

}  // namespace

// Teacher-forced greedy accuracy: every answer token (and the final "\n") is the argmax at its
// position. Used for the trainer's held-out checks.
static double teacher_forced_accuracy(Runner& runner, Backend& be, const TextCodec& codec,
                                      const std::vector<TaskExample>& exs, int steps, int64_t V) {
  int correct = 0;
  std::vector<float> logits;
  for (const auto& ex : exs) {
    const TaskTokens e = task_tokens(codec, ex, false);
    std::span<const int32_t> in(e.ids.data(), e.ids.size() - 1);
    ForwardOutput out = runner.forward(in, steps, InitState{});
    logits.resize(static_cast<size_t>(out.logits.numel()));
    be.download(out.logits, logits.data());
    bool ok = true;
    for (size_t t = e.prompt_len - 1; t + 1 < e.ids.size() && ok; ++t) {
      const float* row = logits.data() + t * V;
      const int64_t am = std::max_element(row, row + V) - row;
      ok = am == e.ids[t + 1];
    }
    correct += ok;
  }
  return exs.empty() ? 0.0 : static_cast<double>(correct) / exs.size();
}

namespace {

// A built-in task's train split as a TrainSource: one example per sequence (example
// step·batch + b), the loss on the answer tokens only, one (n, k) draw per step; the evaluation
// is the held-out teacher-forced accuracy at r = 1 and at the mean recurrence.
class TaskSource : public TrainSource {
 public:
  TaskSource(const TaskTrainOptions& o, const TaskSpec& spec, const TextCodec& codec, int mean_rec)
      : o_(o), spec_(spec), codec_(codec), mean_rec_(mean_rec),
        held_(make_task(spec, Split::kTest, o.eval_examples, o.seed + 1)) {}
  void open(const ModelConfig& c, const std::string& src) override {
    if (c.vocab_size < 128)
      throw Error(src + ": vocab_size " + std::to_string(c.vocab_size) +
                  " is too small for the byte vocabulary of the built-in tasks (need >= 128)");
    TaskSpec longest = spec_;  // the longest example must fit the RoPE table
    longest.min_level = spec_.max_level;
    const TaskTokens e = task_tokens(codec_, make_task_example(longest, Split::kTrain, o_.seed, 0), false);
    if (static_cast<int64_t>(e.ids.size()) > c.block_size)
      throw Error(src + ": block_size " + std::to_string(c.block_size) +
                  " is shorter than an example of " + spec_.to_string() + " (" +
                  std::to_string(e.ids.size()) + " tokens)");
    vocab_ = c.vocab_size;
  }
  int seq_len() const override { return 0; }
  void sequence(int64_t step, int, int b, std::vector<int32_t>& ids, std::vector<int32_t>& labels,
                uint64_t* init_seed) override {
    const uint64_t index = static_cast<uint64_t>(step) * o_.batch + b;
    const TaskExample ex =
        make_task_example(curriculum_spec(spec_, o_.curriculum, step), Split::kTrain, o_.seed, index);
    TaskTokens e = task_tokens(codec_, ex, o_.supervise_steps);
    ids.assign(e.ids.begin(), e.ids.end() - 1);
    labels = std::move(e.labels);
    *init_seed = mix(o_.seed, index);
  }
  uint64_t iteration_seed(int64_t step, int) const override { return mix(o_.seed, 1000003 + step); }

  Evaluation evaluate(const Model& model, Backend& be) override {
    if (!runner_ || &runner_->model() != &model) runner_ = std::make_unique<Runner>(model, be);
    Evaluation ev;
    ev.key = "heldout_acc";
    acc_r1 = teacher_forced_accuracy(*runner_, be, codec_, held_, 1, vocab_);
    acc_mean = teacher_forced_accuracy(*runner_, be, codec_, held_, mean_rec_, vocab_);
    ev.values = {{"1", acc_r1}, {std::to_string(mean_rec_), acc_mean}};
    char line[96];
    std::snprintf(line, sizeof line, "  r=1 %.0f%%  r=%d %.0f%%", 100 * acc_r1, mean_rec_, 100 * acc_mean);
    ev.line = line;
    return ev;
  }

  std::map<std::string, std::string> state(int64_t step) const override {
    return {{"task", spec_.to_string()},
            {"supervise_steps", o_.supervise_steps ? "1" : "0"},
            {"curriculum", std::to_string(o_.curriculum)},
            {"next_example_index", std::to_string(static_cast<uint64_t>(step) * o_.batch)}};
  }
  void check_state(const std::map<std::string, std::string>& meta, const std::string& path,
                   int64_t step) const override {
    auto field = [&](const char* key) -> const std::string& {
      auto it = meta.find(key);
      if (it == meta.end()) throw Error(path + ": metadata has no '" + key + "'");
      return it->second;
    };
    if (field("task") != spec_.to_string())
      throw Error("cannot resume: " + path + " was trained on task '" + field("task").substr(0, 80) +
                  "', this run is on '" + spec_.to_string() + "'");
    // The recipe's data flags change what every later step sees: resuming must keep them.
    const std::map<std::string, std::string> now = state(step);
    for (const char* key : {"supervise_steps", "curriculum"})
      if (field(key) != now.at(key))
        throw Error("cannot resume: " + path + " was trained with " + key + " = " +
                    field(key).substr(0, 40) + ", this run has " + now.at(key));
    const std::string want = std::to_string(static_cast<uint64_t>(step) * o_.batch);
    if (field("next_example_index") != want)
      throw Error(path + ": metadata 'next_example_index' is '" +
                  field("next_example_index").substr(0, 40) + "', expected " + want +
                  " (step x batch)");
  }

  double acc_r1 = 0, acc_mean = 0;

 private:
  const TaskTrainOptions& o_;
  const TaskSpec spec_;
  const TextCodec& codec_;
  const int mean_rec_;
  const std::vector<TaskExample> held_;
  int64_t vocab_ = 0;
  std::unique_ptr<Runner> runner_;
};

}  // namespace

TaskTrainResult train_task(const TaskTrainOptions& o) {
  if (o.out.empty()) throw Error("--out: required (the model directory to write)");
  if (o.steps < 1) throw Error("--steps: must be at least 1");
  if (o.batch < 1) throw Error("--batch: must be at least 1");
  const ModelConfig cfg = ModelConfig::from_file(o.model_config);
  const TaskSpec spec = TaskSpec::parse(o.task);
  const TextCodec codec = TextCodec::bytes(cfg.vocab_size);
  const int mean_rec = o.mean_recurrence > 0 ? o.mean_recurrence : cfg.mean_recurrence;
  const int depth = o.backprop_depth > 0 ? o.backprop_depth : cfg.mean_backprop_depth;
  TaskSource source(o, spec, codec, mean_rec);

  // The one training loop (huginn/train.h): checkpoints in OUT/step-NNNNNNNN, resume, bad steps.
  TrainOptions t = o;
  t.schedule = "cosine";
  t.mean_recurrence = mean_rec;
  t.backprop_depth = depth;
  const auto t0 = std::chrono::steady_clock::now();
  const TrainResult tr = train(t, source);

  TaskTrainResult res;
  res.steps = tr.final_step;
  res.last_loss = tr.last_loss;
  res.acc_r1 = source.acc_r1;
  res.acc_mean = source.acc_mean;
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // The final model at OUT itself (what eval and the demo load), beside the checkpoints.
  for (const char* f : {"config.json", "model.safetensors"}) {
    std::error_code ec;
    fs::copy_file(tr.last_checkpoint + "/" + f, o.out + "/" + f + ".tmp",
                  fs::copy_options::overwrite_existing, ec);
    if (!ec) fs::rename(o.out + "/" + f + ".tmp", o.out + "/" + f, ec);
    if (ec) throw Error(o.out + "/" + f + ": cannot write the final model: " + ec.message());
  }
  nlohmann::json meta = {{"task", spec.to_string()}, {"vocabulary", "bytes"},
                         {"mean_recurrence", mean_rec}, {"backprop_depth", depth},
                         {"steps", o.steps}, {"batch", o.batch}, {"lr", o.lr},
                         {"supervise_steps", o.supervise_steps}, {"curriculum", o.curriculum},
                         {"seed", o.seed}, {"final_loss", res.last_loss},
                         {"heldout_acc_r1", res.acc_r1}, {"heldout_acc_mean", res.acc_mean},
                         {"seconds", res.seconds}};
  const std::string text = meta.dump(2) + "\n";
  write_file_atomic(o.out + "/task.json", text.data(), text.size());
  return res;
}

}  // namespace huginn
