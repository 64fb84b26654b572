// huginn bench: throughput of prefill, decode and training for a model directory or a config with
// random weights (speed does not depend on the values), in the spirit of llama-bench; GFLOP/s
// and GB/s of each, and the percentage of this machine's peak, which it measures first.
//
// Counting (per token unless stated; 2 FLOPs per multiply-add):
//   layer    2·(4E² + 3IE) for Wqkv, proj, fc (gate|up), mlp proj
//   attention 4·E·S for a query that sees S keys (QKᵀ and PV; the causal mask counts only the
//            keys each query sees, so a T-token prefill has S = 1..T)
//   adapter  2·2E·E per recurrence;  head 2·V·E per row of logits
//   layers per token: P + r·C + Q (core weights re-read on every recurrence)
// Weight bytes are the storage bytes of the loaded tensors (F32 4, BF16 2, Q8 1.0625, Q4 0.5625
// per weight), counted once per layer application: prelude + coda + r·(core + adapter) + head (+ one
// embedding row per token). For decode that is what each token must stream; for prefill and
// training it is a lower bound of the traffic (the GEMMs re-use each weight across tokens).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/command.h"
#include "cli/sampler_flags.h"
#include "eval/machine_peak.h"
#include "huginn/backward.h"
#include "huginn/error.h"
#include "huginn/generate.h"
#include "huginn/model.h"
#include "huginn/thread_pool.h"
#include "huginn/train.h"
#include "huginn/wavefront.h"
#include "kernels/cpu/cpu_backend.h"

namespace huginn::cli {
namespace {

using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

struct BenchArgs {
  std::string model, config, tests = "prefill,decode,train", steps = "4,8,32";
  int prompt = 256, decode_prompt = 64, gen = 32, reps = 3;
  int train_batch = 4, train_len = 256, train_n = 6, train_k = 2;
  std::string train_precision = "f32";  // comma list of f32, bf16 (huginn train --precision)
  uint64_t seed = 1234;
  bool json_out = false, csv_out = false, no_peak = false, tests_given = false;
  int peak_buffer_mb = 0;
  std::string decode = "sequential";  // decoders the decode test runs, comma list
  WavefrontOptions wf;
  SamplerFlags sf;
};

// ---- model and counts ---------------------------------------------------------------------------

ModelConfig builtin_config(const std::string& name) {
  ModelConfig c;
  c.name = name;
  c.block_size = 4096;
  if (name == "tiny") {
    c.n_embd = 64; c.n_heads = 4; c.intermediate_size = 128; c.vocab_size = 256;
    c.n_prelude = 1; c.n_core = 2; c.n_coda = 1;
  } else if (name == "bench-m") {
    c.n_embd = 1024; c.n_heads = 16; c.intermediate_size = 2816; c.vocab_size = 32768;
    c.n_prelude = 2; c.n_core = 4; c.n_coda = 2;
  } else {
    return ModelConfig::from_file(name);
  }
  c.head_dim = c.n_embd / c.n_heads;
  return c;
}

size_t block_bytes(const BlockWeights& b) {
  size_t n = 0;
  for (const Tensor* t : {&b.norm_1, &b.norm_2, &b.norm_3, &b.norm_4, &b.wqkv, &b.q_bias,
                          &b.k_bias, &b.attn_proj, &b.mlp_fc, &b.mlp_proj})
    if (t->defined()) n += t->nbytes();
  return n;
}

size_t blocks_bytes(const std::vector<BlockWeights>& v) {
  size_t n = 0;
  for (const auto& b : v) n += block_bytes(b);
  return n;
}

// Weight bytes of the model's parts, from the tensors as loaded.
struct PartBytes {
  double prelude = 0, core = 0, adapter = 0, coda = 0, head = 0, embed_row = 0;
  // One pass at r recurrences (each layer application reads its weights once).
  double pass(int r) const { return prelude + r * (core + adapter) + coda + head; }
};

PartBytes part_bytes(const Model& m) {
  const Weights& w = m.weights();
  PartBytes p;
  p.prelude = static_cast<double>(blocks_bytes(w.prelude));
  p.core = static_cast<double>(blocks_bytes(w.core));
  p.adapter = static_cast<double>(w.adapter.nbytes());
  p.coda = static_cast<double>(blocks_bytes(w.coda) + w.ln_f.nbytes());
  p.head = static_cast<double>(w.lm_head.nbytes());
  p.embed_row = static_cast<double>(w.wte.nbytes()) / static_cast<double>(m.config().vocab_size);
  return p;
}

// FLOPs of the pieces (see the legend at the top of the file).
struct Flops {
  double E, I, V;
  int P, C, Q;
  explicit Flops(const ModelConfig& c)
      : E(double(c.n_embd)), I(double(c.intermediate_size)), V(double(c.vocab_size)),
        P(c.n_prelude), C(c.n_core), Q(c.n_coda) {}
  double layer_dense(double tokens) const { return 2.0 * tokens * (4 * E * E + 3 * I * E); }
  // Queries at positions start..start+T-1 of a causal sequence: query i sees start+i+1 keys.
  double attention(double start, double T) const {
    return 4.0 * E * (T * start + T * (T + 1) / 2);
  }
  double layer(double start, double T) const { return layer_dense(T) + attention(start, T); }
  double adapter(double T) const { return 2.0 * T * 2 * E * E; }
  double head(double rows) const { return 2.0 * rows * V * E; }
  // One pass over T new tokens after `start` cached ones, at r recurrences, head on head_rows.
  double pass(double start, double T, int r, double head_rows) const {
    return (P + r * C + Q) * layer(start, T) + r * adapter(T) + head(head_rows);
  }
  // The tracked part of a training pass (what backward differentiates): prelude, k recurrences,
  // coda and head over all T rows.
  double tracked(double T, int k) const {
    return (P + k * C + Q) * layer(0, T) + k * adapter(T) + head(T);
  }
};

// ---- measurements -------------------------------------------------------------------------------

struct Result {
  std::string test, name;
  int r = 0;
  double tokens = 0;             // tokens per repetition
  std::vector<double> seconds;   // per repetition
  double flops = 0, bytes = 0;   // per repetition
  std::string flop_peak_kind;    // "fp32" | "bf16"
  // Decode tests: the decoder, and for the depth-parallel ones what one generation shared and
  // drafted (the same every repetition: the run is deterministic).
  std::string decoder = "sequential";
  SamplerStats shared;
  double same_as_sequential = 1.0;        // share of tokens equal to sequential decoding's
  // (position, depth) rows per pass over the core: one for sequential decoding.
  double rows_per_pass() const { return decoder == "sequential" ? 1.0 : shared.rows_per_core_pass(); }
  double mean_tok_s() const {
    double s = 0;
    for (double x : seconds) s += tokens / x;
    return s / static_cast<double>(seconds.size());
  }
  double sd_tok_s() const {
    if (seconds.size() < 2) return 0.0;
    const double m = mean_tok_s();
    double s = 0;
    for (double x : seconds) s += (tokens / x - m) * (tokens / x - m);
    return std::sqrt(s / static_cast<double>(seconds.size() - 1));
  }
  // Rates follow the mean tok/s, so that GFLOP/s = FLOPs per token · tok/s.
  double gflops() const { return flops / tokens * mean_tok_s() / 1e9; }
  double gbs() const { return bytes / tokens * mean_tok_s() / 1e9; }
};

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::vector<int32_t> prompt_ids(int64_t n, int64_t vocab) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) ids[t] = static_cast<int32_t>((t * 7919 + 11) % vocab);
  return ids;
}

