// The HTTP layer (the only file that includes cpp-httplib): routes, bearer-token auth, body
// limits, 503 when the queue is full, streaming over server-sent events, and a catch-all so
// that nothing a client sends can take the process down. Connections are not httplib's: each
// accepted socket goes to the front (server/front.h), which reads whole requests under
// deadlines and limits; httplib then processes one complete request at a time on a front worker.
#include <httplib.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <thread>

#include "huginn/error.h"
#include "huginn/log.h"
#include "huginn/server.h"
#include "server/conn_watch.h"
#include "server/engine.h"
#include "server/front.h"
#include "server/metrics.h"
#include "server/openai.h"
#include "server/page.h"
#include "server/scheduler.h"

namespace huginn {

using server::ApiError;
using server::Clock;

namespace {

constexpr const char* kJson = "application/json";

void reply_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(server::error_body(e), kJson);
}

bool is_page_file(const std::string& path) {
  for (const server::PageFile& f : server::page_files())
    if (path == f.path) return true;
  return false;
}

// httplib's routes are regular expressions: "/chat.js" as written would also match "/chatXjs".
std::string regex_literal(std::string_view path) {
  std::string out;
  for (char c : path) {
    if (c != '\0' && std::strchr(".^$|()[]{}*+?\\", c)) out += '\\';
    out += c;
  }
  return out;
}

// Bounded label set for /metrics, whatever paths clients try.
std::string endpoint_label(const std::string& path) {
  for (const char* p : {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health",
                        "/metrics", "/tokenize", "/detokenize"})
    if (path == p) return p;
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models";
  if (is_page_file(path)) return "page";
  return "other";
}

// Text produced by a slot, consumed by the HTTP thread streaming it.
struct Channel {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> items;
  bool done = false;
  void push(std::string s, bool last = false) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!s.empty()) items.push_back(std::move(s));
      done = done || last;
    }
    cv.notify_one();
  }
};

// The outcome of a non-streamed request.
struct Outcome {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  int status = 200;
  std::string body;
};

// Larger than any burst we answer (a 200-connection flood); the kernel caps it at
// net.core.somaxconn. httplib 0.11 listens with CPPHTTPLIB_LISTEN_BACKLOG = 5, compiled into
// Debian's shared library, and connections beyond it waited in SYN retries for seconds.
constexpr int kListenBacklog = 4096;
constexpr int kWriteStallMs = 10000;  // a client that takes none of the answer for 10 s is dropped

// The socket of the request this front worker is running (-1 outside one): the connection
// watch polls it directly instead of searching /proc/self/fd for the request's addresses.
thread_local int t_request_fd = -1;

// httplib's Server with its connection handling handed to the front: httplib still binds,
// listens and accepts, but each accepted socket goes straight to on_accept (its
// process_and_close_socket, which would have held a thread for the connection's life, is
// overridden), and the front's workers call process_request on one complete request.
class FrontedHttp : public httplib::Server {
 public:
  std::function<void(int)> on_accept;
  using httplib::Server::process_request;
  // listen() on a listening socket only changes its backlog.
  bool set_backlog(int n) { return ::listen(svr_sock_, n) == 0; }

 private:
  bool process_and_close_socket(socket_t sock) override {
    on_accept(sock);
    return true;
  }
};

// Runs each task where it is enqueued: the accept loop's task only hands a socket over.
class InlineTaskQueue : public httplib::TaskQueue {
 public:
  void enqueue(std::function<void()> fn) override { fn(); }
  void shutdown() override {}
};

void socket_endpoint(int fd, bool peer, std::string& ip, int& port) {
  sockaddr_storage a{};
  socklen_t n = sizeof a;
  const int rc = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&a), &n)
                      : getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
  if (rc != 0) return;
  char host[NI_MAXHOST];
  if (getnameinfo(reinterpret_cast<sockaddr*>(&a), n, host, sizeof host, nullptr, 0,
                  NI_NUMERICHOST) == 0)
    ip = host;
  if (a.ss_family == AF_INET) port = ntohs(reinterpret_cast<sockaddr_in*>(&a)->sin_port);
  if (a.ss_family == AF_INET6) port = ntohs(reinterpret_cast<sockaddr_in6*>(&a)->sin6_port);
}

