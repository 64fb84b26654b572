// The connection front (see front.h): request framing, the epoll I/O thread, the worker lanes.
#include "server/front.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "huginn/error.h"
#include "huginn/log.h"

namespace huginn::server {

// ---------------------------------------------------------------------------------------------
// Framing

namespace {

constexpr size_t kMaxChunkLine = 1024;  // chunk size + extensions

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = lower(c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

RequestFraming::State RequestFraming::fail(int status, std::string message) {
  status_ = status;
  message_ = std::move(message);
  return State::kError;
}

RequestFraming::State RequestFraming::parse_head(std::string_view head) {
  size_t eol = head.find("\r\n");
  const std::string_view line = head.substr(0, eol);
  const size_t sp = line.find(' ');
  if (line.empty() || sp == 0 || sp == std::string_view::npos)
    return fail(400, "malformed request line");
  method_ = std::string(line.substr(0, sp));
  bool have_length = false;
  for (size_t at = eol + 2; at < head.size();) {
    const size_t end = head.find("\r\n", at);
    if (end == at) break;  // the blank line
    const std::string_view h = head.substr(at, end - at);
    if (h.front() == ' ' || h.front() == '\t')
      return fail(400, "folded header lines are not accepted");
    const size_t colon = h.find(':');
    if (colon == std::string_view::npos || colon == 0 || h[colon - 1] == ' ' || h[colon - 1] == '\t')
      return fail(400, "malformed header line");
    const std::string_view name = h.substr(0, colon), value = trim(h.substr(colon + 1));
    if (iequals(name, "content-length")) {
      uint64_t v = 0;
      if (value.empty() || value.size() > 19) return fail(400, "malformed Content-Length");
      for (char c : value) {
        if (c < '0' || c > '9') return fail(400, "malformed Content-Length");
        v = v * 10 + static_cast<uint64_t>(c - '0');
      }
      if (have_length && v != content_length_) return fail(400, "conflicting Content-Length headers");
      have_length = true;
      content_length_ = v;
    } else if (iequals(name, "transfer-encoding")) {
      if (!iequals(value, "chunked"))
        return fail(501, "Transfer-Encoding '" + std::string(value.substr(0, 64)) +
                             "' is not supported (only chunked)");
      if (chunked_) return fail(400, "repeated Transfer-Encoding header");
      chunked_ = true;
    } else if (iequals(name, "content-encoding")) {
      // cpp-httplib would inflate gzip / deflate / br bodies past the body limit (which it checks
      // on the compressed length): compressed request bodies are refused.
      if (!iequals(value, "identity"))
        return fail(415, "compressed request bodies (Content-Encoding '" +
                             std::string(value.substr(0, 64)) + "') are not accepted");
    } else if (iequals(name, "expect")) {
      if (!iequals(value, "100-continue"))
        return fail(417, "only 'Expect: 100-continue' is understood");
      expect_continue_ = true;
      expect_lines_.emplace_back(at, end + 2);
    }
    at = end + 2;
  }
  if (chunked_ && have_length)
    return fail(400, "a request may not have both Content-Length and Transfer-Encoding");
  if (content_length_ > lim_->max_body_bytes)
    return fail(413, "request body too large: Content-Length " + std::to_string(content_length_) +
                         " exceeds the limit of " + std::to_string(lim_->max_body_bytes) + " bytes");
  return State::kNeedMore;
}

RequestFraming::State RequestFraming::parse_chunked(std::string_view buf) {
  const size_t max_raw = 2 * lim_->max_body_bytes + (64 << 10);  // data + framing overhead
  for (;;) {
    if (pos_ - head_len_ > max_raw)
      return fail(413, "chunked request body too large: its framing exceeds " +
                           std::to_string(max_raw) + " bytes");
    switch (chunk_) {
      case Chunk::kSize: {
        const size_t eol = buf.find("\r\n", pos_);
        if (eol == std::string_view::npos) {
          if (buf.size() - pos_ > kMaxChunkLine) return fail(400, "chunk size line too long");
          return State::kNeedMore;
        }
        if (eol - pos_ > kMaxChunkLine) return fail(400, "chunk size line too long");
        uint64_t size = 0;
        size_t i = pos_, digits = 0;
        for (; i < eol && hex_digit(buf[i]) >= 0; ++i, ++digits) {
          if (digits >= 15) return fail(413, "chunk size too large");
          size = size * 16 + static_cast<uint64_t>(hex_digit(buf[i]));
        }
        if (digits == 0) return fail(400, "malformed chunk size");
        if (i < eol && buf[i] != ';' && buf[i] != ' ' && buf[i] != '\t')
          return fail(400, "malformed chunk size");
        if (size > lim_->max_body_bytes - body_data_)
          return fail(413, "request body too large: the chunked body exceeds the limit of " +
                               std::to_string(lim_->max_body_bytes) + " bytes");
        body_data_ += size;
        pos_ = eol + 2;
        chunk_left_ = size;
        chunk_ = size == 0 ? Chunk::kTrailer : Chunk::kData;
        break;
      }
      case Chunk::kData: {
        const uint64_t take = std::min<uint64_t>(chunk_left_, buf.size() - pos_);
        pos_ += static_cast<size_t>(take);
        chunk_left_ -= take;
        if (chunk_left_ > 0) return State::kNeedMore;
        chunk_ = Chunk::kDataEnd;
        break;
      }
      case Chunk::kDataEnd:
        if (buf.size() - pos_ < 2) return State::kNeedMore;
        if (buf.substr(pos_, 2) != "\r\n") return fail(400, "chunk data not followed by CRLF");
        pos_ += 2;
        chunk_ = Chunk::kSize;
        break;
      case Chunk::kTrailer: {  // trailer fields (skipped), then the blank line
        const size_t eol = buf.find("\r\n", pos_);
        if (eol == std::string_view::npos) {
          if (buf.size() - pos_ > lim_->max_header_bytes) return fail(431, "chunked trailer too large");
          return State::kNeedMore;
        }
        const bool blank = eol == pos_;
        pos_ = eol + 2;
        if (blank) {
          end_ = pos_;
          return State::kComplete;
        }
        break;
      }
    }
  }
}

RequestFraming::State RequestFraming::feed(std::string_view buf) {
  if (status_ != 0) return State::kError;
  if (end_ != 0) return State::kComplete;
  if (head_len_ == 0) {
    const size_t from = scan_ >= 3 ? scan_ - 3 : 0;
    const size_t blank = buf.find("\r\n\r\n", from);
    if (blank == std::string_view::npos) {
      scan_ = buf.size();
      if (buf.size() > lim_->max_header_bytes)
        return fail(431, "request headers too large: more than " +
                             std::to_string(lim_->max_header_bytes) + " bytes");
      return State::kNeedMore;
    }
    if (blank + 4 > lim_->max_header_bytes)
      return fail(431, "request headers too large: more than " +
                           std::to_string(lim_->max_header_bytes) + " bytes");
    if (parse_head(buf.substr(0, blank + 4)) == State::kError) return State::kError;
    head_len_ = blank + 4;
    pos_ = head_len_;
  }
  if (chunked_) return parse_chunked(buf);
  if (buf.size() - head_len_ < content_length_) return State::kNeedMore;
  end_ = head_len_ + static_cast<size_t>(content_length_);
  return State::kComplete;
}

std::string without_expect(std::string_view bytes, const RequestFraming& f) {
  std::string out;
  out.reserve(bytes.size());
  size_t at = 0;
  for (const auto& [b, e] : f.expect_lines()) {
    out.append(bytes.substr(at, b - at));
    at = e;
  }
  out.append(bytes.substr(at));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Front

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kReadChunk = 64 << 10;
constexpr auto kDrainTime = std::chrono::seconds(2);  // lingering close after a refusal
constexpr size_t kMaxDrainBytes = 8 << 20;

Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

const char* reason(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    out += c;
  }
  return out;
}

// Best effort, never blocks: a refusal that does not fit the socket buffer is cut.
void send_now(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data.remove_prefix(static_cast<size_t>(n));
  }
}

// Reads what has already arrived (so that closing does not reset the connection under the
// answer), at most `limit` bytes; false when the peer has closed or failed.
bool discard_input(int fd, size_t limit, size_t* read_total = nullptr) {
  char buf[16 << 10];
  size_t total = 0;
  while (total < limit) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      total += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (read_total) *read_total = total;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
  if (read_total) *read_total = total;
  return true;
}

// The client's IP address as bytes (IPv4 4, IPv6 16; an IPv4-mapped IPv6 address counts as its
// IPv4 one); "" when it has none (a Unix socket) or it cannot be read.
std::string peer_address(int fd) {
  sockaddr_storage a{};
  socklen_t n = sizeof a;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&a), &n) != 0) return "";
  if (a.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(a).sin_addr;
    return std::string(reinterpret_cast<const char*>(&in), sizeof in);
  }
  if (a.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(a).sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&in6)) return std::string(reinterpret_cast<const char*>(&in6) + 12, 4);
    return std::string(reinterpret_cast<const char*>(&in6), sizeof in6);
  }
  return "";
}

