// Built-in tasks (answers checked by an independent resolver, disjoint splits, determinism),
// answer extraction, Wilson intervals, JSONL task files and their errors, and the eval runner /
// task trainer end to end on a tiny model (CLI included).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "huginn/error.h"
#include "huginn/eval.h"
#include "test_util.h"

namespace huginn {
namespace {
namespace fs = std::filesystem;

// Plain reference for chain prompts: parse "x=y;" statements and follow pointers.
std::string resolve_chain(const std::string& prompt) {
  std::map<char, std::string> rhs;
  size_t i = 0;
  while (i < prompt.size() && prompt[i + 1] == '=') {
    const size_t semi = prompt.find(';', i);
    rhs[prompt[i]] = prompt.substr(i + 2, semi - i - 2);
    i = semi + 1;
  }
  EXPECT_EQ(prompt.back(), '?');
  std::string v(1, prompt[i]);
  for (int guard = 0; guard < 100 && !(v[0] >= '0' && v[0] <= '9'); ++guard) v = rhs.at(v[0]);
  return v;
}

TEST(Tasks, ChainAnswersFollowThePointersAndNeedEveryHop) {
  const TaskSpec spec = TaskSpec::parse("chain:hops=2-5");
  EXPECT_EQ(spec.min_level, 2);
  EXPECT_EQ(spec.max_level, 5);
  std::set<int> lengths;
  for (const auto& ex : make_task(spec, Split::kTrain, 300, 7)) {
    EXPECT_EQ(resolve_chain(ex.prompt), ex.answer) << ex.prompt;
    lengths.insert(static_cast<int>(ex.prompt.size()));
    // Two literal digits, different: the digits alone do not give the answer.
    std::string digits;
    for (char c : ex.prompt)
      if (c >= '0' && c <= '9') digits += c;
    ASSERT_EQ(digits.size(), 2u) << ex.prompt;
    EXPECT_NE(digits[0], digits[1]);
  }
  // 2 chains x (hops + 1) statements of 4 chars + "x?": every hop count appears.
  for (int h = 2; h <= 5; ++h) EXPECT_TRUE(lengths.count(8 * (h + 1) + 2)) << h;
}

TEST(Tasks, ParityAndAdditionAnswers) {
  for (const auto& ex : make_task(TaskSpec::parse("parity:bits=9"), Split::kTest, 100, 3)) {
    int x = 0;
    const std::string bits = ex.prompt.substr(7, 9);
    for (char c : bits) x ^= c - '0';
    EXPECT_EQ(ex.answer, std::to_string(x));
    EXPECT_EQ(ex.prompt, "parity " + bits + "?");
  }
  for (const auto& ex : make_task(TaskSpec::parse("add:digits=4"), Split::kTrain, 100, 3)) {
    const size_t plus = ex.prompt.find('+');
    const long a = std::stol(ex.prompt.substr(0, plus)), b = std::stol(ex.prompt.substr(plus + 1));
    EXPECT_EQ(ex.answer, std::to_string(a + b));
    EXPECT_GE(a, 1000);
    EXPECT_LE(b, 9999);
  }
}

// Evaluates "d op d op d ... =" left to right mod `mod` (mod 0: plain integers).
long eval_left_to_right(const std::string& prompt, long mod) {
  long v = 0;
  char op = '+';
  size_t i = 0;
  while (i < prompt.size() && prompt[i] != '=') {
    size_t used = 0;
    const long x = std::stol(prompt.substr(i), &used);
    v = op == '+' ? v + x : v * x;
    if (mod) v %= mod;
    i += used;
    if (prompt[i] != '=') op = prompt[i++];
  }
  EXPECT_EQ(prompt.back(), '=') << prompt;
  return v;
}

TEST(Tasks, OpsMulAndSumAnswers) {
  std::set<int> lengths;
  for (const auto& ex : make_task(TaskSpec::parse("ops:ops=1-6"), Split::kTrain, 300, 5)) {
    EXPECT_EQ(ex.answer, std::to_string(eval_left_to_right(ex.prompt, 10))) << ex.prompt;
    lengths.insert(static_cast<int>(ex.prompt.size()));
  }
  EXPECT_EQ(lengths.size(), 6u);  // 1..6 operations: prompts of 4, 6, ..., 14 characters
  for (const auto& ex : make_task(TaskSpec::parse("mul:digits=3"), Split::kTest, 100, 5)) {
    EXPECT_EQ(ex.answer, std::to_string(eval_left_to_right(ex.prompt, 0))) << ex.prompt;
    EXPECT_EQ(ex.prompt.find('*'), 3u) << ex.prompt;
  }
  for (const auto& ex : make_task(TaskSpec::parse("sum:terms=7"), Split::kTest, 100, 5)) {
    EXPECT_EQ(ex.answer, std::to_string(eval_left_to_right(ex.prompt, 10))) << ex.prompt;
    EXPECT_EQ(ex.prompt.size(), 14u) << ex.prompt;
  }
}

// swap, followed by hand: the cup under each marker (':' before the first swap, ',' after each
// but the last, '=' after it) is the ball's cup so far; no other prompt byte carries a label.
TEST(Tasks, SwapAnswersAndStepLabelsFollowTheBall) {
  std::set<size_t> lengths;
  for (const auto& ex : make_task(TaskSpec::parse("swap:ops=1-8"), Split::kTrain, 400, 3)) {
    const std::string& p = ex.prompt;
    ASSERT_EQ(ex.step_labels.size(), p.size()) << p;
    ASSERT_TRUE(p.size() >= 5 && (p.size() - 2) % 3 == 0) << p;
    EXPECT_EQ(p[1], ':');
    char ball = p[0];
    EXPECT_EQ(ex.step_labels[0], 0) << p;
    EXPECT_EQ(ex.step_labels[1], ball) << p;
    for (size_t i = 2; i < p.size(); i += 3) {
      const char a = p[i], b = p[i + 1];
      EXPECT_TRUE(a >= 'a' && a <= 'e' && b >= 'a' && b <= 'e' && a != b) << p;
      ball = ball == a ? b : ball == b ? a : ball;
      EXPECT_EQ(p[i + 2], i + 3 == p.size() ? '=' : ',') << p;
      EXPECT_EQ(ex.step_labels[i], 0) << p;
      EXPECT_EQ(ex.step_labels[i + 1], 0) << p;
      EXPECT_EQ(ex.step_labels[i + 2], ball) << p;
    }
    EXPECT_EQ(ex.answer, std::string(1, ball)) << p;
    lengths.insert(p.size());
  }
  EXPECT_EQ(lengths.size(), 8u);  // 1..8 swaps
}

// trace: swap's prompts, answered with the ball's cup after every swap, followed by hand.
TEST(Tasks, TraceAnswersTheCupAfterEverySwap) {
  std::set<size_t> lengths;
  for (const auto& ex : make_task(TaskSpec::parse("trace:ops=1-8"), Split::kTest, 300, 5)) {
    const std::string& p = ex.prompt;
    ASSERT_TRUE(p.size() >= 5 && (p.size() - 2) % 3 == 0 && p[1] == ':') << p;
    char ball = p[0];
    std::string want;
    for (size_t i = 2; i < p.size(); i += 3) {
      ball = ball == p[i] ? p[i + 1] : ball == p[i + 1] ? p[i] : ball;
      want += ball;
    }
    EXPECT_EQ(ex.answer, want) << p;
    EXPECT_EQ(ex.step_labels.size(), p.size()) << p;
    lengths.insert(ex.answer.size());
  }
  EXPECT_EQ(lengths.size(), 8u);  // 1..8 swaps, as many answer tokens
}

// affine: +d (d 1-9) and *d (d 3, 7, 9) mod 10; the running value under every operand digit.
TEST(Tasks, AffineAnswersAndStepLabels) {
  for (const auto& ex : make_task(TaskSpec::parse("affine:ops=1-6"), Split::kTest, 300, 7)) {
    const std::string& p = ex.prompt;
    EXPECT_EQ(ex.answer, std::to_string(eval_left_to_right(p, 10))) << p;
    ASSERT_EQ(ex.step_labels.size(), p.size()) << p;
    for (size_t i = 0; i + 1 < p.size(); ++i) {
      const bool operand = i % 2 == 0;
      if (operand && i > 0) {
        EXPECT_TRUE(p[i - 1] == '+' ? p[i] != '0' : std::string("379").find(p[i]) != std::string::npos) << p;
      }
      const std::string prefix = p.substr(0, i + 1) + "=";
      EXPECT_EQ(ex.step_labels[i], operand ? '0' + eval_left_to_right(prefix, 10) : 0) << p << " at " << i;
    }
    EXPECT_EQ(ex.step_labels.back(), 0) << p;
  }
}

// Training targets: the answer and "\n" always; the marker cups only with `steps`.
TEST(Tasks, TaskTokensLabelTheAnswerAndOptionallyTheSteps) {
  TaskExample ex;
  ex.prompt = "c:ab,cd,bc=";
  ex.step_labels = std::string("\0c\0\0c\0\0d\0\0d", 11);
  ex.answer = "d";
  const TextCodec codec = TextCodec::bytes(128);
  const TaskTokens plain = task_tokens(codec, ex, false), dense = task_tokens(codec, ex, true);
  const std::string all = ex.prompt + "d\n";
  EXPECT_EQ(plain.ids, std::vector<int32_t>(all.begin(), all.end()));
  EXPECT_EQ(plain.prompt_len, 11u);
  std::vector<int32_t> want(12, -100);
  want[10] = 'd';
  want[11] = '\n';
  EXPECT_EQ(plain.labels, want);
  want[1] = 'c';
  want[4] = 'c';
  want[7] = 'd';
  EXPECT_EQ(dense.labels, want);
  ex.step_labels.pop_back();
  EXPECT_THROW(task_tokens(codec, ex, true), Error);
}

TEST(Tasks, DeterministicAndSplitsDisjoint) {
  const TaskSpec spec = TaskSpec::parse("chain:hops=1");
  const auto a = make_task(spec, Split::kTest, 50, 11), b = make_task(spec, Split::kTest, 50, 11);
  const auto c = make_task(spec, Split::kTest, 50, 12);
  int same_seed = 0, other_seed = 0;
  for (int i = 0; i < 50; ++i) {
    same_seed += a[i].prompt == b[i].prompt;
    other_seed += a[i].prompt == c[i].prompt;
  }
  EXPECT_EQ(same_seed, 50);
  EXPECT_LT(other_seed, 5);
  std::set<std::string> train;
  for (uint64_t seed : {1, 2, 3})
    for (const auto& ex : make_task(spec, Split::kTrain, 2000, seed)) train.insert(ex.prompt);
  int overlap = 0;
  for (uint64_t seed : {1, 4})
    for (const auto& ex : make_task(spec, Split::kTest, 500, seed)) overlap += train.count(ex.prompt);
  EXPECT_EQ(overlap, 0);
}

TEST(Tasks, BadSpecsAreErrorsNamingTheKnob) {
  for (const char* bad : {"chains", "chain:hops=13", "chain:depth=3",
                          "chain:hops=5-2", "chain:hops=x", "parity:bits=2-", "add:digits=10",
                          "ops:ops=0", "sum:terms=25", "mul:digits=0", "swap:ops=0",
                          "swap:ops=41", "trace:ops=0", "affine:ops=2-1"}) {
    try {
      TaskSpec::parse(bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("task '"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(TaskSpec::parse("chain").to_string(), "chain:hops=4-8");
  EXPECT_EQ(TaskSpec::parse("parity:bits=5").to_string(), "parity:bits=5");
  EXPECT_THROW(parse_split("val"), Error);
}

TEST(Scoring, ExtractAnswer) {
  EXPECT_EQ(extract_answer(" 7\nmore", ""), "7");
  EXPECT_EQ(extract_answer("the answer is 42.", "answer is (\\d+)"), "42");
  EXPECT_EQ(extract_answer("x=13", "\\d+"), "13");
  EXPECT_EQ(extract_answer("no digits", "(\\d+)"), "");
}

TEST(Scoring, WilsonIntervalKnownValues) {
  // 8/10 at 95 %: [0.4902, 0.9433] (Wilson 1927; e.g. Newcombe 1998, table I).
  auto [lo, hi] = wilson_interval(8, 10);
  EXPECT_NEAR(lo, 0.4902, 1e-4);
  EXPECT_NEAR(hi, 0.9433, 1e-4);
  std::tie(lo, hi) = wilson_interval(0, 20);
  EXPECT_EQ(lo, 0.0);
  EXPECT_NEAR(hi, 0.1611, 1e-4);
  std::tie(lo, hi) = wilson_interval(0, 0);
  EXPECT_EQ(lo, 0.0);
  EXPECT_EQ(hi, 1.0);
  // Symmetric in successes / failures; contains the point estimate.
  for (int k = 0; k <= 30; ++k) {
    auto [a, b] = wilson_interval(k, 30);
    auto [c, d] = wilson_interval(30 - k, 30);
    EXPECT_NEAR(a, 1 - d, 1e-12);
    EXPECT_NEAR(b, 1 - c, 1e-12);
    EXPECT_LE(a, k / 30.0);
    EXPECT_GE(b, k / 30.0);
  }
}

TEST(TaskFiles, RoundTripAndErrorsNameFileAndLine) {
  const std::string dir = test::make_temp_dir("eval_files");
  const auto exs = make_task(TaskSpec::parse("add:digits=2"), Split::kTest, 5, 1);
  {
    std::ofstream(dir + "/t.jsonl") << task_to_jsonl(exs);
  }
  const auto back = load_task_file(dir + "/t.jsonl");
  ASSERT_EQ(back.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(back[i].prompt, exs[i].prompt);
    EXPECT_EQ(back[i].answer, exs[i].answer);
  }
  {
    std::ofstream(dir + "/mc.jsonl") << R"({"context":"1+1=","choices":["2","3"],"gold":0})" << "\n";
  }
  const auto mc = load_task_file(dir + "/mc.jsonl");
  ASSERT_TRUE(mc[0].multiple_choice());
  EXPECT_EQ(mc[0].gold, 0);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"prompt":"a"})", "missing field 'answer'"},
      {R"({"prompt":"a","answer":3})", "field 'answer' must be a string"},
      {R"({"context":"a","choices":["x","y"],"gold":2})", "'gold' = 2"},
      {R"({"context":"a","choices":["x"],"gold":0})", "at least 2"},
      {R"({"prompt":"a","answer":"b","regex":"("})", "regular expression"},
      {"{not json", "not valid JSON"},
  };
  for (const auto& [line, want] : bad) {
    {
      std::ofstream(dir + "/bad.jsonl") << R"({"prompt":"ok","answer":"1"})" << "\n" << line << "\n";
    }
    try {
      load_task_file(dir + "/bad.jsonl");
      ADD_FAILURE() << line;
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("bad.jsonl:2"), std::string::npos) << m;
      EXPECT_NE(m.find(want), std::string::npos) << m;
    }
  }
  EXPECT_THROW(load_task_file(dir + "/missing.jsonl"), Error);
  fs::remove_all(dir);
}

TEST(TextCodec, BytesCheckedAgainstTheVocabulary) {
  const TextCodec c = TextCodec::bytes(128);
  const auto ids = c.encode("a=1;", "x");
  EXPECT_EQ(ids, (std::vector<int32_t>{'a', '=', '1', ';'}));
  EXPECT_EQ(c.decode(ids), "a=1;");
  EXPECT_EQ(c.newline_id(), '\n');
  try {
    c.encode("caf\xc3\xa9", "example 3 prompt");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("example 3 prompt: byte 195"), std::string::npos) << e.what();
  }
}

const char* kTinyConfig = R"({"name": "eval-test", "block_size": 48, "vocab_size": 128,
 "n_embd": 32, "num_attention_heads": 2, "intermediate_size": 64, "n_layers_in_prelude": 1,
 "n_layers_in_recurrent_block": 1, "n_layers_in_coda": 1, "mean_recurrence": 4,
 "mean_backprop_depth": 2, "tie_embeddings": true})";