// One complete request (read by the front) as httplib's input; the answer goes to the socket.
class RequestStream : public httplib::Stream {
 public:
  RequestStream(int fd, std::string_view in) : fd_(fd), in_(in) {}
  bool is_readable() const override { return pos_ < in_.size(); }
  // Writable, and the client still there (a peer that closed or half-closed is gone, as for
  // server/conn_watch.h).
  bool is_writable() const override {
    pollfd p{fd_, POLLOUT | POLLRDHUP, 0};
    if (::poll(&p, 1, kWriteStallMs) <= 0) return false;
    return (p.revents & POLLOUT) && !(p.revents & (POLLERR | POLLHUP | POLLRDHUP));
  }
  ssize_t read(char* ptr, size_t size) override {
    const size_t n = std::min(size, in_.size() - pos_);
    std::memcpy(ptr, in_.data() + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }
  // All of it, or -1: the socket is non-blocking, so wait for room, at most kWriteStallMs
  // without progress.
  ssize_t write(const char* ptr, size_t size) override {
    size_t off = 0;
    while (off < size) {
      const ssize_t n = ::send(fd_, ptr + off, size - off, MSG_NOSIGNAL);
      if (n > 0) {
        off += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        pollfd p{fd_, POLLOUT, 0};
        const int r = ::poll(&p, 1, kWriteStallMs);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0 || (p.revents & (POLLERR | POLLHUP))) return failed(-1);
        continue;
      }
      return failed(-1);
    }
    return static_cast<ssize_t>(size);
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    socket_endpoint(fd_, true, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    socket_endpoint(fd_, false, ip, port);
  }
  socket_t socket() const override { return fd_; }
  bool broken() const { return broken_; }

 private:
  ssize_t failed(ssize_t r) {
    broken_ = true;
    return r;
  }
  int fd_;
  std::string_view in_;
  size_t pos_ = 0;
  bool broken_ = false;
};

}  // namespace

struct Server::Impl {
  explicit Impl(ServerOptions o)
      : opts(std::move(o)),
        engine(opts),
        sched(opts.parallel, static_cast<size_t>(opts.max_queue)),
        created(std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count()) {
    limits.model_name = opts.model_name;
    if (limits.model_name.empty())
      limits.model_name = std::filesystem::path(opts.model_dir).lexically_normal().filename().string();
    if (limits.model_name.empty())
      limits.model_name = std::filesystem::path(opts.model_dir).lexically_normal().parent_path().filename().string();
    limits.max_steps = opts.max_steps_limit;
    setup();
  }

  void setup();
  void generate(server::Endpoint ep, const httplib::Request& req, httplib::Response& res);
  void run_blocking(server::ParsedRequest p, Clock::time_point t0, const httplib::Request& req,
                    httplib::Response& res);
  void run_streaming(server::ParsedRequest p, Clock::time_point t0, httplib::Response& res);
  void record(const server::EngineResult& r, Clock::time_point t0);
  bool authorized(const httplib::Request& req) const;
  bool handle(const server::FrontRequest& r);
  std::string connection_metrics() const;

  ServerOptions opts;
  server::Engine engine;
  server::Scheduler sched;
  server::Metrics metrics;
  server::ServeLimits limits;
  int64_t created;
  FrontedHttp http;
  std::unique_ptr<server::Front> front;  // after http: stopped (workers joined) before it goes
  // run() and stop() meet here (stop() comes from another thread, e.g. a signal watcher):
  // httplib's stop() does nothing before its listen loop runs, so a stop() that came while the
  // model loaded or before listening began was lost and the server then served for ever (found
  // by TSan, which saw the listening socket closed with nothing ordering it after its creation).
  std::mutex run_mu;
  bool stop_requested = false;
  bool running = false;  // inside run()
};

