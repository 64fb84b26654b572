// The connection front without HTTP routing (server/front.h): request framing (lengths,
// chunked bodies, limits, smuggling-prone headers) and, over loopback sockets with a stub
// handler, total header deadlines, the connection cap and slow clients not holding workers.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "server/front.h"

namespace huginn::server {
namespace {

using State = RequestFraming::State;
using Clock = std::chrono::steady_clock;

FrontLimits small_limits() {
  FrontLimits l;
  l.max_body_bytes = 100;
  l.max_header_bytes = 256;
  return l;
}

TEST(FrontFraming, FindsTheEndOfBodilessAndContentLengthRequests) {
  const FrontLimits lim = small_limits();
  RequestFraming f(lim);
  const std::string get = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
  EXPECT_EQ(f.feed(get.substr(0, 10)), State::kNeedMore);
  ASSERT_EQ(f.feed(get + "GET /next"), State::kComplete);  // pipelined bytes are not part of it
  EXPECT_EQ(f.length(), get.size());
  EXPECT_EQ(f.method(), "GET");

  RequestFraming p(lim);
  const std::string post = "POST /v1/completions HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello";
  EXPECT_EQ(p.feed(post.substr(0, post.size() - 1)), State::kNeedMore);
  EXPECT_TRUE(p.in_body());
  ASSERT_EQ(p.feed(post), State::kComplete);
  EXPECT_EQ(p.length(), post.size());
}

TEST(FrontFraming, ChunkedBodiesEndAfterTheTrailerAndCountAgainstTheLimit) {
  const FrontLimits lim = small_limits();
  const std::string req =
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5;ext=1\r\nhello\r\na\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n";
  RequestFraming whole(lim);
  ASSERT_EQ(whole.feed(req + "GET"), State::kComplete);
  EXPECT_EQ(whole.length(), req.size());
  // A byte at a time (as a slow client sends it): the same end, found incrementally.
  RequestFraming slow(lim);
  std::string buf;
  State st = State::kNeedMore;
  for (char c : req) {
    ASSERT_EQ(st, State::kNeedMore) << buf;
    buf += c;
    st = slow.feed(buf);
  }
  ASSERT_EQ(st, State::kComplete);
  EXPECT_EQ(slow.length(), req.size());

  // 64 + 64 bytes of data > 100: refused at the second chunk's size line, before its data.
  RequestFraming over(lim);
  const std::string big = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" +
                          std::string(64, 'a') + "\r\n40\r\n";
  ASSERT_EQ(over.feed(big), State::kError);
  EXPECT_EQ(over.status(), 413);
  EXPECT_NE(over.message().find("100 bytes"), std::string::npos) << over.message();

  RequestFraming huge(lim);  // a size that would overflow
  ASSERT_EQ(huge.feed("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n"),
            State::kError);
  EXPECT_EQ(huge.status(), 413);
  RequestFraming junk(lim);
  ASSERT_EQ(junk.feed("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), State::kError);
  EXPECT_EQ(junk.status(), 400);
  RequestFraming nocrlf(lim);
  ASSERT_EQ(nocrlf.feed("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY"),
            State::kError);
  EXPECT_EQ(nocrlf.status(), 400);
}

TEST(FrontFraming, RefusesWhatItCannotFrameSafely) {
  const FrontLimits lim = small_limits();
  const std::pair<std::string, int> cases[] = {
      {"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 413},
      {"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
      {"POST / HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\nxx", 415},
      {"POST / HTTP/1.1\r\nExpect: something\r\n\r\n", 417},
      {"POST / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length : 1\r\n\r\nx", 400},
      {"NOSPACE\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nX: " + std::string(300, 'a') + "\r\n\r\n", 431},
      {"GET / HTTP/1.1\r\nX: " + std::string(300, 'a'), 431},  // no end in sight
  };
  for (const auto& [req, status] : cases) {
    RequestFraming f(lim);
    ASSERT_EQ(f.feed(req), State::kError) << req;
    EXPECT_EQ(f.status(), status) << req;
    EXPECT_FALSE(f.message().empty());
  }
}

TEST(FrontFraming, ExpectContinueLinesAreTakenOut) {
  const FrontLimits lim = small_limits();
  const std::string req =
      "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nab";
  RequestFraming f(lim);
  ASSERT_EQ(f.feed(req.substr(0, req.size() - 2)), State::kNeedMore);
  EXPECT_TRUE(f.expects_continue());
  ASSERT_EQ(f.feed(req), State::kComplete);
  EXPECT_EQ(without_expect(req, f), "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab");
}

// --- The front over loopback -----------------------------------------------------------------

class Loopback {
 public:
  explicit Loopback(Front& front) : front_(front) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(listen(fd_, 1024), 0);
    socklen_t n = sizeof a;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &n);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] {
      for (;;) {
        const int c = accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        front_.adopt(c);
      }
    });
  }
  ~Loopback() {
    ::shutdown(fd_, SHUT_RDWR);
    close(fd_);
    acceptor_.join();
  }
  // A client connection; from `source` (an address of this machine, e.g. "127.0.0.2") if given.
  int connect_client(const char* source = nullptr) const {
    const int c = socket(AF_INET, SOCK_STREAM, 0);
    if (source) {
      sockaddr_in s{};
      s.sin_family = AF_INET;
      EXPECT_EQ(inet_pton(AF_INET, source, &s.sin_addr), 1) << source;
      EXPECT_EQ(bind(c, reinterpret_cast<sockaddr*>(&s), sizeof s), 0) << source;
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port_));
    EXPECT_EQ(connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    return c;
  }

 private:
  Front& front_;
  int fd_ = -1, port_ = 0;
  std::thread acceptor_;
};

// Everything the peer sends until it closes or `seconds` pass.
std::string read_until_close(int fd, double seconds) {
  std::string out;
  const auto until = Clock::now() + std::chrono::duration<double>(seconds);
  char buf[4096];
  while (Clock::now() < until) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// A stub handler: answers 200 with the request's method and closes.
bool stub(const FrontRequest& r) {
  const std::string body = r.method;
  const std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) +
                           "\r\nConnection: close\r\n\r\n" + body;
  send(r.fd, resp.data(), resp.size(), MSG_NOSIGNAL);
  return false;
}

TEST(Front, HeaderDeadlineIsTotalNotPerByteAndSlowClientsHoldNoWorker) {
  FrontLimits lim;
  lim.header_timeout_s = 0.5;
  lim.workers = 1;
  lim.light_workers = 1;
  Front front(lim, stub);
  Loopback lo(front);
  // 50 slow-header clients, each sending a byte every 50 ms (far inside any per-byte timeout).
  std::vector<int> slow;
  for (int i = 0; i < 50; ++i) {
    slow.push_back(lo.connect_client());
    send(slow.back(), "GET / HTTP/1.1\r\n", 16, MSG_NOSIGNAL);
  }
  std::atomic<bool> stop{false};
  std::thread trickle([&] {
    while (!stop) {
      for (int fd : slow) send(fd, "X", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  // Meanwhile a complete request is answered at once by the single worker.
  const int quick = lo.connect_client();
  const auto t0 = Clock::now();
  send(quick, "GET /health HTTP/1.1\r\n\r\n", 24, MSG_NOSIGNAL);
  const std::string got = read_until_close(quick, 5.0);
  const double quick_s = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_NE(got.find("200 OK"), std::string::npos) << got;
  EXPECT_LT(quick_s, 2.0);
  close(quick);
  // Every slow client is answered 408 once its 0.5 s are up, trickle or not.
  int timed_out = 0;
  for (int fd : slow) {
    const std::string r = read_until_close(fd, 5.0);
    if (r.find("HTTP/1.1 408") == 0 && r.find("0.5 s") != std::string::npos) ++timed_out;
  }
  stop = true;
  trickle.join();
  EXPECT_EQ(timed_out, 50);
  EXPECT_EQ(front.stats().header_timeouts, 50u);
  for (int fd : slow) close(fd);
}

TEST(Front, ConnectionsBeyondTheCapAre503AndClosed) {
  FrontLimits lim;
  lim.max_connections = 4;
  Front front(lim, stub);
  Loopback lo(front);
  std::vector<int> held;
  for (int i = 0; i < 4; ++i) held.push_back(lo.connect_client());
  // The fifth: refused at once, with a reason, and closed.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the four are adopted first
  const int extra = lo.connect_client();
  const std::string r = read_until_close(extra, 3.0);
  EXPECT_EQ(r.rfind("HTTP/1.1 503", 0), 0u) << r;
  EXPECT_NE(r.find("Retry-After: 1"), std::string::npos);
  EXPECT_NE(r.find("connection limit (4)"), std::string::npos) << r;
  close(extra);
  EXPECT_EQ(front.stats().rejected_cap, 1u);
  // Room again once one closes.
  close(held[0]);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const int again = lo.connect_client();
  send(again, "GET / HTTP/1.1\r\n\r\n", 18, MSG_NOSIGNAL);
  EXPECT_NE(read_until_close(again, 3.0).find("200 OK"), std::string::npos);
  close(again);
  for (size_t i = 1; i < held.size(); ++i) close(held[i]);
}

// One address cannot take every place: its connections beyond the per-address cap are refused,
// while another address still gets in; a place freed is a place again.
TEST(Front, ConnectionsBeyondThePerAddressCapAre503AndClosed) {
  FrontLimits lim;
  lim.max_connections_per_address = 2;
  Front front(lim, stub);
  Loopback lo(front);
  std::vector<int> held = {lo.connect_client(), lo.connect_client()};
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the two are adopted first
  const int extra = lo.connect_client();
  const std::string r = read_until_close(extra, 3.0);
  EXPECT_EQ(r.rfind("HTTP/1.1 503", 0), 0u) << r;
  EXPECT_NE(r.find("Retry-After: 1"), std::string::npos);
  EXPECT_NE(r.find("too many connections from your address (the limit is 2)"), std::string::npos)
      << r;
  close(extra);
  EXPECT_EQ(front.stats().rejected_address, 1u);
  EXPECT_EQ(front.stats().rejected_cap, 0u);
  auto served = [](int c) {
    send(c, "GET / HTTP/1.1\r\n\r\n", 18, MSG_NOSIGNAL);
    const bool ok = read_until_close(c, 3.0).find("200 OK") != std::string::npos;
    close(c);
    return ok;
  };
  EXPECT_TRUE(served(lo.connect_client("127.0.0.2")));  // another address
  close(held[0]);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_TRUE(served(lo.connect_client()));  // the freed place
  EXPECT_EQ(front.stats().rejected_address, 1u);
  close(held[1]);
}

TEST(Front, OversizedChunkedBodyIsAnswered413) {
  FrontLimits lim;
  lim.max_body_bytes = 1000;
  Front front(lim, stub);
  Loopback lo(front);
  const int c = lo.connect_client();
  std::string req = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 20; ++i) req += "64\r\n" + std::string(100, 'x') + "\r\n";
  send(c, req.data(), req.size(), MSG_NOSIGNAL);
  const std::string r = read_until_close(c, 3.0);
  EXPECT_EQ(r.rfind("HTTP/1.1 413", 0), 0u) << r;
  EXPECT_EQ(front.stats().too_large, 1u);
  close(c);
}

}  // namespace
}  // namespace huginn::server
