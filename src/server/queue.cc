#include "server/queue.h"

namespace huginn::server {

bool RequestQueue::try_push(Job job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_ || jobs_.size() >= capacity_ + idle_) return false;
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
  return true;
}

Job RequestQueue::pop() {
  std::unique_lock<std::mutex> lock(mu_);
  ++idle_;
  cv_.wait(lock, [&] { return closed_ || !jobs_.empty(); });
  --idle_;
  if (closed_) return {};
  Job j = std::move(jobs_.front());
  jobs_.pop_front();
  return j;
}

void RequestQueue::close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    jobs_.clear();
  }
  cv_.notify_all();
}

size_t RequestQueue::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return jobs_.size();
}

}  // namespace huginn::server