bool Server::Impl::authorized(const httplib::Request& req) const {
  if (opts.api_key.empty()) return true;
  const std::string want = "Bearer " + opts.api_key;
  const std::string got = req.get_header_value("Authorization");
  // Length-independent comparison time is not a goal here; equality is.
  return got == want;
}

void Server::Impl::record(const server::EngineResult& r, Clock::time_point t0) {
  metrics.prompt_tokens += static_cast<uint64_t>(r.gen.prompt_tokens);
  metrics.completion_tokens += r.gen.tokens.size();
  for (int s : r.gen.steps) {
    metrics.iterations += static_cast<uint64_t>(s);
    metrics.iterations_per_token.observe(s);
  }
  if (r.cancelled) ++metrics.cancelled;
  if (r.timed_out) ++metrics.timed_out;
  metrics.latency.observe(std::chrono::duration<double>(Clock::now() - t0).count());
}

void Server::Impl::run_blocking(server::ParsedRequest p, Clock::time_point t0,
                                const httplib::Request& req, httplib::Response& res) {
  auto out = std::make_shared<Outcome>();
  auto rq = std::make_shared<server::ParsedRequest>(std::move(p));
  const bool queued = sched.submit([this, out, rq, t0] {
    int status = 200;
    std::string body;
    try {
      if (rq->engine.cancel->load()) {  // the client left while the request was queued
        ++metrics.cancelled;
        status = 499;
        body = server::error_body({499, "the client closed the connection", "cancelled"});
      } else if (Clock::now() > rq->engine.deadline) {
        status = 504;
        body = server::error_body({504, "the request timed out waiting for a free slot", "timeout_error"});
      } else {
        bool first = true;
        server::EngineResult r = engine.run(rq->engine, [&](const server::EngineEvent&) {
          if (first) metrics.first_token.observe(std::chrono::duration<double>(Clock::now() - t0).count());
          first = false;
        });
        record(r, t0);
        if (r.timed_out) {
          status = 504;
          body = server::error_body({504, "the request timed out while generating", "timeout_error"});
        } else {
          body = server::response_json(*rq, r, engine.tokenizer());
        }
      }
    } catch (const Error& e) {
      status = 400;
      body = server::error_body({400, e.what()});
    } catch (const std::exception& e) {
      status = 500;
      body = server::error_body({500, std::string("internal error: ") + e.what(), "server_error"});
    }
    std::lock_guard<std::mutex> lock(out->mu);
    out->status = status;
    out->body = std::move(body);
    out->done = true;
    out->cv.notify_all();
  });
  if (!queued) {
    ++metrics.rejected_full;
    res.set_header("Retry-After", "1");
    return reply_error(res, {503, "the server is busy: the request queue is full, retry later",
                             "server_overloaded_error", "", "queue_full"});
  }
  // A client that closes its connection cancels the job (see server/conn_watch.h); the engine
  // sees the flag after the token in progress, a queued job before it starts.
  const server::ConnectionWatch watch =
      t_request_fd >= 0 ? server::ConnectionWatch::of_socket(t_request_fd)
                        : server::ConnectionWatch(req.local_addr, req.local_port,
                                                  req.remote_addr, req.remote_port);
  const auto tick = std::chrono::milliseconds(watch.valid() ? 20 : 1000);
  std::unique_lock<std::mutex> lock(out->mu);
  // The job checks the deadline itself; the grace period lets it report a timeout.
  const auto limit = rq->engine.deadline == Clock::time_point::max()
                         ? Clock::time_point::max()
                         : rq->engine.deadline + std::chrono::seconds(5);
  while (!out->done) {
    const auto until = std::min(limit, Clock::now() + tick);
    if (out->cv.wait_until(lock, until) == std::cv_status::no_timeout || out->done) continue;
    if (Clock::now() >= limit) {
      rq->engine.cancel->store(true);
      return reply_error(res, {504, "the request timed out", "timeout_error"});
    }
    if (!rq->engine.cancel->load() && watch.gone()) rq->engine.cancel->store(true);
  }
  res.status = out->status;
  res.set_content(out->body, kJson);
}

