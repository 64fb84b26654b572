// The task trainer: a built-in task's train split, one sequence per example, cross-entropy on the
// answer tokens only (labels -100 elsewhere), truncated backprop through a recurrence drawn per
// step from the log-normal Poisson (IterationSampler), AdamW with a warmup + cosine schedule.
// Everything is a pure function of the seed, so a run is reproducible for a thread count.
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

std::string fmt_time(double s) {
  char buf[32];
  const int t = static_cast<int>(std::lround(std::max(s, 0.0)));
  std::snprintf(buf, sizeof buf, "%d:%02d", t / 60, t % 60);
  return buf;
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

TaskTrainResult train_task(const TaskTrainOptions& o) {
  if (o.out.empty()) throw Error("--out: required (the model directory to write)");
  if (o.steps < 1) throw Error("--steps: must be at least 1");
  if (o.batch < 1) throw Error("--batch: must be at least 1");
  const ModelConfig cfg = ModelConfig::from_file(o.model_config);
  if (cfg.vocab_size < 128)
    throw Error(o.model_config + ": vocab_size " + std::to_string(cfg.vocab_size) +
                " is too small for the byte vocabulary of the built-in tasks (need >= 128)");
  const TaskSpec spec = TaskSpec::parse(o.task);
  const TextCodec codec = TextCodec::bytes(cfg.vocab_size);
  const int mean_rec = o.mean_recurrence > 0 ? o.mean_recurrence : cfg.mean_recurrence;
  const int depth = o.backprop_depth > 0 ? o.backprop_depth : cfg.mean_backprop_depth;
  {  // the longest example must fit the RoPE table
    TaskSpec longest = spec;
    longest.min_level = spec.max_level;
    const TaskTokens e = task_tokens(codec, make_task_example(longest, Split::kTrain, o.seed, 0), false);
    if (static_cast<int64_t>(e.ids.size()) > cfg.block_size)
      throw Error(o.model_config + ": block_size " + std::to_string(cfg.block_size) +
                  " is shorter than an example of " + spec.to_string() + " (" +
                  std::to_string(e.ids.size()) + " tokens)");
  }
  std::error_code ec;
  fs::create_directories(o.out, ec);
  if (ec || !fs::is_directory(o.out)) throw Error(o.out + ": cannot create the output directory");

  ThreadPool pool(o.threads);
  auto be = make_backend(o.backend, pool);
  auto tm = TrainableModel::init(cfg, o.seed);
  const Model& model = tm->model();
  BackwardRunner bw(model, *be);
  Runner fw(model, *be);
  Grads grads = Grads::zeros_like(model, *be);
  AdamWOptions ao;
  ao.weight_decay = o.weight_decay;
  AdamW adam(named_params(model, grads), ao);
  Schedule sched;
  sched.kind = ScheduleKind::kCosine;
  sched.lr = o.lr;
  sched.min_lr = o.lr * o.min_lr_ratio;
  sched.warmup = o.warmup;
  sched.total = o.steps;
  const std::vector<TaskExample> held = make_task(spec, Split::kTest, o.eval_examples, o.seed + 1);

  if (!o.quiet)
    std::fprintf(stderr,
                 "training %s on %s: %lld params, %lld steps x %d examples, mean recurrence %d, "
                 "backprop depth %d, %d threads\n",
                 cfg.name.c_str(), spec.to_string().c_str(),
                 (long long)model.param_counts().total(), (long long)o.steps, o.batch, mean_rec,
                 depth, pool.size());
  TaskTrainResult res;
  const auto t0 = std::chrono::steady_clock::now();
  double loss_avg = 0;
  int bad = 0;
  for (int64_t s = 0; s < o.steps; ++s) {
    grads.zero(*be);
    IterationSampler sampler(mean_rec, depth, mix(o.seed, 1000003 + s));
    const auto [n, k] = sampler.next();
    double loss = 0;
    const float scale = 1.0f / static_cast<float>(o.batch);
    for (int b = 0; b < o.batch; ++b) {
      const uint64_t index = static_cast<uint64_t>(s) * o.batch + b;
      const TaskExample ex = make_task_example(curriculum_spec(spec, o.curriculum, s), Split::kTrain,
                                               o.seed, index);
      const TaskTokens e = task_tokens(codec, ex, o.supervise_steps);
      const size_t T = e.ids.size() - 1;
      LossOptions lo;
      lo.n_no_grad = n;
      lo.n_with_grad = k;
      lo.init.scale = o.init_scale;
      lo.init.seed = mix(o.seed, index);
      loss += bw.loss_and_grad(std::span<const int32_t>(e.ids.data(), T), e.labels, lo, grads, scale) *
              static_cast<double>(scale);
    }
    const double gnorm = clip_grad_norm(adam.params(), o.grad_clip);
    if (std::isfinite(loss) && std::isfinite(gnorm)) {
      adam.step(sched.at(s), &pool);
      bad = 0;
      loss_avg = s == 0 ? loss : 0.95 * loss_avg + 0.05 * loss;
    } else if (++bad >= 5) {
      throw Error("step " + std::to_string(s + 1) + ": 5 steps in a row with a non-finite loss or "
                  "gradient; stopping (lower --lr)");
    }
    res.last_loss = loss;
    res.steps = s + 1;
    if (o.on_step) o.on_step(s + 1, loss);
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const bool check = o.eval_every > 0 && ((s + 1) % o.eval_every == 0 || s + 1 == o.steps);
    if (check) {
      res.acc_r1 = teacher_forced_accuracy(fw, *be, codec, held, 1, cfg.vocab_size);
      res.acc_mean = teacher_forced_accuracy(fw, *be, codec, held, mean_rec, cfg.vocab_size);
    }
    if (!o.quiet && (check || (s + 1) % 10 == 0 || s == 0)) {
      const double eta = el / (s + 1) * (o.steps - s - 1);
      std::fprintf(stderr, "step %5lld/%lld  loss %.4f (avg %.4f)  n+k %d+%d  lr %.2e  %s elapsed, ETA %s",
                   (long long)(s + 1), (long long)o.steps, loss, loss_avg, n, k, sched.at(s),
                   fmt_time(el).c_str(), fmt_time(eta).c_str());
      if (check)
        std::fprintf(stderr, "  | held-out acc r=1 %.0f%%  r=%d %.0f%%", 100 * res.acc_r1, mean_rec,
                     100 * res.acc_mean);
      std::fprintf(stderr, "\n");
    }
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (o.eval_every <= 0) {
    res.acc_r1 = teacher_forced_accuracy(fw, *be, codec, held, 1, cfg.vocab_size);
    res.acc_mean = teacher_forced_accuracy(fw, *be, codec, held, mean_rec, cfg.vocab_size);
  }
  tm->save_hf(o.out);
  nlohmann::json meta = {{"task", spec.to_string()}, {"vocabulary", "bytes"},
                         {"mean_recurrence", mean_rec}, {"backprop_depth", depth},
                         {"steps", o.steps}, {"batch", o.batch}, {"lr", o.lr},
                         {"seed", o.seed}, {"final_loss", res.last_loss},
                         {"heldout_acc_r1", res.acc_r1}, {"heldout_acc_mean", res.acc_mean},
                         {"seconds", res.seconds}};
  const std::string text = meta.dump(2) + "\n";
  write_file_atomic(o.out + "/task.json", text.data(), text.size());
  return res;
}

}  // namespace huginn
