// huginn task generate | train: the built-in reasoning tasks (include/huginn/eval.h) as JSONL or
// text, and the task trainer (loss on answer tokens only) behind `make demo`.
#include <cstdio>
#include <memory>

#include "cli/command.h"
#include "huginn/eval.h"
#include "util/mapped_file.h"

namespace huginn::cli {
namespace {

struct GenArgs {
  std::string task = "chain", split = "test", format = "jsonl", out;
  int n = 10;
  uint64_t seed = 1234;
};

Registrar reg(70, [](CLI::App& app, Common& common) {
  CLI::App* task = app.add_subcommand("task", "Built-in reasoning tasks: generate examples, train a model on one");
  task->require_subcommand(1);

  auto g = std::make_shared<GenArgs>();
  CLI::App* gen = task->add_subcommand("generate", "Write examples of a built-in task (JSONL or text)");
  gen->add_option("task", g->task, "chain[:hops=N|LO-HI] | parity[:bits=N] | add|mul[:digits=N] | ops|swap|trace|affine[:ops=N] | sum[:terms=N]")->required();
  gen->add_option("--split", g->split, "train | test (disjoint)")->check(CLI::IsMember({"train", "test"}));
  gen->add_option("--n", g->n, "number of examples")->check(CLI::PositiveNumber);
  gen->add_option("--seed", g->seed, "seed (the same seed gives the same examples)");
  gen->add_option("--format", g->format, "jsonl (prompt/answer, what huginn eval reads) | text")
      ->check(CLI::IsMember({"jsonl", "text"}));
  gen->add_option("--out", g->out, "output file (default: stdout)");
  gen->callback([g] {
    const auto exs = make_task(TaskSpec::parse(g->task), parse_split(g->split), g->n, g->seed);
    std::string text;
    if (g->format == "jsonl") {
      text = task_to_jsonl(exs);
    } else {
      for (const auto& ex : exs) text += ex.prompt + ex.answer + "\n";
    }
    if (g->out.empty())
      std::fwrite(text.data(), 1, text.size(), stdout);
    else
      write_file_atomic(g->out, text.data(), text.size());
  });

  auto o = std::make_shared<TaskTrainOptions>();
  CLI::App* tr = task->add_subcommand("train", "Train a model from scratch on a built-in task (loss on answers only)");
  tr->add_option("--model-config", o->model_config, "config.json of the model (vocab_size >= 128)")
      ->required()
      ->check(CLI::ExistingFile);
  tr->add_option("--task", o->task, "built-in task spec, e.g. chain:hops=4-8");
  tr->add_option("--out", o->out, "model directory to write (config.json, model.safetensors, task.json; checkpoints in step-NNNNNNNN/)")->required();
  tr->add_option("--steps", o->steps, "optimizer steps")->check(CLI::PositiveNumber);
  tr->add_option("--batch", o->batch, "examples per step")->check(CLI::PositiveNumber);
  tr->add_flag("--sequential", o->sequential,
               "run each batch's sequences one after another: slower, bit-identical to runs of builds before batched training");
  auto precision = add_precision_option(tr);
  tr->add_option("--lr", o->lr, "peak learning rate (warmup then cosine)")->check(CLI::PositiveNumber);
  tr->add_option("--min-lr-ratio", o->min_lr_ratio, "final learning rate / peak")->check(CLI::Range(0.0, 1.0));
  tr->add_option("--warmup", o->warmup, "warmup steps")->check(CLI::NonNegativeNumber);
  tr->add_option("--weight-decay", o->adam.weight_decay, "AdamW weight decay")->check(CLI::NonNegativeNumber);
  tr->add_option("--grad-clip", o->grad_clip, "global gradient-norm limit (0: off)")->check(CLI::NonNegativeNumber);
  tr->add_option("--mean-recurrence", o->mean_recurrence, "mean sampled recurrence (default: config)")
      ->check(CLI::NonNegativeNumber);
  tr->add_option("--backprop-depth", o->backprop_depth, "mean backprop depth (default: config)")
      ->check(CLI::NonNegativeNumber);
  tr->add_option("--init-scale", o->init_scale, "initial state scale during training (0: zeros)")
      ->check(CLI::NonNegativeNumber);
  tr->add_flag("--supervise-steps", o->supervise_steps,
              "also train on the running value under every operation of a stepwise task "
              "(affine, swap); the prompt stays as it is");
  tr->add_option("--curriculum", o->curriculum,
                 "steps over which the task's top level rises from its lowest to its highest "
                 "(0: all levels from the start)")
      ->check(CLI::NonNegativeNumber);
  tr->add_option("--eval-every", o->eval_every, "held-out accuracy check every N steps (0: at the end)")
      ->check(CLI::NonNegativeNumber);
  tr->add_option("--eval-examples", o->eval_examples, "held-out examples per check")->check(CLI::PositiveNumber);
  tr->add_option("--seed", o->seed, "seed of initialisation, examples and recurrence draws");
  tr->add_option("--save-every", o->save_every,
                 "checkpoint (OUT/step-NNNNNNNN: weights, optimizer state) every N steps (0: at the end)")
      ->check(CLI::NonNegativeNumber);
  tr->add_option("--max-bad-steps", o->max_bad_steps,
                 "stop after this many steps in a row with a non-finite loss or gradient (they are skipped)")
      ->check(CLI::PositiveNumber);
  tr->add_option("--stop-at", o->stop_at, "stop (with a checkpoint) after this step; the schedule still spans --steps")
      ->check(CLI::NonNegativeNumber);
  tr->add_flag("--resume", o->resume,
               "continue from the newest checkpoint in OUT (verified first), bit-identically");
  add_common_options(tr, common);
  tr->callback([o, precision, &common] {
    o->precision = precision_of(*precision);
    o->threads = common.threads;
    o->backend = common.backend;
    o->quiet = common.quiet;
    const TaskTrainResult r = train_task(*o);
    std::printf("trained %lld steps in %.0f s: loss %.4f, held-out accuracy r=1 %.1f%%, r=mean %.1f%% -> %s\n",
                (long long)r.steps, r.seconds, r.last_loss, 100 * r.acc_r1, 100 * r.acc_mean,
                o->out.c_str());
  });
});

}  // namespace
}  // namespace huginn::cli