void Server::Impl::run_streaming(server::ParsedRequest p, Clock::time_point t0,
                                 httplib::Response& res) {
  auto ch = std::make_shared<Channel>();
  auto rq = std::make_shared<server::ParsedRequest>(std::move(p));
  auto cancel = rq->engine.cancel;
  const bool queued = sched.submit([this, ch, rq, t0] {
    server::StreamFormatter fmt(*rq, engine.tokenizer());
    try {
      if (rq->engine.cancel->load()) return ch->push("", true);
      if (Clock::now() > rq->engine.deadline)
        return ch->push(fmt.error({504, "the request timed out waiting for a free slot", "timeout_error"}), true);
      ch->push(fmt.start());
      bool first = true;
      server::EngineResult r = engine.run(rq->engine, [&](const server::EngineEvent& ev) {
        if (first) metrics.first_token.observe(std::chrono::duration<double>(Clock::now() - t0).count());
        first = false;
        ch->push(fmt.token(ev));
      });
      record(r, t0);
      if (r.timed_out)
        ch->push(fmt.error({504, "the request timed out while generating", "timeout_error"}), true);
      else
        ch->push(fmt.finish(r), true);
    } catch (const Error& e) {
      ch->push(fmt.error({400, e.what()}), true);
    } catch (const std::exception& e) {
      ch->push(fmt.error({500, std::string("internal error: ") + e.what(), "server_error"}), true);
    }
  });
  if (!queued) {
    ++metrics.rejected_full;
    res.set_header("Retry-After", "1");
    return reply_error(res, {503, "the server is busy: the request queue is full, retry later",
                             "server_overloaded_error", "", "queue_full"});
  }
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [ch, cancel](size_t, httplib::DataSink& sink) {
        std::unique_lock<std::mutex> lock(ch->mu);
        while (ch->items.empty() && !ch->done) {
          ch->cv.wait_for(lock, std::chrono::milliseconds(100));
          if (sink.is_writable && !sink.is_writable()) {
            cancel->store(true);  // the client went away: stop generating
            return false;
          }
        }
        std::deque<std::string> items;
        items.swap(ch->items);
        const bool done = ch->done;
        lock.unlock();
        for (const std::string& s : items) {
          if (!sink.write(s.data(), s.size())) {
            cancel->store(true);
            return false;
          }
        }
        if (done) sink.done();
        return true;
      },
      [cancel](bool success) {
        if (!success) cancel->store(true);
      });
}

void Server::Impl::generate(server::Endpoint ep, const httplib::Request& req,
                            httplib::Response& res) {
  const auto t0 = Clock::now();
  server::ParsedRequest p = server::parse_request(ep, req.body, engine, limits);
  p.engine.cancel = std::make_shared<std::atomic<bool>>(false);
  if (opts.timeout_s > 0)
    p.engine.deadline = t0 + std::chrono::duration_cast<Clock::duration>(
                                 std::chrono::duration<double>(opts.timeout_s));
  if (p.stream)
    run_streaming(std::move(p), t0, res);
  else
    run_blocking(std::move(p), t0, req, res);
}

bool Server::Impl::handle(const server::FrontRequest& r) {
  RequestStream strm(r.fd, r.bytes);
  bool closed = false;
  t_request_fd = r.fd;  // the handlers run on this thread, inside process_request
  const bool ok = http.process_request(strm, r.last, closed, nullptr);
  t_request_fd = -1;
  return ok && !closed && !r.last && !strm.broken();
}

