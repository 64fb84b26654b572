// The MPI communicator (huginn/comm.h) over MPI_COMM_WORLD. The collectives are MPI's blocking
// ones (OpenMPI's tuned algorithms; its non-blocking ones progress only while polled, which made a
// bucket's all-reduce several times slower). A watchdog thread bounds each wait: when one
// collective lasts longer than the timeout (a rank hangs, or the ranks disagree on the order of
// collectives), it prints which rank waited in which collective and ends this process with a
// non-zero status, and mpirun then ends every rank, instead of a silent hang. (The watchdog never
// calls MPI: only the main thread does, MPI_THREAD_FUNNELED.)
#include <mpi.h>

#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <mutex>
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
    if (timeout_s_ > 0) watchdog_ = std::thread([this] { watchdog(); });
  }
  ~MpiCommunicator() override {
    if (watchdog_.joinable()) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
      }
      cv_.notify_one();
      watchdog_.join();
    }
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_init_ && !finalized) MPI_Finalize();
  }
  const char* name() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce_sum(std::span<float> data) override {
    Watch w(*this, "all-reduce", data.size_bytes());
    MPI_Allreduce(MPI_IN_PLACE, data.data(), count(data.size()), MPI_FLOAT, MPI_SUM,
                  MPI_COMM_WORLD);
  }
  void all_reduce_sum(std::span<double> data) override {
    Watch w(*this, "all-reduce", data.size_bytes());
    MPI_Allreduce(MPI_IN_PLACE, data.data(), count(data.size()), MPI_DOUBLE, MPI_SUM,
                  MPI_COMM_WORLD);
  }
  void reduce_scatter_sum(std::span<const float> in, std::span<float> out) override {
    HUGINN_ASSERT(in.size() == out.size() * static_cast<size_t>(size_),
                  "reduce_scatter_sum: in must hold size() blocks of out");
    Watch w(*this, "reduce-scatter", in.size_bytes());
    MPI_Reduce_scatter_block(in.data(), out.data(), count(out.size()), MPI_FLOAT, MPI_SUM,
                             MPI_COMM_WORLD);
  }
  void all_gather(std::span<const std::byte> mine, std::span<std::byte> all) override {
    HUGINN_ASSERT(all.size() == mine.size() * static_cast<size_t>(size_),
                  "all_gather: all must hold size() blocks of mine");
    Watch w(*this, "all-gather", mine.size());
    MPI_Allgather(mine.data(), count(mine.size()), MPI_BYTE, all.data(), count(mine.size()),
                  MPI_BYTE, MPI_COMM_WORLD);
  }
  void broadcast(std::span<std::byte> data, int root) override {
    HUGINN_ASSERT(root >= 0 && root < size_, "broadcast: root out of range");
    Watch w(*this, "broadcast", data.size());
    MPI_Bcast(data.data(), count(data.size()), MPI_BYTE, root, MPI_COMM_WORLD);
  }
  void barrier() override {
    Watch w(*this, "barrier", 0);
    MPI_Barrier(MPI_COMM_WORLD);
  }
  [[noreturn]] void abort(int code) override {
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);  // MPI_Abort does not return; this is for the compiler
  }

 private:
  static int count(size_t n) {
    HUGINN_ASSERT(n <= static_cast<size_t>(INT_MAX),
                  "a collective over more than INT_MAX elements");
    return static_cast<int>(n);
  }

  // One collective under the watchdog's eye, from construction to destruction.
  struct Watch {
    Watch(MpiCommunicator& c, const char* what, size_t bytes) : c_(c) {
      c.bytes_ += bytes;
      std::lock_guard<std::mutex> lock(c.mu_);
      c.what_ = what;
      c.started_ = std::chrono::steady_clock::now();
      ++c.calls_;
      c.busy_ = true;
      c.cv_.notify_one();
    }
    ~Watch() {
      std::lock_guard<std::mutex> lock(c_.mu_);
      c_.busy_ = false;
    }
    MpiCommunicator& c_;
  };

  void watchdog() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      if (!busy_) {
        cv_.wait(lock);
        continue;
      }
      const uint64_t call = calls_;
      const auto deadline = started_ + std::chrono::duration<double>(timeout_s_);
      cv_.wait_until(lock, deadline);
      if (stop_ || !busy_ || calls_ != call || std::chrono::steady_clock::now() < deadline)
        continue;
      std::fprintf(stderr,
                   "error: rank %d of %d waited %.0f s for the other ranks in %s number %llu: a "
                   "rank has died, hangs or runs different collectives; ending this rank (mpirun "
                   "then ends the others)\n",
                   rank_, size_, timeout_s_, what_, static_cast<unsigned long long>(call));
      std::fflush(stderr);
      std::_Exit(3);
    }
  }

  double timeout_s_;
  int rank_ = 0, size_ = 1;
  bool owns_init_ = false;
  std::mutex mu_;
  std::condition_variable cv_;
  const char* what_ = "";
  std::chrono::steady_clock::time_point started_;
  uint64_t calls_ = 0;
  bool busy_ = false, stop_ = false;
  std::thread watchdog_;  // last: started once the members it reads exist
};

}  // namespace

bool have_mpi() {
  return true;
}

std::unique_ptr<Communicator> make_mpi_communicator(double timeout_s) {
  return std::make_unique<MpiCommunicator>(timeout_s);
}

}  // namespace huginn
