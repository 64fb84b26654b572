// The MPI communicator (huginn/comm.h) over MPI_COMM_WORLD. Each collective is started
// non-blocking and waited on with a deadline: a rank that hangs (or a job whose ranks disagree on
// the order of collectives) ends in a message naming this rank and the collective, and
// MPI_Abort, instead of a silent hang. The wait polls with a growing sleep (up to 1 ms) rather
// than spinning, so that ranks oversubscribing a machine's cores do not steal each other's time.
#include <mpi.h>

#include <chrono>
#include <algorithm>
#include <climits>
#include <cstdio>
#include <thread>

#include "huginn/comm.h"
#include "huginn/error.h"

namespace huginn {
namespace {

class MpiCommunicator : public Communicator {
 public:
  explicit MpiCommunicator(double timeout_s) : timeout_s_(timeout_s) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
      int provided = 0;
      // Only the main thread calls MPI (the thread pool computes, it never communicates).
      if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        throw Error("MPI_Init_thread failed");
      owns_init_ = true;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_init_ && !finalized) MPI_Finalize();
  }
  const char* name() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce_sum(std::span<float> data) override {
    MPI_Request req;
    MPI_Iallreduce(MPI_IN_PLACE, data.data(), count(data.size()), MPI_FLOAT, MPI_SUM,
                   MPI_COMM_WORLD, &req);
    wait(req, "all-reduce", data.size_bytes());
  }
  void all_reduce_sum(std::span<double> data) override {
    MPI_Request req;
    MPI_Iallreduce(MPI_IN_PLACE, data.data(), count(data.size()), MPI_DOUBLE, MPI_SUM,
                   MPI_COMM_WORLD, &req);
    wait(req, "all-reduce", data.size_bytes());
  }
  void reduce_scatter_sum(std::span<const float> in, std::span<float> out) override {
    HUGINN_ASSERT(in.size() == out.size() * static_cast<size_t>(size_),
                  "reduce_scatter_sum: in must hold size() blocks of out");
    MPI_Request req;
    MPI_Ireduce_scatter_block(in.data(), out.data(), count(out.size()), MPI_FLOAT, MPI_SUM,
                              MPI_COMM_WORLD, &req);
    wait(req, "reduce-scatter", in.size_bytes());
  }
  void all_gather(std::span<const std::byte> mine, std::span<std::byte> all) override {
    HUGINN_ASSERT(all.size() == mine.size() * static_cast<size_t>(size_),
                  "all_gather: all must hold size() blocks of mine");
    MPI_Request req;
    MPI_Iallgather(mine.data(), count(mine.size()), MPI_BYTE, all.data(), count(mine.size()),
                   MPI_BYTE, MPI_COMM_WORLD, &req);
    wait(req, "all-gather", mine.size());
  }
  void broadcast(std::span<std::byte> data, int root) override {
    HUGINN_ASSERT(root >= 0 && root < size_, "broadcast: root out of range");
    MPI_Request req;
    MPI_Ibcast(data.data(), count(data.size()), MPI_BYTE, root, MPI_COMM_WORLD, &req);
    wait(req, "broadcast", data.size());
  }
  void barrier() override {
    MPI_Request req;
    MPI_Ibarrier(MPI_COMM_WORLD, &req);
    wait(req, "barrier", 0);
  }
  [[noreturn]] void abort(int code) override {
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);  // MPI_Abort does not return; this is for the compiler
  }

 private:
  static int count(size_t n) {
    HUGINN_ASSERT(n <= static_cast<size_t>(INT_MAX), "a collective over more than INT_MAX elements");
    return static_cast<int>(n);
  }

  // Polls `req` until it completes or the deadline passes (then aborts the job, saying so).
  void wait(MPI_Request& req, const char* what, size_t bytes) {
    ++calls_;
    bytes_ += bytes;
    const auto t0 = std::chrono::steady_clock::now();
    auto nap = std::chrono::microseconds(0);
    for (int done = 0;;) {
      MPI_Test(&req, &done, MPI_STATUS_IGNORE);
      if (done) return;
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (timeout_s_ > 0 && waited > timeout_s_) {
        std::fprintf(stderr,
                     "error: rank %d of %d waited %.0f s for the other ranks in %s number %llu: "
                     "a rank has died, hangs or runs different collectives; aborting the job\n",
                     rank_, size_, waited, what, static_cast<unsigned long long>(calls_));
        abort(3);
      }
      if (nap.count() > 0) std::this_thread::sleep_for(nap);
      nap = std::min(std::chrono::microseconds(1000), nap + std::chrono::microseconds(20));
    }
  }

  double timeout_s_;
  int rank_ = 0, size_ = 1;
  bool owns_init_ = false;
  uint64_t calls_ = 0;
};

}  // namespace

bool have_mpi() { return true; }

std::unique_ptr<Communicator> make_mpi_communicator(double timeout_s) {
  return std::make_unique<MpiCommunicator>(timeout_s);
}

}  // namespace huginn
