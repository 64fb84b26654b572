// The training loop end to end on a tiny model: learning, exact resume, non-finite steps, and
// bad input that must leave saved checkpoints intact.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "huginn/data.h"
#include "huginn/error.h"
#include "huginn/thread_pool.h"
#include "huginn/train.h"
#include "test_util.h"
#include "train_fixture.h"

namespace huginn {
namespace {
namespace fs = std::filesystem;

using namespace train_test;  // NOLINT: the shared fixture

// On every backend: the strict one proves that the trainer keeps weights, gradients and
// optimizer state on the backend (checkpoints download them, resume uploads them).
class TrainLoopOn : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainLoopOn, ResumeIsBitIdenticalToAStraightRun) {
  Fixture f("resume");
  TrainOptions straight = f.options("straight");
  straight.backend = GetParam();
  straight.grad_accum = 2;
  straight.save_every = 5;
  train(straight);

  TrainOptions first = straight;
  first.out = f.dir + "/split";
  first.stop_at = 10;
  EXPECT_EQ(train(first).final_step, 10);
  TrainOptions second = first;
  second.stop_at = 0;
  second.resume = true;
  const TrainResult r = train(second);
  EXPECT_EQ(r.final_step, 20);
  EXPECT_EQ(r.last_checkpoint, f.dir + "/split/" + checkpoint_name(20));

