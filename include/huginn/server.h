// An OpenAI-compatible HTTP server for a recurrent-depth model: /v1/completions and
// /v1/chat/completions (streaming or not), /v1/models, /health, /metrics, /tokenize,
// /detokenize. Each request may choose its own recurrence (num_steps, exit criterion, cache
// slots, warm start, initial state) and is told how many iterations each token took.
//
// Layers (src/server/): http.cc (cpp-httplib routes, auth, limits) -> openai.cc (request JSON
// -> EngineRequest, results -> response JSON, error bodies) -> scheduler.cc (N slots pulling
// from the bounded queue.cc) -> engine.cc (one const Model, a GenerationContext per request).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace huginn {

struct ServerOptions {
  std::string model_dir;
  std::string tokenizer_path;   // "" = MODEL/tokenizer.json
  std::string model_name;       // the id clients send as "model"; "" = the directory's name
  std::string host = "127.0.0.1";
  int port = 8080;              // 0 = any free port (reported through on_listening)
  int parallel = 2;             // requests generated at once (slots)
  // Decode calls of concurrent requests run as one batch of up to this many rows (one token
  // per request; huginn/decode_batcher.h). 0 = automatic (--parallel for models of >= 4 M
  // parameters, where it pays; off below); 1 = off (each slot decodes alone).
  int max_batch = 0;
  // Prefix cache: KV entries of earlier prompts reused by prompts that begin with the same
  // tokens (fixed-depth prompt passes with a full cache: Generator::prefix_key), at most this
  // many MiB, least recently used dropped first; 0 = off.
  int prefix_cache_mb = 512;
  // Chunked prefill: in the decode batch, a prompt runs as chunks of this many tokens (rounded
  // down to a multiple of the backend's attention_split_rows, at least one; fixed-depth prompts
  // with a full cache: Generator::splits_calls), so a long prompt holds up the other requests'
  // decode for a chunk's pass, not the whole prompt's. 0 = off. Answers are identical.
  int prefill_chunk = 256;
  int max_queue = 64;           // requests waiting for a slot; more are answered 503
  std::string api_key;          // non-empty: every /v1 request needs "Authorization: Bearer KEY"
  double timeout_s = 600.0;     // per request, queue wait included; 0 = none
  size_t max_body_bytes = 1 << 20;
  // Connections: at most max_connections open (more are answered 503 and closed at once), and
  // at most max_connections_per_address of them from one client address when that is set; a
  // request's headers must arrive within header_timeout_s of its first byte and its body within
  // body_timeout_s of the headers (totals, not per byte; 408 after).
  int max_connections = 1024;
  int max_connections_per_address = 0;  // from one client IP address; 0 = no such limit
  double header_timeout_s = 10.0;
  double body_timeout_s = 30.0;
  int threads = 0;              // compute threads shared by all slots (0 = one per core)
  std::string backend = "cpu";
  std::string weight_dtype = "f32";  // f32 | bf16 | q8 | q4 | auto (parse_weight_dtype)
  int max_steps_limit = 256;    // largest num_steps / max_steps a request may ask for
};

class Server {
 public:
  // Loads the model and tokenizer; throws huginn::Error for bad files or options.
  explicit Server(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and serves until stop(); on_listening(port) is called once the socket is bound.
  // Throws huginn::Error when the address cannot be bound.
  void run(const std::function<void(int port)>& on_listening = {});
  void stop();  // safe from any thread (e.g. a signal-watching one)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace huginn
