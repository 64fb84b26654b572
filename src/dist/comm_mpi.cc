// The MPI communicator (huginn/comm.h) over MPI_COMM_WORLD. The collectives are MPI's blocking
// ones (OpenMPI's tuned algorithms; its non-blocking ones progress only while polled, which made a
// bucket's all-reduce several times slower).
//
// Faults. An MPI collective cannot say which rank it waits for, so before each collective every
// other rank posts rank 0 a check-in (a 16-byte point-to-point message: the collective's number
// and kind; small enough to be sent eagerly, so the sender never waits for it), and rank 0
// collects them before it enters the collective, waiting at most the timeout. When the timeout
// passes, rank 0 names the ranks whose check-in is missing (they hang, died or are stuck
// elsewhere) and aborts the job; a check-in for another collective names a rank that runs
// different collectives. Inside the collective a watchdog thread bounds the wait as well: rank 0
// waits the timeout, the other ranks twice the timeout (so that rank 0, which knows who is
// missing, speaks first); past it the watchdog prints which rank waited in which collective and
// ends this process with a non-zero status, and mpirun then ends every rank. A rank that waits so
// on the others while rank 0 said nothing points at rank 0 itself. (The watchdog never calls MPI:
// only the main thread does, MPI_THREAD_FUNNELED.)
#include <mpi.h>

#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

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
  void gather(std::span<const std::byte> mine, std::span<std::byte> all, int root) override {
    HUGINN_ASSERT(root >= 0 && root < size_, "gather: root out of range");
    HUGINN_ASSERT(rank_ != root || all.size() == mine.size() * static_cast<size_t>(size_),
                  "gather: all must hold size() blocks of mine on the root");
    Watch w(*this, "gather", mine.size());
    MPI_Gather(mine.data(), count(mine.size()), MPI_BYTE, rank_ == root ? all.data() : nullptr,
               count(mine.size()), MPI_BYTE, root, MPI_COMM_WORLD);
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
      if (c.rank_ == 0) c.collect_check_ins(what, c.calls_ + 1);
      {
        std::lock_guard<std::mutex> lock(c.mu_);
        c.what_ = what;
        c.started_ = std::chrono::steady_clock::now();
        ++c.calls_;
        c.busy_ = true;
      }
      c.cv_.notify_one();
      if (c.rank_ != 0) c.check_in(what, c.calls_);  // under the watchdog's eye
    }
    ~Watch() {
      std::lock_guard<std::mutex> lock(c_.mu_);
      c_.busy_ = false;
    }
    MpiCommunicator& c_;
  };

  static constexpr int kCheckInTag = 7411;
  static int64_t kind_code(const char* what) {
    static const char* const kinds[] = {"all-reduce", "reduce-scatter", "all-gather",
                                        "gather",     "broadcast",      "barrier"};
    for (int64_t i = 0; i < 6; ++i)
      if (std::strcmp(kinds[i], what) == 0) return i;
    return 6;
  }
  static const char* kind_name(int64_t code) {
    static const char* const kinds[] = {
        "all-reduce", "reduce-scatter", "all-gather",        "gather",
        "broadcast",  "barrier",        "another collective"};
    return kinds[code >= 0 && code < 6 ? code : 6];
  }

  void check_in(const char* what, uint64_t call) {
    if (size_ == 1) return;
    int64_t msg[2] = {static_cast<int64_t>(call), kind_code(what)};
    MPI_Send(msg, 2, MPI_INT64_T, 0, kCheckInTag, MPI_COMM_WORLD);
  }

  // Rank 0: every other rank's check-in for collective number `call`, within the timeout.
  void collect_check_ins(const char* what, uint64_t call) {
    if (size_ == 1) return;
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    const auto deadline = start + std::chrono::duration<double>(timeout_s_ > 0 ? timeout_s_ : 1e9);
    std::vector<char> in(static_cast<size_t>(size_), 0);
    in[0] = 1;
    for (int missing = size_ - 1; missing > 0;) {
      bool any = false;
      for (int q = 1; q < size_; ++q) {
        if (in[q]) continue;
        int flag = 0;
        // From q only: q's check-ins arrive in its order (one may already wait for a later
        // collective: a gather returns on the senders before the root has it).
        MPI_Iprobe(q, kCheckInTag, MPI_COMM_WORLD, &flag, MPI_STATUS_IGNORE);
        if (!flag) continue;
        int64_t msg[2] = {};
        MPI_Recv(msg, 2, MPI_INT64_T, q, kCheckInTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (msg[0] != static_cast<int64_t>(call) || msg[1] != kind_code(what))
          fail("error: rank " + std::to_string(q) + " of " + std::to_string(size_) +
               " runs different collectives: it entered " + kind_name(msg[1]) + " number " +
               std::to_string(msg[0]) + " where rank 0 entered " + what + " number " +
               std::to_string(call) + "; ending the job\n");
        in[q] = 1;
        --missing;
        any = true;
      }
      if (missing == 0 || any) continue;
      const auto now = clock::now();
      if (now >= deadline) {
        std::string ranks;
        for (int q = 1; q < size_; ++q)
          if (!in[q]) ranks += (ranks.empty() ? "" : ", ") + std::to_string(q);
        char tail[160];
        std::snprintf(tail, sizeof tail,
                      " of %d did not reach %s number %llu within %.0f s: ", size_, what,
                      static_cast<unsigned long long>(call), timeout_s_);
        fail("error: rank" + std::string(missing > 1 ? "s " : " ") + ranks + tail +
             (missing > 1 ? "they hang or died" : "it hangs or died") +
             " (rank 0 and the others reached it); ending the job\n");
      }
      // Spin for the first millisecond (the usual wait: another rank's last kernels), then poll
      // every 100 µs.
      if (now - start > std::chrono::milliseconds(1))
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

  [[noreturn]] void fail(const std::string& message) {
    std::fputs(message.c_str(), stderr);
    std::fflush(stderr);
    abort(3);
  }

  void watchdog() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      if (!busy_) {
        cv_.wait(lock);
        continue;
      }
      const uint64_t call = calls_;
      // The other ranks wait longer than rank 0, which names the missing ranks.
      const double limit = rank_ == 0 ? timeout_s_ : 2 * timeout_s_;
      const auto deadline = started_ + std::chrono::duration<double>(limit);
      cv_.wait_until(lock, deadline);
      if (stop_ || !busy_ || calls_ != call || std::chrono::steady_clock::now() < deadline)
        continue;
      std::fprintf(
          stderr,
          "error: rank %d of %d waited %.0f s for the other ranks in %s number %llu: a "
          "rank has died, hangs or runs different collectives%s; ending this rank "
          "(mpirun then ends the others)\n",
          rank_, size_, limit, what_, static_cast<unsigned long long>(call),
          rank_ == 0
              ? ""
              : " (rank 0, which names a rank that does not arrive, did not: it may be rank 0)");
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
