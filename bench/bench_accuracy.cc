// Accuracy of the inference weight formats: BF16, Q8 and Q4 logits against F32, for the golden tiny
// models and the random-weight config "bench-m" (E 1024, 16 heads, I 2816, V 32768, 2/4/2
// layers, tied), at r = 8, 32, 64 recurrences from a zero initial state (same tokens for all).
// A recurrent core may amplify quantization error with r; the last columns show how far the
// final state drifts. Columns:
//   top1     fraction of positions whose argmax equals F32's
//   max|dl|  max absolute logit difference; max|l| the largest F32 |logit| for scale
//   KL       mean KL(F32 || format) of the next-token distributions (nats)
//   state    ||s_r - s_r(F32)|| / ||s_r(F32)|| of the final recurrent state (all positions)
//
//   bench_accuracy [--golden DIR] [--tokens T] [--steps 8,32,64] [--threads N] [--no-bench-m]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "huginn/forward.h"
#include "huginn/model.h"
#include "huginn/thread_pool.h"
#include "huginn/train.h"
#include "bench_util.h"

using namespace huginn;

namespace {

struct Row {
  double top1 = 0, max_abs = 0, max_logit = 0, kl = 0, state = 0;
};

Row compare(const ForwardOutput& q, const ForwardOutput& f) {
  const int64_t T = f.logits.dim(0), V = f.logits.dim(1);
  Row r;
  int same = 0;
  for (int64_t t = 0; t < T; ++t) {
    const float* a = q.logits.row(t);
    const float* b = f.logits.row(t);
    int64_t ia = 0, ib = 0;
    double ma = a[0], mb = b[0];
    for (int64_t v = 0; v < V; ++v) {
      if (a[v] > a[ia]) ia = v;
      if (b[v] > b[ib]) ib = v;
      ma = std::max<double>(ma, a[v]);
      mb = std::max<double>(mb, b[v]);
      r.max_abs = std::max(r.max_abs, std::fabs(double(a[v]) - b[v]));
      r.max_logit = std::max(r.max_logit, std::fabs(double(b[v])));
    }
    same += ia == ib;
    double za = 0, zb = 0;
    for (int64_t v = 0; v < V; ++v) za += std::exp(a[v] - ma), zb += std::exp(b[v] - mb);
    const double la = ma + std::log(za), lb = mb + std::log(zb);
    double kl = 0;
    for (int64_t v = 0; v < V; ++v) {
      const double lpb = b[v] - lb, lpa = a[v] - la;
      kl += std::exp(lpb) * (lpb - lpa);
    }
    r.kl += kl / T;
  }
  r.top1 = double(same) / T;
  double num = 0, den = 0;
  const float* sa = q.latent_raw.f32();
  const float* sb = f.latent_raw.f32();
  for (int64_t i = 0; i < f.latent_raw.numel(); ++i) {
    num += (double(sa[i]) - sb[i]) * (double(sa[i]) - sb[i]);
    den += double(sb[i]) * sb[i];
  }
  r.state = std::sqrt(num / std::max(den, 1e-300));
  return r;
}

void study(const std::string& label, const Model& f32, Backend& be, int64_t T,
           const std::vector<int>& steps) {
  std::vector<int32_t> ids(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t)
    ids[t] = static_cast<int32_t>((t * 7919 + 13) % f32.config().vocab_size);
  std::vector<ForwardOutput> want;
  {
    Runner run(f32, be);
    for (int r : steps) {
      ForwardOutput o = run.forward(ids, r, InitState{});
      o.latent_raw = o.latent_raw.clone();  // a view of the runner's state otherwise
      want.push_back(o);
    }
  }
  for (DType dt : {DType::kBF16, DType::kQ8, DType::kQ4}) {
    auto m = f32.with_weight_dtype(dt, be);
    Runner run(*m, be);
    for (size_t i = 0; i < steps.size(); ++i) {
      ForwardOutput o = run.forward(ids, steps[i], InitState{});
      const Row r = compare(o, want[i]);
      std::printf("%-8s %-5s %4d %4lld %7.3f %10.4f %9.3f %10.2e %10.2e\n", label.c_str(),
                  dtype_name(dt), steps[i], (long long)T, r.top1, r.max_abs, r.max_logit, r.kl,
                  r.state);
      std::fflush(stdout);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string golden = "tests/data/golden";
  int64_t tokens = 32;
  int threads = 0;
  bool bench_m = true;
  std::vector<int> steps = {8, 32, 64};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--golden") golden = bench::next_arg(argc, argv, i);
    else if (a == "--tokens") tokens = bench::int64_arg(argc, argv, i);
    else if (a == "--steps") steps = bench::int_list(bench::next_arg(argc, argv, i), "--steps");
    else if (a == "--threads") threads = bench::int_arg(argc, argv, i);
    else if (a == "--no-bench-m") bench_m = false;
    else {
      std::printf("usage: bench_accuracy [--golden DIR] [--tokens T] [--steps 8,32,64] "
                  "[--threads N] [--no-bench-m]\n");
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  try {
    ThreadPool pool(threads);
    auto be = make_backend("cpu", pool);
    std::printf("BF16 / Q8 / Q4 logits vs F32, zero initial state, same tokens; %d threads\n",
                pool.size());
    std::printf("%-8s %-5s %4s %4s %7s %10s %9s %10s %10s\n", "model", "dtype", "r", "T", "top1",
                "max|dl|", "max|l|", "KL", "state");
    for (const char* set : {"tiny-a", "tiny-b"}) {
      auto m = Model::load(golden + "/" + set, *be);
      study(set, *m, *be, std::min<int64_t>(tokens, m->config().block_size), steps);
    }
    if (bench_m) {
      std::shared_ptr<TrainableModel> tm =
          TrainableModel::init(bench::preset_config("bench-m"), 1234);
      study("bench-m", tm->model(), *be, tokens, steps);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
