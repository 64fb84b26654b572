// OpenAI request parsing and response formatting (see openai.h).
#include "server/openai.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>

#include "huginn/error.h"
#include "huginn/model.h"
#include "huginn/wavefront.h"

namespace huginn::server {
namespace {

using nlohmann::json;

constexpr int kMaxJsonDepth = 64;
constexpr size_t kMaxStops = 4;
constexpr int kMaxTopLogprobs = 20;
constexpr double kGreedyTemperature = 1e-5;  // temperatures below it sample greedily

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

[[noreturn]] void bad(const std::string& param, const std::string& message,
                      const std::string& code = "") {
  throw ApiError{400, message, "invalid_request_error", param, code};
}

// nlohmann's parser recurses per nesting level: refuse absurd depth before parsing.
void check_depth(std::string_view body) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : body) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth)
        bad("", "request body nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
}

json parse_body(std::string_view body) {
  if (body.empty()) bad("", "request body is empty: expected a JSON object");
  check_depth(body);
  json j = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    bad("", "request body is not valid JSON (We could not parse the JSON body of your request.)");
  if (!j.is_object()) bad("", "request body must be a JSON object");
  return j;
}

// Typed accessors: absent or null -> fallback; wrong type -> 400 naming the field.
bool get_bool(const json& j, const char* key, bool fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) bad(key, std::string("'") + key + "' must be a boolean");
  return it->get<bool>();
}

double get_number(const json& j, const char* key, double fallback, double lo, double hi) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) bad(key, std::string("'") + key + "' must be a number");
  const double v = it->get<double>();
  if (!std::isfinite(v) || v < lo || v > hi)
    bad(key, std::string("'") + key + "' must be between " + json(lo).dump() + " and " +
                 json(hi).dump() + ", got " + it->dump());
  return v;
}

// A JSON number as an exact int64: integers as parsed, doubles only when integral and inside
// [-2^63, 2^63) (2^63 itself, e.g. 9223372036854775808.0, is one past INT64_MAX; converting it
// would be undefined). nullopt otherwise.
std::optional<int64_t> exact_int64(const json& v) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  const double d = v.get<double>();
  if (!std::isfinite(d) || d != std::floor(d) || d < -0x1p63 || d >= 0x1p63) return std::nullopt;
  return static_cast<int64_t>(d);
}

int64_t get_int(const json& j, const char* key, int64_t fallback, int64_t lo, int64_t hi) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) bad(key, std::string("'") + key + "' must be an integer");
  if (it->is_number_float()) {
    const double d = it->get<double>();
    if (!(std::isfinite(d) && d == std::floor(d)))
      bad(key, std::string("'") + key + "' must be an integer, got " + it->dump());
  }
  const std::optional<int64_t> v = exact_int64(*it);
  if (!v || *v < lo || *v > hi)
    bad(key, std::string("'") + key + "' must be an integer between " + std::to_string(lo) +
                 " and " + std::to_string(hi) + ", got " + it->dump());
  return *v;
}

std::string get_string(const json& j, const char* key, const std::string& fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_string()) bad(key, std::string("'") + key + "' must be a string");
  return it->get<std::string>();
}

const std::set<std::string>& known_fields(Endpoint ep) {
  static const std::set<std::string> common = {
      "model", "stream", "stream_options", "max_tokens", "temperature", "top_p", "n", "stop",
      "seed", "presence_penalty", "frequency_penalty", "logit_bias", "user", "logprobs",
      // extensions
      "num_steps", "exit_criterion", "exit_threshold", "max_steps", "min_steps", "check_every",
      "cache_slots", "cache_rule", "warm_start", "init_scale", "top_k", "min_p",
      "repetition_penalty", "return_iterations", "ignore_eos", "decode", "speculative",
      "diffusion"};
  static const std::set<std::string> completions = [] {
    auto s = common;
    s.insert({"prompt", "echo", "suffix", "best_of"});
    return s;
  }();
  static const std::set<std::string> chat = [] {
    auto s = common;
    s.insert({"messages", "top_logprobs", "max_completion_tokens", "response_format"});
    return s;
  }();
  return ep == Endpoint::kChat ? chat : completions;
}

