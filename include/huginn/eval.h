// Evaluation: built-in reasoning tasks (generated deterministically, disjoint train / test
// splits), answer extraction, exact-match and multiple-choice scoring with Wilson intervals, the
// runner behind `huginn eval` (accuracy, steps per token and tokens/s per recurrence setting,
// table / JSON / CSV / plots), and a small task trainer with loss on answer tokens only (the
// recipe behind `make demo`).
//
// Text <-> ids: a model directory with tokenizer.json uses it; otherwise ids are the bytes of the
// text (a "byte vocabulary": every byte must be below the model's vocab_size), which is what the
// built-in tasks and the demo use.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "huginn/exit.h"
#include "huginn/samplers.h"
#include "huginn/wavefront.h"
#include "huginn/train.h"

namespace huginn {

class Tokenizer;

// ---- tasks ----------------------------------------------------------------------------------------

// One example. Generation tasks: `prompt`, `answer` (scored by exact match after extraction with
// `regex`, group 1 when it has one, else the whole match; without a regex the first line of the
// output, trimmed). Multiple-choice tasks: `context`, `choices`, `gold` (the index of the right
// choice), scored by the summed log-likelihood of each choice after the context.
struct TaskExample {
  std::string prompt, answer, regex;
  // Stepwise built-in tasks (affine, swap): as long as `prompt`; a non-zero byte at i is the
  // intermediate answer (the running value) after reading prompt[i]. Never part of the input: the
  // task trainer can use it as extra labels (--supervise-steps). Empty for other tasks.
  std::string step_labels;
  std::string context;
  std::vector<std::string> choices;
  int gold = -1;
  bool multiple_choice() const { return !choices.empty(); }
};

enum class Split { kTrain, kTest };
Split parse_split(const std::string& s);  // "train" | "test"

// A built-in task by name with difficulty knobs, e.g. "chain", "chain:hops=6",
// "chain:hops=4-8", "parity:bits=8", "add:digits=3".
//   chain   multi-hop variable resolution: a literal digit, then `hops` pointer assignments in
//           shuffled order, "c=b;a=7;b=a;c?" -> "7". Each hop is one sequential lookup
//           (hops=0: a direct lookup, "a=7;b=2;a?").
//   parity  "parity 10110?" -> "1" (xor of `bits` bits).
//   add     "123+989=" -> "1112" (two `digits`-digit numbers).
//   ops     "7*3+5*2=" -> "2": a digit, then `ops` operations +d / *d applied left to right,
//           mod 10. One sequential step per operation (they do not commute).
//   mul     "347*8=" -> "2776" (a `digits`-digit number times a digit 2-9).
//   sum     "3+5+8+1=" -> "7" (the last digit of a sum of `terms` digits).
//   swap    "c:ab,cd,bc=" -> "d": a ball under one of five cups a-e, then `ops` swaps of two
//           cups; where is the ball? One sequential step per swap (NC1-complete, like S5's
//           word problem).
//           step_labels: the ball's cup under every marker (':', ',', '=').
//   trace   "c:ab,cd,bc=" -> "bdd": swap's prompt, answered with the cup after every swap (an
//           answer of `ops` tokens, for decoders that overlap positions). step_labels as swap.
//   affine  "7*3+5*9=" -> "4": like ops, but every operation (+1..+9, *3, *7, *9 mod 10) is a
//           bijection, so the answer depends on all of them. step_labels: the running value
//           under every operand digit.
// Train and test draw from the same generator; an example belongs to the test split iff a hash
// of its prompt is 0 mod 8, so the splits are disjoint for every seed. Answers end at "\n".
struct TaskSpec {
  std::string name;  // chain | parity | add | ops | mul | sum | swap | trace | affine
  int min_level = 0, max_level = 0;
  std::string to_string() const;  // "chain:hops=4-8"
  static TaskSpec parse(const std::string& text);
  static std::vector<std::string> builtin_names();
};

// `n` examples of `split`, a pure function of (spec, split, seed, index).
std::vector<TaskExample> make_task(const TaskSpec& spec, Split split, int n, uint64_t seed);
TaskExample make_task_example(const TaskSpec& spec, Split split, uint64_t seed, uint64_t index);

// Reads a JSONL task file (generation or multiple-choice lines). Throws huginn::Error naming the
// file, line and field on bad input.
std::vector<TaskExample> load_task_file(const std::string& path);
// One JSON object per line (the format load_task_file reads).
std::string task_to_jsonl(const std::vector<TaskExample>& examples);

// The answer in `output` (see TaskExample); "" when the regex does not match.
std::string extract_answer(const std::string& output, const std::string& regex);

// Wilson score interval for k successes of n at z (1.96: 95 %). {0, 1} when n = 0.
std::pair<double, double> wilson_interval(int64_t k, int64_t n, double z = 1.96);

// ---- text <-> ids ----------------------------------------------------------------------------------

class TextCodec {
 public:
  // tokenizer.json in model_dir when present, else bytes (checked against vocab_size).
  static TextCodec for_model(const std::string& model_dir, int64_t vocab_size);
  static TextCodec bytes(int64_t vocab_size);
  std::vector<int32_t> encode(const std::string& text, const std::string& what) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  std::string piece(int32_t id) const;  // one token's text (for per-token displays)
  int32_t newline_id() const;           // the id of "\n" (stop token), -1 when none

