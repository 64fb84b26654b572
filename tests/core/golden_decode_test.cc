// KV-cache decode, teacher-forced, against decode_{full|compress-s2|compress-s4}_s8: call 0 runs
// tokens 0..4 at once, calls 1..7 one token each against the cache, 8 recurrences, zero state.
#include <gtest/gtest.h>

#include "huginn/forward.h"
#include "huginn/thread_pool.h"
#include "test_util.h"

namespace huginn {
namespace {

using test::golden_dir;

using DecodeParam = std::tuple<std::string, std::string, std::string>;  // set, strategy, backend
class GoldenDecode : public ::testing::TestWithParam<DecodeParam> {};

TEST_P(GoldenDecode, MatchesReference) {
  const auto& [set, strategy, backend] = GetParam();
  ThreadPool pool(2);
  auto be = make_backend(backend, pool);
  auto model = Model::load(golden_dir(set), *be);
  const ModelConfig& c = model->config();
  const std::string path = golden_dir(set) + "/decode_" + strategy + "_s8.safetensors";
  auto want = test::load_tensors(path);
  std::vector<int32_t> ids = test::load_ids(path, "input_ids");
  ASSERT_EQ(ids.size(), 12u);

  KVCache::Strategy st = KVCache::Strategy::kFull;
  int k = 0;
  if (strategy != "full") {
    st = KVCache::Strategy::kCompressS;
    k = std::stoi(strategy.substr(strategy.size() - 1));
  }
  KVCache cache(c, *be, st, k);
  Runner runner(*model, *be);
  Tensor logits = Tensor::empty({12, c.vocab_size}), latent = Tensor::empty({12, c.n_embd});
  int64_t row = 0;
  auto call = [&](int32_t begin, int32_t end) {
    std::span<const int32_t> chunk(ids.data() + begin, end - begin);
    ForwardOutput out = runner.forward(chunk, 8, InitState{}, &cache, begin);
    be->download(out.logits, logits.row(row));
    be->download(out.latent, latent.row(row));
    row += end - begin;
  };
  call(0, 5);
  for (int32_t p = 5; p < 12; ++p) call(p, p + 1);
  EXPECT_EQ(cache.n_tokens(), 12);
  EXPECT_LE(test::rel_err(logits, want["logits"]), 1e-4);
  EXPECT_LE(test::rel_err(latent, want["latent"]), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(
    All, GoldenDecode,
    ::testing::Combine(::testing::Values("tiny-a", "tiny-b"),
                       ::testing::Values("full", "compress-s2", "compress-s4"),
                       ::testing::ValuesIn(test::kBackends)),
    [](const auto& info) {
      std::string n = std::get<0>(info.param) + "_" + std::get<1>(info.param) + "_" + std::get<2>(info.param);
      for (char& ch : n) if (ch == '-') ch = '_';
      return n;
    });

TEST(KVCacheSlots, CompressRuleFollowsTheReference) {
  ThreadPool pool(1);
  auto be = make_backend("ref", pool);
  ModelConfig c;
  c.n_embd = 4;
  KVCache s4(c, *be, KVCache::Strategy::kCompressS, 4);
  // Released model (P=2, C=4): compress-s4 gives one slot per core layer for every recurrence.
  for (int t = 0; t < 5; ++t)
    for (int j = 0; j < 4; ++j) EXPECT_EQ(s4.slot_of(2 + 4 * t + j), 2 + j);
  EXPECT_EQ(s4.slot_of(0), 0);
  EXPECT_EQ(s4.slot_of(1), 1);
  EXPECT_EQ(s4.slot_of(-1), -1);
  KVCache s2(c, *be, KVCache::Strategy::kCompressS, 2);
  EXPECT_EQ(s2.slot_of(4), 2);  // core layers 0/2 and 1/3 share
  EXPECT_EQ(s2.slot_of(5), 3);
  KVCache r2(c, *be, KVCache::Strategy::kCompressR, 2);
  EXPECT_EQ(r2.slot_of(2), 2);
  EXPECT_EQ(r2.slot_of(3), 2);
  EXPECT_EQ(r2.slot_of(4), 3);
  KVCache full(c, *be);
  EXPECT_EQ(full.slot_of(37), 37);
}

TEST(KVCacheSlots, OverwritesSamePositionAndKeepsOrder) {
  ThreadPool pool(1);
  auto be = make_backend("ref", pool);
  ModelConfig c;
  c.n_embd = 2;
  KVCache cache(c, *be);
  Tensor k = Tensor::empty({1, 2}), v = Tensor::empty({1, 2}), ko, vo;
  auto put = [&](int32_t pos, float val) {
    k.f32()[0] = val;
    v.f32()[0] = -val;
    int32_t p[1] = {pos};
    cache.update(3, p, k, v, &ko, &vo);
  };
  put(0, 1.f);
  put(2, 2.f);
  put(1, 3.f);  // out of order: inserted in the middle
  put(2, 4.f);  // same position: overwritten
  ASSERT_EQ(ko.dim(0), 3);
  EXPECT_EQ(ko.row(0)[0], 1.f);
  EXPECT_EQ(ko.row(1)[0], 3.f);
  EXPECT_EQ(ko.row(2)[0], 4.f);
  EXPECT_EQ(vo.row(2)[0], -4.f);
  EXPECT_EQ(cache.positions(3), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(cache.n_tokens(), 0);  // only step index 0 counts tokens
}

}  // namespace
}  // namespace huginn