class Progress {
 public:
  explicit Progress(bool quiet) : quiet_(quiet) {}
  template <class... A>
  void say(const char* fmt, A... a) const {
    if (quiet_) return;
    std::fprintf(stderr, "[bench] ");
    std::fprintf(stderr, fmt, a...);
    std::fprintf(stderr, "\n");
  }
 private:
  bool quiet_;
};

// Prefill: the prompt in one batched pass through a full KV cache (last row of logits only),
// as `huginn generate` runs it. A fresh context per repetition; one warm-up run.
Result bench_prefill(const Model& m, Backend& be, const BenchArgs& a, int r, const Progress& pr) {
  GenerateOptions o;
  o.steps = r;
  o.default_stop_ids = false;
  Generator gen(m, be, o);
  auto ctx = gen.new_context();
  const auto ids = prompt_ids(a.prompt, m.config().vocab_size);
  Result res;
  res.test = "prefill";
  res.name = "pp" + std::to_string(a.prompt);
  res.r = r;
  res.tokens = a.prompt;
  for (int i = -1; i < a.reps; ++i) {
    pr.say("prefill r=%d %s", r, i < 0 ? "warm-up" : (std::to_string(i + 1) + "/" + std::to_string(a.reps)).c_str());
    ctx->reset();
    const auto t0 = Clock::now();
    gen.prefill(*ctx, ids);
    const double s = since(t0);
    if (i >= 0) res.seconds.push_back(s);
  }
  const Flops f(m.config());
  const PartBytes b = part_bytes(m);
  res.flops = f.pass(0, a.prompt, r, 1);
  res.bytes = b.pass(r) + a.prompt * b.embed_row;
  return res;
}

