// The OpenAI wire format: request JSON -> EngineRequest (every field type- and range-checked,
// unknown fields refused as OpenAI does), results -> response JSON, streaming chunks (server-
// sent events), and OpenAI-style error bodies. No HTTP here, and no JSON types in this header.
//
// Extensions (listed by `huginn serve --help`): num_steps, exit_criterion, exit_threshold,
// max_steps, min_steps, check_every, cache_slots, cache_rule, warm_start, init_scale, top_k,
// min_p, repetition_penalty, return_iterations, ignore_eos. `usage` always carries
// mean_iterations_per_token; with return_iterations also iterations_per_token and
// exit_value_per_token (the exit criterion's value at each token's last check, null where none
// ran), and a stream sends one chunk per token whose choice carries `iterations` and
// `exit_value` (the chat page, server/page/, shades tokens by them).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "server/engine.h"

namespace huginn::server {

// Thrown by the parsing functions; the HTTP layer answers `status` with error_body().
struct ApiError {
  ApiError(int status_, std::string message_, std::string type_ = "", std::string param_ = "",
           std::string code_ = "")
      : status(status_), message(std::move(message_)), type(std::move(type_)),
        param(std::move(param_)), code(std::move(code_)) {}
  int status;
  std::string message;
  std::string type;   // "" = the usual one for the status (error_type_for)
  std::string param;  // "" = null
  std::string code;   // "" = null
};
std::string error_body(const ApiError& e);
// The error type OpenAI uses for a status (401 authentication_error, 404 not_found_error, ...).
std::string error_type_for(int status);

enum class Endpoint { kCompletions, kChat };

struct ParsedRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  EngineRequest engine;
  bool stream = false, include_usage = false;
  bool echo = false;              // completions: the prompt text precedes the completion
  bool return_iterations = false;
  std::string id, model;
  int64_t created = 0;
};

struct ServeLimits {
  std::string model_name;
  int max_steps = 256;
};

// Throws ApiError (400 malformed or out of range, 404 unknown model).
ParsedRequest parse_request(Endpoint endpoint, std::string_view body, const Engine& engine,
                            const ServeLimits& limits);
std::string response_json(const ParsedRequest& p, const EngineResult& r, const Tokenizer& tok);

// Server-sent events of one streamed request, in OpenAI's chunk format.
class StreamFormatter {
 public:
  StreamFormatter(const ParsedRequest& p, const Tokenizer& tok) : p_(p), tok_(tok) {}
  std::string start();                       // chat: the role chunk; completions: ""
  std::string token(const EngineEvent& ev);  // "" when there is nothing to send yet
  std::string finish(const EngineResult& r); // finish_reason chunk, usage chunk, [DONE]
  std::string error(const ApiError& e);      // an error event and [DONE]

 private:
  const ParsedRequest& p_;
  const Tokenizer& tok_;
};

std::string models_json(const std::string& model_name, int64_t created);
std::string model_json(const std::string& model_name, int64_t created);
std::string tokenize_json(std::string_view body, const Tokenizer& tok);    // throws ApiError
std::string detokenize_json(std::string_view body, const Tokenizer& tok);  // throws ApiError

}  // namespace huginn::server
