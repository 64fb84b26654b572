// The communicator (huginn/comm.h): the single-process one in this process, the MPI one on three
// ranks under mpirun (comm_check), and the ranks' agreement check's field-by-field comparison.
#include <gtest/gtest.h>

#include <chrono>

#include "dist_util.h"
#include "huginn/comm.h"
#include "test_util.h"
#include "train/rank_check.h"

namespace huginn {
namespace {

TEST(SingleCommunicator, CollectivesAreTheIdentityAndCountBytes) {
  auto c = make_single_communicator();
  EXPECT_EQ(c->rank(), 0);
  EXPECT_EQ(c->size(), 1);
  std::vector<float> f{1.5f, -2.0f};
  c->all_reduce_sum(std::span<float>(f));
  EXPECT_EQ(f, (std::vector<float>{1.5f, -2.0f}));
  std::vector<float> in{3.0f, 4.0f}, out(2);
  c->reduce_scatter_sum(in, out);
  EXPECT_EQ(out, in);
  const std::byte mine[2] = {std::byte(7), std::byte(9)};
  std::byte all[2] = {};
  c->all_gather(mine, all);
  EXPECT_EQ(all[1], std::byte(9));
  std::byte at_root[2] = {};
  c->gather(mine, at_root, 0);
  EXPECT_EQ(at_root[0], std::byte(7));
  EXPECT_EQ(broadcast_string(*c, "abc"), "abc");
  EXPECT_EQ(all_gather_strings(*c, "longer than four", 4), std::vector<std::string>{"long"});
  // 8 + 8 + 2 + 2 + the string's length and bytes + 4
  EXPECT_EQ(c->bytes(), 8u + 8u + 2u + 2u + 8u + 3u + 4u);
}

TEST(MpiCommunicator, EveryCollectiveOnThreeRanks) {
  ASSERT_TRUE(have_mpi()) << "this build has no MPI (HUGINN_MPI=OFF)";
  std::string out;
  const int rc = test::run_command(dist_test::mpirun(3) + HUGINN_COMM_CHECK, &out);
  EXPECT_EQ(rc, 0) << out;
  for (int r = 0; r < 3; ++r)
    EXPECT_NE(out.find("rank " + std::to_string(r) + " of 3: ok"), std::string::npos) << out;
}

// Rank 0 collects every rank's check-in before each collective: a rank that does not arrive is
// named after the timeout, a rank in another collective at once; when rank 0 itself hangs, the
// others wait twice the timeout and point at it.
TEST(MpiCommunicator, NamesTheRankThatDoesNotArrive) {
  struct Case {
    std::string fault, want;
    double max_s;
  };
  for (const Case& c :
       {Case{"hang:2",
             "error: rank 2 of 3 did not reach barrier number 1 within 1 s: it hangs or died", 30},
        Case{"mismatch",
             "error: rank 1 of 3 runs different collectives: it entered broadcast number 1 "
             "where rank 0 entered barrier number 1",
             30},
        Case{"hang:0",
             "waited 2 s for the other ranks in barrier number 1: a rank has died, hangs or "
             "runs different collectives (rank 0, which names a rank that does not arrive, "
             "did not: it may be rank 0)",
             30}}) {
    SCOPED_TRACE(c.fault);
    std::string out;
    const auto t0 = std::chrono::steady_clock::now();
    const int rc = test::run_command(
        "timeout 120 " + dist_test::mpirun(3) + HUGINN_COMM_CHECK " 1 " + c.fault, &out);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_NE(rc, 0) << out;
    EXPECT_NE(rc, 124) << "timed out: the job hung\n" << out;
    EXPECT_LT(s, c.max_s) << out;
    EXPECT_NE(out.find(c.want), std::string::npos) << out;
    EXPECT_EQ(out.find("was not noticed"), std::string::npos) << out;
  }
}

TEST(RankCheck, NamesTheFirstDifferingFieldWithItsPath) {
  const nlohmann::ordered_json ref{{"run", {{"batch", 4}, {"lr", 0.001}}},
                                   {"model", {{"n_embd", 32}}}};
  EXPECT_EQ(json_difference(ref, ref, 1), "");
  nlohmann::ordered_json other = ref;
  other["run"]["lr"] = 0.002;
  EXPECT_EQ(json_difference(ref, other, 1), "'run.lr' is 0.001 on rank 0, 0.002 on rank 1");
  other = ref;
  other["model"].erase("n_embd");
  EXPECT_EQ(json_difference(ref, other, 2), "'model.n_embd' is 32 on rank 0, absent on rank 2");
  other = ref;
  other["extra"] = "x";
  EXPECT_EQ(json_difference(ref, other, 1), "'extra' is absent on rank 0, \"x\" on rank 1");
  // One rank: nothing to compare, nothing sent.
  auto c = make_single_communicator();
  check_ranks_agree(*c, ref);
  EXPECT_EQ(c->bytes(), 0u);
}

}  // namespace
}  // namespace huginn