// Decode: a decode_prompt-token prompt, then gen greedy tokens with the full cache, by `decoder`
// (sequential: one call per token); the rate counts the gen − 1 tokens after the first (which
// comes from the prefill). FLOPs and bytes are sequential decoding's for every decoder — the
// work the tokens need — so a decoder that shares weight passes shows more GB/s than the machine
// streams. `seq` (sequential's tokens, when it ran first) gives the share of equal tokens.
Result bench_decode(const Model& m, Backend& be, const BenchArgs& a, int r, const std::string& decoder,
                    const std::vector<int32_t>* seq, std::vector<int32_t>* tokens, const Progress& pr) {
  GenerateOptions o;
  o.steps = r;
  o.max_new_tokens = a.gen;
  o.default_stop_ids = false;
  Generator gen(m, be, o);
  if (decoder == "wavefront") a.wf.validate(o, r);
  if (decoder == "speculative") a.sf.spec.validate(o);
  const DiffusionOptions diffusion = diffusion_options(a.sf);  // throws naming --freeze-strategy
  if (decoder == "diffusion") diffusion.validate(o, r);
  const auto ids = prompt_ids(a.decode_prompt, m.config().vocab_size);
  Result res;
  res.test = "decode";
  res.name = "tg" + std::to_string(a.gen) + "@p" + std::to_string(a.decode_prompt);
  if (decoder != "sequential") res.name += " " + decoder;
  res.decoder = decoder;
  res.r = r;
  res.tokens = a.gen - 1;
  for (int i = -1; i < a.reps; ++i) {
    pr.say("decode %s r=%d %s", decoder.c_str(), r,
           i < 0 ? "warm-up" : (std::to_string(i + 1) + "/" + std::to_string(a.reps)).c_str());
    auto ctx = gen.new_context();
    SamplerStats st;
    const GenerateResult g = generate_decoded(gen, *ctx, ids, decoder, a.wf, a.sf.spec, diffusion, &st);
    res.shared = st;
    if (static_cast<int>(g.tokens.size()) != a.gen)
      throw Error("bench: " + decoder + " decode stopped after " + std::to_string(g.tokens.size()) +
                  " tokens (" + g.finish_reason + "), expected " + std::to_string(a.gen));
    if (i >= 0) res.seconds.push_back(g.decode_seconds);
    if (tokens) *tokens = g.tokens;
    if (seq) {
      size_t same = 0;
      for (size_t t = 0; t < g.tokens.size() && t < seq->size(); ++t) same += g.tokens[t] == (*seq)[t];
      res.same_as_sequential = double(same) / double(g.tokens.size());
    } else {
      res.same_as_sequential = std::nan("");
    }
  }
  const Flops f(m.config());
  const PartBytes b = part_bytes(m);
  for (int c = 1; c < a.gen; ++c) res.flops += f.pass(a.decode_prompt + c - 1, 1, r, 1);
  res.bytes = res.tokens * (b.pass(r) + b.embed_row);
  return res;
}

