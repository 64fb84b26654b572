// ConnectionWatch: find a request's socket by its address 4-tuple, then poll it (see the header).
#include "server/conn_watch.h"

#if defined(__linux__)
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#endif

namespace huginn::server {

#if defined(__linux__)
namespace {

// addr:port as a sockaddr of the right family; false when the address does not parse.
bool to_sockaddr(const std::string& addr, int port, sockaddr_storage& out) {
  std::memset(&out, 0, sizeof out);
  if (port < 0 || port > 65535) return false;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out);
  if (inet_pton(AF_INET, addr.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    return true;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out);
  if (inet_pton(AF_INET6, addr.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    return true;
  }
  return false;
}

// Same family, address and port (IPv4-mapped IPv6 addresses are compared as IPv4).
bool same_endpoint(const sockaddr_storage& a, const sockaddr_storage& want) {
  sockaddr_storage x = a;
  if (x.ss_family == AF_INET6 && want.ss_family == AF_INET) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&a);
    if (!IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) return false;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&x);
    const uint16_t port = v6->sin6_port;
    in_addr ip;
    std::memcpy(&ip, &v6->sin6_addr.s6_addr[12], 4);
    std::memset(&x, 0, sizeof x);
    v4->sin_family = AF_INET;
    v4->sin_port = port;
    v4->sin_addr = ip;
  }
  if (x.ss_family != want.ss_family) return false;
  if (x.ss_family == AF_INET) {
    const auto* p = reinterpret_cast<const sockaddr_in*>(&x);
    const auto* q = reinterpret_cast<const sockaddr_in*>(&want);
    return p->sin_port == q->sin_port && p->sin_addr.s_addr == q->sin_addr.s_addr;
  }
  const auto* p = reinterpret_cast<const sockaddr_in6*>(&x);
  const auto* q = reinterpret_cast<const sockaddr_in6*>(&want);
  return p->sin6_port == q->sin6_port &&
         std::memcmp(&p->sin6_addr, &q->sin6_addr, sizeof p->sin6_addr) == 0;
}

}  // namespace

ConnectionWatch::ConnectionWatch(const std::string& local_addr, int local_port,
                                 const std::string& remote_addr, int remote_port) {
  sockaddr_storage want_local, want_peer;
  if (!to_sockaddr(local_addr, local_port, want_local) ||
      !to_sockaddr(remote_addr, remote_port, want_peer))
    return;
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return;
  const int own = dirfd(dir);
  int found = -1, matches = 0;
  while (dirent* e = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == own) continue;
    sockaddr_storage peer, local;
    socklen_t np = sizeof peer, nl = sizeof local;
    int type = 0;
    socklen_t nt = sizeof type;
    // Non-sockets fail with ENOTSOCK; fds closed meanwhile by other threads fail too, and a
    // number reused meanwhile is only taken if its 4-tuple matches.
    if (getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &np) != 0) continue;
    if (getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &nl) != 0) continue;
    if (getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_TYPE, &type, &nt) != 0 ||
        type != SOCK_STREAM)
      continue;
    if (same_endpoint(peer, want_peer) && same_endpoint(local, want_local)) {
      found = static_cast<int>(fd);
      ++matches;
    }
  }
  closedir(dir);
  // One live TCP connection per 4-tuple; anything else is not understood: watch nothing.
  if (matches == 1) fd_ = found;
}

bool ConnectionWatch::gone() const {
  if (fd_ < 0) return false;
  pollfd p{fd_, POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

#else  // no /proc, no POLLRDHUP: never detect (the request runs to its end, as before)

ConnectionWatch::ConnectionWatch(const std::string&, int, const std::string&, int) {}
bool ConnectionWatch::gone() const { return false; }

#endif

}  // namespace huginn::server
