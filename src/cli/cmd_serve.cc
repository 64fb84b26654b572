// huginn serve: the OpenAI-compatible HTTP server (src/server/), with per-request recurrence
// control. Stops cleanly on SIGINT / SIGTERM.
#ifdef HUGINN_HAVE_SERVER
#include <csignal>
#include <cstdio>
#include <pthread.h>
#include <sys/resource.h>

#include <atomic>
#include <ctime>
#include <thread>

#include "cli/command.h"
#include "huginn/error.h"
#include "huginn/log.h"
#include "huginn/server.h"

namespace huginn::cli {
namespace {

constexpr const char* kExtensions =
    "Per-request extension fields of /v1/completions and /v1/chat/completions:\n"
    "  num_steps N            recurrences per token (default: the config's mean_recurrence)\n"
    "  exit_criterion NAME    adaptive exit: kl, minp-kl, entropy-diff, latent-diff, cosine,\n"
    "                         argmax-stability (default none); exit_threshold X; max_steps N\n"
    "  min_steps, check_every exit checks: not before min_steps, every check_every-th step\n"
    "  cache_slots K          share the core KV cache in K slots (0 = full); cache_rule s|r|prelude\n"
    "  warm_start B|MODE      continuous chain-of-thought (true, auto, latent, raw)\n"
    "  init_scale S           initial state scale (default 1; 0 = zeros); seed N\n"
    "  top_k, min_p, repetition_penalty    extra samplers\n"
    "  ignore_eos B           generate max_tokens tokens, ignoring stop ids\n"
    "  return_iterations B    usage.iterations_per_token and usage.exit_value_per_token (the\n"
    "                         exit criterion's value at each token's last check, null if none);\n"
    "                         streamed: one chunk per token with 'iterations' and 'exit_value'.\n"
    "                         usage.mean_iterations_per_token is always there\n"
    "The chat page (GET /) shades each token by its recurrences over these fields.\n";

struct Args {
  ServerOptions o;
  double max_body_mib = 1.0;
};

// Each connection is a file descriptor: raise the soft limit to the hard one, and hold no more
// connections than it leaves room for (model files, pipes and the listening socket need some).
int fit_connections(int wanted) {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) return wanted;
  if (r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
    getrlimit(RLIMIT_NOFILE, &r);
  }
  constexpr rlim_t kReserve = 64;
  if (r.rlim_cur == RLIM_INFINITY || r.rlim_cur >= static_cast<rlim_t>(wanted) + kReserve)
    return wanted;
  const int fit = r.rlim_cur > kReserve + 16 ? static_cast<int>(r.rlim_cur - kReserve) : 16;
  log(LogLevel::kWarn, "serve: --max-connections %d lowered to %d (open-file limit %llu)", wanted,
      fit, static_cast<unsigned long long>(r.rlim_cur));
  return fit;
}

void run(const Args& a, const Common& common) {
  ServerOptions o = a.o;
  o.threads = common.threads;
  o.backend = common.backend;
  o.weight_dtype = common.dtype;
  if (!(a.max_body_mib > 0 && a.max_body_mib <= 1024)) {
    char got[64];
    std::snprintf(got, sizeof got, "%g", a.max_body_mib);
    throw Error(std::string("--max-body-mib must be in (0, 1024], got ") + got);
  }
  o.max_body_bytes = static_cast<size_t>(a.max_body_mib * 1024 * 1024);
  if (o.max_connections >= 1 && o.max_connections <= 65536)  // else Server names the bounds
    o.max_connections = fit_connections(o.max_connections);
  // Signals go to a watcher thread only: block them before any thread is created.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  Server server(o);
  std::atomic<bool> finished{false};
  std::thread watcher([&server, &finished, set] {
    const timespec tick{0, 200 * 1000 * 1000};
    while (!finished.load()) {
      if (sigtimedwait(&set, nullptr, &tick) > 0) {
        server.stop();
        return;
      }
    }
  });
  struct Join {
    std::atomic<bool>& finished;
    std::thread& t;
    ~Join() {
      finished.store(true);
      t.join();
    }
  } join{finished, watcher};
  server.run([&](int port) {
    std::printf("huginn serve: listening on http://%s:%d\n", o.host.c_str(), port);
    std::fflush(stdout);
    log(LogLevel::kInfo, "serve: the chat page is at http://%s:%d/", o.host.c_str(), port);
  });
}

Registrar reg(90, [](CLI::App& app, Common& common) {
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(
      "serve", "OpenAI-compatible HTTP server with per-request recurrence control");
  sub->footer(kExtensions);
  sub->add_option("--model", a->o.model_dir, "model directory (config.json + safetensors)")
      ->required();
  sub->add_option("--tokenizer", a->o.tokenizer_path, "tokenizer.json (default: MODEL/tokenizer.json)");
  sub->add_option("--model-name", a->o.model_name,
                  "the model id clients send (default: the model directory's name)");
  sub->add_option("--host", a->o.host, "address to bind (default 127.0.0.1)");
  sub->add_option("--port", a->o.port, "port (0 = any free port; printed at start)");
  sub->add_option("--parallel", a->o.parallel, "requests generated at once (slots)");
  sub->add_option("--max-batch", a->o.max_batch,
                  "batch the decode steps of up to N concurrent requests into one pass "
                  "(0 = automatic: --parallel for models of 4 M parameters or more, where it pays, "
                  "else off; 1 = off; outputs are identical either way)");
  sub->add_option("--prefix-cache-mb", a->o.prefix_cache_mb,
                  "keep the KV entries of earlier prompts, up to N MiB (least recently used go "
                  "first), for later prompts that begin with the same tokens at a fixed depth "
                  "(usage.prompt_tokens_details.cached_tokens; answers are identical; 0 = off)");
  sub->add_option("--prefill-chunk", a->o.prefill_chunk,
                  "in the decode batch, run prompts in chunks of N tokens (rounded down to a "
                  "multiple of the attention's query block, 64 on CPU), so a long prompt stalls "
                  "the others' decode for one chunk at a time (fixed depth, full cache; answers "
                  "are identical; 0 = off; default 256)");
  sub->add_option("--max-queue", a->o.max_queue,
                  "requests waiting for a slot; beyond it the server answers 503 + Retry-After "
                  "(0 = none wait: a request is taken only when a slot is free)");
  sub->add_option("--api-key", a->o.api_key, "require 'Authorization: Bearer KEY' on /v1 routes");
  sub->add_option("--timeout", a->o.timeout_s, "per-request timeout in seconds, queue wait included (0 = none; at most 86400)");
  sub->add_option("--max-body-mib", a->max_body_mib,
                  "largest request body in MiB, chunked or not (default 1; at most 1024)");
  sub->add_option("--max-connections", a->o.max_connections,
                  "open client connections held at once; beyond, 503 + close (default 1024)");
  sub->add_option("--max-connections-per-address", a->o.max_connections_per_address,
                  "open connections from one client IP address; beyond, 503 + close (default 0: "
                  "no such limit; behind a reverse proxy every client has the proxy's address)");
  sub->add_option("--header-timeout", a->o.header_timeout_s,
                  "seconds a request's headers may take, from its first byte; total, not per "
                  "byte (default 10; 408 after)");
  sub->add_option("--body-timeout", a->o.body_timeout_s,
                  "seconds a request's body may take after its headers; total (default 30)");
  sub->add_option("--max-steps-limit", a->o.max_steps_limit,
                  "largest num_steps / max_steps a request may ask for (default 256)");
  add_common_options(sub, common);
  add_dtype_option(sub, common);
  sub->callback([a, &common] { run(*a, common); });
});

}  // namespace
}  // namespace huginn::cli
#endif  // HUGINN_HAVE_SERVER
