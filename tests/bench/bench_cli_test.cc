// huginn bench: the output parses in every format, the numbers are positive and agree with each
// other and with FLOP / byte counts derived here from the config; bad flags are errors. Also the
// machine-peak measurements on their own. (Timings are never asserted, only their consistency.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "eval/machine_peak.h"
#include "huginn/thread_pool.h"
#include "kernels/cpu/cpu_backend.h"
#include "test_util.h"

namespace huginn {
namespace {

using json = nlohmann::json;

// The tiny built-in config (cmd_bench.cc): E 64, 4 heads, I 128, V 256, layers 1/2/1, tied.
constexpr double E = 64, I = 128, V = 256;
constexpr int P = 1, C = 2, Q = 1;

// Small and fast: prefill 8 tokens, decode 4 tokens after 8, train 2 x 16 with (n, k) = (1, 1).
const std::string kBase =
    " bench --config tiny -p 8 --decode-prompt 8 -g 4 --train-batch 2 --train-len 16"
    " --train-n 1 --train-k 1 --threads 1 --peak-buffer-mb 32";
const std::string kArgs = kBase + " -r 2,3 -n 2";

int run_bench(const std::string& extra, std::string* stdout_text, const std::string& base = kArgs) {
  // stderr (progress) dropped inside the subshell: stdout must hold the report alone.
  return test::run_command(std::string("( ") + HUGINN_CLI + base + extra + " 2>/dev/null )",
                           stdout_text);
}

// FLOPs of one layer over T new tokens after `start` cached ones (independent of cmd_bench.cc).
double layer_flops(double start, double T) {
  double attn = 0;
  for (double i = 0; i < T; ++i) attn += 4 * E * (start + i + 1);
  return T * 2 * (3 * E * E + E * E + 2 * I * E + I * E) + attn;
}

// F32 bytes of every weight a token reads at r recurrences (tied head = wte).
double f32_bytes_per_pass(int r) {
  const double block = 4 * E + 3 * E * E + 2 * E + E * E + 2 * I * E + I * E;
  return 4 * ((P + Q) * block + E /* ln_f */ + r * (C * block + 2 * E * E) + V * E);
}

TEST(BenchCli, JsonIsConsistent) {
  std::string out;
  ASSERT_EQ(run_bench(" --json", &out), 0) << out;
  const json j = json::parse(out);
  const json& m = j["machine"];
  EXPECT_EQ(m["threads"].get<int>(), 1);
  EXPECT_GT(m["read_gbs"].get<double>(), 0.1);
  EXPECT_GT(m["fp32_gflops"].get<double>(), 0.1);
  if (m["has_bf16"].get<bool>()) {
    EXPECT_GT(m["bf16_gflops"].get<double>(), 0.1);
  }
  EXPECT_EQ(j["model"]["dtype"], "f32");
  // The kernels the CPU backend picked on this machine: the best instruction set it runs, the
  // GEMM tile and the blocking from the caches it found.
  const json& k = j["kernels"];
  ASSERT_TRUE(k.is_object()) << j.dump();
  EXPECT_EQ(k["isa"], cpu_isa_name(best_cpu_isa()));
  EXPECT_GT(k["gemm_tile"][0].get<int>(), 0);
  EXPECT_GT(k["gemm_tile"][1].get<int>(), 0);
  EXPECT_EQ(k["blocking"]["kc"].get<int64_t>() % 64, 0);
  EXPECT_GT(k["blocking"]["mc"].get<int64_t>(), 0);
  EXPECT_GT(k["blocking"]["nc"].get<int64_t>(), 0);
  EXPECT_GT(k["caches"]["l1d"].get<int64_t>(), 0);
  EXPECT_GT(k["caches"]["l2"].get<int64_t>(), 0);
  EXPECT_NE(k["summary"].get<std::string>().find(cpu_isa_name(best_cpu_isa())), std::string::npos);

  const json& res = j["results"];
  ASSERT_EQ(res.size(), 5u);  // prefill + decode at r = 2 and 3, then train
  int seen_prefill = 0, seen_decode = 0, seen_train = 0;
  for (const json& r : res) {
    SCOPED_TRACE(r.dump());
    const double tokens = r["tokens"], mean = r["tok_s_mean"];
    ASSERT_EQ(r["seconds"].size(), 2u);
    double sum = 0;
    for (double s : r["seconds"]) {
      EXPECT_GT(s, 0.0);
      sum += tokens / s;
    }
    EXPECT_NEAR(mean, sum / 2, 1e-9 * mean);
    EXPECT_GE(r["tok_s_sd"].get<double>(), 0.0);
    const double fpt = r["flops_per_token"], bpt = r["weight_bytes_per_token"];
    EXPECT_NEAR(r["gflops"].get<double>(), fpt * mean / 1e9, 1e-9 * fpt * mean);
    EXPECT_NEAR(r["gbs"].get<double>(), bpt * mean / 1e9, 1e-9 * bpt * mean);
    EXPECT_NEAR(r["pct_bw_peak"].get<double>(), 100 * r["gbs"].get<double>() / m["read_gbs"].get<double>(), 1e-6);
    EXPECT_EQ(r["flop_peak_kind"], "fp32");
    EXPECT_NEAR(r["pct_flop_peak"].get<double>(),
                100 * r["gflops"].get<double>() / m["fp32_gflops"].get<double>(), 1e-6);
    const int rr = r["r"];
    if (r["test"] == "prefill") {
      ++seen_prefill;
      EXPECT_EQ(tokens, 8);
      const double want = (P + rr * C + Q) * layer_flops(0, 8) + rr * 8 * 4 * E * E + 2 * V * E;
      EXPECT_NEAR(fpt * tokens, want, 1e-9 * want);
      EXPECT_NEAR(bpt * tokens, f32_bytes_per_pass(rr) + 8 * 4 * E, 1e-6);
    } else if (r["test"] == "decode") {
      ++seen_decode;
      EXPECT_EQ(tokens, 3);  // 4 generated, the first by the prefill
      double want = 0;
      for (int c = 1; c < 4; ++c)
        want += (P + rr * C + Q) * layer_flops(8 + c - 1, 1) + rr * 4 * E * E + 2 * V * E;
      EXPECT_NEAR(fpt * tokens, want, 1e-9 * want);
      EXPECT_NEAR(bpt, f32_bytes_per_pass(rr) + 4 * E, 1e-6);  // + one embedding row
    } else {
      ++seen_train;
      EXPECT_EQ(r["test"], "train");
      EXPECT_EQ(tokens, 32);
      EXPECT_EQ(rr, 2);
      // 2 sequences: forward at n + k = 2 (head on all 16 rows) + 2 x the tracked part (k = 1).
      const double fwd = (P + 2 * C + Q) * layer_flops(0, 16) + 2 * 16 * 4 * E * E + 16 * 2 * V * E;
      const double tracked = (P + C + Q) * layer_flops(0, 16) + 16 * 4 * E * E + 16 * 2 * V * E;
      EXPECT_NEAR(fpt * tokens, 2 * (fwd + 2 * tracked), 1e-9 * fwd);
    }
  }
  EXPECT_EQ(seen_prefill, 2);
  EXPECT_EQ(seen_decode, 2);
  EXPECT_EQ(seen_train, 1);
}

// Weight bytes come from the tensors as loaded: matrices (Wqkv, proj, fc, mlp proj, adapter,
// head) at 4 / 2 / 1.0625 / 0.5625 bytes per weight, norms, biases and the embedding row in F32.
TEST(BenchCli, WeightBytesFollowTheLoadedFormat) {
  const int r = 2;
  const double matrices = (P + Q + r * C) * (3 * E * E + E * E + 2 * I * E + I * E) +
                          r * 2 * E * E + V * E;
  for (const auto& [dtype, bytes_per_weight] :
       {std::pair<std::string, double>{"f32", 4.0}, {"bf16", 2.0}, {"q8", 1.0625}, {"q4", 0.5625}}) {
    SCOPED_TRACE(dtype);
    std::string out;
    ASSERT_EQ(run_bench(" --json --no-peak --tests decode -r 2 -n 1 --dtype " + dtype, &out, kBase), 0)
        << out;
    const json j = json::parse(out);
    EXPECT_EQ(j["model"]["dtype"], dtype);
    ASSERT_EQ(j["results"].size(), 1u);
    const double want = f32_bytes_per_pass(r) + 4 * E - (4.0 - bytes_per_weight) * matrices;
    EXPECT_NEAR(j["results"][0]["weight_bytes_per_token"].get<double>(), want, 1e-6);
  }
}

TEST(BenchCli, CsvAndMarkdownParse) {
  std::string csv;
  ASSERT_EQ(run_bench(" --csv --no-peak --tests decode", &csv), 0) << csv;
  std::istringstream in(csv);
  std::string header, line;
  std::getline(in, header);
  EXPECT_EQ(header.rfind("model,dtype,threads,test,name,r,", 0), 0u) << header;
  const auto cols = [](const std::string& s) { return std::count(s.begin(), s.end(), ',') + 1; };
  int rows = 0;
  const auto fields = [](const std::string& s) {
    std::vector<std::string> f;
    std::istringstream ss(s);
    for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
    if (!s.empty() && s.back() == ',') f.emplace_back();
    return f;
  };
  const std::vector<std::string> names = fields(header);
  const auto col = [&](const char* name) {
    return std::find(names.begin(), names.end(), name) - names.begin();
  };
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    ++rows;
    EXPECT_EQ(cols(line), cols(header)) << line;
    EXPECT_NE(line.find(",decode,"), std::string::npos) << line;
    const std::vector<std::string> f = fields(line);
    ASSERT_EQ(f.size(), names.size()) << line;
    EXPECT_EQ(f[col("pct_flop_peak")], "") << "no peak: empty % columns: " << line;
    EXPECT_EQ(f[col("pct_bw_peak")], "") << "no peak: empty % columns: " << line;
    EXPECT_EQ(f[col("decoder")], "sequential") << line;
  }
  EXPECT_EQ(rows, 2);