std::string Server::Impl::connection_metrics() const {
  const server::Front::Stats s = front->stats();
  std::string out =
      "# HELP huginn_connections_open Client connections held by the server.\n"
      "# TYPE huginn_connections_open gauge\nhuginn_connections_open " +
      std::to_string(s.open) +
      "\n# HELP huginn_connections_refused_total Connections or requests the connection front "
      "answered with an error itself.\n# TYPE huginn_connections_refused_total counter\n";
  const std::pair<const char*, uint64_t> rows[] = {
      {"connection_limit", s.rejected_cap}, {"address_limit", s.rejected_address},
      {"workers_busy", s.rejected_busy},
      {"header_timeout", s.header_timeouts}, {"body_timeout", s.body_timeouts},
      {"too_large", s.too_large}, {"bad_framing", s.bad_framing}};
  for (const auto& [reason, n] : rows)
    out += std::string("huginn_connections_refused_total{reason=\"") + reason + "\"} " +
           std::to_string(n) + "\n";
  return out;
}

void Server::Impl::setup() {
  // Workers run complete requests only (server/front.h); a blocking generation waits on its
  // worker, so there is one for each slot and queue place plus spare ones for quick requests.
  // Capped: each worker that tokenizes keeps thread-local tokenizer word caches (~1-2 MB), so
  // RSS plateaus at about workers x that. GET requests have their own two workers.
  server::FrontLimits fl;
  fl.max_connections = static_cast<size_t>(opts.max_connections);
  fl.max_connections_per_address = static_cast<size_t>(opts.max_connections_per_address);
  fl.max_body_bytes = opts.max_body_bytes;
  fl.header_timeout_s = opts.header_timeout_s;
  fl.body_timeout_s = opts.body_timeout_s;
  fl.workers = std::min(128, opts.parallel + opts.max_queue + 8);
  fl.light_workers = 2;
  fl.error_body = [](int status, const std::string& message) {
    return server::error_body({status, message});
  };
  front = std::make_unique<server::Front>(fl, [this](const server::FrontRequest& r) {
    return handle(r);
  });
  http.on_accept = [this](int fd) { front->adopt(fd); };
  http.new_task_queue = [] { return new InlineTaskQueue; };
  http.set_payload_max_length(opts.max_body_bytes);  // the front has checked it already
  http.set_keep_alive_timeout(static_cast<time_t>(fl.idle_timeout_s));
  http.set_keep_alive_max_count(fl.max_requests_per_connection);

  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    // The chat page's files are open (static, no secret in them); the page sends the key.
    const bool open = req.path == "/health" || req.path == "/metrics" ||
                      (req.method == "GET" && is_page_file(req.path));
    if (!open && !authorized(req)) {
      reply_error(res, {401, "Incorrect API key provided: send 'Authorization: Bearer KEY'",
                        "invalid_request_error", "", "invalid_api_key"});
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // Any error reply without a body (unknown route, body too large, bad request line) gets an
  // OpenAI-style one.
  http.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req,
                                                                  httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string msg = res.status == 404   ? "Invalid URL (" + req.method + " " + req.path + ")"
                      : res.status == 413 ? std::string("request body too large")
                      : res.status == 405 ? std::string("method not allowed")
                                          : "HTTP error " + std::to_string(res.status);
    res.set_content(server::error_body({res.status, msg}), kJson);
    return httplib::Server::HandlerResponse::Handled;
  }));
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res,
                                std::exception_ptr ep) {
    ApiError e{500, "internal error", "server_error"};
    try {
      std::rethrow_exception(ep);
    } catch (const ApiError& a) {
      e = a;
    } catch (const Error& x) {
      e = {400, x.what()};
    } catch (const std::exception& x) {
      e.message = std::string("internal error: ") + x.what();
    } catch (...) {
    }
    reply_error(res, e);
  });
  http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    metrics.count_request(endpoint_label(req.path), res.status);
  });

  // Handlers throw ApiError; the exception handler answers it.
  auto guarded = [](auto fn) {
    return [fn](const httplib::Request& req, httplib::Response& res) {
      try {
        fn(req, res);
      } catch (const ApiError& e) {
        reply_error(res, e);
      } catch (const Error& e) {
        reply_error(res, {400, e.what()});
      } catch (const std::exception& e) {
        reply_error(res, {500, std::string("internal error: ") + e.what(), "server_error"});
      } catch (...) {
        reply_error(res, {500, "internal error", "server_error"});
      }
    };
  };
  http.Post("/v1/completions", guarded([this](const httplib::Request& q, httplib::Response& r) {
              generate(server::Endpoint::kCompletions, q, r);
            }));
  http.Post("/v1/chat/completions", guarded([this](const httplib::Request& q, httplib::Response& r) {
              generate(server::Endpoint::kChat, q, r);
            }));
  http.Get("/v1/models", guarded([this](const httplib::Request&, httplib::Response& r) {
             r.set_content(server::models_json(limits.model_name, created), kJson);
           }));
  http.Get(R"(/v1/models/(.+))", guarded([this](const httplib::Request& q, httplib::Response& r) {
             if (q.matches[1] != limits.model_name)
               throw ApiError{404, "The model '" + std::string(q.matches[1]) + "' does not exist",
                              "invalid_request_error", "model", "model_not_found"};
             r.set_content(server::model_json(limits.model_name, created), kJson);
           }));
  http.Get("/health", [](const httplib::Request&, httplib::Response& r) {
    r.set_content(R"({"status":"ok"})", kJson);
  });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& r) {
    const DecodeBatcher::Stats bs = engine.batch_stats();
    metrics.decode_batches = bs.ticks;
    metrics.decode_batch_rows = bs.rows;
    metrics.prefill_chunks = bs.chunks;
    metrics.rider_rows = bs.rider_rows;
    metrics.rider_shared_passes = bs.shared_passes;
    metrics.lone_riders = bs.lone_riders;
    metrics.calls_sat_out = bs.calls_sat_out;
    metrics.max_batch_load = bs.max_load;
    r.set_content(metrics.render(sched.queued(), sched.active(), sched.slots()) +
                      connection_metrics(),
                  "text/plain; version=0.0.4");
  });
  for (const server::PageFile& f : server::page_files())
    http.Get(regex_literal(f.path), [&f](const httplib::Request&, httplib::Response& r) {
      r.set_header("Content-Security-Policy", std::string(server::page_csp()));
      r.set_header("X-Content-Type-Options", "nosniff");
      r.set_header("Cache-Control", "no-cache");
      r.set_content(f.body.data(), f.body.size(), std::string(f.content_type));
    });
  http.Post("/tokenize", guarded([this](const httplib::Request& q, httplib::Response& r) {
              r.set_content(server::tokenize_json(q.body, engine.tokenizer()), kJson);
            }));
  http.Post("/detokenize", guarded([this](const httplib::Request& q, httplib::Response& r) {
              r.set_content(server::detokenize_json(q.body, engine.tokenizer()), kJson);
            }));
}