// A quick task run of the tiny config in `dir` (written there).
TaskTrainOptions tiny_task_run(const std::string& dir, const std::string& task, int64_t steps,
                               int batch) {
  std::ofstream(dir + "/config.json") << kTinyConfig;
  TaskTrainOptions t;
  t.model_config = dir + "/config.json";
  t.task = task;
  t.out = dir + "/model";
  t.steps = steps;
  t.batch = batch;
  t.eval_examples = 4;
  t.threads = 1;
  t.quiet = true;
  return t;
}

// Train a few steps, then evaluate: the report is consistent with itself and its files.
TEST(EvalRunner, TrainThenEvaluateWritesConsistentResults) {
  const std::string dir = test::make_temp_dir("eval_runner");
  TaskTrainOptions t = tiny_task_run(dir, "chain:hops=1-2", 4, 2);
  t.eval_every = 0;
  std::vector<double> losses;
  t.on_step = [&](int64_t, double loss) { losses.push_back(loss); };
  const TaskTrainResult tr = train_task(t);
  ASSERT_EQ(losses.size(), 4u);
  for (double l : losses) EXPECT_TRUE(std::isfinite(l) && l > 0);
  EXPECT_TRUE(fs::exists(dir + "/model/model.safetensors"));
  EXPECT_TRUE(fs::exists(dir + "/model/task.json"));
  // Same seed: the same run.
  TaskTrainOptions t2 = t;
  t2.out = dir + "/model2";
  std::vector<double> losses2;
  t2.on_step = [&](int64_t, double loss) { losses2.push_back(loss); };
  train_task(t2);
  EXPECT_EQ(losses, losses2);
  (void)tr;

  EvalOptions o;
  o.model = dir + "/model";
  o.task = "chain:hops=1";
  o.steps = {1, 3};
  o.exits = {"kl:1e-2"};
  o.limit = 6;
  o.threads = 1;
  o.quiet = true;
  o.plots = false;
  o.out_dir = dir + "/eval";
  const EvalReport rep = run_eval(o);
  ASSERT_EQ(rep.rows.size(), 3u);
  EXPECT_EQ(rep.rows[0].setting.label(), "r=1");
  EXPECT_EQ(rep.rows[2].setting.label(), "kl:0.01 (max 3)");
  for (const auto& r : rep.rows) {
    EXPECT_EQ(r.n, 6);
    EXPECT_NEAR(r.accuracy, r.correct / 6.0, 1e-12);
    EXPECT_LE(r.ci_low, r.accuracy);
    EXPECT_GE(r.ci_high, r.accuracy);
    EXPECT_GT(r.tokens, 0);
  }
  EXPECT_DOUBLE_EQ(rep.rows[0].mean_steps, 1.0);
  EXPECT_DOUBLE_EQ(rep.rows[1].mean_steps, 3.0);
  EXPECT_DOUBLE_EQ(rep.rows[1].mean_first_steps, 3.0);
  EXPECT_GE(rep.rows[2].mean_first_steps, 1.0);
  EXPECT_LE(rep.rows[2].mean_first_steps, 3.0);
  // Full cache: prelude + r core + coda layers' entries per token, so r = 3 holds more than r = 1.
  EXPECT_GT(rep.rows[0].mean_cache_bytes, 0.0);
  EXPECT_GT(rep.rows[1].mean_cache_bytes, rep.rows[0].mean_cache_bytes);
  EXPECT_GE(rep.rows[2].mean_steps, 1.0);
  EXPECT_LE(rep.rows[2].mean_steps, 3.0);
  ASSERT_FALSE(rep.examples.empty());
  for (const auto& e : rep.examples) EXPECT_EQ(e.pieces.size(), e.steps.size());
  std::ifstream jf(dir + "/eval/results.json");
  const auto j = nlohmann::json::parse(jf);
  ASSERT_EQ(j["rows"].size(), 3u);
  EXPECT_EQ(j["rows"][1]["correct"].get<int>(), rep.rows[1].correct);
  std::ifstream cf(dir + "/eval/results.csv");
  std::string line;
  int lines = 0;
  while (std::getline(cf, line)) ++lines;
  EXPECT_EQ(lines, 4);

  // Multiple choice by log-likelihood: the chosen answers match a file of the same examples.
  {
    std::ofstream(dir + "/mc.jsonl") << R"({"context":"a=1;a?","choices":["1","2","3"],"gold":0})" << "\n"
                                     << R"({"context":"b=2;b?","choices":["1","2"],"gold":1})" << "\n";
  }
  o.task = dir + "/mc.jsonl";
  o.exits = {};
  o.out_dir = "";
  const EvalReport mc = run_eval(o);
  EXPECT_TRUE(mc.multiple_choice);
  EXPECT_NEAR(mc.chance, (1.0 / 3 + 1.0 / 2) / 2, 1e-12);
  EXPECT_EQ(mc.rows[0].n, 2);
  EXPECT_EQ(mc.rows[0].tokens, 5);

  // The CLI: table on stdout; bad flags are errors naming the flag.
  std::string out;
  ASSERT_EQ(test::run_command(std::string(HUGINN_CLI) + " eval --model " + dir +
                                  "/model --task chain:hops=1 --steps 1,2 --limit 3 --no-plots -q",
                              &out),
            0)
      << out;
  EXPECT_NE(out.find("r=2"), std::string::npos) << out;
  EXPECT_NE(test::run_command(std::string(HUGINN_CLI) + " eval --model " + dir +
                                  "/model --task nosuch --steps 1 -q 2>&1",
                              &out),
            0);
  EXPECT_NE(out.find("not a built-in task"), std::string::npos) << out;
  EXPECT_NE(test::run_command(std::string(HUGINN_CLI) + " eval --model " + dir +
                                  "/model --task chain --steps 1,x -q 2>&1",
                              &out),
            0);
  EXPECT_NE(out.find("--steps"), std::string::npos) << out;

  // --decode: speculative at threshold 1 answers exactly as sequential decoding (same tokens);
  // diffusion runs every example; the samplers' bad settings name their flag.
  o.task = "chain:hops=1";
  o.steps = {3};
  o.exits = {};
  o.out_dir = "";
  o.show_examples = 0;
  const EvalReport seq = run_eval(o);
  o.decode = "speculative";
  o.speculative = SpeculativeOptions{1, 3, 1.0};
  const EvalReport spec = run_eval(o);
  ASSERT_EQ(spec.rows.size(), 1u);
  EXPECT_EQ(spec.rows[0].correct, seq.rows[0].correct);
  EXPECT_EQ(spec.rows[0].tokens, seq.rows[0].tokens);
  // What the sampler shared and drafted is counted (sequential shares nothing).
  EXPECT_EQ(seq.rows[0].shared.core_passes, 0);
  EXPECT_GT(spec.rows[0].shared.core_passes, 0);
  EXPECT_GE(spec.rows[0].shared.rows_per_core_pass(), 1.0);
  EXPECT_GT(spec.rows[0].shared.drafted, 0);
  EXPECT_LE(spec.rows[0].shared.accepted, spec.rows[0].shared.drafted);
  EXPECT_NE(spec.table().find("drafts accepted"), std::string::npos) << spec.table();
  EXPECT_EQ(seq.table().find("drafts accepted"), std::string::npos) << seq.table();
  EvalOptions bad = o;  // the speculative sampler really ran: its own check fires
  bad.speculative.verification_threshold = 2.0;
  EXPECT_NE(test::error_message([&] { run_eval(bad); }).find("--verification-threshold"), std::string::npos);
  o.decode = "diffusion";
  o.diffusion.inner_recurrence = 1;
  o.diffusion.max_diffusion_steps = 64;
  const EvalReport diff = run_eval(o);
  EXPECT_EQ(diff.rows[0].n, seq.rows[0].n);
  EXPECT_GT(diff.rows[0].tokens, 0);
  EXPECT_NE(test::run_command(std::string(HUGINN_CLI) + " eval --model " + dir +
                                  "/model --task chain --steps 2 --decode speculative "
                                  "--verification-threshold 3 -q 2>&1",
                              &out),
            0);
  EXPECT_NE(out.find("--verification-threshold"), std::string::npos) << out;
  EXPECT_NE(test::run_command(std::string(HUGINN_CLI) + " eval --model " + dir +
                                  "/model --task chain --steps 2 --decode diffusion "
                                  "--freeze-strategy often -q 2>&1",
                              &out),
            0);
  EXPECT_NE(out.find("--freeze-strategy"), std::string::npos) << out;
  o.decode = "sequential";

  // --prompt-by-token: at a fixed r without warm start, a call per prompt token computes what
  // the one prompt call does (each token's recurrence i attends to the earlier tokens' i-th), so
  // the same answers; every prompt token ran r recurrences, and the intermediate answers scored
  // are exactly the swap examples' step labels.
  {
    EvalOptions bt = o;  // r = 3, no exit, no output folder (the --decode runs' settings)
    bt.task = "swap:ops=1-3";
    const EvalReport whole = run_eval(bt);
    bt.prompt_by_token = true;
    const EvalReport by = run_eval(bt);
    EXPECT_EQ(by.rows[0].correct, whole.rows[0].correct);
    EXPECT_EQ(by.rows[0].tokens, whole.rows[0].tokens);
    EXPECT_DOUBLE_EQ(by.rows[0].mean_prompt_steps, 3.0);
    EXPECT_DOUBLE_EQ(by.rows[0].mean_step_answer_steps, 3.0);
    EXPECT_DOUBLE_EQ(whole.rows[0].mean_prompt_steps, 0.0);
    EXPECT_EQ(whole.rows[0].step_n, 0);
    int64_t labels = 0;
    for (const auto& ex : make_task(TaskSpec::parse(bt.task), Split::kTest, bt.limit, bt.seed))
      labels += static_cast<int64_t>(ex.step_labels.size() - std::count(ex.step_labels.begin(), ex.step_labels.end(), '\0'));
    EXPECT_EQ(by.rows[0].step_n, labels);
    EXPECT_LE(by.rows[0].step_correct, by.rows[0].step_n);
    // With an exit and warm start each prompt token stops on its own, within the limit.
    bt.steps = {};
    bt.exits = {"kl:1e-2"};
    bt.exit_max_steps = 4;
    bt.warm_start = true;
    bt.cache_slots = 1;
    const EvalReport warm = run_eval(bt);
    EXPECT_GE(warm.rows[0].mean_prompt_steps, 1.0);
    EXPECT_LE(warm.rows[0].mean_prompt_steps, 4.0);
    EXPECT_NE(warm.table().find("step answers"), std::string::npos) << warm.table();
    bt.warm_state = "latent";  // ln_f(s) instead of the raw state: another run, same shape
    EXPECT_EQ(run_eval(bt).rows[0].step_n, warm.rows[0].step_n);
    bt.warm_start = false;
    EXPECT_NE(test::error_message([&] { run_eval(bt); }).find("--warm-state needs --warm-start"), std::string::npos);
    bt.warm_start = true;
    bt.decode = "wavefront";
    EXPECT_NE(test::error_message([&] { run_eval(bt); }).find("--prompt-by-token"), std::string::npos);
  }
  std::string gen;
  ASSERT_EQ(test::run_command(std::string(HUGINN_CLI) +
                                  " task generate chain:hops=2 --split test --n 3",
                              &gen),
            0);
  EXPECT_EQ(std::count(gen.begin(), gen.end(), '\n'), 3) << gen;
  EXPECT_EQ(gen.substr(0, gen.find('\n') + 1),
            task_to_jsonl(make_task(TaskSpec::parse("chain:hops=2"), Split::kTest, 1, 1234)));
  // trace --prompt on the byte-vocabulary model: one row per byte, labelled with it.
  std::string trace_out;
  ASSERT_EQ(test::run_command(std::string(HUGINN_CLI) + " trace --model " + dir +
                                  "/model --prompt 'c:ab=' --steps 3 --no-plots --out " + dir +
                                  "/trace 2>&1",
                              &trace_out),
            0)
      << trace_out;
  std::ifstream sf(dir + "/trace/summary.json");
  EXPECT_EQ(nlohmann::json::parse(sf)["tokens"].get<int>(), 5);
  EXPECT_NE(trace_out.find("    1      58 :"), std::string::npos) << trace_out;  // token 1 is ':' (id 58)
  fs::remove_all(dir);
}

