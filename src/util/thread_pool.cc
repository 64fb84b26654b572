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
    if (seen & kRangeJob) {
      run_chunks(seen);
      continue;
    }
    run_job(*job_, index);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mu_);
      done_cv_.notify_all();
    }
  }
}

// Claims and runs chunks of the range job published as generation `gen` until none is left.
// A claim is a compare-and-swap on (generation, next chunk), so a worker that wakes after its
// job has ended (or after a newer one was posted) claims nothing and touches nothing of it: the
// caller never waits for a worker that has not started, only for chunks that are running.
void ThreadPool::run_chunks(uint64_t gen) {
  const uint64_t tag = (gen >> 1) & 0xffffffffu;
  for (;;) {
    uint64_t v = claim_.load(std::memory_order_acquire);
    if ((v >> 32) != tag) return;
    const int64_t chunks = static_cast<int64_t>((v >> 16) & 0xffffu);
    const int64_t c = static_cast<int64_t>(v & 0xffffu);
    if (c >= chunks) return;
    if (!claim_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel)) continue;
    // The claim succeeded for this generation, so its caller is still waiting for chunk c and
    // the job's fields below are the ones it published.
    const int64_t n = range_n_.load(std::memory_order_relaxed);
    const auto* fn = range_fn_.load(std::memory_order_relaxed);
    InJob guard(this);
    try {
      (*fn)(n * c / chunks, n * (c + 1) / chunks);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mu_);
      if (!error_) error_ = std::current_exception();
    }
    if (done_chunks_.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks) {
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
    // Publishes job_ and pending_; the low bit (kRangeJob) clear marks a run_on_all job.
    generation_.store((generation_.load(std::memory_order_relaxed) | 1) + 1,
                      std::memory_order_release);
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
  // At most 0xffff chunks: the count travels in 16 bits of claim_.
  const int64_t chunks = std::min<int64_t>({n_threads_, (n + grain - 1) / grain, 0xffff});
  if (chunks <= 1 || tls_in_job == this) {
    for (int64_t c = 0; c < chunks; ++c) fn(n * c / chunks, n * (c + 1) / chunks);
    return;
  }
  // The chunks are fixed by (n, chunks) alone; whichever thread claims one computes the same
  // outputs, so results do not depend on which thread ran what. The caller claims chunks too and
  // waits only for claimed chunks to finish: on a machine busier than its cores, a worker that is
  // not scheduled in time costs the caller its chunk's work, not a wait for the worker to wake.
  std::lock_guard<std::mutex> dispatch(dispatch_mu_);
  range_fn_.store(&fn, std::memory_order_relaxed);
  range_n_.store(n, std::memory_order_relaxed);
  done_chunks_.store(0, std::memory_order_relaxed);
  uint64_t gen;
  {
    std::lock_guard<std::mutex> lock(mu_);
    gen = (generation_.load(std::memory_order_relaxed) + 2) | kRangeJob;
    // Opens the claims (release: the fields above are visible to whoever claims), then wakes
    // the workers.
    claim_.store(((gen >> 1) & 0xffffffffu) << 32 | static_cast<uint64_t>(chunks) << 16,
                 std::memory_order_release);
    generation_.store(gen, std::memory_order_release);
  }
  cv_.notify_all();
  run_chunks(gen);
  for (int spin = 0; spin < kSpinPauses && done_chunks_.load(std::memory_order_acquire) != chunks;
       ++spin)
    spin_pause(spin);
  if (done_chunks_.load(std::memory_order_acquire) != chunks) {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] { return done_chunks_.load(std::memory_order_acquire) == chunks; });
  }
  std::exception_ptr err;
  {
    std::lock_guard<std::mutex> lock(error_mu_);
    std::swap(err, error_);
  }
  if (err) std::rethrow_exception(err);
}

}  // namespace huginn