std::vector<int32_t> ids_from_json(const json& arr, const char* param, int64_t vocab) {
  std::vector<int32_t> ids;
  for (const json& v : arr) {
    if (!v.is_number_integer()) bad(param, std::string("'") + param + "' token ids must be integers");
    const int64_t id = v.get<int64_t>();
    if (id < 0 || id >= vocab)
      bad(param, std::string("'") + param + "' token id " + std::to_string(id) +
                     " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

std::vector<int32_t> completion_prompt(const json& j, const Tokenizer& tok, int64_t vocab) {
  auto it = j.find("prompt");
  if (it == j.end() || it->is_null()) bad("prompt", "'prompt' is required");
  const json& p = *it;
  if (p.is_string()) return tok.encode(p.get<std::string>(), false);
  if (!p.is_array() || p.empty())
    bad("prompt", "'prompt' must be a string, an array of one string, or an array of token ids");
  if (p[0].is_string()) {
    if (p.size() != 1) bad("prompt", "only one prompt per request is supported (n = 1)");
    return tok.encode(p[0].get<std::string>(), false);
  }
  if (p[0].is_array()) {
    if (p.size() != 1) bad("prompt", "only one prompt per request is supported (n = 1)");
    return ids_from_json(p[0], "prompt", vocab);
  }
  return ids_from_json(p, "prompt", vocab);
}

std::string message_text(const json& content, size_t i) {
  const std::string param = "messages[" + std::to_string(i) + "].content";
  if (content.is_string()) return content.get<std::string>();
  if (content.is_array()) {
    std::string text;
    for (const json& part : content) {
      if (!part.is_object() || part.value("type", json()) != "text" || !part.contains("text") ||
          !part["text"].is_string())
        bad(param, "'" + param + "' parts must be {\"type\": \"text\", \"text\": string}");
      text += part["text"].get<std::string>();
    }
    return text;
  }
  bad(param, "'" + param + "' must be a string or an array of text parts");
}

std::vector<int32_t> chat_prompt(const json& j, const Tokenizer& tok) {
  auto it = j.find("messages");
  if (it == j.end() || !it->is_array() || it->empty())
    bad("messages", "'messages' must be a non-empty array");
  std::vector<ChatMessage> msgs;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    const std::string param = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) bad(param, "'" + param + "' must be an object");
    auto role = m.find("role");
    if (role == m.end() || !role->is_string())
      bad(param + ".role", "'" + param + ".role' must be a string");
    std::string r = role->get<std::string>();
    if (r == "developer") r = "system";
    if (r != "system" && r != "user" && r != "assistant")
      bad(param + ".role", "'" + param + ".role' must be system, developer, user or assistant, got '" +
                               r + "'");
    auto content = m.find("content");
    if (content == m.end() || content->is_null())
      bad(param + ".content", "'" + param + ".content' is required");
    msgs.push_back({r, message_text(*content, i)});
  }
  if (tok.chat_format() == ChatFormat::kNone)
    bad("messages", "this model's tokenizer has no chat template; use /v1/completions");
  return tok.encode(tok.apply_chat_template(msgs, true), false);
}

std::vector<std::string> stop_strings(const json& j) {
  auto it = j.find("stop");
  if (it == j.end() || it->is_null()) return {};
  std::vector<std::string> out;
  if (it->is_string()) {
    out.push_back(it->get<std::string>());
  } else if (it->is_array()) {
    if (it->size() > kMaxStops) bad("stop", "'stop' takes at most 4 sequences");
    for (const json& s : *it) {
      if (!s.is_string()) bad("stop", "'stop' must be a string or an array of strings");
      out.push_back(s.get<std::string>());
    }
  } else {
    bad("stop", "'stop' must be a string or an array of strings");
  }
  for (const auto& s : out)
    if (s.empty()) bad("stop", "'stop' sequences must not be empty");
  return out;
}

// "decode": sequential (default), wavefront, or the reference's samplers with their options in
// "speculative": {draft_steps, lookahead_for_draft, verification_threshold} or "diffusion":
// {inner_recurrence, headway, freeze_strategy, exit_t, max_wavefront, max_diffusion_steps,
// ema_embeds, state_noise_mixing, dampened_state_mixer, sqrt_mixer, continuous_compute,
// full_prefill}. Options are checked once the rest of the request is known (check_decode).
void parse_decode(const json& j, EngineRequest& r, const ServeLimits& lim) {
  r.decode = get_string(j, "decode", "sequential");
  if (r.decode != "sequential" && r.decode != "wavefront" && r.decode != "speculative" &&
      r.decode != "diffusion")
    bad("decode", "'decode' must be sequential, wavefront, speculative or diffusion");
  for (const char* k : {"speculative", "diffusion"}) {
    auto it = j.find(k);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_object()) bad(k, std::string("'") + k + "' must be an object");
    if (r.decode != k) bad(k, std::string("'") + k + "' needs 'decode': \"" + k + "\"");
  }
  static const std::set<std::string> spec_keys = {"draft_steps", "lookahead_for_draft", "verification_threshold"};
  static const std::set<std::string> diff_keys = {
      "inner_recurrence", "headway", "freeze_strategy", "exit_t", "max_wavefront",
      "max_diffusion_steps", "ema_embeds", "state_noise_mixing", "dampened_state_mixer",
      "sqrt_mixer", "continuous_compute", "full_prefill"};
  const json none = json::object();
  const json& sp = j.contains("speculative") && j["speculative"].is_object() ? j["speculative"] : none;
  const json& df = j.contains("diffusion") && j["diffusion"].is_object() ? j["diffusion"] : none;
  for (const auto& [k, v] : sp.items())
    if (!spec_keys.count(k)) bad("speculative", "unknown speculative option '" + k + "'");
  for (const auto& [k, v] : df.items())
    if (!diff_keys.count(k)) bad("diffusion", "unknown diffusion option '" + k + "'");
  SpeculativeOptions& so = r.speculative;
  so.draft_steps = static_cast<int>(get_int(sp, "draft_steps", 0, 0, lim.max_steps));
  so.lookahead_for_draft = static_cast<int>(get_int(sp, "lookahead_for_draft", 8, 1, 1024));
  so.verification_threshold = get_number(sp, "verification_threshold", 1.0, 0.0, 1.0);
  DiffusionOptions& d = r.diffusion;
  d.inner_recurrence = static_cast<int>(get_int(df, "inner_recurrence", 4, 1, lim.max_steps));
  d.headway = static_cast<int>(get_int(df, "headway", 1, 1, 1024));
  d.max_wavefront = static_cast<int>(get_int(df, "max_wavefront", 128, 0, 1 << 16));
  d.max_diffusion_steps = static_cast<int>(get_int(df, "max_diffusion_steps", 4096, 1, 1 << 20));
  d.exit_t = get_number(df, "exit_t", 0.03, 0.0, 1e9);
  d.ema_embeds = get_number(df, "ema_embeds", 0.1, 0.0, 0.999999);
  d.state_noise_mixing = get_number(df, "state_noise_mixing", 0.5, 0.0, 1.0);
  d.dampened_state_mixer = get_bool(df, "dampened_state_mixer", true);
  d.sqrt_mixer = get_bool(df, "sqrt_mixer", false);
  d.continuous_compute = get_bool(df, "continuous_compute", false);
  d.full_prefill = get_bool(df, "full_prefill", true);
  try {
    d.freeze_strategy = DiffusionOptions::parse_freeze(get_string(df, "freeze_strategy", "latent-diff"));
  } catch (const Error& e) {
    bad("diffusion", e.what());
  }
}