// The task trainer is the training loop's: it stops and resumes bit-identically, refuses to
// resume a different task, and skips, then stops on, non-finite steps.
TEST(TaskTrain, ResumeIsBitIdenticalAndChecked) {
  const std::string dir = test::make_temp_dir("task_resume");
  TaskTrainOptions t = tiny_task_run(dir, "add:digits=1", 6, 3);
  t.out = dir + "/straight";
  t.eval_every = 3;
  train_task(t);
  TaskTrainOptions first = t;
  first.out = dir + "/split";
  first.stop_at = 3;
  EXPECT_EQ(train_task(first).steps, 3);
  EXPECT_TRUE(fs::exists(dir + "/split/step-00000003/train_state.safetensors"));
  TaskTrainOptions other = first;
  other.stop_at = 0;
  other.resume = true;
  other.task = "add:digits=2";
  const std::string e = test::error_message([&] { train_task(other); });
  EXPECT_NE(e.find("was trained on task 'add:digits=1'"), std::string::npos) << e;
  TaskTrainOptions second = first;
  second.stop_at = 0;
  second.resume = true;
  EXPECT_EQ(train_task(second).steps, 6);
  std::ifstream a(dir + "/straight/model.safetensors", std::ios::binary),
      b(dir + "/split/model.safetensors", std::ios::binary);
  const std::string sa((std::istreambuf_iterator<char>(a)), {}), sb((std::istreambuf_iterator<char>(b)), {});
  ASSERT_FALSE(sa.empty());
  EXPECT_TRUE(sa == sb) << "the resumed model differs from the straight run's";

  // A learning rate that makes every step non-finite: skipped, then stopped by --max-bad-steps.
  TaskTrainOptions bad = t;
  bad.out = dir + "/bad";
  bad.lr = 1e30;
  bad.max_bad_steps = 2;
  const std::string eb = test::error_message([&] { train_task(bad); });
  EXPECT_NE(eb.find("2 steps in a row with a non-finite loss or gradient"), std::string::npos) << eb;
  fs::remove_all(dir);
}