struct Lane {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<FrontRequest> queue;
  std::vector<std::thread> threads;
  size_t max_pending = 0;
  size_t idle = 0;
  bool stopped = false;

  // Refused when `max_pending` requests already wait beyond the idle workers.
  bool push(FrontRequest&& r) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (stopped || queue.size() >= max_pending + idle) return false;
      queue.push_back(std::move(r));
    }
    cv.notify_one();
    return true;
  }
  bool pop(FrontRequest& r) {
    std::unique_lock<std::mutex> lock(mu);
    ++idle;
    cv.wait(lock, [&] { return stopped || !queue.empty(); });
    --idle;
    if (stopped) return false;
    r = std::move(queue.front());
    queue.pop_front();
    return true;
  }
  // Stops the workers after their current request; returns the requests never started.
  std::deque<FrontRequest> stop() {
    std::deque<FrontRequest> left;
    {
      std::lock_guard<std::mutex> lock(mu);
      stopped = true;
      left.swap(queue);
    }
    cv.notify_all();
    for (auto& t : threads)
      if (t.joinable()) t.join();
    return left;
  }
};

}  // namespace

struct Front::Impl {
  enum class Phase { kHead, kIdle, kBusy, kDrain };
  struct Conn {
    explicit Conn(int f, const FrontLimits& lim) : fd(f), framing(lim) {}
    int fd;
    std::string address;  // peer_address(), counted in per_address while open
    std::string buf;
    RequestFraming framing;
    Phase phase = Phase::kHead;
    Clock::time_point deadline;
    bool armed = false;       // registered with epoll
    bool body_clock = false;  // the body deadline is running
    bool sent_continue = false;
    size_t served = 0;
    size_t drained = 0;
  };