  for (const char* file : {"model.safetensors", "train_state.safetensors", "config.json"}) {
    const std::string a = read_file(f.dir + "/straight/step-00000020/" + file);
    const std::string b = read_file(f.dir + "/split/step-00000020/" + file);
    ASSERT_FALSE(a.empty()) << file;
    EXPECT_TRUE(a == b) << file << " differs between the resumed and the straight run";
  }
  // The run moved: the weights at 10 and 20 differ.
  EXPECT_NE(read_file(f.dir + "/split/step-00000010/model.safetensors"),
            read_file(f.dir + "/split/step-00000020/model.safetensors"));
}

INSTANTIATE_TEST_SUITE_P(Backends, TrainLoopOn, ::testing::ValuesIn(test::kBackends));

// The strict backend runs the CPU kernels: its run is the CPU backend's, bit for bit.
TEST(TrainLoop, StrictBackendTrainsExactlyAsTheCpuBackend) {
  Fixture f("strict");
  TrainOptions cpu = f.options("cpu");
  cpu.steps = 6;
  train(cpu);
  TrainOptions strict = cpu;
  strict.out = f.dir + "/strict";
  strict.backend = "strict";
  train(strict);
  for (const char* file : {"model.safetensors", "train_state.safetensors"})
    EXPECT_TRUE(read_file(cpu.out + "/step-00000006/" + file) ==
                read_file(strict.out + "/step-00000006/" + file))
        << file;
}

// The literal form "--steps 10, then --steps 20 --resume": exact when the schedule does not
// depend on the run's length (constant, no cooldown); with cosine/linear use --stop-at instead.
TEST(TrainLoop, TenStepsThenTenMoreWithAConstantSchedule) {
  Fixture f("resume10");
  TrainOptions straight = f.options("straight");
  straight.schedule = "constant";
  straight.cooldown = 0;
  train(straight);
  TrainOptions first = straight;
  first.out = f.dir + "/split";
  first.steps = 10;
  train(first);
  TrainOptions second = straight;
  second.out = first.out;
  second.resume = true;
  EXPECT_EQ(train(second).final_step, 20);
  EXPECT_TRUE(read_file(f.dir + "/straight/step-00000020/model.safetensors") ==
              read_file(f.dir + "/split/step-00000020/model.safetensors"));
}

TEST(TrainLoop, TinyModelLearnsAPatternThroughTheCli) {
  Fixture f("learn");
  // A model that ignores context cannot beat the unigram entropy H1 (≈ ln 31 ≈ 3.4 nats here:
  // cross-entropy against any fixed distribution is at least the data's entropy). The data
  // allows ≈ 0.3 nats (only a document's first token and its length are random). Reaching
  // below H1/2 therefore means the model predicts from context, i.e. it learned the cycle.
  const double h1 = unigram_entropy(f.train_tokens);
  ASSERT_GT(h1, 3.0);
  const std::string out = f.dir + "/run";
  std::string log;
  const std::string cmd = std::string(HUGINN_CLI) + " train --model-config " + f.config +
                          " --data " + f.data + " --out " + out +
                          " --steps 60 --batch 8 --lr 3e-3 --warmup 5 --threads 2 --seed 3"
                          " --val-depths 1,4,8 --val-windows 8 --eval-every 30";
  ASSERT_EQ(test::run_command(cmd, &log), 0) << log;
  EXPECT_NE(log.find("step 60/60  loss"), std::string::npos) << log;
  EXPECT_NE(log.find("tok/s  ETA"), std::string::npos) << log;

  std::ifstream metrics(out + "/metrics.jsonl");
  std::string line;
  nlohmann::json last_val;
  int step_lines = 0;
  while (std::getline(metrics, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("val_loss")) last_val = j; else ++step_lines;
  }
  EXPECT_EQ(step_lines, 60);
  ASSERT_EQ(last_val["step"], 60) << last_val.dump();
  const double val4 = last_val["val_loss"]["4"].get<double>();
  std::printf("unigram entropy %.3f, val loss r=1 %.3f r=4 %.3f r=8 %.3f\n", h1,
              last_val["val_loss"]["1"].get<double>(), val4, last_val["val_loss"]["8"].get<double>());
  EXPECT_LT(val4, 0.5 * h1);

  // The checkpoint is an ordinary HF model directory.
  const std::string ckpt = out + "/" + checkpoint_name(60);
  ASSERT_EQ(test::run_command(std::string(HUGINN_CLI) + " forward --model " + ckpt +
                                  " --ids 1,2,3 --steps 4 --out " + f.dir + "/fwd.safetensors",
                              &log),
            0)
      << log;
}

TEST(TrainLoop, NonFiniteStepsAreSkippedThenStopKeepingTheLastCheckpoint) {
  Fixture f("nonfinite");
  TrainOptions o = f.options("run");
  o.save_every = 5;
  o.max_bad_steps = 3;
  std::map<std::string, std::string> at5;
  o.after_backward = [&](int64_t step, std::vector<NamedParam>& params, Backend& be) {
    Tensor g = params[0].grad.reshape({1, params[0].grad.numel()}).cols(0, 1);
    if (step == 1 || step >= 6) be.fill(g, NAN);  // step 1 alone: just skipped
    if (step == 6) at5 = snapshot(o.out);
  };
  const std::string e = error_of([&] { train(o); });
  EXPECT_NE(e.find("3 steps in a row with a non-finite loss or gradient"), std::string::npos) << e;
  EXPECT_NE(e.find(checkpoint_name(5)), std::string::npos) << e;
  EXPECT_EQ(latest_checkpoint(o.out), o.out + "/" + checkpoint_name(5));
  EXPECT_EQ(snapshot(o.out), at5);  // nothing written after the last good checkpoint

  std::ifstream metrics(o.out + "/metrics.jsonl");
  std::string line;
  std::vector<bool> skipped;
  while (std::getline(metrics, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("skipped")) skipped.push_back(j["skipped"].get<bool>());
  }
  ASSERT_EQ(skipped.size(), 8u);  // steps 1..8; the 3rd bad one in a row (step 9) stops first
  EXPECT_FALSE(skipped[0]);
  EXPECT_TRUE(skipped[1]);  // 0-based step 1 = step 2
  EXPECT_FALSE(skipped[2]);
  EXPECT_TRUE(skipped[6] && skipped[7]);
}

TEST(TrainLoop, SkippedStepLeavesTheWeightsUnchanged) {
  Fixture f("skip");
  TrainOptions o = f.options("a");
  o.steps = 2;
  o.after_backward = [](int64_t step, std::vector<NamedParam>& params, Backend& be) {
    Tensor g = params.back().grad.reshape({1, params.back().grad.numel()}).cols(0, 1);
    if (step == 1) be.fill(g, INFINITY);
  };
  train(o);
  TrainOptions p = f.options("b");
  p.steps = 2;
  p.stop_at = 1;
  train(p);
  // Step 2 was skipped, so after it the weights are still those after step 1 (both runs share
  // the schedule, data and draws of step 1).
  EXPECT_EQ(read_file(o.out + "/step-00000002/model.safetensors"),
            read_file(p.out + "/step-00000001/model.safetensors"));
}

TEST(TrainLoop, BadInputIsAClearErrorAndSavedCheckpointsSurvive) {
  Fixture f("badinput");
  TrainOptions o = f.options("run");
  o.steps = 4;
  o.save_every = 2;
  train(o);
  const auto saved = snapshot(o.out);

  // Resuming with a different model config.
  TrainOptions other = o;
  other.model_config = write_config(f.dir, 64);
  other.resume = true;
  other.steps = 8;
  std::string e = error_of([&] { train(other); });
  EXPECT_NE(e.find("differs from"), std::string::npos) << e;
  EXPECT_NE(e.find("'n_embd' is 32 there, 64 here"), std::string::npos) << e;

  // Resuming with different training options breaks exactness: refused.
  TrainOptions batch = o;
  batch.resume = true;
  batch.steps = 8;
  batch.batch = 3;
  e = error_of([&] { train(batch); });
  EXPECT_NE(e.find("batch = 2"), std::string::npos) << e;

  // Training into a directory that already holds a run, without --resume.
  e = error_of([&] { train(o); });
  EXPECT_NE(e.find("already holds checkpoints"), std::string::npos) << e;

  // An output directory that cannot be created (a path through a regular file).
  TrainOptions unwritable = o;
  unwritable.out = f.config + "/run";
  e = error_of([&] { train(unwritable); });
  EXPECT_NE(e.find("cannot create the output directory"), std::string::npos) << e;

  // Shards of another vocabulary.
  const std::string data2 = f.dir + "/data2";
  fs::create_directories(data2);
  write_shard(data2 + "/train-00000.bin", pattern_stream(1000, 3), 1000);
  TrainOptions vocab = f.options("vocab");
  vocab.data = data2;
  e = error_of([&] { train(vocab); });
  EXPECT_NE(e.find("vocabulary mismatch"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(vocab.out));  // a failed start leaves nothing behind

  // A corrupt shard.
  const std::string data3 = f.dir + "/data3";
  fs::create_directories(data3);
  write_shard(data3 + "/train-00000.bin", pattern_stream(1000, 3), kVocab);
  {
    std::fstream s(data3 + "/train-00000.bin", std::ios::in | std::ios::out | std::ios::binary);
    s.seekg(kShardHeaderBytes + 100);
    const char c = static_cast<char>(s.get() ^ 0x40);
    s.seekp(kShardHeaderBytes + 100);
    s.put(c);
  }
  TrainOptions corrupt = f.options("corrupt");
  corrupt.data = data3;
  e = error_of([&] { train(corrupt); });
  EXPECT_NE(e.find("train-00000.bin: corrupt shard"), std::string::npos) << e;

  EXPECT_EQ(snapshot(o.out), saved);
  EXPECT_EQ(latest_checkpoint(o.out), o.out + "/" + checkpoint_name(4));
}

TEST(TrainLoop, CheckpointLoadsAsAModelWithTheTrainedWeights) {
  Fixture f("ckpt");
  TrainOptions o = f.options("run");
  o.steps = 3;
  train(o);
  auto loaded = TrainableModel::load(o.out + "/" + checkpoint_name(3));
  auto fresh = TrainableModel::init(ModelConfig::from_file(f.config), o.seed);
  const auto a = loaded->hf_tensors(), b = fresh->hf_tensors();
  ASSERT_EQ(a.size(), b.size());
  int changed = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].first, b[i].first);
    changed += std::memcmp(a[i].second.raw(), b[i].second.raw(), a[i].second.nbytes()) != 0;
  }
  // Every trained tensor moved (freqs_cis is not a parameter).
  EXPECT_EQ(changed, static_cast<int>(a.size()) - 1);
}

}  // namespace
}  // namespace huginn

