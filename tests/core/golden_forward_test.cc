// The model end to end against the reference's own numbers (shared/golden, copied to
// tests/data/golden): every forward_* and trace_* case of both tiny models, on every backend.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "huginn/forward.h"
#include "huginn/model.h"
#include "huginn/thread_pool.h"
#include "test_util.h"

namespace huginn {
namespace {

using test::golden_dir;
using test::load_ids;
using test::load_tensors;
using test::rel_err;

constexpr double kTol = 1e-4;  // golden README: logits, latents, trace tensors rel <= 1e-4

struct Fixture {
  ThreadPool pool{2};
  std::unique_ptr<Backend> be;
  std::shared_ptr<const Model> model;
  Fixture(const std::string& set, const std::string& backend) {
    be = make_backend(backend, pool);
    model = Model::load(golden_dir(set), *be);
  }
};

// ---- forward_{zero|state}_L{1,7,33}_s{1,4,16} ---------------------------------------------
using ForwardParam = std::tuple<std::string, std::string, std::string>;  // set, case, backend

class GoldenForward : public ::testing::TestWithParam<ForwardParam> {};

TEST_P(GoldenForward, MatchesReference) {
  const auto& [set, name, backend] = GetParam();
  Fixture f(set, backend);
  const std::string path = golden_dir(set) + "/" + name + ".safetensors";
  auto want = load_tensors(path);
  std::vector<int32_t> ids = load_ids(path, "input_ids");
  const int steps = std::stoi(name.substr(name.rfind("_s") + 2));
  InitState init;
  if (want.count("input_state")) init.given = want["input_state"];
  Runner runner(*f.model, *f.be);
  ForwardOutput out = runner.forward(ids, steps, init);
  EXPECT_LE(rel_err(test::to_host(*f.be, out.logits), want["logits"]), kTol) << "logits";
  EXPECT_LE(rel_err(test::to_host(*f.be, out.latent), want["latent"]), kTol) << "latent";
  EXPECT_LE(rel_err(test::to_host(*f.be, out.latent_raw), want["latent_raw"]), kTol) << "latent_raw";
}

std::vector<ForwardParam> forward_cases() {
  std::vector<ForwardParam> v;
  for (const char* set : {"tiny-a", "tiny-b"})
    for (const char* kind : {"zero", "state"})
      for (int L : {1, 7, 33})
        for (int s : {1, 4, 16})
          for (const std::string& be : test::kBackends)
            v.emplace_back(set, std::string("forward_") + kind + "_L" + std::to_string(L) + "_s" + std::to_string(s), be);
  return v;
}

std::string param_name(const ::testing::TestParamInfo<ForwardParam>& info) {
  std::string n = std::get<0>(info.param) + "_" + std::get<1>(info.param) + "_" + std::get<2>(info.param);
  for (char& ch : n)
    if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return n;
}

INSTANTIATE_TEST_SUITE_P(All, GoldenForward, ::testing::ValuesIn(forward_cases()), param_name);

// ---- trace_L7_s4: every intermediate ------------------------------------------------------
class Recorder : public TraceSink {
 public:
  std::map<std::string, Tensor> got;
  void record(const std::string& name, const Tensor& host) override { got[name] = host; }
};

using TraceParam = std::tuple<std::string, std::string, std::string>;
class GoldenTrace : public ::testing::TestWithParam<TraceParam> {};

TEST_P(GoldenTrace, EveryIntermediateMatches) {
  const auto& [set, name, backend] = GetParam();
  Fixture f(set, backend);
  const std::string path = golden_dir(set) + "/trace_L7_s4.safetensors";
  auto want = load_tensors(path);
  std::vector<int32_t> ids = load_ids(path, "input_ids");
  Recorder rec;
  Runner runner(*f.model, *f.be);
  runner.set_trace(&rec);
  runner.forward(ids, 4, InitState{});
  int compared = 0;
  for (const auto& [tname, w] : want) {
    if (tname == "input_ids") continue;
    ASSERT_TRUE(rec.got.count(tname)) << "not recorded: " << tname;
    EXPECT_LE(rel_err(rec.got[tname], w), kTol) << tname;
    ++compared;
  }
  EXPECT_EQ(compared, static_cast<int>(want.size()) - 1);
  EXPECT_GE(compared, 20);
}

INSTANTIATE_TEST_SUITE_P(All, GoldenTrace,
                         ::testing::Combine(::testing::Values("tiny-a", "tiny-b"),
                                            ::testing::Values("trace"),
                                            ::testing::ValuesIn(test::kBackends)),
                         [](const auto& info) {
                           std::string n = std::get<0>(info.param) + "_" + std::get<2>(info.param);
                           for (char& ch : n) if (ch == '-') ch = '_';
                           return n;
                         });

// ---- RoPE table: ours vs the stored freqs_cis ---------------------------------------------
TEST(GoldenRope, OwnTableMatchesStoredFreqsCis) {
  for (const char* set : {"tiny-a", "tiny-b"}) {
    auto w = load_tensors(golden_dir(set) + "/model.safetensors");
    const Tensor& stored = w["freqs_cis"];  // [1, block, 1, D/2, 2]
    const int64_t n = stored.dim(1), half = stored.dim(3);
    Tensor ours = rope_table(n, 2 * half, 50000.0);
    double max_abs = 0;
    for (int64_t i = 0; i < ours.numel(); ++i)
      max_abs = std::max(max_abs, std::fabs(double(ours.f32()[i]) - stored.f32()[i]));
    EXPECT_LE(max_abs, 2e-6) << set;
  }
}

}  // namespace
}  // namespace huginn