  Impl(FrontLimits l, Handler h) : lim(std::move(l)), handler(std::move(h)) {
    if (!lim.error_body)
      lim.error_body = [](int, const std::string& m) {
        return "{\"error\":{\"message\":\"" + json_escape(m) + "\"}}";
      };
    ep = epoll_create1(EPOLL_CLOEXEC);
    wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ep < 0 || wake < 0) throw Error(std::string("server: epoll/eventfd: ") + std::strerror(errno));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = wake;
    epoll_ctl(ep, EPOLL_CTL_ADD, wake, &ev);
    main.max_pending = lim.max_pending;
    light.max_pending = lim.max_pending;
    for (int i = 0; i < std::max(1, lim.workers); ++i)
      main.threads.emplace_back([this] { work(main); });
    for (int i = 0; i < std::max(1, lim.light_workers); ++i)
      light.threads.emplace_back([this] { work(light); });
    io = std::thread([this] { loop(); });
  }

  ~Impl() { shutdown(); }

  void notify() {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake, &one, sizeof one);
  }

  void adopt(int fd) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!stopping) {
        inbox.push_back(fd);
        fd = -1;
      }
    }
    if (fd >= 0) ::close(fd);
    else notify();
  }

  void work(Lane& lane) {
    FrontRequest r;
    while (lane.pop(r)) {
      bool keep = false;
      try {
        keep = handler(r);
      } catch (const std::exception& e) {
        log(LogLevel::kWarn, "server: request handler failed: %s", e.what());
      } catch (...) {
        log(LogLevel::kWarn, "server: request handler failed");
      }
      {
        std::lock_guard<std::mutex> lock(mu);
        returned.emplace_back(r.fd, keep);
      }
      notify();
    }
  }

  // --- I/O thread -----------------------------------------------------------------------------

  void arm(Conn& c, bool on) {
    if (on == c.armed) return;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.fd = c.fd;
    epoll_ctl(ep, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, c.fd, &ev);
    c.armed = on;
  }

  void close_conn(int fd) {
    auto it = conns.find(fd);
    if (it == conns.end()) return;
    arm(*it->second, false);
    ::close(fd);
    uncount(it->second->address);
    conns.erase(it);
    --open;
  }

  void uncount(const std::string& address) {
    if (address.empty()) return;
    auto it = per_address.find(address);
    if (it != per_address.end() && --it->second == 0) per_address.erase(it);
  }

  // 503 and close at once, before reading any request (the connection caps).
  void reject_new(int fd, const std::string& message) {
    discard_input(fd, 64 << 10);
    send_now(fd, answer(503, message));
    ::close(fd);
  }

  std::string answer(int status, const std::string& message) const {
    const std::string body = lim.error_body(status, message);
    std::string r = "HTTP/1.1 " + std::to_string(status) + " " + reason(status) +
                    "\r\nContent-Type: application/json\r\nContent-Length: " +
                    std::to_string(body.size()) + "\r\nConnection: close\r\n";
    if (status == 503) r += "Retry-After: 1\r\n";
    return r + "\r\n" + body;
  }

  // Answers the connection's request with an error, then lingers (reading and dropping what
  // the client still sends, for at most kDrainTime) so that the answer is not lost to a reset.
  void refuse(Conn& c, int status, const std::string& message) {
    send_now(c.fd, answer(status, message));
    ::shutdown(c.fd, SHUT_WR);
    c.phase = Phase::kDrain;
    c.buf.clear();
    c.buf.shrink_to_fit();
    c.deadline = Clock::now() + kDrainTime;
    arm(c, true);
  }

  void accept_new(int fd) {
    if (conns.size() >= lim.max_connections) {
      ++stats.rejected_cap;
      return reject_new(fd, "the server is at its connection limit (" +
                                std::to_string(lim.max_connections) + "), retry later");
    }
    std::string address = lim.max_connections_per_address > 0 ? peer_address(fd) : "";
    if (!address.empty() && per_address[address] >= lim.max_connections_per_address) {
      ++stats.rejected_address;
      return reject_new(fd, "too many connections from your address (the limit is " +
                                std::to_string(lim.max_connections_per_address) +
                                "), retry later");
    }
    if (!address.empty()) ++per_address[address];
    const int flags = fcntl(fd, F_GETFL, 0);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto c = std::make_unique<Conn>(fd, lim);
    c->address = std::move(address);
    c->deadline = Clock::now() + seconds(lim.header_timeout_s);
    ++stats.accepted;
    ++open;
    Conn& ref = *c;
    conns[fd] = std::move(c);
    arm(ref, true);
  }

  void came_back(int fd, bool keep) {
    auto it = conns.find(fd);
    if (it == conns.end()) return;
    Conn& c = *it->second;
    ++c.served;
    if (!keep || stopping_io) return close_conn(fd);
    c.phase = Phase::kIdle;
    c.framing = RequestFraming(lim);
    c.body_clock = c.sent_continue = false;
    c.deadline = Clock::now() + seconds(lim.idle_timeout_s);
    arm(c, true);
    if (!c.buf.empty()) {  // pipelined: the next request is already here
      c.phase = Phase::kHead;
      c.deadline = Clock::now() + seconds(lim.header_timeout_s);
      advance(c);
    }
  }

  // Parses what the connection has; hands a complete request to a worker lane.
  void advance(Conn& c) {
    const RequestFraming::State st = c.framing.feed(c.buf);
    if (st == RequestFraming::State::kError) {
      const int status = c.framing.status();
      if (status == 413 || status == 431) ++stats.too_large;
      else ++stats.bad_framing;
      return refuse(c, status, c.framing.message());
    }
    if (st == RequestFraming::State::kNeedMore) {
      if (c.framing.in_body() && !c.body_clock) {
        c.body_clock = true;
        c.deadline = Clock::now() + seconds(lim.body_timeout_s);
        if (c.framing.expects_continue() && !c.sent_continue) {
          c.sent_continue = true;
          send_now(c.fd, "HTTP/1.1 100 Continue\r\n\r\n");
        }
      }
      return;
    }
    FrontRequest r;
    r.fd = c.fd;
    r.method = c.framing.method();
    const std::string_view whole(c.buf.data(), c.framing.length());
    r.bytes = c.framing.expect_lines().empty() ? std::string(whole) : without_expect(whole, c.framing);
    c.buf.erase(0, c.framing.length());
    r.last = c.served + 1 >= lim.max_requests_per_connection;
    Lane& lane = r.method == "GET" || r.method == "HEAD" ? light : main;
    arm(c, false);
    c.phase = Phase::kBusy;
    if (!lane.push(std::move(r))) {
      ++stats.rejected_busy;
      refuse(c, 503, "the server is busy: too many requests are waiting, retry later");
    }
  }

  void readable(Conn& c) {
    char buf[kReadChunk];
    if (c.phase == Phase::kDrain) {
      size_t n = 0;
      const bool open_still = discard_input(c.fd, kReadChunk, &n);
      c.drained += n;
      if (!open_still || c.drained > kMaxDrainBytes) close_conn(c.fd);
      return;
    }
    const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) return close_conn(c.fd);  // closed or reset; a partial request is dropped
    if (c.phase == Phase::kIdle) {
      c.phase = Phase::kHead;
      c.deadline = Clock::now() + seconds(lim.header_timeout_s);
    }
    c.buf.append(buf, static_cast<size_t>(n));
    advance(c);
  }

  void sweep() {
    const auto now = Clock::now();
    std::vector<int> expired;
    for (auto& [fd, c] : conns)
      if (c->phase != Phase::kBusy && now >= c->deadline) expired.push_back(fd);
    for (int fd : expired) {
      Conn& c = *conns[fd];
      if (c.phase == Phase::kHead && !c.buf.empty()) {
        char msg[128];
        if (c.framing.in_body()) {
          ++stats.body_timeouts;
          std::snprintf(msg, sizeof msg, "the request body did not arrive within %g s",
                        lim.body_timeout_s);
        } else {
          ++stats.header_timeouts;
          std::snprintf(msg, sizeof msg, "the request headers did not arrive within %g s",
                        lim.header_timeout_s);
        }
        refuse(c, 408, msg);
      } else {
        close_conn(fd);  // idle keep-alive, a silent new connection, or the end of a drain
      }
    }
  }

  void loop() {
    epoll_event events[256];
    auto next_sweep = Clock::now();
    for (;;) {
      const int n = epoll_wait(ep, events, 256, 50);
      // Reset the wake-up before taking the inboxes: a notify() after this read is either in
      // what we take now or wakes the next epoll_wait (reading it after the swap lost wake-ups,
      // and their sockets waited for the 50 ms tick).
      uint64_t woken;
      [[maybe_unused]] const ssize_t r = ::read(wake, &woken, sizeof woken);
      std::vector<int> fresh;
      std::vector<std::pair<int, bool>> back;
      bool stop_now = false;
      {
        std::lock_guard<std::mutex> lock(mu);
        fresh.swap(inbox);
        back.swap(returned);
        stop_now = stopping;
      }
      if (stop_now) {
        stopping_io = true;
        for (int fd : fresh) ::close(fd);
        std::vector<int> idle;
        for (auto& [fd, c] : conns)
          if (c->phase != Phase::kBusy) idle.push_back(fd);
        for (int fd : idle) close_conn(fd);
        for (auto& [fd, keep] : back) close_conn(fd);
        return;
      }
      for (auto& [fd, keep] : back) came_back(fd, keep);
      for (int fd : fresh) accept_new(fd);
      for (int i = 0; i < n; ++i) {
        const int fd = events[i].data.fd;
        if (fd == wake) continue;
        auto it = conns.find(fd);
        if (it != conns.end() && it->second->phase != Phase::kBusy) readable(*it->second);
      }
      const auto now = Clock::now();
      if (now >= next_sweep) {
        sweep();
        next_sweep = now + std::chrono::milliseconds(50);
      }
    }
  }

  void shutdown() {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (stopping) return;
      stopping = true;
    }
    notify();
    if (io.joinable()) io.join();
    for (Lane* lane : {&main, &light}) lane->stop();
    // Whatever is left (requests that never started, connections whose handler has finished)
    // is closed here; no thread touches `conns` any more.
    for (auto& [fd, c] : conns) ::close(fd);
    conns.clear();
    per_address.clear();
    open = 0;
    for (int fd : inbox) ::close(fd);
    inbox.clear();
    ::close(ep);
    ::close(wake);
  }

  FrontLimits lim;
  Handler handler;
  int ep = -1, wake = -1;
  std::thread io;
  Lane main, light;
  std::mutex mu;                               // guards inbox, returned, stopping
  std::vector<int> inbox;                      // accepted sockets not yet seen by the I/O thread
  std::vector<std::pair<int, bool>> returned;  // (fd, keep-alive) from the workers
  bool stopping = false;
  bool stopping_io = false;                    // I/O thread only
  std::unordered_map<int, std::unique_ptr<Conn>> conns;  // I/O thread only (until shutdown)
  std::unordered_map<std::string, size_t> per_address;   // open connections by peer address (same)
  std::atomic<uint64_t> open{0};
  struct {
    std::atomic<uint64_t> accepted{0}, rejected_cap{0}, rejected_address{0}, rejected_busy{0},
        header_timeouts{0}, body_timeouts{0}, too_large{0}, bad_framing{0};
  } stats;
};

Front::Front(FrontLimits limits, Handler handler)
    : impl_(std::make_unique<Impl>(std::move(limits), std::move(handler))) {}
Front::~Front() = default;
void Front::adopt(int fd) { impl_->adopt(fd); }
void Front::shutdown() { impl_->shutdown(); }

Front::Stats Front::stats() const {
  Stats s;
  s.open = impl_->open.load();
  s.accepted = impl_->stats.accepted.load();
  s.rejected_cap = impl_->stats.rejected_cap.load();
  s.rejected_address = impl_->stats.rejected_address.load();
  s.rejected_busy = impl_->stats.rejected_busy.load();
  s.header_timeouts = impl_->stats.header_timeouts.load();
  s.body_timeouts = impl_->stats.body_timeouts.load();
  s.too_large = impl_->stats.too_large.load();
  s.bad_framing = impl_->stats.bad_framing.load();
  return s;
}

}  // namespace huginn::server