// Training: one optimizer step = batch sequences of train_len tokens (n untracked + k tracked
// recurrences, zero initial state), gradient clipping at 1.0 and AdamW, as `huginn train` does.
Result bench_train(TrainableModel& tm, Backend& be, ThreadPool& pool, const BenchArgs& a,
                   MatmulPrecision precision, const Progress& pr) {
  const Model& m = tm.model();
  const ModelConfig& c = m.config();
  if (a.train_len + 1 > m.max_positions())
    throw Error("bench: --train-len " + std::to_string(a.train_len) + " exceeds the model's " +
                std::to_string(m.max_positions()) + " positions");
  BackwardRunner runner(m, be);
  Grads grads = Grads::zeros_like(m, be);
  AdamW adam(named_params(m, grads), AdamWOptions{}, be);
  const auto seq = prompt_ids(a.train_len + 1, c.vocab_size);
  std::span<const int32_t> ids(seq.data(), a.train_len), labels(seq.data() + 1, a.train_len);
  LossOptions lo;
  lo.n_no_grad = a.train_n;
  lo.n_with_grad = a.train_k;
  lo.precision = precision;
  const float scale = 1.0f / static_cast<float>(a.train_batch);
  // The batch as one pass ([batch·len, E] GEMMs), as huginn train runs it.
  const std::vector<TrainSequence> batch(static_cast<size_t>(a.train_batch),
                                         TrainSequence{ids, labels, 0, scale});
  std::vector<float> losses(batch.size());
  Result res;
  res.test = "train";
  res.name = "train" + std::to_string(a.train_batch) + "x" + std::to_string(a.train_len) + "(" +
             std::to_string(a.train_n) + "," + std::to_string(a.train_k) + ")" +
             (precision == MatmulPrecision::kBF16 ? " bf16" : "");
  res.r = a.train_n + a.train_k;
  res.tokens = double(a.train_batch) * a.train_len;
  for (int i = -1; i < a.reps; ++i) {
    pr.say("train step %s", i < 0 ? "warm-up" : (std::to_string(i + 1) + "/" + std::to_string(a.reps)).c_str());
    const auto t0 = Clock::now();
    grads.zero(be);
    lo.weights_version = static_cast<uint64_t>(i + 2);  // as huginn train: new weights each step
    runner.loss_and_grad(batch, lo, grads, losses);
    clip_grad_norm(be, adam.params(), 1.0);
    adam.step(1e-5);
    const double s = since(t0);
    if (i >= 0) res.seconds.push_back(s);
  }
  const Flops f(c);
  const PartBytes b = part_bytes(m);
  const double T = a.train_len;
  // Forward over every recurrence, backward (2× the forward FLOPs of what it differentiates:
  // input and weight gradients) over the tracked part; no recomputation counted.
  res.flops = a.train_batch * (f.pass(0, T, res.r, T) + 2.0 * f.tracked(T, a.train_k));
  // Forward reads + backward reads of the tracked weights, then AdamW: param r/w, grad r,
  // m r/w, v r/w (F32).
  const double tracked_bytes = b.prelude + a.train_k * (b.core + b.adapter) + b.coda + b.head;
  const double n_params = static_cast<double>(m.param_counts().total());
  res.bytes = b.pass(res.r) + tracked_bytes + 7.0 * 4.0 * n_params;
  return res;
}

// ---- output -------------------------------------------------------------------------------------

struct Context {
  std::string model_name, dtype, backend;
  std::string kernels;  // the CPU backend's choices on this machine (cpu backend only)
  CpuKernelInfo kernel_info;
  int threads = 0;
  ParamCounts params;
  PartBytes bytes;
  bool have_peak = false;
  MachinePeak peak;
};

double flop_peak(const Context& cx, const Result& r) {
  if (!cx.have_peak) return 0;
  return r.flop_peak_kind == "bf16" ? cx.peak.bf16_gflops : cx.peak.fp32_gflops;
}

json result_json(const Context& cx, const Result& r) {
  json j;
  j["test"] = r.test;
  j["name"] = r.name;
  j["r"] = r.r;
  j["tokens"] = r.tokens;
  j["reps"] = r.seconds.size();
  j["seconds"] = r.seconds;
  j["tok_s_mean"] = r.mean_tok_s();
  j["tok_s_sd"] = r.sd_tok_s();
  j["flops_per_token"] = r.flops / r.tokens;
  j["weight_bytes_per_token"] = r.bytes / r.tokens;
  j["gflops"] = r.gflops();
  j["gbs"] = r.gbs();
  j["flop_peak_kind"] = r.flop_peak_kind;
  if (r.test == "decode") {
    j["decoder"] = r.decoder;
    j["rows_per_core_pass"] = r.rows_per_pass();
    j["drafted"] = r.shared.drafted;
    j["accepted"] = r.shared.accepted;
    j["diffusion_steps"] = r.decoder == "diffusion" ? r.shared.rounds : 0;
    j["same_as_sequential"] = std::isnan(r.same_as_sequential) ? json(nullptr) : json(r.same_as_sequential);
  }
  if (cx.have_peak) {
    j["pct_flop_peak"] = 100.0 * r.gflops() / flop_peak(cx, r);
    j["pct_bw_peak"] = 100.0 * r.gbs() / cx.peak.read_gbs;
  } else {
    j["pct_flop_peak"] = nullptr;
    j["pct_bw_peak"] = nullptr;
  }
  return j;
}

