// The connection front: every accepted socket is owned here, not by an HTTP thread.
//
// cpp-httplib 0.11 gives each connection a thread for its whole life and re-arms its read
// timeout on every byte, so 100 slow-header clients (slowloris), 100 slow bodies or 300 idle
// sockets held every HTTP thread and /health waited 15-70 s. Here one I/O thread (epoll) reads
// whole requests off all connections at once — the header block, then the body by its
// Content-Length or its chunked framing — under total deadlines (headers within
// header_timeout_s of the request's first byte, the body within body_timeout_s of the end of
// the headers; not per byte) and size limits (chunked bodies counted too), and answers what it
// refuses itself (400, 408, 413, 415, 431, 501; 503 + close at the connection cap, at the cap per
// client address, or when the worker queue is full). Only a complete request reaches a worker thread, which runs the HTTP
// layer on exactly those bytes and writes the answer; the connection then comes back here for
// its next request (keep-alive) or is closed. So a slow or idle client costs a buffer and a
// file descriptor, never a thread, and GET requests (/health, /metrics, /v1/models) have their
// own workers so that they answer while every generation worker is busy.
//
// No HTTP library here: framing is the minimum needed to find where a request ends; the request
// line and headers are parsed and validated again by the HTTP layer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace huginn::server {

struct FrontLimits {
  size_t max_connections = 1024;      // open connections; beyond, 503 and close at once
  // Open connections from one client IP address (any port), so that one client cannot take
  // every place; beyond, 503 and close at once. 0: no such limit. (Behind a reverse proxy every
  // connection comes from the proxy's address.)
  size_t max_connections_per_address = 0;
  size_t max_header_bytes = 64 << 10; // request line + headers (431 beyond)
  size_t max_body_bytes = 1 << 20;    // body data, chunked or not (413 beyond)
  double header_timeout_s = 10.0;     // from a request's first byte (a new connection: from
                                      // accept) to the end of its headers (408 after)
  double body_timeout_s = 30.0;       // from the end of the headers to the end of the body
  double idle_timeout_s = 5.0;        // keep-alive: wait for the next request's first byte
  int workers = 16;                   // threads running complete non-GET requests
  int light_workers = 2;              // threads running GET / HEAD requests
  size_t max_pending = 64;            // complete requests waiting for a worker, per lane
  size_t max_requests_per_connection = 100;
  // The body of an error answered by the front itself (status, message); default: a JSON
  // {"error": {"message": ...}} object.
  std::function<std::string(int status, const std::string& message)> error_body;
};

// One complete request, exactly its bytes as received (an "Expect: 100-continue" header is
// taken out: the front has already answered it).
struct FrontRequest {
  int fd = -1;
  std::string bytes;
  std::string method;
  bool last = false;  // the connection closes after this answer ("Connection: close")
};

// Where the request at the head of a buffer ends. Incremental: feed() resumes where it stopped,
// so a body that arrives a byte at a time is parsed in linear time.
class RequestFraming {
 public:
  enum class State { kNeedMore, kComplete, kError };
  explicit RequestFraming(const FrontLimits& lim) : lim_(&lim) {}
  // Parses buf (the connection's bytes, the request at offset 0) as far as it goes.
  State feed(std::string_view buf);
  bool in_body() const { return head_len_ > 0; }
  bool expects_continue() const { return expect_continue_; }
  size_t head_len() const { return head_len_; }
  size_t length() const { return end_; }      // kComplete: bytes of the request
  int status() const { return status_; }      // kError: the answer's status
  const std::string& message() const { return message_; }
  const std::string& method() const { return method_; }
  // [begin, end) of each "Expect:" header line within the head (taken out before handing over).
  const std::vector<std::pair<size_t, size_t>>& expect_lines() const { return expect_lines_; }

 private:
  State fail(int status, std::string message);
  State parse_head(std::string_view head);
  State parse_chunked(std::string_view buf);

  const FrontLimits* lim_;
  size_t scan_ = 0;       // head: where the search for the blank line resumes
  size_t head_len_ = 0;   // > 0 once the header block (with its blank line) is complete
  size_t end_ = 0;
  bool chunked_ = false;
  uint64_t content_length_ = 0;
  bool expect_continue_ = false;
  std::vector<std::pair<size_t, size_t>> expect_lines_;
  std::string method_;
  // chunked body
  enum class Chunk { kSize, kData, kDataEnd, kTrailer } chunk_ = Chunk::kSize;
  size_t pos_ = 0;            // next unparsed byte of the body framing
  uint64_t chunk_left_ = 0;
  uint64_t body_data_ = 0;
  int status_ = 0;
  std::string message_;
};

// The request's bytes without the Expect: header lines framing found (the rest byte-identical).
std::string without_expect(std::string_view bytes, const RequestFraming& f);

class Front {
 public:
  struct Stats {
    uint64_t open = 0, accepted = 0, rejected_cap = 0, rejected_address = 0, rejected_busy = 0,
             header_timeouts = 0, body_timeouts = 0, too_large = 0, bad_framing = 0;
  };
  // Runs one request on a worker thread: writes its answer to fd and returns whether the
  // connection may carry another request. Must not close fd.
  using Handler = std::function<bool(const FrontRequest&)>;

  Front(FrontLimits limits, Handler handler);
  ~Front();
  Front(const Front&) = delete;
  Front& operator=(const Front&) = delete;

  void adopt(int fd);  // takes ownership of an accepted socket (any thread)
  // Stops reading, closes every connection that is not in a handler, waits for the handlers
  // running and drops the requests still queued. Idempotent.
  void shutdown();
  Stats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace huginn::server