namespace {
constexpr double kMaxTimeoutS = 86400.0;  // one day
constexpr size_t kMaxBodyBytes = size_t(1) << 30;
constexpr double kMinConnTimeoutS = 0.05, kMaxConnTimeoutS = 3600.0;

std::string fmt_num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

void check_options(const ServerOptions& o) {
  if (o.parallel < 1 || o.parallel > 256)
    throw Error("--parallel must be in [1, 256], got " + std::to_string(o.parallel));
  if (o.max_batch < 0 || o.max_batch > 256)
    throw Error("--max-batch must be in [0, 256] (0 = --parallel, 1 = off), got " +
                std::to_string(o.max_batch));
  if (o.prefix_cache_mb < 0 || o.prefix_cache_mb > (1 << 20))
    throw Error("--prefix-cache-mb must be in [0, 1048576] (0 = off), got " +
                std::to_string(o.prefix_cache_mb));
  if (o.prefill_chunk < 0 || o.prefill_chunk > (1 << 20))
    throw Error("--prefill-chunk must be in [0, 1048576] (0 = off), got " +
                std::to_string(o.prefill_chunk));
  if (o.max_queue < 0 || o.max_queue > 100000)
    throw Error("--max-queue must be in [0, 100000] (0 = no waiting: a request needs a free "
                "slot), got " + std::to_string(o.max_queue));
  if (o.port < 0 || o.port > 65535)
    throw Error("--port must be in [0, 65535], got " + std::to_string(o.port));
  // Bounded so that now + timeout fits a steady_clock time point (1e10 s overflowed it).
  if (!(o.timeout_s >= 0 && o.timeout_s <= kMaxTimeoutS))
    throw Error("--timeout must be a number of seconds in [0, " + fmt_num(kMaxTimeoutS) +
                "] (0 = none), got " + fmt_num(o.timeout_s));
  if (o.max_steps_limit < 1 || o.max_steps_limit > 65536)
    throw Error("--max-steps-limit must be in [1, 65536], got " +
                std::to_string(o.max_steps_limit));
  if (o.max_connections < 1 || o.max_connections > 65536)
    throw Error("--max-connections must be in [1, 65536], got " +
                std::to_string(o.max_connections));
  if (o.max_connections_per_address < 0 || o.max_connections_per_address > 65536)
    throw Error("--max-connections-per-address must be in [0, 65536] (0 = no limit), got " +
                std::to_string(o.max_connections_per_address));
  for (const auto& [flag, v] : {std::pair<const char*, double>{"--header-timeout", o.header_timeout_s},
                                {"--body-timeout", o.body_timeout_s}})
    if (!(v >= kMinConnTimeoutS && v <= kMaxConnTimeoutS))
      throw Error(std::string(flag) + " must be a number of seconds in [" +
                  fmt_num(kMinConnTimeoutS) + ", " + fmt_num(kMaxConnTimeoutS) + "], got " +
                  fmt_num(v));
  if (o.max_body_bytes < 1 || o.max_body_bytes > kMaxBodyBytes)
    throw Error("the body limit must be in [1 B, 1 GiB], got " + std::to_string(o.max_body_bytes) +
                " bytes");
}
}  // namespace