json report_json(const Context& cx, const std::vector<Result>& results) {
  json j;
  j["model"] = {{"name", cx.model_name},
                {"dtype", cx.dtype},
                {"params", cx.params.total()},
                {"bytes", {{"prelude", cx.bytes.prelude}, {"core", cx.bytes.core},
                           {"adapter", cx.bytes.adapter}, {"coda", cx.bytes.coda},
                           {"head", cx.bytes.head}}}};
  j["threads"] = cx.threads;
  j["backend"] = cx.backend;
  if (!cx.kernels.empty()) {
    const CpuKernelInfo& k = cx.kernel_info;
    j["kernels"] = {{"isa", cpu_isa_name(k.isa)},
                    {"avx512_bf16", k.cpu_has_avx512_bf16},
                    {"gemm_tile", {k.gemm_mr, k.gemm_nr}},
                    {"blocking", {{"kc", k.blocking.kc}, {"mc", k.blocking.mc}, {"nc", k.blocking.nc}}},
                    {"caches", {{"l1d", k.caches.l1d}, {"l2", k.caches.l2}, {"l3", k.caches.l3},
                                {"l3_shared_by", k.caches.l3_shared_by}, {"source", k.caches.source}}},
                    {"summary", cx.kernels}};
  } else {
    j["kernels"] = nullptr;
  }
  if (cx.have_peak)
    j["machine"] = {{"threads", cx.peak.threads},        {"isa", cx.peak.isa},
                    {"read_gbs", cx.peak.read_gbs},      {"llc_read_gbs", cx.peak.llc_read_gbs},
                    {"fp32_gflops", cx.peak.fp32_gflops},
                    {"bf16_gflops", cx.peak.bf16_gflops}, {"has_bf16", cx.peak.has_bf16},
                    {"buffer_bytes", cx.peak.buffer_bytes}, {"llc_bytes", cx.peak.llc_bytes}};
  else
    j["machine"] = nullptr;
  j["results"] = json::array();
  for (const Result& r : results) j["results"].push_back(result_json(cx, r));
  return j;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

void print_csv(const Context& cx, const std::vector<Result>& results) {
  std::printf("model,dtype,threads,test,name,r,tokens,reps,tok_s_mean,tok_s_sd,flops_per_token,"
              "weight_bytes_per_token,gflops,gbs,flop_peak_kind,pct_flop_peak,pct_bw_peak,decoder,"
              "rows_per_core_pass,drafted,accepted,same_as_sequential\n");
  for (const Result& r : results) {
    const json j = result_json(cx, r);
    auto num = [&](const char* k) {
      return j[k].is_null() ? std::string() : fmt("%.6g", j[k].get<double>());
    };
    const bool dec = r.test == "decode";
    std::printf("%s,%s,%d,%s,%s,%d,%.0f,%zu,%s,%s,%s,%s,%s,%s,%s,%s,%s,", cx.model_name.c_str(),
                cx.dtype.c_str(), cx.threads, r.test.c_str(), r.name.c_str(), r.r, r.tokens,
                r.seconds.size(), num("tok_s_mean").c_str(), num("tok_s_sd").c_str(),
                num("flops_per_token").c_str(), num("weight_bytes_per_token").c_str(),
                num("gflops").c_str(), num("gbs").c_str(), r.flop_peak_kind.c_str(),
                num("pct_flop_peak").c_str(), num("pct_bw_peak").c_str());
    std::printf("%s,%s,%s,%s,%s\n", dec ? r.decoder.c_str() : "",
                dec ? num("rows_per_core_pass").c_str() : "", dec ? num("drafted").c_str() : "",
                dec ? num("accepted").c_str() : "", dec ? num("same_as_sequential").c_str() : "");
  }
}

// The decoders side by side: speed over sequential's at the same r, what they shared and drafted.
void print_decoders(const std::vector<Result>& results) {
  const bool any = std::any_of(results.begin(), results.end(), [](const Result& r) {
    return r.test == "decode" && r.decoder != "sequential";
  });
  if (!any) return;
  std::printf("\n| decoder | r | tok/s | × sequential | positions per core pass | drafts accepted | "
              "tokens equal to sequential's |\n|---|---:|---:|---:|---:|---:|---:|\n");
  for (const Result& r : results) {
    if (r.test != "decode") continue;
    const auto seq = std::find_if(results.begin(), results.end(), [&](const Result& q) {
      return q.test == "decode" && q.decoder == "sequential" && q.r == r.r;
    });
    const std::string speedup = seq == results.end() ? "-" : fmt("%.2f×", r.mean_tok_s() / seq->mean_tok_s());
    const SamplerStats& sh = r.shared;
    const std::string drafts = sh.drafted ? std::to_string(sh.accepted) + " / " + std::to_string(sh.drafted)
                               : r.decoder == "diffusion" ? std::to_string(sh.rounds) + " diffusion steps"
                                                          : "-";
    const std::string same = std::isnan(r.same_as_sequential) ? "-" : fmt("%.0f %%", 100.0 * r.same_as_sequential);
    std::printf("| %s | %d | %.2f | %s | %.2f | %s | %s |\n", r.decoder.c_str(), r.r, r.mean_tok_s(),
                speedup.c_str(), r.rows_per_pass(), drafts.c_str(), same.c_str());
  }
}

void print_markdown(const Context& cx, const std::vector<Result>& results) {
  std::printf("model %s (%.1fM params), weights %s, %d thread%s, backend %s\n",
              cx.model_name.c_str(), cx.params.total() / 1e6, cx.dtype.c_str(), cx.threads,
              cx.threads == 1 ? "" : "s", cx.backend.c_str());
  if (!cx.kernels.empty()) std::printf("kernels: %s\n", cx.kernels.c_str());
  std::printf("weight MB: prelude %.1f, core %.1f (re-read every recurrence), adapter %.1f, "
              "coda %.1f, head %.1f\n",
              cx.bytes.prelude / 1e6, cx.bytes.core / 1e6, cx.bytes.adapter / 1e6,
              cx.bytes.coda / 1e6, cx.bytes.head / 1e6);
  if (cx.have_peak)
    std::printf("machine peak at %d thread%s: read %.1f GB/s (%zu MiB buffer, LLC %zu MiB), "
                "fp32 FMA %.1f GFLOP/s (%s), bf16 %s\n\n",
                cx.peak.threads, cx.peak.threads == 1 ? "" : "s", cx.peak.read_gbs,
                cx.peak.buffer_bytes >> 20, cx.peak.llc_bytes >> 20, cx.peak.fp32_gflops,
                cx.peak.isa.c_str(),
                cx.peak.has_bf16 ? (fmt("%.1f", cx.peak.bf16_gflops) + " GFLOP/s (vdpbf16ps)").c_str()
                                 : "n/a (no AVX512_BF16)");
  else
    std::printf("machine peak not measured (--no-peak)\n\n");
  if (cx.have_peak && cx.peak.llc_bytes > 0) {
    const double rec = cx.bytes.core + cx.bytes.adapter;
    std::printf("last-level cache read %.1f GB/s; recurrent core + adapter %.1f MB %s (a core "
                "that stays in cache lets decode beat the memory bandwidth: %% BW > 100)\n\n",
                cx.peak.llc_read_gbs, rec / 1e6,
                rec < 0.75 * double(cx.peak.llc_bytes) ? "fit in it" : "do not fit in it");
  }
  std::printf("| test | r | tok/s | GFLOP/s | %% FLOP peak | GB/s | %% BW peak |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|\n");
  for (const Result& r : results) {
    const bool pk = cx.have_peak;
    std::printf("| %s | %d | %.2f ± %.2f | %.1f | %s | %.1f | %s |\n", r.name.c_str(), r.r,
                r.mean_tok_s(), r.sd_tok_s(), r.gflops(),
                pk ? (fmt("%.1f", 100.0 * r.gflops() / flop_peak(cx, r)) + " " + r.flop_peak_kind).c_str() : "-",
                r.gbs(), pk ? fmt("%.1f", 100.0 * r.gbs() / cx.peak.read_gbs).c_str() : "-");
  }
  std::printf("\ntok/s: mean ± sd of %zu repetitions. FLOPs: 2 per multiply-add; attention counts "
              "QKᵀ and PV over the keys each query sees (causal). GB/s: weight bytes (each layer "
              "application reads its weights once; core and adapter r times) per second; for "
              "decode that is the stream each token needs (sequential decoding's for every "
              "decoder, so a decoder that shares weight passes can exceed the machine's "
              "bandwidth), for prefill/train a lower bound (train adds AdamW's state traffic).\n",
              results.empty() ? size_t{0} : results.front().seconds.size());
  print_decoders(results);
}

// ---- driver -------------------------------------------------------------------------------------

// Saves `tm` to a fresh temporary directory, loads it with `options`, removes the directory
// (the loaded model keeps its own memory or maps, which outlive the unlinked files).
std::shared_ptr<const Model> via_checkpoint(const TrainableModel& tm, Backend& be,
                                            const Model::LoadOptions& options) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "huginn-bench-XXXXXX").string();
  if (!mkdtemp(tmpl.data())) throw Error("bench: cannot create a temporary directory " + tmpl);
  struct Remove {
    std::string dir;
    ~Remove() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } remove{tmpl};
  tm.save_hf(tmpl);
  return Model::load(tmpl, be, options);
}

