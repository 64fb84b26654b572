// huginn train under mpirun: 2 ranks × batch B/2 against one process with batch B, resume across
// rank counts, and the faults (a rank killed, a rank hung, ranks that disagree) ending in a clear
// error within the test's time. Tiny model (32 wide, one layer per part), a few steps.
#include <gtest/gtest.h>

#include <chrono>
#include <sstream>

#include "dist_util.h"
#include "train_fixture.h"

namespace huginn {
namespace {
using namespace train_test;
using json = nlohmann::json;

struct CliRun {
  int rc = 0;
  std::string out;
  double seconds = 0;
};

// `ranks` 0: one plain process (no mpirun).
CliRun train_cli(int ranks, const std::string& flags, const std::string& env = "") {
  const auto t0 = std::chrono::steady_clock::now();
  CliRun r;
  const std::string launch = ranks > 0 ? dist_test::mpirun(ranks) : std::string();
  r.rc = test::run_command(env + " timeout 300 " + launch + HUGINN_CLI " train " + flags, &r.out);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

std::vector<json> step_records(const std::string& run_dir) {
  std::vector<json> out;
  std::istringstream in(read_file(run_dir + "/metrics.jsonl"));
  for (std::string line; std::getline(in, line);)
    if (json j = json::parse(line); j.contains("loss")) out.push_back(j);
  return out;
}

// max |a - b| over every tensor of two model.safetensors, and the largest |a|. Also checks the
// weights' agreement: at most 4·lr anywhere, and above lr/100 in at most 0.1% of the weights.
// AdamW divides by sqrt(v), so a rounding-level difference in a near-zero gradient can move that
// weight by up to lr per step; a wrong gradient (a missing rank, a wrong scale, other windows)
// moves most weights by a good fraction of lr, which the second bound catches.
constexpr double kLr = 3e-3;
std::pair<double, double> weight_diff(const std::string& a, const std::string& b) {
  const auto ta = test::load_tensors(a), tb = test::load_tensors(b);
  EXPECT_EQ(ta.size(), tb.size());
  double diff = 0, mag = 0;
  int64_t n = 0, far = 0;
  for (const auto& [name, t] : ta) {
    const Tensor& u = tb.at(name);
    EXPECT_EQ(t.numel(), u.numel()) << name;
    for (int64_t i = 0; i < t.numel(); ++i) {
      const double d = std::abs(double(t.f32()[i]) - u.f32()[i]);
      diff = std::max(diff, d);
      far += d > kLr / 100;
      mag = std::max(mag, std::abs(double(t.f32()[i])));
    }
    n += t.numel();
  }
  EXPECT_LT(diff, 4 * kLr);
  EXPECT_LE(far, n / 1000) << far << " of " << n << " weights differ by more than lr/100";
  return {diff, mag};
}

struct DistFixture : Fixture {
  DistFixture() : Fixture("dist") {}
  // The run's flags (4 steps of 4 sequences, 1 thread, buckets of 1,048 floats: several per step).
  std::string flags(const std::string& out, const std::string& extra = "", int steps = 4,
                    const std::string& lr = "3e-3", const std::string& model = "") const {
    return "--model-config " + (model.empty() ? config : model) + " --data " + data + " --out " +
           dir + "/" + out + " --steps " + std::to_string(steps) + " --lr " + lr +
           " --batch 4 --seq-len 16 --warmup 1 --threads 1 --seed 5"
           " --val-depths 2 --val-windows 2 --bucket-mb 0.004 " +
           extra;
  }
  std::string ckpt(const std::string& out, int step) const {
    return dir + "/" + out + "/" + checkpoint_name(step);
  }
};

// The sum over ranks is the one-process gradient up to the order of float additions: a weight
// gradient is a sum over the B·T rows of the batch, which one process adds in one GEMM reduction
// and two ranks in two halves added by the all-reduce. Each order is exact to about 1e-7
// relative (float), so the losses and gradient norms, which depend smoothly on the weights,
// agree to 1e-5 relative after 4 steps; the per-sequence losses of step 1 (same weights, same
// windows) agree to double rounding. The weights: weight_diff above.
TEST(DistTrain, TwoRanksMatchOneProcessWithTheWholeBatch) {
  DistFixture f;
  const CliRun one = train_cli(0, f.flags("one"));
  ASSERT_EQ(one.rc, 0) << one.out;
  // The strict backend: the exchange reaches the gradients only by download and upload.
  const CliRun two = train_cli(2, f.flags("two", "--backend strict"));
  ASSERT_EQ(two.rc, 0) << two.out;
  const auto a = step_records(f.dir + "/one"), b = step_records(f.dir + "/two");
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(b.size(), 4u) << "rank 0 alone writes metrics.jsonl, once per step";
  EXPECT_NEAR(b[0]["loss"].get<double>(), a[0]["loss"].get<double>(),
              1e-12 * a[0]["loss"].get<double>());
  for (size_t s = 0; s < 4; ++s) {
    for (const char* key : {"loss", "grad_norm"})
      EXPECT_NEAR(b[s][key].get<double>(), a[s][key].get<double>(), 1e-5 * a[s][key].get<double>())
          << key << " at step " << s + 1;
    EXPECT_EQ(b[s]["n"], a[s]["n"]) << "every rank draws the step's (n, k) of one process";
    EXPECT_EQ(b[s]["k"], a[s]["k"]);
    EXPECT_EQ(b[s]["tokens"], a[s]["tokens"]) << "the tokens of every rank are counted";
    EXPECT_EQ(b[s]["ranks"], 2);
    // ZeRO-1 (the default): every gradient (34,400 floats) into the reduce-scatter, this rank's
    // half of the weights into the all-gather, the step's loss and token count, and the sum of
    // squares of its slice of the gradients (the global norm)
    EXPECT_EQ(b[s]["comm_bytes"].get<uint64_t>(), 4u * 34400 + 4u * 17200 + 16 + 8);
  }
  const auto [diff, mag] =
      weight_diff(f.ckpt("one", 4) + "/model.safetensors", f.ckpt("two", 4) + "/model.safetensors");
  std::printf("max |w_1 - w_2| after 4 steps: %.3g (max |w| %.3g)\n", diff, mag);
  EXPECT_NE(two.out.find("2 ranks: compute"), std::string::npos) << "rank 0's telemetry line\n"
                                                                 << two.out;
  EXPECT_NE(two.out.find("ZeRO-1: reduce-scatter + all-gather), optimizer"), std::string::npos)
      << two.out;
  EXPECT_FALSE(fs::exists(f.dir + "/two/.lock.1")) << "one run lock, rank 0's";
}

// The bytes of the optimizer state each rank reports holding (rank 0's start-up line).
std::vector<int64_t> optimizer_bytes(const std::string& log, std::string* how) {
  const std::string key = "optimizer state (AdamW m, v) bytes per rank: ";
  const size_t at = log.find(key);
  if (at == std::string::npos) return {};
  std::vector<int64_t> out;
  std::istringstream in(
      log.substr(at + key.size(), log.find('(', at + key.size()) - at - key.size()));
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoll(item));
  *how = log.substr(log.find('(', at + key.size()) + 1, 6);
  return out;
}

// ZeRO-1 against whole optimizer state on every rank (--zero 0, gradients all-reduced): with two
// ranks the summed gradients are a + b either way and AdamW is elementwise, so without clipping
// (whose norm ZeRO-1 sums in another order) the weights and the checkpoint's gathered optimizer
// state are the same bytes. Each rank holds half of the state: 34,400 parameters × (m, v) × 4
// bytes = 275,200 bytes whole, 137,600 per rank.
TEST(DistTrain, ZeroOneShardsTheOptimizerStateAndMatchesTheAllReduceBitForBit) {
  DistFixture f;
  const CliRun zero = train_cli(2, f.flags("zero1", "--grad-clip 0 --backend strict"));
  ASSERT_EQ(zero.rc, 0) << zero.out;
  const CliRun whole = train_cli(2, f.flags("zero0", "--grad-clip 0 --zero 0"));
  ASSERT_EQ(whole.rc, 0) << whole.out;
  for (const char* file : {"model.safetensors", "train_state.safetensors"})
    EXPECT_EQ(read_file(f.ckpt("zero1", 4) + "/" + file),
              read_file(f.ckpt("zero0", 4) + "/" + file))
        << file;
  std::string how;
  EXPECT_EQ(optimizer_bytes(zero.out, &how), (std::vector<int64_t>{137600, 137600})) << zero.out;
  EXPECT_EQ(how, "ZeRO-1");
  EXPECT_EQ(optimizer_bytes(whole.out, &how), (std::vector<int64_t>{275200, 275200})) << whole.out;
  EXPECT_EQ(how, "--zero");
  const auto recs = step_records(f.dir + "/zero0");
  ASSERT_EQ(recs.size(), 4u);
  EXPECT_EQ(recs[0]["comm_bytes"].get<uint64_t>(), 4u * 34400 + 16) << "the all-reduce path";
}

// Three ranks cut 34,400 parameters into 11,467 + 11,467 + 11,466, and resume the 2-rank ZeRO-1
// checkpoint (shards re-cut from the whole state it holds).
TEST(DistTrain, ThreeRanksHoldAThirdOfTheStateAndResumeTwoRankShards) {
  DistFixture f;
  ASSERT_EQ(train_cli(0, f.flags("straight")).rc, 0);
  const CliRun a = train_cli(2, f.flags("2to3", "--stop-at 2"));
  ASSERT_EQ(a.rc, 0) << a.out;
  const CliRun b = train_cli(3, f.flags("2to3", "--resume"));
  ASSERT_EQ(b.rc, 0) << b.out;
  std::string how;
  EXPECT_EQ(optimizer_bytes(b.out, &how), (std::vector<int64_t>{8 * 11467, 8 * 11467, 8 * 11466}))
      << b.out;
  const auto [diff, mag] = weight_diff(f.ckpt("straight", 4) + "/model.safetensors",
                                       f.ckpt("2to3", 4) + "/model.safetensors");
  std::printf("2to3: max |w - w_straight| after 4 steps: %.3g\n", diff);
}

}  // namespace
}  // namespace huginn