// The decoder's own checks against the request's other options (a 400 naming 'decode').
void check_decode(const EngineRequest& r, const Engine& engine) {
  if (r.decode == "sequential") return;
  // Wavefront and speculative choose each token from the logits sequential decoding would
  // (a final decode, a verified row); diffusion's frozen token is the last of a position's
  // guesses, each from a noisy window step, and those rows are not kept.
  if (r.decode == "diffusion" && (r.top_logprobs >= 0 || r.prompt_logprobs))
    bad("logprobs", "'logprobs' is not available with 'decode': \"diffusion\" (a frozen token's "
                    "logits are not kept); use sequential, wavefront or speculative");
  const int steps = r.options.steps > 0 ? r.options.steps : engine.default_steps();
  try {
    if (r.decode == "wavefront") WavefrontOptions{}.validate(r.options, steps);
    if (r.decode == "speculative") r.speculative.validate(r.options);
    if (r.decode == "diffusion") r.diffusion.validate(r.options, steps);
  } catch (const Error& e) {
    bad("decode", std::string("'decode' ") + r.decode + ": " + e.what());
  }
}

void parse_recurrence(const json& j, GenerateOptions& o, const ServeLimits& lim) {
  const std::string exit = get_string(j, "exit_criterion", "none");
  try {
    o.exit = ExitSpec::parse(exit);
  } catch (const Error& e) {
    bad("exit_criterion", std::string("'exit_criterion': ") + e.what());
  }
  const bool adaptive = o.exit.criterion != ExitCriterion::kNone;
  if (j.contains("exit_threshold") && !j["exit_threshold"].is_null()) {
    if (!adaptive) bad("exit_threshold", "'exit_threshold' needs 'exit_criterion'");
    o.exit.threshold = get_number(j, "exit_threshold", 0.0, 0.0, 1e9);
    if (o.exit.criterion == ExitCriterion::kArgmaxStability &&
        o.exit.threshold != std::floor(o.exit.threshold))
      bad("exit_threshold", "'exit_threshold' of argmax-stability is a whole number of steps");
  }
  const int64_t steps = get_int(j, "num_steps", -1, 1, lim.max_steps);
  const int64_t max_steps = get_int(j, "max_steps", -1, 1, lim.max_steps);
  if (max_steps != -1 && !adaptive) bad("max_steps", "'max_steps' needs 'exit_criterion'");
  if (max_steps != -1 && steps != -1 && max_steps != steps)
    bad("max_steps", "'num_steps' and 'max_steps' disagree; with an exit criterion give max_steps");
  o.steps = static_cast<int>(max_steps != -1 ? max_steps : (steps != -1 ? steps : 0));
  o.min_steps = static_cast<int>(get_int(j, "min_steps", 0, 0, lim.max_steps));
  o.check_every = static_cast<int>(get_int(j, "check_every", 1, 1, lim.max_steps));
  o.cache_slots = static_cast<int>(get_int(j, "cache_slots", 0, 0, 1 << 16));
  const std::string rule = get_string(j, "cache_rule", "s");
  if (rule != "s" && rule != "r" && rule != "prelude")
    bad("cache_rule", "'cache_rule' must be s, r or prelude");
  if (o.cache_slots > 0)
    o.cache_strategy = rule == "r"         ? KVCache::Strategy::kCompressR
                       : rule == "prelude" ? KVCache::Strategy::kCompressSPrelude
                                           : KVCache::Strategy::kCompressS;
  auto ws = j.find("warm_start");
  if (ws != j.end() && !ws->is_null()) {
    if (ws->is_boolean()) {
      o.warm_start = ws->get<bool>() ? WarmStart::kAuto : WarmStart::kOff;
    } else if (ws->is_string() && (*ws == "auto" || *ws == "latent" || *ws == "raw")) {
      o.warm_start = *ws == "latent" ? WarmStart::kLatent
                     : *ws == "raw"  ? WarmStart::kRaw
                                     : WarmStart::kAuto;
    } else {
      bad("warm_start", "'warm_start' must be a boolean or one of auto, latent, raw");
    }
  }
  // The released generators' default: a random (seeded) initial state per call.
  o.init_scale = get_number(j, "init_scale", 1.0, 0.0, 100.0);
}