bool has_test(const std::vector<std::string>& tests, const char* t) {
  return std::find(tests.begin(), tests.end(), t) != tests.end();
}

// A comma list of names from `known`, each at most once, returned in `known`'s order (so
// sequential decoding runs first and the other decoders are compared with its tokens).
std::vector<std::string> parse_names(const std::string& s, const std::vector<std::string>& known,
                                     const std::string& flag) {
  std::string expected;
  for (const std::string& k : known) expected += (expected.empty() ? "" : ", ") + k;
  std::vector<std::string> named;
  for (size_t i = 0; i <= s.size();) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    const std::string n = s.substr(i, j - i);
    if (std::find(known.begin(), known.end(), n) == known.end())
      throw Error(flag + ": unknown name '" + n + "' (expected " + expected + ")");
    if (std::find(named.begin(), named.end(), n) != named.end())
      throw Error(flag + ": '" + n + "' named twice");
    named.push_back(n);
    i = j + 1;
  }
  std::vector<std::string> out;
  for (const std::string& k : known)
    if (std::find(named.begin(), named.end(), k) != named.end()) out.push_back(k);
  return out;
}

void validate(const BenchArgs& a, const std::vector<int>& steps) {
  if (a.model.empty() == a.config.empty())
    throw Error("bench: give exactly one of --model DIR and --config FILE|tiny|bench-m");
  for (int r : steps)
    if (r < 1) throw Error("--steps: r must be >= 1, found " + std::to_string(r));
  if (steps.empty()) throw Error("--steps: empty list");
}

