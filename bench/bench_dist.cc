// Data-parallel scaling and the communication-to-compute ratio of a training step (issue 14; the
// paper's claim that a recurrent core's shared weights make data parallelism cheap: the gradient
// exchanged per step is that of the parameters, not of the unrolled depth).
//
//   mpirun -np N bench_dist [--threads T] [--width E] [--tokens T] [--batch B] [--k K]
//                           [--iters I] [--depths 8,32,64] [--bucket-mb M]
//   (alone, without mpirun: one rank)
//
// For each recurrence r it times one training step of two models of the same width on the same
// global batch B (B/N sequences per rank) at the same forward FLOPs per token:
//   recurrent   prelude 1, core 2, coda 1 layers; n = r − k untracked + k tracked iterations
//               (forward 2r + 2 layer passes, backward through 2k + 2)
//   flat        prelude 1, core 2r, coda 1 layers, one tracked pass (n = 0, k = 1): a plain
//               transformer of 2r + 2 layers (forward 2r + 2 layer passes, backward through all)
// and each in both exchanges the trainer has (--zero 0|1; both by default):
//   all-reduce  whole gradients all-reduced in buckets (src/train/grad_sync.cc), every rank clips
//               and runs AdamW on everything, holding the whole optimizer state
//   zero1       ZeRO-1 (src/train/zero.h): gradients reduce-scattered in buckets, each rank clips
//               (global norm) and updates its 1/N slice, then the weights are all-gathered
// and prints, on rank 0, the step split into compute (forward + backward), communication
// (download, MPI collectives, upload; for ZeRO-1 the reduce-scatter and the all-gather) and
// optimizer (clip + AdamW), the payload bytes each rank passes to collectives per step (the
// communicator's count: an all-reduce passes P floats, a reduce-scatter P and an all-gather P/N),
// the bytes each rank sends over its link under ring algorithms (2·(N−1)/N·P floats for both
// exchanges), each rank's optimizer-state bytes, comm/compute, and tokens/s of the step (medians
// over the timed steps; the ranks meet at a barrier before the exchange, so a slower rank's
// compute is not counted as communication).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>

#include "huginn/backward.h"
#include "huginn/comm.h"
#include "huginn/thread_pool.h"
#include "huginn/train.h"
#include "train/grad_sync.h"
#include "train/zero.h"
#include "bench_util.h"

using namespace huginn;

