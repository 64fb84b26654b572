// Noticing that the client of a non-streamed request has gone away.
//
// With the connection front (server/front.h) the HTTP layer knows each request's socket and
// uses of_socket(); the search below is the fallback when it does not.
//
// cpp-httplib 0.11 gives a non-streaming handler no access to its connection (the Stream and
// socket are private to the worker that runs the handler), and no "is the peer still there"
// call. So, on Linux, the watch finds the handler's socket itself: the connection is the one
// TCP socket of this process whose local and peer addresses are the request's local_addr:
// local_port and remote_addr:remote_port (a 4-tuple names one live connection). It scans
// /proc/self/fd once, at the start of the request, and keeps the fd number; the fd stays valid
// for the whole handler, because httplib closes a connection only after its handler returns.
// Between decode steps the HTTP thread polls that fd without consuming anything: POLLRDHUP
// (the peer sent FIN), POLLHUP or POLLERR (reset) mean the client is gone.
//
// Fail safe: when the socket is not found (another OS, a proxy-less unix socket, an address
// that does not parse), valid() is false and gone() always answers false, i.e. the request
// runs as it did before this watch existed. A client that half-closes its side after sending
// the request (shutdown(SHUT_WR)) and still waits for the answer is taken as gone; HTTP/1.1
// clients (curl, browsers, node, python) do not do that.
#pragma once

#include <string>

namespace huginn::server {

class ConnectionWatch {
 public:
  ConnectionWatch() = default;
  // Finds the socket connected from remote_addr:remote_port to local_addr:local_port.
  ConnectionWatch(const std::string& local_addr, int local_port, const std::string& remote_addr,
                  int remote_port);
  // Watches a socket already known (the front hands each request's fd to its worker).
  static ConnectionWatch of_socket(int fd) {
    ConnectionWatch w;
    w.fd_ = fd;
    return w;
  }
  bool valid() const { return fd_ >= 0; }
  // True once the peer has closed or reset the connection (never when !valid()).
  bool gone() const;
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

}  // namespace huginn::server
