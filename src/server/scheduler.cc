#include "server/scheduler.h"

#include "huginn/log.h"

namespace huginn::server {

Scheduler::Scheduler(int slots, size_t max_queue) : queue_(max_queue) {
  for (int i = 0; i < slots; ++i) workers_.emplace_back([this] { worker(); });
}

Scheduler::~Scheduler() { stop(); }

void Scheduler::stop() {
  queue_.close();
  for (auto& t : workers_)
    if (t.joinable()) t.join();
}

void Scheduler::worker() {
  for (;;) {
    Job job = queue_.pop();
    if (!job) return;
    ++active_;
    try {
      job();  // jobs report their own errors; this is the last line of defence
    } catch (const std::exception& e) {
      log(LogLevel::kWarn, "server: job failed: %s", e.what());
    } catch (...) {
      log(LogLevel::kWarn, "server: job failed with an unknown exception");
    }
    --active_;
  }
}

}  // namespace huginn::server
