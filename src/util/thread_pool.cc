#include "huginn/thread_pool.h"

#include <algorithm>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HUGINN_PAUSE() _mm_pause()
#else
#define HUGINN_PAUSE() ((void)0)
#endif

namespace huginn {
namespace {

// Ops come back to back (a forward pass is hundreds of short ops), so idle workers spin for a
// while before sleeping: a dispatch then costs about a microsecond instead of a futex wake-up.
// ~2^14 pauses is roughly 0.1-1 ms depending on the CPU's pause latency.
// Past the first kPausesBeforeYield the spinner also yields, so that on an oversubscribed
// machine it hands its core to whoever the job is waiting for.
constexpr int kSpinPauses = 1 << 14;
constexpr int kPausesBeforeYield = 1 << 10;

inline void spin_pause(int i) {
  HUGINN_PAUSE();
  if (i >= kPausesBeforeYield && i % 16 == 0) std::this_thread::yield();
}

// The pool whose job this thread is running, to run nested calls inline instead of deadlocking.
thread_local const ThreadPool* tls_in_job = nullptr;

struct InJob {
  const ThreadPool* saved;
  explicit InJob(const ThreadPool* p) : saved(tls_in_job) { tls_in_job = p; }
  ~InJob() { tls_in_job = saved; }
};

}  // namespace

int ThreadPool::hardware_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

ThreadPool::ThreadPool(int n_threads) {
  n_threads_ = n_threads > 0 ? n_threads : hardware_threads();
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true, std::memory_order_release);
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_job(const std::function<void(int)>& fn, int index) {
  InJob guard(this);
  try {
    fn(index);
  } catch (...) {
    std::lock_guard<std::mutex> lock(error_mu_);
    if (!error_) error_ = std::current_exception();
  }
}

void ThreadPool::worker(int index) {
  uint64_t seen = 0;
  for (;;) {
    for (int spin = 0; spin < kSpinPauses; ++spin) {
      if (generation_.load(std::memory_order_acquire) != seen ||
          stop_.load(std::memory_order_acquire))
        break;
      spin_pause(spin);
    }
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] {
        return stop_.load(std::memory_order_acquire) ||
               generation_.load(std::memory_order_acquire) != seen;
      });
    }
    if (stop_.load(std::memory_order_acquire)) return;
    seen = generation_.load(std::memory_order_acquire);
    run_job(*job_, index);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mu_);
      done_cv_.notify_all();
    }
  }
}

void ThreadPool::run_on_all(const std::function<void(int)>& fn) {
  if (n_threads_ == 1 || tls_in_job == this) {
    for (int i = 0; i < n_threads_; ++i) fn(i);
    return;
  }
  std::lock_guard<std::mutex> dispatch(dispatch_mu_);
  job_ = &fn;
  pending_.store(n_threads_ - 1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_release);  // publishes job_ and pending_
  }
  cv_.notify_all();
  run_job(fn, 0);
  for (int spin = 0; spin < kSpinPauses && pending_.load(std::memory_order_acquire) != 0; ++spin)
    spin_pause(spin);
  if (pending_.load(std::memory_order_acquire) != 0) {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] { return pending_.load(std::memory_order_acquire) == 0; });
  }
  job_ = nullptr;
  std::exception_ptr err;
  {
    std::lock_guard<std::mutex> lock(error_mu_);
    std::swap(err, error_);
  }
  if (err) std::rethrow_exception(err);
}

void ThreadPool::parallel_for(int64_t n, int64_t grain,
                              const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = std::min<int64_t>(n_threads_, (n + grain - 1) / grain);
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  run_on_all([&](int t) {
    if (t >= chunks) return;
    const int64_t begin = n * t / chunks, end = n * (t + 1) / chunks;
    if (begin < end) fn(begin, end);
  });
}

}  // namespace huginn