void parse_sampling(const json& j, GenerateOptions& o) {
  // OpenAI's range is [0, 2]. Below kGreedyTemperature logits / T overflows float (1e-40 made
  // every logit +-inf and the sampler NaN): such temperatures are the T -> 0 limit, greedy (as
  // vLLM does below 1e-5), not an error.
  const double temperature = get_number(j, "temperature", 1.0, 0.0, 2.0);
  o.sampling.greedy = temperature < kGreedyTemperature;
  o.sampling.temperature = static_cast<float>(o.sampling.greedy ? 1.0 : temperature);
  o.sampling.top_p = static_cast<float>(get_number(j, "top_p", 1.0, 0.0, 1.0));
  if (o.sampling.top_p <= 0.0f) bad("top_p", "'top_p' must be > 0");
  o.sampling.top_k = static_cast<int>(get_int(j, "top_k", 0, 0, 1 << 20));
  o.sampling.min_p = static_cast<float>(get_number(j, "min_p", 0.0, 0.0, 1.0));
  o.sampling.repetition_penalty =
      static_cast<float>(get_number(j, "repetition_penalty", 1.0, 1e-3, 100.0));
  for (const char* k : {"presence_penalty", "frequency_penalty"})
    if (get_number(j, k, 0.0, -2.0, 2.0) != 0.0)
      bad(k, std::string("'") + k + "' is not supported (use repetition_penalty)");
  auto lb = j.find("logit_bias");
  if (lb != j.end() && !lb->is_null() && !(lb->is_object() && lb->empty()))
    bad("logit_bias", "'logit_bias' is not supported");
  // A seed fixes both the initial states and the sampler; without one the initial states use
  // seed 0 (as `huginn generate`) and sampling draws a fresh seed. OpenAI's range for seed is
  // int64 ([-2^63, 2^63 - 1]); a negative seed is used as its two's-complement uint64.
  const bool seeded = j.contains("seed") && !j["seed"].is_null();
  const int64_t seed = get_int(j, "seed", 0, INT64_MIN, INT64_MAX);
  o.init_seed = static_cast<uint64_t>(seed);
  if (seeded) {
    o.sampling.seed = static_cast<uint64_t>(seed);
  } else {
    static std::atomic<uint64_t> counter{std::random_device{}()};
    o.sampling.seed = counter.fetch_add(0x9E3779B97F4A7C15ull);
  }
}