namespace {

struct Args {
  int threads = 1, width = 64, tokens = 64, batch = 4, k = 8, iters = 3;
  double bucket_mb = 64;
  std::vector<int> depths = {8, 32, 64};
  std::vector<int> zero = {0, 1};
};

ModelConfig config(const Args& a, int n_core, int mean_rec, int k) {
  std::ostringstream j;
  j << "{\"n_embd\":" << a.width
    << ",\"num_attention_heads\":4,\"intermediate_size\":" << 2 * a.width
    << ",\"vocab_size\":256,\"block_size\":" << a.tokens << ",\"n_layers_in_prelude\":1,"
    << "\"n_layers_in_recurrent_block\":" << n_core << ",\"n_layers_in_coda\":1,"
    << "\"mean_recurrence\":" << mean_rec << ",\"mean_backprop_depth\":" << k
    << ",\"tie_embeddings\":true,\"qk_bias\":true}";
  return ModelConfig::from_json(j.str(), "bench_dist");
}

struct Row {
  double compute = 0, comm = 0, optim = 0;
  uint64_t bytes = 0;
  int64_t params = 0, flat = 0, optim_bytes = 0;  // flat: the floats exchanged
};

Row time_step(const Args& a, const ModelConfig& c, int n, int k, bool zero, Communicator& comm,
              Backend& be) {
  auto tm = TrainableModel::init(c, 1, be);
  BackwardRunner runner(tm->model(), be);
  Grads grads = Grads::zeros_like(tm->model(), be);
  const int64_t bucket = static_cast<int64_t>(a.bucket_mb * (1 << 20) / 4);
  const std::vector<NamedParam> params = named_params(tm->model(), grads);
  const int N = comm.size(), r = comm.rank();
  // As the trainer: one rank exchanges nothing and holds everything.
  std::unique_ptr<ZeroShard> shard;
  if (zero && N > 1) shard = std::make_unique<ZeroShard>(comm, be, params, bucket);
  const int64_t before = be.allocated_bytes();
  AdamW adam(params, AdamWOptions{}, be, shard ? shard->begin() : 0, shard ? shard->end() : -1);
  const int64_t optim_bytes = be.allocated_bytes() - before;  // as the backend counts its memory
  GradSync sync(comm, be, bucket);
  const int b0 = a.batch * r / N, b1 = a.batch * (r + 1) / N;
  std::mt19937 rng(7);
  std::vector<std::vector<int32_t>> seqs;
  for (int b = 0; b < a.batch; ++b) {
    std::vector<int32_t> s(static_cast<size_t>(a.tokens) + 1);
    for (auto& t : s) t = static_cast<int32_t>(rng() % 256);
    seqs.push_back(std::move(s));
  }
  std::vector<TrainSequence> batch;
  for (int b = b0; b < b1; ++b)
    batch.push_back({std::span<const int32_t>(seqs[b]).first(a.tokens),
                     std::span<const int32_t>(seqs[b]).subspan(1), static_cast<uint64_t>(b),
                     1.0f / a.batch});
  std::vector<float> losses(batch.size());
  LossOptions lo;
  lo.n_no_grad = n;
  lo.n_with_grad = k;
  Row row;
  row.params = tm->model().param_counts().total();
  row.optim_bytes = optim_bytes;
  row.flat = flat_size(params);
  using clock = std::chrono::steady_clock;
  auto secs = [](clock::time_point t0) {
    return std::chrono::duration<double>(clock::now() - t0).count();
  };
  std::vector<double> times[3];            // compute, communication, optimizer
  for (int it = -1; it < a.iters; ++it) {  // it = -1: warm-up, not counted
    comm.barrier();
    grads.zero(be);
    auto t0 = clock::now();
    runner.loss_and_grad(batch, lo, grads, losses);
    const double compute = secs(t0);
    comm.barrier();  // the slower rank's compute is not counted as communication
    const uint64_t bytes0 = comm.bytes();
    t0 = clock::now();
    if (shard)
      shard->reduce_scatter(params);
    else if (N > 1)
      sync.all_reduce(params);
    double exchange = secs(t0);
    t0 = clock::now();
    if (shard)
      shard->clip(params, 1.0);
    else
      clip_grad_norm(be, params, 1.0);
    adam.step(1e-4);
    const double optim = secs(t0);
    t0 = clock::now();
    if (shard) shard->all_gather(params);
    exchange += secs(t0);
    const uint64_t bytes = comm.bytes() - bytes0;
    if (it < 0) continue;
    times[0].push_back(compute);
    times[1].push_back(exchange);
    times[2].push_back(optim);
    row.bytes = bytes;
  }
  // Medians: on a shared machine a step that lost its core to another process is an outlier.
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  row.compute = median(times[0]);
  row.comm = median(times[1]);
  row.optim = median(times[2]);
  // Rank 0 reports the slowest rank's compute (the exchange waits for it).
  double c2[1] = {row.compute};
  std::vector<std::byte> all(sizeof(double) * N);
  comm.all_gather(std::as_bytes(std::span<double>(c2, 1)), all);
  for (int q = 0; q < N; ++q)
    row.compute = std::max(row.compute, reinterpret_cast<double*>(all.data())[q]);
  return row;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (f == "--help" || f == "-h") {
      std::printf(
          "usage: mpirun -np N bench_dist [--threads T] [--width E] [--tokens T] [--batch B] "
          "[--k K] [--iters I] [--depths 8,32,64] [--bucket-mb M] [--zero 0|1|0,1]\n");
      return 0;
    }
    if (f == "--threads")
      a.threads = bench::int_arg(argc, argv, i);
    else if (f == "--width")
      a.width = bench::int_arg(argc, argv, i);
    else if (f == "--tokens")
      a.tokens = bench::int_arg(argc, argv, i);
    else if (f == "--batch")
      a.batch = bench::int_arg(argc, argv, i);
    else if (f == "--k")
      a.k = bench::int_arg(argc, argv, i);
    else if (f == "--iters")
      a.iters = bench::int_arg(argc, argv, i);
    else if (f == "--bucket-mb")
      a.bucket_mb = bench::double_arg(argc, argv, i);
    else if (f == "--depths")
      a.depths = bench::int_list(bench::next_arg(argc, argv, i), "--depths");
    else if (f == "--zero")
      a.zero = bench::int_list(bench::next_arg(argc, argv, i), "--zero");
    else {
      std::fprintf(stderr, "bench_dist: unknown flag %s (see --help)\n", f.c_str());
      return 2;
    }
  }
  try {
    auto comm = launched_by_mpi() ? make_mpi_communicator(600) : make_single_communicator();
    if (a.batch < comm->size()) throw Error("--batch must be at least the number of ranks");
    ThreadPool pool(a.threads);
    auto be = make_cpu_backend(pool);
    const bool r0 = comm->rank() == 0;
    if (r0) {
      std::printf(
          "bench_dist: %d rank(s) (%s), %d thread(s) each, width %d, global batch %d x %d "
          "tokens, k %d, buckets of %.0f MiB, %d timed steps\n",
          comm->size(), comm->name(), pool.size(), a.width, a.batch, a.tokens, a.k, a.bucket_mb,
          a.iters);
      std::printf("%-10s %4s %9s %6s %-10s %8s %8s %9s %8s %8s %8s %7s %8s\n", "model", "r",
                  "params", "fwd_L", "exchange", "MB/step", "ring_MB", "optim_MB", "comp_ms",
                  "comm_ms", "optim_ms", "comm/c", "tok/s");
    }
    for (int r : a.depths) {
      const int k = std::min(a.k, r);
      struct Kind {
        const char* name;
        ModelConfig c;
        int n, k;
      };
      for (const Kind& m : {Kind{"recurrent", config(a, 2, r, k), r - k, k},
                            Kind{"flat", config(a, 2 * r, 1, 1), 0, 1}}) {
        for (int zero : a.zero) {
          const Row row = time_step(a, m.c, m.n, m.k, zero == 1, *comm, *be);
          const double step = row.compute + row.comm + row.optim;
          const int N = comm->size();
          // Ring algorithms: an all-reduce, or a reduce-scatter plus an all-gather, send
          // 2·(N−1)/N of the (padded) gradient from each rank.
          const double ring =
              N > 1 ? 2.0 * (N - 1) / N * 4.0 * double((row.flat + N - 1) / N * N) : 0;
          if (r0)
            std::printf(
                "%-10s %4d %9lld %6d %-10s %8.2f %8.2f %9.3f %8.1f %8.1f %8.1f %7.3f %8.0f\n",
                m.name, r, (long long)row.params, 2 * r + 2, zero == 1 ? "zero1" : "all-reduce",
                row.bytes / 1e6, ring / 1e6, row.optim_bytes / 1e6, row.compute * 1e3,
                row.comm * 1e3, row.optim * 1e3, row.comm / row.compute,
                double(a.batch) * a.tokens / step);
          std::fflush(stdout);
        }
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
