// The HTTP layer (the only file that includes cpp-httplib): routes, bearer-token auth, body
// limits, 503 when the queue is full, streaming over server-sent events, and a catch-all so
// that nothing a client sends can take the process down.
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <mutex>

#include "huginn/error.h"
#include "huginn/log.h"
#include "huginn/server.h"
#include "server/conn_watch.h"
#include "server/engine.h"
#include "server/metrics.h"
#include "server/openai.h"
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

// Bounded label set for /metrics, whatever paths clients try.
std::string endpoint_label(const std::string& path) {
  for (const char* p : {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health",
                        "/metrics", "/tokenize", "/detokenize"})
    if (path == p) return p;
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models";
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

  ServerOptions opts;
  server::Engine engine;
  server::Scheduler sched;
  server::Metrics metrics;
  server::ServeLimits limits;
  int64_t created;
  httplib::Server http;
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
  const server::ConnectionWatch watch(req.local_addr, req.local_port, req.remote_addr,
                                      req.remote_port);
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

void Server::Impl::setup() {
  // One thread per open connection (a queued request waits on its thread). Capped: each thread
  // that tokenizes keeps thread-local tokenizer word caches (~1-2 MB), so RSS plateaus at about
  // threads x that; connections beyond the cap wait in httplib's accept queue.
  const int http_threads = std::min(128, opts.parallel + opts.max_queue + 8);
  http.new_task_queue = [http_threads] { return new httplib::ThreadPool(http_threads); };
  http.set_payload_max_length(opts.max_body_bytes);
  http.set_keep_alive_timeout(5);
  http.set_read_timeout(30);

  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    const bool open = req.path == "/health" || req.path == "/metrics";
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
    r.set_content(metrics.render(sched.queued(), sched.active(), sched.slots()),
                  "text/plain; version=0.0.4");
  });
  http.Post("/tokenize", guarded([this](const httplib::Request& q, httplib::Response& r) {
              r.set_content(server::tokenize_json(q.body, engine.tokenizer()), kJson);
            }));
  http.Post("/detokenize", guarded([this](const httplib::Request& q, httplib::Response& r) {
              r.set_content(server::detokenize_json(q.body, engine.tokenizer()), kJson);
            }));
}

namespace {
void check_options(const ServerOptions& o) {
  if (o.parallel < 1 || o.parallel > 256)
    throw Error("--parallel must be in [1, 256], got " + std::to_string(o.parallel));
  if (o.max_batch < 0 || o.max_batch > 256)
    throw Error("--max-batch must be in [0, 256] (0 = --parallel, 1 = off), got " +
                std::to_string(o.max_batch));
  if (o.max_queue < 0 || o.max_queue > 100000)
    throw Error("--max-queue must be in [0, 100000], got " + std::to_string(o.max_queue));
  if (o.port < 0 || o.port > 65535) throw Error("--port must be in [0, 65535]");
  if (!(o.timeout_s >= 0)) throw Error("--timeout must be >= 0 seconds (0 = none)");
  if (o.max_steps_limit < 1) throw Error("--max-steps-limit must be >= 1");
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
  int port = impl_->opts.port;
  if (port == 0) {
    port = impl_->http.bind_to_any_port(impl_->opts.host);
    if (port < 0) throw Error("cannot bind " + impl_->opts.host + " on any port");
  } else if (!impl_->http.bind_to_port(impl_->opts.host, port)) {
    throw Error("cannot bind " + impl_->opts.host + ":" + std::to_string(port) +
                " (in use, or not an address of this machine)");
  }
  if (on_listening) on_listening(port);
  impl_->http.listen_after_bind();
}

void Server::stop() {
  if (impl_) impl_->http.stop();
}

}  // namespace huginn