std::string new_id(const char* prefix) {
  static std::atomic<uint64_t> n{0};
  static const uint64_t salt = std::random_device{}();
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s%016llx", prefix,
                static_cast<unsigned long long>(salt ^ (++n * 0x9E3779B97F4A7C15ull)));
  return buf;
}

int64_t now_unix() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string finish_reason(const EngineResult& r) {
  if (r.timed_out || r.cancelled) return "length";
  return r.gen.finish_reason == "length" ? "length" : "stop";
}

// The tokens the client sees: a stop id that ended generation is not part of the text.
size_t visible_tokens(const EngineResult& r) {
  size_t n = r.gen.tokens.size();
  if (r.gen.finish_reason == "stop" && n > 0) --n;
  return n;
}

// null where no exit check ran (NaN), as JSON has no NaN.
json exit_value_json(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

json usage_json(const ParsedRequest& p, const EngineResult& r) {
  const size_t n = r.gen.tokens.size();
  double mean = 0.0;
  for (int s : r.gen.steps) mean += s;
  if (n > 0) mean /= static_cast<double>(n);
  json u = {{"prompt_tokens", r.gen.prompt_tokens},
            {"completion_tokens", n},
            {"total_tokens", r.gen.prompt_tokens + static_cast<int64_t>(n)},
            {"prompt_tokens_details", {{"cached_tokens", r.gen.cached_tokens}}},
            {"mean_iterations_per_token", mean}};
  if (p.return_iterations) {
    u["iterations_per_token"] = r.gen.steps;
    json values = json::array();
    for (double v : r.exit_values) values.push_back(exit_value_json(v));
    u["exit_value_per_token"] = values;
  }
  return u;
}

json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

json chat_logprob_entry(const TokenLogprob& lp, const Tokenizer& tok) {
  const std::string t = tok.decode(std::vector<int32_t>{lp.id});
  json top = json::array();
  for (const auto& [id, v] : lp.top) {
    const std::string s = tok.decode(std::vector<int32_t>{id});
    top.push_back({{"token", s}, {"logprob", v}, {"bytes", bytes_of(s)}});
  }
  return {{"token", t}, {"logprob", lp.logprob}, {"bytes", bytes_of(t)}, {"top_logprobs", top}};
}

// Completions' legacy format: parallel arrays, prompt tokens first when echoed.
struct LegacyLogprobs {
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(),
       offsets = json::array();
  size_t offset = 0;
  void add(const TokenLogprob& lp, const Tokenizer& tok, bool first_prompt_token) {
    const std::string t = tok.decode(std::vector<int32_t>{lp.id});
    tokens.push_back(t);
    offsets.push_back(offset);
    offset += t.size();
    if (first_prompt_token) {
      token_logprobs.push_back(nullptr);
      top.push_back(nullptr);
      return;
    }
    token_logprobs.push_back(lp.logprob);
    json m = json::object();
    for (const auto& [id, v] : lp.top) m[tok.decode(std::vector<int32_t>{id})] = v;
    top.push_back(m);
  }
  json to_json() const {
    return {{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top},
            {"text_offset", offsets}};
  }
};

std::string sse(const json& j) { return "data: " + dump(j) + "\n\n"; }

}  // namespace

