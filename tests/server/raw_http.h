// A minimal HTTP/1.1 client over raw sockets for the server's abuse tests and the flood bench
// (bench/bench_server_flood.cc): slow, idle and flooding clients need the socket itself, which
// no HTTP client library exposes. Loopback IPv4 only; answers with a Content-Length body.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

namespace huginn::test::http {

using Clock = std::chrono::steady_clock;

inline double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

inline int connect_to(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

inline bool send_all(int fd, std::string_view s) {
  while (!s.empty()) {
    const ssize_t n = send(fd, s.data(), s.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    s.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

struct Reply {
  int status = -1;  // -1: closed (or reset) without an answer; -2: nothing within the timeout
  std::string head, body;
};

// One HTTP answer (with a Content-Length body) off fd, waiting at most `seconds`.
inline Reply read_reply(int fd, double seconds) {
  Reply r;
  std::string buf;
  const auto until = Clock::now() + std::chrono::duration<double>(seconds);
  size_t head_end = std::string::npos, want = 0;
  char chunk[16384];
  for (;;) {
    if (head_end == std::string::npos && (head_end = buf.find("\r\n\r\n")) != std::string::npos) {
      r.head = buf.substr(0, head_end);
      r.status = std::atoi(r.head.c_str() + 9);
      std::string lower = r.head;
      for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      const size_t cl = lower.find("content-length:");
      want = cl == std::string::npos ? 0 : std::strtoull(lower.c_str() + cl + 15, nullptr, 10);
    }
    if (head_end != std::string::npos && buf.size() >= head_end + 4 + want) {
      r.body = buf.substr(head_end + 4, want);
      return r;
    }
    const int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count());
    if (left <= 0) {
      if (r.status < 0) r.status = -2;
      return r;
    }
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, left) <= 0) continue;
    const ssize_t n = recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) {
      if (head_end == std::string::npos) r.status = -1;
      return r;
    }
    buf.append(chunk, static_cast<size_t>(n));
  }
}

// A whole exchange on a fresh connection ("Connection: close").
inline Reply exchange(int port, const std::string& raw, double seconds = 30.0) {
  const int fd = connect_to(port);
  if (fd < 0) return {};
  Reply r = send_all(fd, raw) ? read_reply(fd, seconds) : Reply{};
  close(fd);
  return r;
}

}  // namespace huginn::test::http
