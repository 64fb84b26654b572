// The server's request bodies (src/server/openai.h: what the HTTP layer hands a POST body to):
// parse_request for /v1/completions and /v1/chat/completions, tokenize_json and detokenize_json,
// on an Engine of tiny-b with a small byte-level tokenizer trained at start (the e2e tests' model).
// Byte 0 picks the endpoint; the rest is the body. A rejected body must raise server::ApiError (or
// huginn::Error), whose error_body() must be valid JSON; an accepted request must satisfy what the
// parser promises (a prompt within the context length, max_new_tokens >= 1).
#include <filesystem>
#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "huginn/thread_pool.h"
#include "huginn/tokenizer.h"
#include "server/openai.h"

using namespace huginn;
using namespace huginn::server;

namespace {

const Engine& engine() {
  static const std::unique_ptr<Engine> e = [] {
    const std::string dir = fuzz::fresh_dir("http_model") + "/tiny";
    std::filesystem::create_directories(dir);
    for (const char* f : {"config.json", "model.safetensors"})
      std::filesystem::create_symlink(fuzz::test_data(std::string("golden/tiny-b/") + f),
                                      dir + "/" + f);
    BpeTrainOptions o;
    o.vocab_size = 280;
    o.special_tokens = {"<|begin_text|>", "<|end_text|>", "<|begin_header|>", "<|end_header|>",
                        "<|end_turn|>"};
    o.progress = false;
    ThreadPool pool(1);
    fuzz::write_file(dir + "/tokenizer.json",
                     train_bpe({"hello world, hello there. the world says hello back",
                                "hello hello world"},
                               o, pool));
    ServerOptions so;
    so.model_dir = dir;
    so.model_name = "tiny";
    so.threads = 1;
    so.max_batch = 1;
    return std::make_unique<Engine>(so);
  }();
  return *e;
}

void check_error_body(const ApiError& e) {
  const std::string body = error_body(e);
  fuzz::check(nlohmann::json::accept(body), "error_body() is not valid JSON: " + body);
  fuzz::check(e.status >= 400 && e.status < 600, "error status " + std::to_string(e.status));
}

const fuzz::Setup setup([] {
  engine();
});

}  // namespace

HUGINN_FUZZ_TARGET(http_request) {
  if (size == 0) return;
  const Engine& eng = engine();
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  ServeLimits limits;
  limits.model_name = "tiny";
  try {
    switch (data[0] % 4) {
      case 0:
      case 1: {
        const Endpoint ep = data[0] % 4 == 0 ? Endpoint::kCompletions : Endpoint::kChat;
        const ParsedRequest p = parse_request(ep, body, eng, limits);
        fuzz::check(!p.engine.prompt.empty(), "accepted a request with an empty prompt");
        fuzz::check(static_cast<int64_t>(p.engine.prompt.size()) <= eng.context_length(),
                    "accepted a prompt longer than the context");
        for (int32_t id : p.engine.prompt)
          fuzz::check(id >= 0 && id < eng.model().config().vocab_size,
                      "accepted prompt id " + std::to_string(id) + " outside the vocabulary");
        fuzz::check(p.engine.options.max_new_tokens >= 1, "accepted max_new_tokens < 1");
        break;
      }
      case 2:
        fuzz::check(nlohmann::json::accept(tokenize_json(body, eng.tokenizer())),
                    "tokenize_json() returned invalid JSON");
        break;
      case 3:
        fuzz::check(nlohmann::json::accept(detokenize_json(body, eng.tokenizer())),
                    "detokenize_json() returned invalid JSON");
        break;
    }
  } catch (const ApiError& e) {
    check_error_body(e);
  } catch (const huginn::Error& e) {
    check_error_body(ApiError(400, e.what()));
  }
}
