// huginn train under mpirun: 2 ranks × batch B/2 against one process with batch B, resume across
// rank counts, and the faults (a rank killed, a rank hung, ranks that disagree) ending in a clear
// error within the test's time. Tiny model (32 wide, one layer per part), a few steps.
#include <gtest/gtest.h>

#include <chrono>

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
    // every gradient (34,400 floats) and the step's loss and token count, every step
    EXPECT_EQ(b[s]["comm_bytes"].get<uint64_t>(), 4u * 34400 + 16);
  }
  const auto [diff, mag] =
      weight_diff(f.ckpt("one", 4) + "/model.safetensors", f.ckpt("two", 4) + "/model.safetensors");
  std::printf("max |w_1 - w_2| after 4 steps: %.3g (max |w| %.3g)\n", diff, mag);
  EXPECT_NE(two.out.find("2 ranks: compute"), std::string::npos) << "rank 0's telemetry line\n"
                                                                 << two.out;
  EXPECT_FALSE(fs::exists(f.dir + "/two/.lock.1")) << "one run lock, rank 0's";
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
// the global batch), re-split over the ranks, so every combination continues the one-process
// trajectory (to the tolerance of the test above).
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

// A rank that hangs (stops answering): the others give up after --comm-timeout seconds, saying
// which rank waited in which collective, and end the job.
TEST(DistTrain, AHungRankEndsTheJobAfterTheTimeout) {
  DistFixture f;
  const CliRun r =
      train_cli(2, f.flags("hung", "--comm-timeout 3", 50), "HUGINN_TEST_FAULT=hang:1:2");
  EXPECT_NE(r.rc, 0) << r.out;
  EXPECT_NE(r.rc, 124) << "timed out: the job hung\n" << r.out;
  EXPECT_LT(r.seconds, 60) << r.out;
  EXPECT_NE(r.out.find("rank 0 of 2 waited 3 s for the other ranks in all-reduce"),
            std::string::npos)
      << r.out;
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
