#include "server/metrics.h"

#include <cstdio>

namespace huginn::server {
namespace {

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

void counter(std::string& out, const char* name, const char* help, uint64_t v) {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n" + name +
         " " + std::to_string(v) + "\n";
}

void gauge(std::string& out, const char* name, const char* help, double v) {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " gauge\n" + name +
         " " + num(v) + "\n";
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  std::lock_guard<std::mutex> lock(mu_);
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += v;
  ++count_;
}

std::string Histogram::render(const std::string& name, const std::string& help) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out = "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += counts_[i];
    out += name + "_bucket{le=\"" + num(bounds_[i]) + "\"} " + std::to_string(cum) + "\n";
  }
  cum += counts_.back();
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(cum) + "\n";
  out += name + "_sum " + num(sum_) + "\n" + name + "_count " + std::to_string(count_) + "\n";
  return out;
}

Metrics::Metrics()
    : latency({0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}),
      first_token({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}),
      iterations_per_token({1, 2, 4, 8, 16, 24, 32, 48, 64, 128, 256}) {}

void Metrics::count_request(const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{endpoint, status}];
}

std::string Metrics::render(size_t queue_depth, int active_slots, int slots) const {
  std::string out =
      "# HELP huginn_requests_total HTTP requests answered, by endpoint and status code\n"
      "# TYPE huginn_requests_total counter\n";
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [key, n] : requests_)
      out += "huginn_requests_total{endpoint=\"" + key.first + "\",code=\"" +
             std::to_string(key.second) + "\"} " + std::to_string(n) + "\n";
  }
  counter(out, "huginn_prompt_tokens_total", "prompt tokens processed", prompt_tokens.load());
  counter(out, "huginn_completion_tokens_total", "tokens generated", completion_tokens.load());
  counter(out, "huginn_iterations_total", "core recurrences run for generated tokens",
          iterations.load());
  counter(out, "huginn_requests_cancelled_total", "generations stopped by a client disconnect",
          cancelled.load());
  counter(out, "huginn_requests_timed_out_total", "generations stopped by the request timeout",
          timed_out.load());
  counter(out, "huginn_requests_rejected_total", "requests refused with 503 (queue full)",
          rejected_full.load());
  counter(out, "huginn_decode_batches_total",
          "batched passes over the core (one iteration for each call in the batch)", decode_batches.load());
  counter(out, "huginn_decode_batch_rows_total",
          "calls carried by batched passes (/ batches = mean batch size)",
          decode_batch_rows.load());
  counter(out, "huginn_decode_batch_rider_rows_total",
          "rows of the other decoders (wavefront lanes, the samplers' passes) carried by the depth "
          "batch's core passes", rider_rows.load());
  counter(out, "huginn_decode_batch_shared_passes_total",
          "core passes that carried such rows beside sequential calls",
          rider_shared_passes.load());
  counter(out, "huginn_decode_batch_lone_rider_passes_total",
          "core passes of one rider larger than --max-batch, run alone", lone_riders.load());
  counter(out, "huginn_decode_batch_calls_sat_out_total",
          "core passes of riders alone (no room beside the calls) while calls waited one pass",
          calls_sat_out.load());
  gauge(out, "huginn_decode_batch_max_load",
        "most slots (calls + rider rows) one core pass has carried, lone riders aside; at most "
        "--max-batch", static_cast<double>(max_batch_load.load()));
  counter(out, "huginn_prefill_chunks_total",
          "prompt chunks run after a prompt's first (--prefill-chunk)", prefill_chunks.load());
  gauge(out, "huginn_queue_depth", "requests waiting for a slot", static_cast<double>(queue_depth));
  gauge(out, "huginn_active_slots", "requests generating now", active_slots);
  gauge(out, "huginn_slots", "requests that may generate at once", slots);
  out += iterations_per_token.render("huginn_iterations_per_token",
                                     "core recurrences per generated token");
  out += latency.render("huginn_request_duration_seconds",
                        "time from request to last byte of generation");
  out += first_token.render("huginn_time_to_first_token_seconds",
                            "time from request to the first generated token");
  return out;
}

}  // namespace huginn::server
