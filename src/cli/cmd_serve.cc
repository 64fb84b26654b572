// huginn serve: the OpenAI-compatible HTTP server (src/server/), with per-request recurrence
// control. Stops cleanly on SIGINT / SIGTERM.
#ifdef HUGINN_HAVE_SERVER
#include <csignal>
#include <cstdio>
#include <pthread.h>

#include <atomic>
#include <ctime>
#include <thread>

#include "cli/command.h"
#include "huginn/error.h"
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
    "  return_iterations B    usage.iterations_per_token (and per-chunk 'iterations' when\n"
    "                         streaming); usage.mean_iterations_per_token is always there\n";

struct Args {
  ServerOptions o;
  double max_body_mib = 1.0;
};

void run(const Args& a, const Common& common) {
  ServerOptions o = a.o;
  o.threads = common.threads;
  o.backend = common.backend;
  o.weight_dtype = common.dtype;
  if (!(a.max_body_mib > 0)) throw Error("--max-body-mib must be > 0");
  o.max_body_bytes = static_cast<size_t>(a.max_body_mib * 1024 * 1024);
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
  sub->add_option("--max-queue", a->o.max_queue,
                  "requests waiting for a slot; beyond it the server answers 503 + Retry-After");
  sub->add_option("--api-key", a->o.api_key, "require 'Authorization: Bearer KEY' on /v1 routes");
  sub->add_option("--timeout", a->o.timeout_s, "per-request timeout in seconds (0 = none)");
  sub->add_option("--max-body-mib", a->max_body_mib, "largest request body in MiB (default 1)");
  sub->add_option("--max-steps-limit", a->o.max_steps_limit,
                  "largest num_steps / max_steps a request may ask for (default 256)");
  add_common_options(sub, common);
  add_dtype_option(sub, common);
  sub->callback([a, &common] { run(*a, common); });
});

}  // namespace
}  // namespace huginn::cli
#endif  // HUGINN_HAVE_SERVER