std::string error_type_for(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 408: case 504: return "timeout_error";
    case 413: return "invalid_request_error";
    case 429: case 503: return "server_overloaded_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

std::string error_body(const ApiError& e) {
  json err = {{"message", e.message},
              {"type", e.type.empty() ? error_type_for(e.status) : e.type},
              {"param", e.param.empty() ? json(nullptr) : json(e.param)},
              {"code", e.code.empty() ? json(nullptr) : json(e.code)}};
  return dump(json{{"error", err}});
}

ParsedRequest parse_request(Endpoint ep, std::string_view body, const Engine& engine,
                            const ServeLimits& lim) {
  const json j = parse_body(body);
  const auto& known = known_fields(ep);
  for (const auto& [key, v] : j.items())
    if (!known.count(key)) bad(key, "Unrecognized request argument supplied: " + key);

  ParsedRequest p;
  p.endpoint = ep;
  auto model = j.find("model");
  if (model == j.end() || !model->is_string()) bad("model", "'model' is required (a string)");
  if (*model != lim.model_name)
    throw ApiError{404, "The model '" + model->get<std::string>() + "' does not exist",
                   "invalid_request_error", "model", "model_not_found"};
  p.model = lim.model_name;
  p.stream = get_bool(j, "stream", false);
  auto so = j.find("stream_options");
  if (so != j.end() && !so->is_null()) {
    if (!so->is_object()) bad("stream_options", "'stream_options' must be an object");
    if (!p.stream) bad("stream_options", "'stream_options' is only allowed with stream: true");
    for (const auto& [key, v] : so->items())
      if (key != "include_usage") bad("stream_options", "unknown stream option '" + key + "'");
    p.include_usage = get_bool(*so, "include_usage", false);
  }
  if (get_int(j, "n", 1, 1, 128) != 1) bad("n", "only n = 1 is supported");
  get_string(j, "user", "");

  const Tokenizer& tok = engine.tokenizer();
  const int64_t vocab = engine.model().config().vocab_size;
  GenerateOptions& o = p.engine.options;
  if (ep == Endpoint::kCompletions) {
    if (get_int(j, "best_of", 1, 1, 128) != 1) bad("best_of", "only best_of = 1 is supported");
    if (!get_string(j, "suffix", "").empty()) bad("suffix", "'suffix' is not supported");
    p.echo = get_bool(j, "echo", false);
    auto lp = j.find("logprobs");
    if (lp != j.end() && !lp->is_null()) {
      if (lp->is_boolean()) bad("logprobs", "'logprobs' of completions is an integer 0..5");
      p.engine.top_logprobs = static_cast<int>(get_int(j, "logprobs", -1, 0, 5));
    }
    p.engine.prompt = completion_prompt(j, tok, vocab);
    p.engine.prompt_logprobs = p.echo && p.engine.top_logprobs >= 0;
    o.max_new_tokens = static_cast<int>(get_int(j, "max_tokens", 16, 1, engine.context_length()));
  } else {
    const bool want = get_bool(j, "logprobs", false);
    const int64_t top = get_int(j, "top_logprobs", -1, 0, kMaxTopLogprobs);
    if (top >= 0 && !want) bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    if (want) p.engine.top_logprobs = static_cast<int>(std::max<int64_t>(top, 0));
    auto rf = j.find("response_format");
    if (rf != j.end() && !rf->is_null() &&
        !(rf->is_object() && rf->value("type", json()) == "text"))
      bad("response_format", "only response_format {\"type\": \"text\"} is supported");
    p.engine.prompt = chat_prompt(j, tok);
    const int64_t mt = get_int(j, "max_tokens", -1, 1, engine.context_length());
    const int64_t mct = get_int(j, "max_completion_tokens", -1, 1, engine.context_length());
    o.max_new_tokens = static_cast<int>(mct != -1 ? mct : (mt != -1 ? mt : 256));
  }
  if (p.engine.prompt.empty()) bad(ep == Endpoint::kChat ? "messages" : "prompt", "the prompt is empty");
  if (static_cast<int64_t>(p.engine.prompt.size()) > engine.context_length())
    bad(ep == Endpoint::kChat ? "messages" : "prompt",
        "This model's maximum context length is " + std::to_string(engine.context_length()) +
            " tokens, but the prompt has " + std::to_string(p.engine.prompt.size()) + " tokens",
        "context_length_exceeded");
  p.return_iterations = get_bool(j, "return_iterations", false);
  parse_recurrence(j, o, lim);
  parse_sampling(j, o);
  o.stop_strings = stop_strings(j);
  // ignore_eos (as vLLM / llama.cpp): no stop ids at all, e.g. for benchmarks of a fixed length.
  if (get_bool(j, "ignore_eos", false))
    o.default_stop_ids = false;
  else
    o.stop_ids = engine.stop_ids();
  try {
    o.validate(engine.model().config());
    o.sampling.validate();
  } catch (const Error& e) {
    bad("", e.what());
  }
  parse_decode(j, p.engine, lim);
  check_decode(p.engine, engine);
  p.id = new_id(ep == Endpoint::kChat ? "chatcmpl-" : "cmpl-");
  p.created = now_unix();
  return p;
}

std::string response_json(const ParsedRequest& p, const EngineResult& r, const Tokenizer& tok) {
  const size_t n_vis = std::min(visible_tokens(r), r.logprobs.size());
  json choice = {{"index", 0}, {"finish_reason", finish_reason(r)}, {"logprobs", nullptr}};
  json out = {{"id", p.id}, {"created", p.created}, {"model", p.model}};
  if (p.endpoint == Endpoint::kChat) {
    out["object"] = "chat.completion";
    choice["message"] = {{"role", "assistant"}, {"content", r.gen.text}};
    if (p.engine.top_logprobs >= 0) {
      json content = json::array();
      for (size_t i = 0; i < n_vis; ++i) content.push_back(chat_logprob_entry(r.logprobs[i], tok));
      choice["logprobs"] = {{"content", content}};
    }
  } else {
    out["object"] = "text_completion";
    std::string text = r.gen.text;
    if (p.echo) text = tok.decode(p.engine.prompt) + text;
    choice["text"] = text;
    if (p.engine.top_logprobs >= 0) {
      LegacyLogprobs lp;
      for (size_t i = 0; i < r.prompt_logprobs.size(); ++i) lp.add(r.prompt_logprobs[i], tok, i == 0);
      for (size_t i = 0; i < n_vis; ++i) lp.add(r.logprobs[i], tok, false);
      choice["logprobs"] = lp.to_json();
    }
  }
  out["choices"] = json::array({choice});
  out["usage"] = usage_json(p, r);
  return dump(out);
}

std::string StreamFormatter::start() {
  if (p_.endpoint != Endpoint::kChat) return "";
  json delta = {{"role", "assistant"}, {"content", ""}};
  json chunk = {{"id", p_.id}, {"object", "chat.completion.chunk"}, {"created", p_.created},
                {"model", p_.model},
                {"choices", json::array({{{"index", 0}, {"delta", delta}, {"logprobs", nullptr},
                                          {"finish_reason", nullptr}}})}};
  if (p_.include_usage) chunk["usage"] = nullptr;
  return sse(chunk);
}

std::string StreamFormatter::token(const EngineEvent& ev) {
  const bool stop_id =
      ev.id >= 0 && std::count(p_.engine.options.stop_ids.begin(),
                               p_.engine.options.stop_ids.end(), ev.id) > 0;
  const bool has_lp = ev.logprob != nullptr && !stop_id;
  // With return_iterations every token gets its chunk (a stop id's, or one whose text is held
  // back, with empty text), so that the chunks' iterations are usage.iterations_per_token.
  const bool per_token = p_.return_iterations && ev.id >= 0;
  if (ev.text.empty() && !has_lp && !per_token) return "";
  json choice = {{"index", 0}, {"finish_reason", nullptr}, {"logprobs", nullptr}};
  json chunk = {{"id", p_.id}, {"created", p_.created}, {"model", p_.model}};
  const std::string text(ev.text);
  if (p_.endpoint == Endpoint::kChat) {
    chunk["object"] = "chat.completion.chunk";
    choice["delta"] = {{"content", text}};
    if (has_lp) choice["logprobs"] = {{"content", json::array({chat_logprob_entry(*ev.logprob, tok_)})}};
  } else {
    chunk["object"] = "text_completion";
    choice["text"] = text;
    if (has_lp) {
      LegacyLogprobs lp;
      lp.add(*ev.logprob, tok_, false);
      choice["logprobs"] = lp.to_json();
    }
  }
  if (per_token) {
    choice["iterations"] = ev.steps;
    choice["exit_value"] = exit_value_json(ev.exit_value);
  }
  chunk["choices"] = json::array({choice});
  if (p_.include_usage) chunk["usage"] = nullptr;
  return sse(chunk);
}

std::string StreamFormatter::finish(const EngineResult& r) {
  json choice = {{"index", 0}, {"finish_reason", finish_reason(r)}, {"logprobs", nullptr}};
  json chunk = {{"id", p_.id}, {"created", p_.created}, {"model", p_.model}};
  if (p_.endpoint == Endpoint::kChat) {
    chunk["object"] = "chat.completion.chunk";
    choice["delta"] = json::object();
  } else {
    chunk["object"] = "text_completion";
    choice["text"] = "";
  }
  chunk["choices"] = json::array({choice});
  if (p_.include_usage) chunk["usage"] = nullptr;
  std::string out = sse(chunk);
  if (p_.include_usage) {
    chunk["choices"] = json::array();
    chunk["usage"] = usage_json(p_, r);
    out += sse(chunk);
  }
  return out + "data: [DONE]\n\n";
}

std::string StreamFormatter::error(const ApiError& e) {
  return "data: " + error_body(e) + "\n\ndata: [DONE]\n\n";
}

std::string model_json(const std::string& name, int64_t created) {
  return dump(json{{"id", name}, {"object", "model"}, {"created", created}, {"owned_by", "huginn"}});
}

std::string models_json(const std::string& name, int64_t created) {
  return dump(json{{"object", "list"}, {"data", json::array({json::parse(model_json(name, created))})}});
}

std::string tokenize_json(std::string_view body, const Tokenizer& tok) {
  const json j = parse_body(body);
  for (const auto& [key, v] : j.items())
    if (key != "content" && key != "add_special")
      bad(key, "Unrecognized request argument supplied: " + key);
  if (!j.contains("content") || !j["content"].is_string())
    bad("content", "'content' is required (a string)");
  const bool add_special = get_bool(j, "add_special", false);
  return dump(json{{"tokens", tok.encode(j["content"].get<std::string>(), add_special)}});
}

std::string detokenize_json(std::string_view body, const Tokenizer& tok) {
  const json j = parse_body(body);
  for (const auto& [key, v] : j.items())
    if (key != "tokens") bad(key, "Unrecognized request argument supplied: " + key);
  if (!j.contains("tokens") || !j["tokens"].is_array())
    bad("tokens", "'tokens' is required (an array of token ids)");
  const std::vector<int32_t> ids = ids_from_json(j["tokens"], "tokens", tok.id_limit());
  return dump(json{{"content", tok.decode(ids)}});
}

}  // namespace huginn::server
