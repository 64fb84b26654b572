// huginn train: the training loop (include/huginn/train.h) behind flags, or a JSON file of the
// same keys (--config; flags given on the command line win).
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/command.h"
#include "huginn/comm.h"
#include "huginn/log.h"
#include "huginn/train.h"
#include "util/json.h"

namespace huginn::cli {
namespace {

// --config FILE: a JSON object whose keys are the long flag names ("steps", "model-config";
// "model_config" also works); an array gives a list flag several values. CLI11 reads config files
// for the top-level app only, so a subcommand applies them itself, to flags not given on the
// command line.
void apply_config(CLI::App* sub, const std::string& path) {
  const nlohmann::json j = read_json_file(path);
  if (!j.is_object()) throw Error(path + ": expected a JSON object of flag names to values");
  for (auto& [key, value] : j.items()) {
    std::string name = key;
    for (char& c : name)
      if (c == '_') c = '-';
    CLI::Option* opt = sub->get_option_no_throw("--" + name);
    if (!opt || name == "config" || name == "help")
      throw Error(path + ": unknown key '" + key + "' (keys are the flags of huginn train --help)");
    if (opt->count() > 0) continue;  // the command line wins
    auto scalar = [&](const nlohmann::json& v) {
      if (v.is_string()) return v.get<std::string>();
      if (v.is_boolean()) return std::string(v.get<bool>() ? "true" : "false");
      if (v.is_number()) return v.dump();
      throw Error(path + ": key '" + key + "' must be a string, number, boolean or array, found " +
                  json_preview(v));
    };
    std::vector<std::string> inputs;
    if (value.is_array())
      for (const auto& v : value) inputs.push_back(scalar(v));
    else
      inputs.push_back(scalar(value));
    try {
      opt->add_result(inputs);
      opt->run_callback();
    } catch (const CLI::Error& e) {
      throw Error(path + ": key '" + key + "': " + e.what());
    }
  }
}

// The fault tests' hook (tests/dist): HUGINN_TEST_FAULT=kill:RANK:STEP makes rank RANK kill
// itself (SIGKILL) after step STEP, hang:RANK:STEP makes it stop answering (sleep for ever).
void install_fault_hook(TrainOptions& o, const Communicator& comm) {
  const char* spec = std::getenv("HUGINN_TEST_FAULT");
  if (!spec) return;
  char kind[8] = {};
  int rank = -1;
  long long step = -1;
  if (std::sscanf(spec, "%7[a-z]:%d:%lld", kind, &rank, &step) != 3 ||
      (std::strcmp(kind, "kill") != 0 && std::strcmp(kind, "hang") != 0))
    throw Error(std::string("HUGINN_TEST_FAULT is '") + spec + "', expected kill:RANK:STEP or hang:RANK:STEP");
  if (rank != comm.rank()) return;
  const bool kill = kind[0] == 'k';
  o.on_step = [kill, step](int64_t s, double) {
    if (s != step) return;
    if (kill) ::raise(SIGKILL);
    for (;;) ::pause();
  };
}

Registrar reg(62, [](CLI::App& app, Common& common) {
  auto o = std::make_shared<TrainOptions>();
  CLI::App* sub = app.add_subcommand("train", "Train a model (truncated backprop through a sampled recurrence)");
  auto config = std::make_shared<std::string>();
  sub->add_option("--config", *config, "JSON file with any of these flags as keys (flags given here win)")
      ->check(CLI::ExistingFile);
  sub->add_option("--model-config", o->model_config, "config.json of the model (optional with --resume)");
  sub->add_option("--data", o->data, "data directory of train-*.bin / val-*.bin shards (required)");
  sub->add_option("--out", o->out, "run directory: step-NNNNNNNN/ checkpoints, metrics.jsonl (required)");
  sub->add_option("--init-from", o->init_from, "start from this model directory's weights");
  sub->add_flag("--resume", o->resume,
                "continue from the newest checkpoint in --out (its checksums and state verified first)");
  sub->add_option("--steps", o->steps, "optimizer steps (the schedule's length)")->check(CLI::PositiveNumber);
  sub->add_option("--stop-at", o->stop_at, "stop after this step (saving), keeping the schedule of --steps");
  sub->add_option("--batch", o->batch, "sequences per micro-batch")->check(CLI::PositiveNumber);
  sub->add_flag("--sequential", o->sequential,
                "run each batch's sequences one after another: slower, bit-identical to runs of builds before batched training");
  auto precision = add_precision_option(sub);
  sub->add_option("--grad-accum", o->grad_accum, "micro-batches per step")->check(CLI::PositiveNumber);
  sub->add_option("--seq-len", o->seq_len, "tokens per sequence (default: block_size)")->check(CLI::NonNegativeNumber);
  sub->add_option("--lr", o->lr, "peak learning rate")->check(CLI::NonNegativeNumber);
  sub->add_option("--min-lr-ratio", o->min_lr_ratio, "final learning rate / peak")->check(CLI::Range(0.0, 1.0));
  sub->add_option("--warmup", o->warmup, "linear warmup steps")->check(CLI::NonNegativeNumber);
  sub->add_option("--cooldown", o->cooldown, "cooldown steps of the constant schedule (default 20%)");
  sub->add_option("--schedule", o->schedule, "cosine | linear | constant (with cooldown)")
      ->check(CLI::IsMember({"cosine", "linear", "constant"}));
  sub->add_option("--weight-decay", o->adam.weight_decay, "AdamW decoupled weight decay");
  sub->add_option("--beta1", o->adam.beta1, "AdamW beta1")->check(CLI::Range(0.0, 1.0));
  sub->add_option("--beta2", o->adam.beta2, "AdamW beta2")->check(CLI::Range(0.0, 1.0));
  sub->add_option("--adam-eps", o->adam.eps, "AdamW epsilon")->check(CLI::PositiveNumber);
  sub->add_flag("--decay-all", o->adam.decay_all, "also decay norms, biases and embeddings");
  sub->add_option("--grad-clip", o->grad_clip, "global gradient-norm limit (0: off)");
  sub->add_option("--mean-recurrence", o->mean_recurrence, "mean sampled recurrence (default: config)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--backprop-depth", o->backprop_depth, "mean backprop depth k (default: config)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--init-scale", o->init_scale, "initial state: truncated normal scaled by this (0: zeros)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--eval-every", o->eval_every, "validate every N steps (0: at the end)")->check(CLI::NonNegativeNumber);
  sub->add_option("--save-every", o->save_every, "checkpoint every N steps (0: at the end)")->check(CLI::NonNegativeNumber);
  sub->add_option("--val-depths", o->val_depths, "recurrences r to validate at")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  sub->add_option("--val-windows", o->val_windows, "fixed validation windows")->check(CLI::PositiveNumber);
  sub->add_option("--max-bad-steps", o->max_bad_steps, "non-finite steps in a row before stopping")
      ->check(CLI::PositiveNumber);
  sub->add_option("--seed", o->seed, "seed of initialisation, data order, recurrence draws");
  sub->add_option("--bucket-mb", o->bucket_mb,
                  "data-parallel runs: MiB of gradients summed over the ranks per collective")
      ->check(CLI::Range(1e-6, 1024.0))
      ->capture_default_str();
  sub->add_option("--zero", o->zero,
                  "data-parallel runs: 1 = ZeRO-1, each rank holds and updates 1/N of the "
                  "optimizer state (gradients reduce-scattered, weights all-gathered); 0 = whole "
                  "state on every rank, gradients all-reduced")
      ->check(CLI::Range(0, 1))
      ->capture_default_str();
  auto timeout = std::make_shared<double>(600);
  sub->add_option("--comm-timeout", *timeout,
                  "data-parallel runs: seconds rank 0 waits for every rank to reach a collective "
                  "before it aborts the job naming the ranks that did not (they died or hang); "
                  "inside a collective rank 0 waits as long, the others twice as long")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  add_common_options(sub, common);
  sub->callback([o, config, sub, timeout, precision, &common] {
    if (!config->empty()) apply_config(sub, *config);
    o->precision = precision_of(*precision);
    o->threads = common.threads;
    o->backend = common.backend;
    o->quiet = common.quiet;
    // Under mpirun / srun: one rank of a data-parallel run (README "Training on several
    // processes"). A rank-local error ends every rank: the others would wait for it otherwise.
    std::unique_ptr<Communicator> comm;
    if (launched_by_mpi()) comm = make_mpi_communicator(*timeout);
    if (comm && comm->size() > 1) o->comm = comm.get();
    if (comm) install_fault_hook(*o, *comm);
    TrainResult r;
    try {
      r = train(*o);
    } catch (const CollectiveError& e) {
      if (!o->comm) throw;
      // Every rank met this error at the same point. Rank 0 reports it, then all leave together:
      // a rank that ended first made mpirun end rank 0 before it had printed (seen under load).
      if (comm->rank() == 0) {
        std::fprintf(stderr, "error: %s\n", e.what());
        std::fflush(stderr);
      }
      comm->barrier();
      comm.reset();
      std::exit(1);
    } catch (const std::exception& e) {
      if (!o->comm) throw;
      std::fprintf(stderr, "error: rank %d of %d: %s\n", comm->rank(), comm->size(), e.what());
      comm->abort(1);
    }
    if (comm && comm->rank() != 0) return;
    std::ostringstream val;
    for (auto& [depth, loss] : r.val_loss) val << " r=" << depth << ":" << loss;
    std::printf("step %lld  loss %.4f  val%s  checkpoint %s\n", (long long)r.final_step,
                r.last_loss, val.str().empty() ? " (none)" : val.str().c_str(),
                r.last_checkpoint.c_str());
  });
});

}  // namespace
}  // namespace huginn::cli
