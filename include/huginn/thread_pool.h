// An explicit thread pool, created once by the program and passed down to every op (no global
// singleton). Work is split deterministically: parallel_for hands each worker a fixed range of
// indices that depends only on n and the thread count, and every op partitions over independent
// outputs, so results do not depend on the number of threads.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace huginn {

class ThreadPool {
 public:
  // n_threads <= 0 means one per hardware core.
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(begin, end) over a partition of [0, n) into at most size() contiguous chunks,
  // each at least `grain` long; the caller's thread takes chunk 0. Blocks until all finish.
  // Called from inside a job of this pool (nested), it runs the chunks on the calling thread.
  // An exception thrown by fn is rethrown here once every chunk has finished.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  // Calls fn(thread_index) once for each index in [0, size()), on size() threads (all on the
  // calling thread when nested inside a job of this pool).
  void run_on_all(const std::function<void(int)>& fn);

  static int hardware_threads();

 private:
  void worker(int index);
  void run_job(const std::function<void(int)>& fn, int index);
  void run_chunks(uint64_t gen);

  // generation_'s low bit: the current job is a parallel_for range (chunks claimed through
  // claim_), not a run_on_all (one call per thread, counted down by pending_).
  static constexpr uint64_t kRangeJob = 1;

  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex dispatch_mu_;  // one job at a time when several outside threads share the pool
  std::mutex mu_;
  std::condition_variable cv_;       // workers sleep here after spinning idle for a while
  std::condition_variable done_cv_;  // the caller sleeps here if the job outlasts its spin
  const std::function<void(int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  // The range job: claim_ = generation tag << 32 | chunks << 16 | next unclaimed chunk (one
  // word, so a claim is valid for exactly one job), its fields, and the chunks finished.
  std::atomic<uint64_t> claim_{0};
  std::atomic<const std::function<void(int64_t, int64_t)>*> range_fn_{nullptr};
  std::atomic<int64_t> range_n_{0}, done_chunks_{0};
  std::mutex error_mu_;
  std::exception_ptr error_;  // first exception thrown by a worker, rethrown to the caller
};

}  // namespace huginn
