// The server under abuse, measured: latency of /health and of a normal completion (greedy,
// max_tokens 2) on an idle server, then while 100 slow-header (slowloris) connections, 100
// slow-body connections or 300 idle sockets are held (slow ones trickle a byte every 100 ms),
// and during a flood of 200 concurrent completion requests (how many were answered 200, 503
// or not at all, and how fast). A running `huginn serve` is the target;
// scripts/bench-server-flood.sh sets one up.
// Usage: bench_server_flood --port P [--key KEY] [--model NAME] [--reps N] [--wait S]
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "../tests/server/raw_http.h"
#include "bench_util.h"

namespace {

using namespace huginn::test::http;

struct Args {
  int port = 0;
  std::string key, model = "tiny";
  int reps = 20;
  double wait = 30.0;  // longest wait for one answer (the old server took 25 s and more)
};

std::string completion_request(const Args& a) {
  const std::string body =
      R"({"model":")" + a.model + R"(","prompt":"hello","max_tokens":2,"temperature":0})";
  return "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" +
         (a.key.empty() ? std::string() : "Authorization: Bearer " + a.key + "\r\n") +
         "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n\r\n" + body;
}

const char* kHealth = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

struct Series {
  std::vector<double> s;
  int failed = 0;
  std::string row() const {  // median, p99, max in ms
    if (s.empty()) return "       -        -        -";
    std::vector<double> v = s;
    std::sort(v.begin(), v.end());
    char buf[96];
    std::snprintf(buf, sizeof buf, "%8.1f %8.1f %8.1f", 1e3 * v[v.size() / 2],
                  1e3 * v[std::min(v.size() - 1, v.size() * 99 / 100)], 1e3 * v.back());
    return buf;
  }
};

Series time_requests(const Args& a, const std::string& req, int n) {
  Series out;
  for (int i = 0; i < n; ++i) {
    const auto t0 = Clock::now();
    const Reply r = exchange(a.port, req, a.wait);
    if (r.status == 200) out.s.push_back(since(t0));
    else ++out.failed;
  }
  return out;
}

// Connections held open for a phase; slow ones get a byte every 100 ms from a thread.
class Held {
 public:
  Held(const Args& a, int n, const std::string& start, bool trickle) {
    for (int i = 0; i < n; ++i) {
      const int fd = connect_to(a.port);
      if (fd < 0) continue;
      if (!start.empty()) send_all(fd, start);
      fds_.push_back(fd);
    }
    if (trickle)
      thread_ = std::thread([this] {
        while (!stop_) {
          for (int fd : fds_) send(fd, "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      });
  }
  ~Held() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    for (int fd : fds_) close(fd);
  }
  size_t size() const { return fds_.size(); }

 private:
  std::vector<int> fds_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

void report(const char* phase, const Series& health, const Series& comp) {
  std::string failed;
  if (health.failed) failed += "  /health: " + std::to_string(health.failed) + " failed";
  if (comp.failed) failed += "  completion: " + std::to_string(comp.failed) + " failed";
  std::printf("%-30s | %s | %s%s\n", phase, health.row().c_str(), comp.row().c_str(),
              failed.c_str());
  std::fflush(stdout);
}

void phase(const Args& a, const char* name, int n, const std::string& start, bool trickle) {
  Held held(a, n, start, trickle);
  if (static_cast<int>(held.size()) < n)
    std::printf("(%s: only %zu of %d connections opened)\n", name, held.size(), n);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const Series h = time_requests(a, kHealth, a.reps);
  const Series c = time_requests(a, completion_request(a), std::max(1, a.reps / 4));
  report(name, h, c);
}

// 200 connections send a completion at once; /health is timed meanwhile.
void flood(const Args& a) {
  const std::string req = completion_request(a);
  std::vector<int> fds;
  for (int i = 0; i < 200; ++i) fds.push_back(connect_to(a.port));
  const auto t0 = Clock::now();
  for (int fd : fds)
    if (fd >= 0) send_all(fd, req);
  Series h;
  std::thread health([&] { h = time_requests(a, kHealth, a.reps); });
  int ok = 0, busy = 0, none = 0;
  Series answered, served;  // every answer; the 200s
  for (size_t i = 0; i < fds.size(); ++i) {
    if (fds[i] < 0) {
      ++none;
      continue;
    }
    const Reply r = read_reply(fds[i], std::max(0.5, a.wait + 90.0 - since(t0)));
    if (r.status == 200) ++ok, served.s.push_back(since(t0));
    else if (r.status == 503) ++busy;
    else ++none;
    if (r.status > 0) answered.s.push_back(since(t0));
    close(fds[i]);
  }
  health.join();
  report("200 concurrent completions", h, served);
  const double last =
      answered.s.empty() ? 0.0 : *std::max_element(answered.s.begin(), answered.s.end());
  std::printf("%-30s   of the 200: %d answered 200, %d answered 503, %d no answer; last answer "
              "after %.2f s\n",
              "", ok, busy, none, last);
}

int usage() {
  std::fprintf(stderr,
               "usage: bench_server_flood --port P [--key KEY] [--model NAME] [--reps N] "
               "[--wait S]\n  Latency of /health and of a 2-token completion (median, p99, max "
               "in ms)\n  idle, under 100 slow-header, 100 slow-body, 300 idle connections, "
               "and a 200-request flood.\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--help" || k == "-h") return usage(), 0;
    if (k == "--port") a.port = huginn::bench::int_arg(argc, argv, i);
    else if (k == "--key") a.key = huginn::bench::next_arg(argc, argv, i);
    else if (k == "--model") a.model = huginn::bench::next_arg(argc, argv, i);
    else if (k == "--reps") a.reps = huginn::bench::int_arg(argc, argv, i);
    else if (k == "--wait") a.wait = huginn::bench::double_arg(argc, argv, i);
    else return usage();
  }
  if (a.port <= 0 || a.port > 65535 || a.reps < 1 || !(a.wait > 0)) return usage();
  std::printf("%-30s | %-26s | %s\n%-30s | %8s %8s %8s | %8s %8s %8s\n", "latency in ms",
              "/health", "2-token completion", "", "median", "p99", "max", "median", "p99", "max");
  phase(a, "idle server", 0, "", false);
  phase(a, "100 slow-header (slowloris)", 100, "GET /health HTTP/1.1\r\nHost: x\r\n", true);
  // Authorized: cpp-httplib runs the pre-routing handler (which refuses a missing key with
  // 401) before it reads a body, so an unauthorized slow body is no attack on it.
  phase(a, "100 slow-body", 100,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + a.key +
            "\r\nContent-Length: 100000\r\n\r\n{",
        true);
  phase(a, "300 idle sockets", 300, "", false);
  flood(a);
  return 0;
}
