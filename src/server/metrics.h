// Server counters and histograms, rendered in the Prometheus text exposition format.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace huginn::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  // # TYPE line plus _bucket{le=...}, _sum and _count lines.
  std::string render(const std::string& name, const std::string& help) const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative), last = +Inf
  double sum_ = 0.0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();
  void count_request(const std::string& endpoint, int status);
  std::atomic<uint64_t> prompt_tokens{0}, completion_tokens{0}, iterations{0};
  std::atomic<uint64_t> cancelled{0}, timed_out{0}, rejected_full{0};
  // Decode batching (set from the engine's batcher before rendering).
  std::atomic<uint64_t> decode_batches{0}, decode_batch_rows{0}, prefill_chunks{0};
  std::atomic<uint64_t> rider_rows{0}, rider_shared_passes{0};
  std::atomic<uint64_t> lone_riders{0}, calls_sat_out{0};
  std::atomic<int64_t> max_batch_load{0};
  Histogram latency, first_token, iterations_per_token;
  // Gauges are read at render time.
  std::string render(size_t queue_depth, int active_slots, int slots) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
};

}  // namespace huginn::server