 private:
  std::shared_ptr<const Tokenizer> tok_;
  int64_t vocab_ = 0;
};

// One training sequence: ids = the prompt's tokens, then the answer's and "\n"'s; labels[t] (one
// per input position, t < ids.size() - 1) is the token expected after ids[0..t], or -100 (not
// trained): the answer's tokens and the "\n" always, and with `steps` the intermediate answers
// of step_labels at their prompt positions (needs a byte codec: prompt byte i is token i).
struct TaskTokens {
  std::vector<int32_t> ids, labels;
  size_t prompt_len = 0;
};
TaskTokens task_tokens(const TextCodec& codec, const TaskExample& ex, bool steps);

// ---- eval runner -------------------------------------------------------------------------------------

struct EvalSetting {
  int steps = 0;  // fixed recurrences, or the maximum with an exit
  ExitSpec exit;  // kNone: fixed
  std::string label() const;  // "r=8" or "kl:0.001 (max 32)"
};

struct EvalOptions {
  std::string model;       // model directory
  std::string weight_dtype = "f32";  // f32 | bf16 | q8 | q4 | auto (parse_weight_dtype)
  std::string task;        // built-in spec or FILE.jsonl
  std::vector<int> steps = {1, 2, 4, 8, 16, 32, 64};
  std::vector<std::string> exits;  // e.g. "kl:1e-3"; each runs with max steps = exit_max_steps
  int exit_max_steps = 0;          // 0 = the largest of `steps`
  bool warm_start = false;
  std::string warm_state = "auto";  // with warm_start: auto | latent | raw (GenerateOptions)
  // Feed the prompt one token per call, as if the model had written it (teacher forcing): every
  // prompt token runs its own recurrence, with the exit criterion and warm start (the previous
  // token's final state as its s_0), and its prediction is scored against the task's
  // intermediate answers (TaskExample::step_labels) where it has them. Sequential decode only.
  bool prompt_by_token = false;
  int cache_slots = 0;
  // Generation: sequential, wavefront, speculative or diffusion (the last two with these
  // options; accuracy vs speed of the reference's samplers).
  std::string decode = "sequential";
  WavefrontOptions wavefront;
  SpeculativeOptions speculative;
  DiffusionOptions diffusion;
  int limit = 200;                 // examples (built-in: generated; file: the first N)
  uint64_t seed = 1234;            // built-in tasks: the test split's seed
  int max_new_tokens = 0;          // 0 = longest answer + 2
  std::string out_dir;             // results.json, results.csv, plots; "" = none
  bool plots = true;
  int show_examples = 3;           // example generations printed with per-token steps
  int threads = 0;
  std::string backend = "cpu";
  bool quiet = false;
};

struct EvalRow {
  EvalSetting setting;
  int64_t n = 0, correct = 0;
  double accuracy = 0, ci_low = 0, ci_high = 1;
  double mean_steps = 0;  // recurrences per generated token (mc: per scored token)
  double mean_first_steps = 0;  // recurrences of the first generated token (the prompt's call)
  double mean_cache_bytes = 0;  // KV cache allocated per example at the end of generation
  // With prompt_by_token: recurrences per prompt token's call (the last one's included, which
  // also gives the first answer token), and the intermediate answers: labelled prompt positions
  // and how many of them the greedy prediction got right.
  double mean_prompt_steps = 0;
  int64_t step_n = 0, step_correct = 0;
  double mean_step_answer_steps = 0;  // recurrences of the labelled positions' calls
  int64_t tokens = 0;
  double seconds = 0, tok_s = 0;
  // --decode wavefront / speculative / diffusion: passes over the core weights, the (position,
  // depth) rows they carried, drafts verified and accepted (summed over the examples' decodes).
  SamplerStats shared;
};

struct EvalExample {  // one generation shown to the user
  std::string setting, prompt, answer, output;
  std::vector<std::string> pieces;
  std::vector<int> steps;
  bool correct = false;
};

struct EvalReport {
  std::string model, task;
  bool multiple_choice = false;
  double chance = 0;  // multiple choice: mean 1/choices; generation: 0 unless known
  std::vector<EvalRow> rows;
  std::vector<EvalExample> examples;
  std::string table() const;   // the stdout table
  std::string to_json() const;
  std::string to_csv() const;
};

// Runs every setting over the task; progress with ETA on stderr unless quiet. Writes
// out_dir/results.json, results.csv, accuracy_vs_steps.png/.svg and accuracy_vs_compute.png/.svg
// (when gnuplot exists and plots is set; the plots are skipped with a warning otherwise).
EvalReport run_eval(const EvalOptions& options);
void write_eval_outputs(const EvalReport& report, const std::string& out_dir, bool plots);

// ---- task trainer ------------------------------------------------------------------------------------
// A built-in task as a source for the one training loop (huginn/train.h): checkpoints in
// OUT/step-NNNNNNNN, --resume, --max-bad-steps as `huginn train`; the final model is written to
// OUT itself (config.json, model.safetensors, task.json).

// The training loop's options (huginn/train.h: out is the model directory, steps, batch =
// examples per step, lr, warmup, adam, grad_clip, mean_recurrence, init_scale, eval_every = the
// held-out check's period, save_every, stop_at, max_bad_steps, resume, seed, threads, ...) with
// the task trainer's defaults, plus the task.
struct TaskTrainOptions : TrainOptions {
  std::string task = "chain:hops=4-8";
  int eval_examples = 64;  // held-out examples of each check (teacher-forced, r = 1 and r = mean)
  // Also label the prompt positions that carry an intermediate answer (TaskExample::step_labels;
  // affine, swap): dense supervision of the running value, which stays out of the input.
  bool supervise_steps = false;
  // > 0: a curriculum over this many steps, the top level rising linearly from the task's lowest
  // to its highest (levels drawn uniformly up to it); all levels afterwards.
  int64_t curriculum = 0;
  TaskTrainOptions() {
    steps = 1000;
    batch = 16;
    lr = 3e-3;
    warmup = 50;
    init_scale = 0.0;  // initial state during training (generation uses zeros)
    eval_every = 100;
    log_every = 10;
  }
};

struct TaskTrainResult {
  int64_t steps = 0;
  double last_loss = 0;
  double acc_r1 = 0, acc_mean = 0;  // the last held-out check (teacher-forced, greedy)
  double seconds = 0;
};

TaskTrainResult train_task(const TaskTrainOptions& options);

}  // namespace huginn
