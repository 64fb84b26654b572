// Server parts without HTTP: the bounded queue, the scheduler's slot limit, Prometheus
// histograms, OpenAI error bodies, the logprob helper and the connection watch (these run
// without node).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <thread>

#include "server/conn_watch.h"
#include "server/engine.h"
#include "server/metrics.h"
#include "server/openai.h"
#include "server/queue.h"
#include "server/scheduler.h"

namespace huginn::server {
namespace {

TEST(ServerQueue, RefusesWhenFullAndWakesOnClose) {
  RequestQueue q(2);
  EXPECT_TRUE(q.try_push([] {}));
  EXPECT_TRUE(q.try_push([] {}));
  EXPECT_FALSE(q.try_push([] {}));
  EXPECT_EQ(q.size(), 2u);
  EXPECT_TRUE(static_cast<bool>(q.pop()));
  EXPECT_TRUE(q.try_push([] {}));
  std::thread waiter([&] {
    q.pop();
    q.pop();
    EXPECT_FALSE(static_cast<bool>(q.pop()));  // closed: an empty job
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  q.close();
  waiter.join();
  EXPECT_FALSE(q.try_push([] {}));
}

// Capacity counts waiting jobs: 0 takes a job only when a popper is already waiting for one
// (--max-queue 0 used to refuse every request).
TEST(ServerQueue, CapacityZeroTakesAJobOnlyForAnIdlePopper) {
  RequestQueue q(0);
  EXPECT_FALSE(q.try_push([] {}));  // nobody waits
  std::atomic<int> ran{0};
  std::thread popper([&] {
    Job j = q.pop();
    if (j) j();
  });
  bool taken = false;
  for (int i = 0; i < 500 && !taken; ++i) {
    taken = q.try_push([&] { ++ran; });
    if (!taken) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(taken);
  EXPECT_FALSE(q.try_push([] {}));  // the one popper is spoken for
  popper.join();
  EXPECT_EQ(ran.load(), 1);
  q.close();
}

TEST(ServerScheduler, NeverRunsMoreThanItsSlots) {
  std::atomic<int> running{0}, peak{0}, done{0};
  {
    Scheduler s(2, 100);
    for (int i = 0; i < 12; ++i)
      ASSERT_TRUE(s.submit([&] {
        const int now = ++running;
        int p = peak.load();
        while (now > p && !peak.compare_exchange_weak(p, now)) {
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        --running;
        ++done;
      }));
    while (done.load() < 12) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    s.submit([] { throw std::runtime_error("a failing job does not kill its slot"); });
    ASSERT_TRUE(s.submit([&] { ++done; }));
    while (done.load() < 13) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(peak.load(), 2);
}

TEST(ServerMetrics, HistogramBucketsAreCumulative) {
  Histogram h({1, 4});
  for (double v : {0.5, 1.0, 2.0, 9.0}) h.observe(v);
  const std::string t = h.render("x", "help");
  EXPECT_NE(t.find("# TYPE x histogram"), std::string::npos);
  EXPECT_NE(t.find("x_bucket{le=\"1\"} 2\n"), std::string::npos) << t;
  EXPECT_NE(t.find("x_bucket{le=\"4\"} 3\n"), std::string::npos) << t;
  EXPECT_NE(t.find("x_bucket{le=\"+Inf\"} 4\n"), std::string::npos) << t;
  EXPECT_NE(t.find("x_sum 12.5\n"), std::string::npos) << t;
  EXPECT_NE(t.find("x_count 4\n"), std::string::npos) << t;
  Metrics m;
  m.count_request("/v1/completions", 400);
  m.count_request("/v1/completions", 400);
  const std::string all = m.render(3, 1, 2);
  EXPECT_NE(all.find("huginn_requests_total{endpoint=\"/v1/completions\",code=\"400\"} 2"),
            std::string::npos);
  EXPECT_NE(all.find("huginn_queue_depth 3\n"), std::string::npos);
  EXPECT_NE(all.find("huginn_active_slots 1\n"), std::string::npos);
}

TEST(ServerOpenAI, ErrorBodyHasTheOpenAIShape) {
  const auto j = nlohmann::json::parse(error_body({404, "no such model", "", "model", "model_not_found"}));
  EXPECT_EQ(j["error"]["message"], "no such model");
  EXPECT_EQ(j["error"]["type"], "not_found_error");
  EXPECT_EQ(j["error"]["param"], "model");
  EXPECT_EQ(j["error"]["code"], "model_not_found");
  const auto k = nlohmann::json::parse(error_body({400, "bad"}));
  EXPECT_EQ(k["error"]["type"], "invalid_request_error");
  EXPECT_TRUE(k["error"]["param"].is_null());
}

TEST(ServerOpenAI, TokenLogprobIsLogSoftmaxAndTopK) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f};
  double z = 0;
  for (float v : logits) z += std::exp(static_cast<double>(v));
  const TokenLogprob lp = token_logprob(logits, 2, 3);
  EXPECT_NEAR(lp.logprob, 2.0 - std::log(z), 1e-9);
  ASSERT_EQ(lp.top.size(), 3u);
  EXPECT_EQ(lp.top[0].first, 1);  // ties: the smaller id first
  EXPECT_EQ(lp.top[1].first, 3);
  EXPECT_EQ(lp.top[2].first, 2);
  EXPECT_NEAR(lp.top[0].second, 3.0 - std::log(z), 1e-9);
}

// The watch finds the server side of a loopback connection from the addresses httplib reports,
// sees nothing while the client is there, and sees the client's close; addresses that match no
// socket give an invalid watch that never reports a disconnect (the fail-safe path).
TEST(ServerConnectionWatch, FindsTheSocketAndSeesTheClientLeave) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(listener, 1), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int client = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_EQ(connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  const int server = accept(listener, nullptr, nullptr);
  ASSERT_GE(server, 0);
  sockaddr_in peer{};
  len = sizeof peer;
  ASSERT_EQ(getpeername(server, reinterpret_cast<sockaddr*>(&peer), &len), 0);

  const ConnectionWatch w("127.0.0.1", ntohs(addr.sin_port), "127.0.0.1", ntohs(peer.sin_port));
  ASSERT_TRUE(w.valid());
  EXPECT_EQ(w.fd(), server);
  EXPECT_FALSE(w.gone());
  ASSERT_EQ(send(client, "GET", 3, 0), 3);  // pending bytes (e.g. pipelining) are not a close
  EXPECT_FALSE(w.gone());
  const ConnectionWatch direct = ConnectionWatch::of_socket(server);  // the front's way
  EXPECT_TRUE(direct.valid());
  EXPECT_FALSE(direct.gone());
  close(client);
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    gone = w.gone();
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(gone);
  EXPECT_TRUE(direct.gone());

  const ConnectionWatch none("127.0.0.1", ntohs(addr.sin_port), "127.0.0.1", 1);
  EXPECT_FALSE(none.valid());
  EXPECT_FALSE(none.gone());
  const ConnectionWatch junk("not an address", 80, "", -1);
  EXPECT_FALSE(junk.valid());
  EXPECT_FALSE(junk.gone());
  close(server);
  close(listener);
}

}  // namespace
}  // namespace huginn::server