  std::string md;
  ASSERT_EQ(run_bench(" --tests prefill", &md), 0) << md;
  EXPECT_NE(md.find("| test | r | tok/s | GFLOP/s |"), std::string::npos) << md;
  EXPECT_NE(md.find("| pp8 | 2 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| pp8 | 3 |"), std::string::npos) << md;
  EXPECT_NE(md.find("machine peak at 1 thread: read"), std::string::npos) << md;
  EXPECT_EQ(md.find("[bench]"), std::string::npos) << "progress belongs on stderr";
}

// The decoders side by side: sequential first, wavefront (lossless) and speculative at
// threshold 1 (the verified argmax) give sequential's tokens, the depth-parallel ones carry more
// than one position per core pass, and every decoder is charged sequential decoding's bytes.
TEST(BenchCli, DecodersRunSideBySide) {
  const std::string base = " bench --config tiny --decode-prompt 8 -g 12 --threads 1 --no-peak"
                           " --tests decode -r 8 -n 1";
  std::string out;
  ASSERT_EQ(run_bench(" --json --verification-threshold 1"
                      " --decode diffusion,speculative,wavefront,sequential",
                      &out, base),
            0)
      << out;
  const json res = json::parse(out)["results"];
  ASSERT_EQ(res.size(), 4u) << out;
  const char* order[] = {"sequential", "wavefront", "speculative", "diffusion"};
  for (int i = 0; i < 4; ++i) {
    const json& r = res[i];
    EXPECT_EQ(r["decoder"], order[i]);
    EXPECT_EQ(r["r"], 8);
    EXPECT_GT(r["tok_s_mean"].get<double>(), 0.0);
    EXPECT_DOUBLE_EQ(r["weight_bytes_per_token"].get<double>(),
                     res[0]["weight_bytes_per_token"].get<double>());
    EXPECT_LE(r["accepted"].get<int64_t>(), r["drafted"].get<int64_t>());
  }
  EXPECT_TRUE(res[0]["same_as_sequential"].is_null());
  EXPECT_DOUBLE_EQ(res[0]["rows_per_core_pass"].get<double>(), 1.0);
  for (int i : {1, 2}) {
    EXPECT_DOUBLE_EQ(res[i]["same_as_sequential"].get<double>(), 1.0) << order[i];
    EXPECT_GT(res[i]["rows_per_core_pass"].get<double>(), 1.0) << order[i];
    EXPECT_GT(res[i]["drafted"].get<int64_t>(), 0) << order[i];
  }
  EXPECT_GT(res[3]["diffusion_steps"].get<int64_t>(), 0);
  EXPECT_GT(res[3]["rows_per_core_pass"].get<double>(), 1.0);
  const double same = res[3]["same_as_sequential"].get<double>();
  EXPECT_TRUE(same >= 0.0 && same <= 1.0) << same;

  std::string md;
  ASSERT_EQ(run_bench(" --decode sequential,wavefront", &md, base), 0)
      << md;
  EXPECT_NE(md.find("| decoder | r | tok/s | × sequential |"), std::string::npos) << md;
  EXPECT_NE(md.find("| wavefront | 8 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| 100 % |"), std::string::npos) << md;
}

TEST(BenchCli, BadFlagsAreErrors) {
  const std::string cli = HUGINN_CLI;
  struct Case {
    std::string args, expect;
  };
  const Case cases[] = {
      {" bench --no-peak", "exactly one of --model"},
      {" bench --config tiny --model x --no-peak", "excludes"},
      {" bench --config /nonexistent/cfg.json --no-peak", "/nonexistent/cfg.json"},
      {" bench --config tiny --dtype f16 --no-peak", "--dtype"},
      {" bench --config tiny --tests prefill,bogus --no-peak", "bogus"},
      {" bench --config tiny -r 0 --no-peak", "--steps"},
      {" bench --config tiny -r 2,x --no-peak", "--steps"},
      {" bench --config tiny --json --csv --no-peak", "excludes"},
      {" bench --config tiny -p 5000 --tests prefill --no-peak", "positions"},
      {" bench --config tiny --dtype bf16 --tests train --no-peak", "f32"},
      {" bench --config tiny -n 0 --no-peak", "--reps"},
      {" bench --config tiny --tests decode --decode sequential,bogus --no-peak", "bogus"},
      {" bench --config tiny --tests decode --decode wavefront,wavefront --no-peak", "twice"},
      {" bench --config tiny --tests decode -r 4 --decode wavefront --draft-depth 9 --no-peak",
       "--draft-depth"},
      {" bench --config tiny --tests decode -r 4 --decode diffusion --headway 0 --no-peak",
       "headway"},
  };
  for (const Case& c : cases) {
    std::string out;
    EXPECT_NE(test::run_command(cli + c.args, &out), 0) << c.args;
    EXPECT_NE(out.find(c.expect), std::string::npos) << c.args << "\n" << out;
  }
  std::string help;
  EXPECT_EQ(test::run_command(cli + " bench --help", &help), 0);
  EXPECT_NE(help.find("--peak-buffer-mb"), std::string::npos) << help;
}

TEST(MachinePeak, MeasuresPositiveRates) {
  ThreadPool pool(1);
  EXPECT_GT(measure_read_bandwidth(pool, size_t{16} << 20, 0.01, 2), 0.1);
  std::string isa;
  EXPECT_GT(measure_fp32_peak(pool, 0.01, 2, &isa), 0.1);
  EXPECT_TRUE(isa == "avx512" || isa == "avx2" || isa == "scalar") << isa;
  const double bf16 = measure_bf16_peak(pool, 0.01, 2);
  if (__builtin_cpu_supports("avx512bf16")) EXPECT_GT(bf16, 0.1);
  else EXPECT_EQ(bf16, 0.0);
}

}  // namespace
}  // namespace huginn