// The format the matrices were loaded in, as --dtype spells it.
std::string loaded_dtype(const Model& m) {
  switch (m.weights().adapter.dtype()) {
    case DType::kBF16: return "bf16";
    case DType::kQ8: return "q8";
    case DType::kQ4: return "q4";
    default: return "f32";
  }
}

void run(const BenchArgs& a, const Common& common) {
  const std::vector<int> steps = parse_int_list(a.steps, "--steps");
  std::vector<std::string> tests = parse_names(a.tests, {"prefill", "decode", "train"}, "--tests");
  const std::vector<std::string> decoders =
      parse_names(a.decode, {"sequential", "wavefront", "speculative", "diffusion"}, "--decode");
  const std::string& dtype = common.dtype;
  if (dtype != "f32" && dtype != "auto" && has_test(tests, "train")) {
    if (a.tests_given)
      throw Error("bench: training runs on f32 weights only (drop train from --tests or use --dtype f32)");
    tests.erase(std::find(tests.begin(), tests.end(), "train"));
    if (!common.quiet) std::fprintf(stderr, "[bench] no training test with --dtype %s (f32 only)\n", dtype.c_str());
  }
  validate(a, steps);
  const Progress pr(common.quiet);
  ThreadPool pool(common.threads);
  auto be = make_backend(common.backend, pool);

  Context cx;
  cx.backend = common.backend;
  cx.threads = pool.size();
  if (common.backend == "cpu") {
    cx.kernel_info = cpu_kernel_info(best_cpu_isa());
    cx.kernels = describe(cx.kernel_info);
  }
  if (!a.no_peak) {
    pr.say("measuring machine peak at %d thread(s)", pool.size());
    PeakOptions po;
    po.buffer_bytes = static_cast<size_t>(a.peak_buffer_mb) << 20;
    cx.peak = measure_peak(pool, po);
    cx.have_peak = true;
  }

  // Weights: a directory as loaded, or random weights for a config (the trainer's init).
  std::unique_ptr<TrainableModel> trainable;
  std::shared_ptr<const Model> model;
  const bool want_train = has_test(tests, "train");
  const Model::LoadOptions lo = load_options(common);
  if (!a.model.empty()) {
    pr.say("loading %s (%s weights)", a.model.c_str(), dtype.c_str());
    if (want_train) trainable = TrainableModel::load(a.model);
    model = Model::load(a.model, *be, lo);
    cx.model_name = model->config().name.empty() ? a.model : model->config().name;
  } else {
    const ModelConfig c = builtin_config(a.config);
    pr.say("random weights for %s (seed %llu)", a.config.c_str(), (unsigned long long)a.seed);
    trainable = TrainableModel::init(c, a.seed);
    if (dtype == "f32" || dtype == "auto") {
      model = std::shared_ptr<const Model>(std::shared_ptr<void>(), &trainable->model());
    } else {
      // Through a checkpoint, so the weights get exactly the conversion `--model` would.
      pr.say("converting to %s via a temporary checkpoint", dtype.c_str());
      model = via_checkpoint(*trainable, *be, lo);
      trainable.reset();
    }
    cx.model_name = c.name.empty() ? a.config : c.name;
  }
  cx.dtype = loaded_dtype(*model);
  cx.params = model->param_counts();
  cx.bytes = part_bytes(*model);

  const int64_t max_pos = model->max_positions();
  if (has_test(tests, "prefill") && a.prompt > max_pos)
    throw Error("-p/--prompt " + std::to_string(a.prompt) + " exceeds the model's " + std::to_string(max_pos) + " positions");
  if (has_test(tests, "decode") && a.decode_prompt + a.gen > max_pos)
    throw Error("--decode-prompt + --gen exceeds the model's " + std::to_string(max_pos) + " positions");

  // BF16, Q8 and Q4 weights are widened to F32 and run on F32 FMAs (kernels/cpu/gemm.cc).
  const std::string infer_kind = "fp32";
  std::vector<Result> results;
  for (int r : steps) {
    if (has_test(tests, "prefill")) results.push_back(bench_prefill(*model, *be, a, r, pr));
    if (has_test(tests, "prefill")) results.back().flop_peak_kind = infer_kind;
    std::vector<int32_t> seq_tokens;
    bool have_seq = false;
    for (const std::string& d : has_test(tests, "decode") ? decoders : std::vector<std::string>{}) {
      results.push_back(bench_decode(*model, *be, a, r, d, have_seq ? &seq_tokens : nullptr,
                                     d == "sequential" ? &seq_tokens : nullptr, pr));
      results.back().flop_peak_kind = infer_kind;
      have_seq = have_seq || d == "sequential";
    }
  }
  if (want_train)
    for (const std::string& p : parse_names(a.train_precision, {"f32", "bf16"}, "--train-precision")) {
      const bool bf16 = p == "bf16";
      results.push_back(bench_train(*trainable, *be, pool, a,
                                    bf16 ? MatmulPrecision::kBF16 : MatmulPrecision::kF32, pr));
      results.back().flop_peak_kind = bf16 ? "bf16" : "fp32";
    }

  if (a.json_out) std::printf("%s\n", report_json(cx, results).dump(2).c_str());
  else if (a.csv_out) print_csv(cx, results);
  else print_markdown(cx, results);
}