Server::Server(ServerOptions options) {
  check_options(options);
  impl_ = std::make_unique<Impl>(std::move(options));
}

Server::~Server() {
  stop();
  impl_->sched.stop();
}

void Server::run(const std::function<void(int)>& on_listening) {
  {
    std::lock_guard<std::mutex> lock(impl_->run_mu);
    if (impl_->stop_requested) return;
    impl_->running = true;
  }
  struct Ran {
    Impl& impl;
    ~Ran() {
      std::lock_guard<std::mutex> lock(impl.run_mu);
      impl.running = false;
    }
  } ran{*impl_};
  int port = impl_->opts.port;
  if (port == 0) {
    port = impl_->http.bind_to_any_port(impl_->opts.host);
    if (port < 0) throw Error("cannot bind " + impl_->opts.host + " on any port");
  } else if (!impl_->http.bind_to_port(impl_->opts.host, port)) {
    throw Error("cannot bind " + impl_->opts.host + ":" + std::to_string(port) +
                " (in use, or not an address of this machine)");
  }
  if (!impl_->http.set_backlog(kListenBacklog))
    throw Error(std::string("cannot set the listen backlog: ") + std::strerror(errno));
  if (on_listening) on_listening(port);
  {
    std::lock_guard<std::mutex> lock(impl_->run_mu);
    if (impl_->stop_requested) return;  // stop() came before listening: it waits for this
  }
  impl_->http.listen_after_bind();
  impl_->front->shutdown();  // answers in progress finish; idle connections close
}

void Server::stop() {
  if (!impl_) return;
  // Until run() either returns or has httplib listening, there is nothing httplib can stop:
  // wait (a few ms at most) for one or the other.
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(impl_->run_mu);
      impl_->stop_requested = true;
      if (!impl_->running) return;  // not started (it will not) or finished
      if (impl_->http.is_running()) {
        impl_->http.stop();
        return;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace huginn