// `huginn task train --precision bf16` trains in BF16 mixed precision through the one training
// loop: the checkpoint records it (resuming in f32 is refused), the weights differ from the f32
// run's; a value other than f32 / bf16 is refused naming the flag.
TEST(TaskTrain, PrecisionFlagReachesTheTrainingLoop) {
  const std::string dir = test::make_temp_dir("task_precision");
  std::ofstream(dir + "/config.json") << kTinyConfig;
  const std::string base = std::string(HUGINN_CLI) + " task train --model-config " + dir +
                           "/config.json --task add:digits=1 --steps 2 --batch 2 --eval-examples 2 "
                           "--threads 1 -q --out " + dir;
  std::string out;
  ASSERT_EQ(test::run_command(base + "/bf16 --precision bf16", &out), 0) << out;
  ASSERT_EQ(test::run_command(base + "/f32 --precision f32", &out), 0) << out;
  std::ifstream a(dir + "/bf16/model.safetensors", std::ios::binary),
      b(dir + "/f32/model.safetensors", std::ios::binary);
  const std::string sa((std::istreambuf_iterator<char>(a)), {}), sb((std::istreambuf_iterator<char>(b)), {});
  ASSERT_FALSE(sa.empty());
  EXPECT_FALSE(sa == sb) << "--precision bf16 trained the f32 run's bits";
  EXPECT_NE(test::run_command(base + "/bf16 --resume --precision f32", &out), 0);
  EXPECT_NE(out.find("was trained with --precision bf16, this run has --precision f32"),
            std::string::npos)
      << out;
  EXPECT_NE(test::run_command(base + "/x --precision fp16", &out), 0);
  EXPECT_NE(out.find("--precision"), std::string::npos) << out;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace huginn