namespace huginn {
namespace {

// A checkpoint's record of every rank's data position.
json data_parallel_of(const std::string& ckpt) {
  auto st = SafetensorsFile::open(ckpt + "/train_state.safetensors");
  return json::parse(st->metadata().at("data_parallel"));
}

// Resume with the same and with a different number of ranks: the data position is the step (and
// the global batch), re-split over the ranks, and the optimizer state, sharded by ZeRO-1 on two
// ranks, is saved whole (gathered by rank 0) and re-cut on resume, so every combination continues
// the one-process trajectory (to the tolerance of the test above).
TEST(DistTrain, ResumesOnTheSameAndOnADifferentNumberOfRanks) {
  DistFixture f;
  ASSERT_EQ(train_cli(0, f.flags("straight")).rc, 0);
  const std::string straight = f.ckpt("straight", 4) + "/model.safetensors";
  struct Case {
    const char* name;
    int first, second;  // ranks (0: one plain process)
  };
  for (const Case c : {Case{"2to1", 2, 0}, Case{"1to2", 0, 2}, Case{"2to2", 2, 2}}) {
    SCOPED_TRACE(c.name);
    const CliRun a = train_cli(c.first, f.flags(c.name, "--stop-at 2"));
    ASSERT_EQ(a.rc, 0) << a.out;
    const json dp = data_parallel_of(f.ckpt(c.name, 2));
    const int R = c.first > 0 ? c.first : 1;
    EXPECT_EQ(dp["ranks"], R);
    // step 2 × batch 4 + each rank's first sequence
    const json slices = R == 2 ? json::parse("[[0,2],[2,4]]") : json::parse("[[0,4]]");
    const json next = R == 2 ? json::parse("[8,10]") : json::parse("[8]");
    EXPECT_EQ(dp["batch_slices"], slices);
    EXPECT_EQ(dp["next_sequence"], next);
    const CliRun b = train_cli(c.second, f.flags(c.name, "--resume"));
    ASSERT_EQ(b.rc, 0) << b.out;
    const auto recs = step_records(f.dir + "/" + c.name);
    ASSERT_EQ(recs.size(), 4u) << "each step logged once, by rank 0";
    for (size_t s = 0; s < 4; ++s) EXPECT_EQ(recs[s]["step"], s + 1);
    const auto [diff, mag] = weight_diff(straight, f.ckpt(c.name, 4) + "/model.safetensors");
    std::printf("%s: max |w - w_straight| after 4 steps: %.3g\n", c.name, diff);
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(f.dir + "/" + c.name))
      names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    EXPECT_EQ(names, (std::vector<std::string>{".lock", "metrics.jsonl", "step-00000002",
                                               "step-00000004"}))
        << "rank 0 alone writes: two checkpoints, no temporaries";
  }
}

// A rank that dies mid-run: mpirun ends the job within seconds and names the rank; nothing hangs.
TEST(DistTrain, AKilledRankEndsTheJobNamingIt) {
  DistFixture f;
  const CliRun r = train_cli(2, f.flags("killed", "", 50), "HUGINN_TEST_FAULT=kill:1:2");
  EXPECT_NE(r.rc, 0) << r.out;
  EXPECT_NE(r.rc, 124) << "timed out: the surviving rank hung\n" << r.out;
  EXPECT_LT(r.seconds, 60) << r.out;
  EXPECT_NE(r.out.find("rank 1"), std::string::npos) << r.out;
  std::printf("%s", r.out.c_str());
  EXPECT_TRUE(latest_checkpoint(f.dir + "/killed").empty()) << "no checkpoint of a broken run";
}

// A rank that hangs (stops answering): rank 0, which collects every rank's check-in before each
// collective, names the rank that did not arrive after --comm-timeout seconds and ends the job.
TEST(DistTrain, AHungRankIsNamedAndEndsTheJobAfterTheTimeout) {
  DistFixture f;
  const CliRun r =
      train_cli(2, f.flags("hung", "--comm-timeout 3", 50), "HUGINN_TEST_FAULT=hang:1:2");
  EXPECT_NE(r.rc, 0) << r.out;
  EXPECT_NE(r.rc, 124) << "timed out: the job hung\n" << r.out;
  EXPECT_LT(r.seconds, 60) << r.out;
  // Rank 1 hangs after step 2; step 3 opens with the first bucket's reduce-scatter (ZeRO-1).
  EXPECT_NE(r.out.find("error: rank 1 of 2 did not reach reduce-scatter number"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("within 3 s: it hangs or died"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("waited"), std::string::npos) << "rank 0 speaks first\n" << r.out;
  std::printf("%s", r.out.c_str());
}

// Ranks started with different flags or models (mpirun's MPMD form: one command per rank) refuse
// to train, naming the rank and the field.
TEST(DistTrain, RanksThatDisagreeAreRefusedAtStart) {
  DistFixture f;
  const std::string other_config = write_config(f.dir, 16);
  struct Case {
    std::string rank1_flags, want;
  };
  for (const Case& c :
       {Case{f.flags("mismatch", "", 4, "2e-3"),
             "rank 1 of 2 differs from rank 0: 'run.lr' is 0.003 on rank 0, 0.002 on rank 1"},
        Case{f.flags("mismatch", "", 4, "3e-3", other_config),
             "rank 1 of 2 differs from rank 0: 'model.n_embd' is 32 on rank 0, 16 on rank 1"}}) {
    const std::string out = f.dir + "/mismatch";
    std::string log;
    const int rc = test::run_command("timeout 300 " + dist_test::mpirun(1) + HUGINN_CLI " train " +
                                         f.flags("mismatch") + " : -np 1 " HUGINN_CLI " train " +
                                         c.rank1_flags,
                                     &log);
    EXPECT_NE(rc, 0) << log;
    EXPECT_NE(rc, 124) << log;
    EXPECT_NE(log.find("error: " + c.want), std::string::npos) << log;
    EXPECT_EQ(log.find("MPI_ABORT"), std::string::npos) << "every rank knows: none aborts\n" << log;
    std::printf("%s", log.c_str());
    EXPECT_TRUE(latest_checkpoint(out).empty());
  }
}

}  // namespace
}  // namespace huginn
