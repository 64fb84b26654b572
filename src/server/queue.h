// The bounded request queue between the HTTP threads and the scheduler's slots. A full queue
// refuses the job at once (the HTTP layer answers 503 with Retry-After) instead of letting
// waiting requests pile up without bound. The capacity counts jobs that wait for a slot: a job
// that an idle slot is already waiting for does not count, so capacity 0 means "no waiting"
// (accepted only when a slot is free), not "refuse everything".
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>

namespace huginn::server {

using Job = std::function<void()>;

class RequestQueue {
 public:
  explicit RequestQueue(size_t capacity) : capacity_(capacity) {}
  // false when `capacity` jobs already wait beyond the idle poppers, or when closed.
  bool try_push(Job job);
  // Blocks for the next job; an empty job once closed and drained.
  Job pop();
  // Wakes every pop(); jobs still queued are dropped (their owners see their deadline pass).
  void close();
  size_t size() const;
  size_t capacity() const { return capacity_; }

 private:
  const size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  size_t idle_ = 0;  // threads blocked in pop()
  bool closed_ = false;
};

}  // namespace huginn::server