namespace huginn {
namespace {

TEST(TrainCli, JsonConfigFileWithCommandLineOverrides) {
  Fixture f("jsonconfig");
  const std::string cfg = f.dir + "/train.json";
  std::ofstream(cfg) << "{\"model_config\": \"" << f.config << "\", \"data\": \"" << f.data
                     << "\", \"steps\": 50, \"batch\": 2, \"seq-len\": 8, \"val-depths\": [1, 3],"
                        " \"threads\": 2, \"quiet\": true}";
  std::string log;
  const std::string cli = HUGINN_CLI;
  ASSERT_EQ(test::run_command(cli + " train --config " + cfg + " --out " + f.dir + "/run --steps 2", &log), 0)
      << log;
  EXPECT_NE(log.find("step 2  loss"), std::string::npos) << log;  // --steps 2 beat the file's 50
  EXPECT_NE(log.find("r=1:"), std::string::npos) << log;
  EXPECT_NE(log.find("r=3:"), std::string::npos) << log;
  EXPECT_TRUE(fs::exists(f.dir + "/run/" + checkpoint_name(2) + "/model.safetensors"));

  std::ofstream(cfg) << "{\"stepz\": 3}";
  EXPECT_EQ(test::run_command(cli + " train --config " + cfg + " --out " + f.dir + "/r2 --data " + f.data, &log), 1);
  EXPECT_NE(log.find("unknown key 'stepz'"), std::string::npos) << log;
  std::ofstream(cfg) << "{\"batch\": -1}";
  EXPECT_EQ(test::run_command(cli + " train --config " + cfg + " --out " + f.dir + "/r2 --data " + f.data, &log), 1);
  EXPECT_NE(log.find("key 'batch'"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(f.dir + "/r2/" + checkpoint_name(3)));
}

// Three fixed sequences of different lengths (ignored labels included), each with its own
// initial-state seed, and one fixed (n, k) seed: a source whose step is known in full.
class FixedSource : public TrainSource {
 public:
  void open(const ModelConfig&, const std::string&) override {}
  int seq_len() const override { return 0; }
  void sequence(int64_t, int, int b, std::vector<int32_t>& ids, std::vector<int32_t>& labels,
                uint64_t* init_seed) override {
    ids = kIds[b];
    labels.assign(ids.begin() + 1, ids.end());
    labels.push_back(-100);
    if (b == 0) labels[1] = -100;
    *init_seed = 100 + static_cast<uint64_t>(b);
  }
  uint64_t iteration_seed(int64_t, int) const override { return 42; }
  Evaluation evaluate(const Model&, Backend&) override { return {}; }
  std::map<std::string, std::string> state(int64_t) const override { return {}; }
  void check_state(const std::map<std::string, std::string>&, const std::string&,
                   int64_t) const override {}
  static inline const std::vector<int32_t> kIds[3] = {
      {5, 17, 20, 3, 3, 9, 31}, {8, 1, 2}, {4, 9, 14, 19, 24, 29, 2, 7, 12, 17, 22, 27, 1}};
};

// --sequential: a step's gradient is the loop of single-sequence calls in batch order, bit for
// bit (the trainer before batched training); the batched step agrees only to float rounding.
TEST(TrainLoop, SequentialStepIsThePerSequenceLoopBitForBit) {
  Fixture f("sequential");
  auto gradients_of_step_0 = [&](bool sequential) {
    TrainOptions o = f.options(sequential ? "seq" : "batched");
    o.steps = 1;
    o.batch = 3;
    o.init_scale = 1.0;
    o.sequential = sequential;
    std::map<std::string, std::vector<float>> got;
    o.after_backward = [&](int64_t, std::vector<NamedParam>& params, Backend& be) {
      for (NamedParam& p : params) {
        std::vector<float>& g = got[p.name];
        g.resize(static_cast<size_t>(p.grad.numel()));
        be.download(p.grad, g.data());
      }
    };
    FixedSource src;
    train(o, src);
    return got;
  };
  const auto seq = gradients_of_step_0(true), batched = gradients_of_step_0(false);

  // The reference: the same initial weights, (n, k) and sequences, one call per sequence.
  const TrainOptions o = f.options("ref");
  const ModelConfig cfg = ModelConfig::from_file(o.model_config);
  ThreadPool pool(2);
  auto be = make_backend("cpu", pool);
  auto tm = TrainableModel::init(cfg, o.seed, *be);
  BackwardRunner runner(tm->model(), *be);
  Grads grads = Grads::zeros_like(tm->model(), *be);
  IterationSampler sampler(cfg.mean_recurrence, cfg.mean_backprop_depth, 42);
  const auto [n, k] = sampler.next();
  FixedSource src;
  for (int b = 0; b < 3; ++b) {
    std::vector<int32_t> ids, labels;
    LossOptions lo;
    lo.n_no_grad = n;
    lo.n_with_grad = k;
    lo.init.scale = 1.0;
    src.sequence(0, 0, b, ids, labels, &lo.init.seed);
    runner.loss_and_grad(ids, labels, lo, grads, 1.0f / 3);
  }
  int bitwise_equal_batched = 0, params = 0;
  for (NamedParam& p : named_params(tm->model(), grads)) {
    std::vector<float> want(static_cast<size_t>(p.grad.numel()));
    be->download(p.grad, want.data());
    ASSERT_EQ(seq.count(p.name), 1u) << p.name;
    EXPECT_EQ(std::memcmp(seq.at(p.name).data(), want.data(), want.size() * sizeof(float)), 0)
        << p.name << ": the sequential step is not the per-sequence loop";
    float scale = 0, diff = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      scale = std::max(scale, std::fabs(want[i]));
      diff = std::max(diff, std::fabs(batched.at(p.name)[i] - want[i]));
    }
    EXPECT_LE(diff, 1e-5f * scale) << p.name;
    bitwise_equal_batched += batched.at(p.name) == want;
    ++params;
  }
  EXPECT_GT(params, 10);
  // The test's batch is big enough for the orders to differ somewhere (else it proves nothing).
  EXPECT_LT(bitwise_equal_batched, params);
}

// A checkpoint records --sequential; resuming it the other way is refused (it would not be the
// same run), and checkpoints without the field resume as batched.
TEST(TrainLoop, ResumeKeepsTheSequentialChoice) {
  Fixture f("seq-resume");
  TrainOptions o = f.options("run");
  o.sequential = true;
  o.stop_at = 4;
  train(o);
  TrainOptions other = o;
  other.stop_at = 0;
  other.resume = true;
  other.sequential = false;
  EXPECT_NE(error_of([&] { train(other); }).find("one after another (--sequential), this run batches them"),
            std::string::npos);
  other.sequential = true;
  EXPECT_EQ(train(other).final_step, 20);
}

}  // namespace
}  // namespace huginn
