// The scheduler: `slots` worker threads, each taking the next job from the bounded queue and
// running it to completion, so at most `slots` requests generate at once (each with its own
// context and depth settings on the shared weights). Compute ops of concurrent slots share the
// one ThreadPool, which runs one op at a time, so slots interleave at op granularity.
#pragma once

#include <atomic>
#include <thread>
#include <vector>

#include "server/queue.h"

namespace huginn::server {

class Scheduler {
 public:
  Scheduler(int slots, size_t max_queue);
  ~Scheduler();  // stops the workers (after their current job)
  // false when the queue is full (or shutting down).
  bool submit(Job job) { return queue_.try_push(std::move(job)); }
  void stop();
  int slots() const { return static_cast<int>(workers_.size()); }
  int active() const { return active_.load(); }
  size_t queued() const { return queue_.size(); }

 private:
  void worker();
  RequestQueue queue_;
  std::vector<std::thread> workers_;
  std::atomic<int> active_{0};
};

}  // namespace huginn::server
