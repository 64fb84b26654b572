// comm_check: every collective of the MPI communicator (huginn/comm.h) on however many ranks
// mpirun starts, each result compared with its closed form. Prints "rank R of N: ok" and exits 0,
// or names the collective that failed and exits 1. Run by dist_test (mpirun -np 3).
//
// comm_check TIMEOUT_S FAULT: the communicator's fault messages instead (its timeout TIMEOUT_S):
// FAULT "hang:R" makes rank R stop before a barrier, "mismatch" makes rank 1 enter a broadcast
// where the others enter a barrier. The job is expected to be aborted with a message.
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "huginn/comm.h"
#include "huginn/error.h"

namespace {

int failures = 0;

void expect(bool ok, const char* what, int rank) {
  if (ok) return;
  std::fprintf(stderr, "rank %d: %s gave a wrong result\n", rank, what);
  ++failures;
}

void check_all(huginn::Communicator& c) {
  const int r = c.rank(), N = c.size();
  const double rank_sum = N * (N - 1) / 2.0;
  std::vector<float> f(1000);  // values small enough that every sum is exact in float
  for (size_t i = 0; i < f.size(); ++i)
    f[i] = static_cast<float>(r) + 0.5f * static_cast<float>(i % 64);
  c.all_reduce_sum(std::span<float>(f));
  bool ok = true;
  for (size_t i = 0; i < f.size(); ++i)
    ok &= f[i] == static_cast<float>(rank_sum + N * 0.5 * (i % 64));
  expect(ok, "all_reduce_sum(float)", r);

  double d[3] = {1.0 * r, 0.25, -2.0 * r};
  c.all_reduce_sum(std::span<double>(d, 3));
  expect(d[0] == rank_sum && d[1] == 0.25 * N && d[2] == -2.0 * rank_sum, "all_reduce_sum(double)",
         r);

  const int m = 5;
  std::vector<float> in(static_cast<size_t>(N) * m), out(m);
  for (int b = 0; b < N; ++b)
    for (int i = 0; i < m; ++i) in[b * m + i] = static_cast<float>(100 * r + 10 * b + i);
  c.reduce_scatter_sum(in, out);
  ok = true;
  for (int i = 0; i < m; ++i) ok &= out[i] == static_cast<float>(100 * rank_sum + N * (10 * r + i));
  expect(ok, "reduce_scatter_sum", r);

  const std::byte mine[3] = {std::byte(r), std::byte(r + 1), std::byte(r + 2)};
  std::vector<std::byte> all(3 * static_cast<size_t>(N));
  c.all_gather(mine, all);
  ok = true;
  for (int q = 0; q < N; ++q)
    for (int j = 0; j < 3; ++j) ok &= all[3 * q + j] == std::byte(q + j);
  expect(ok, "all_gather", r);

  std::vector<std::byte> gathered(r == N - 1 ? 3 * static_cast<size_t>(N) : 0);
  c.gather(mine, gathered, N - 1);
  ok = true;
  for (int q = 0; r == N - 1 && q < N; ++q)
    for (int j = 0; j < 3; ++j) ok &= gathered[3 * q + j] == std::byte(q + j);
  expect(ok, "gather to the last rank", r);

  std::vector<std::byte> b(7, std::byte(r));
  c.broadcast(b, N - 1);
  ok = true;
  for (std::byte x : b) ok &= x == std::byte(N - 1);
  expect(ok, "broadcast from the last rank", r);

  c.barrier();
  expect(huginn::broadcast_string(c, r == 0 ? "from rank zero" : "other") == "from rank zero",
         "broadcast_string", r);
  const std::vector<std::string> names = huginn::all_gather_strings(c, "r" + std::to_string(r), 8);
  ok = static_cast<int>(names.size()) == N;
  for (int q = 0; ok && q < N; ++q) ok &= names[q] == "r" + std::to_string(q);
  expect(ok, "all_gather_strings", r);
}

}  // namespace

int fault(huginn::Communicator& c, const std::string& what) {
  int hung = -1;
  if (what.rfind("hang:", 0) == 0) hung = std::stoi(what.substr(5));
  if (c.rank() == hung)
    for (;;) ::pause();
  std::byte b[4] = {};
  if (what == "mismatch" && c.rank() == 1)
    c.broadcast(b, 0);
  else
    c.barrier();
  std::printf("rank %d of %d: the fault '%s' was not noticed\n", c.rank(), c.size(), what.c_str());
  return 1;
}

int main(int argc, char** argv) {
  try {
    if (argc == 3) {
      auto c = huginn::make_mpi_communicator(std::stod(argv[1]));
      return fault(*c, argv[2]);
    }
    auto c = huginn::make_mpi_communicator(60);
    check_all(*c);
    std::printf("rank %d of %d: %s\n", c->rank(), c->size(), failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
  } catch (const huginn::Error& e) {
    std::fprintf(stderr, "comm_check: %s\n", e.what());
    return 1;
  }
}