Registrar reg(85, [](CLI::App& app, Common& common) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* sub = app.add_subcommand(
      "bench", "Throughput of prefill, decode and training: tok/s, GFLOP/s, GB/s and % of this "
               "machine's measured peak (llama-bench style)");
  sub->option_defaults()->always_capture_default();
  auto* m = sub->add_option("--model", a->model, "model directory (config.json + safetensors)");
  auto* c = sub->add_option("--config", a->config,
                            "config.json, or a built-in config: tiny | bench-m (random weights)");
  m->excludes(c);
  sub->add_option("--seed", a->seed, "seed of the random weights for --config");
  add_dtype_option(sub, common);
  auto* t = sub->add_option("--tests", a->tests,
                            "comma-separated subset of prefill,decode,train (train: f32 only; "
                            "dropped by default with another --dtype)");
  sub->add_option("-r,--steps", a->steps, "recurrences r for prefill and decode (comma list)");
  sub->add_option("-p,--prompt", a->prompt, "prefill prompt length")->check(CLI::PositiveNumber);
  sub->add_option("--decode-prompt", a->decode_prompt, "decode: prompt length before generating")
      ->check(CLI::PositiveNumber);
  sub->add_option("-g,--gen", a->gen, "decode: tokens generated (the rate counts all but the first)")
      ->check(CLI::Range(2, 1 << 20));
  sub->add_option("-n,--reps", a->reps, "timed repetitions of each test (after one warm-up)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--train-batch", a->train_batch, "training: sequences per step")
      ->check(CLI::PositiveNumber);
  sub->add_option("--train-len", a->train_len, "training: tokens per sequence")
      ->check(CLI::PositiveNumber);
  sub->add_option("--train-n", a->train_n, "training: untracked recurrences n")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--train-k", a->train_k, "training: tracked (backpropagated) recurrences k")
      ->check(CLI::PositiveNumber);
  sub->add_option("--train-precision", a->train_precision,
                  "training: comma list of f32, bf16 (huginn train --precision), each timed in turn")
      ->capture_default_str();
  sub->add_option("--decode", a->decode,
                  "decoders the decode test runs, a comma list of sequential, wavefront, "
                  "speculative, diffusion (the last three compared with sequential's tokens when "
                  "it runs too); their flags below");
  add_wavefront_flags(sub, a->wf);
  add_sampler_flags(sub, a->sf);
  auto* j = sub->add_flag("--json", a->json_out, "print JSON instead of a markdown table");
  auto* v = sub->add_flag("--csv", a->csv_out, "print CSV instead of a markdown table");
  j->excludes(v);
  sub->add_flag("--no-peak", a->no_peak, "skip measuring the machine's peak (no % columns)");
  sub->add_option("--peak-buffer-mb", a->peak_buffer_mb,
                  "bandwidth test buffer in MiB (default: max(4 x last-level cache, 256))")
      ->check(CLI::NonNegativeNumber);
  add_common_options(sub, common);
  sub->callback([a, t, &common] {
    a->tests_given = t->count() > 0;
    run(*a, common);
  });
});

}  // namespace
}  // namespace huginn::cli
