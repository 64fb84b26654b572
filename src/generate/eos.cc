// eos ids from a model directory's generation_config.json / config.json.
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "huginn/generate.h"
#ifdef HUGINN_HAVE_TOKENIZER
#include "huginn/tokenizer.h"
#endif
#include "util/json.h"

namespace huginn {

namespace {

constexpr size_t kMaxEosIds = 1024;                   // real files name one to three
constexpr size_t kMaxFileBytes = size_t{16} << 20;    // real files are well under 1 KB

void collect(const nlohmann::json& v, const std::string& file, std::vector<int32_t>& out) {
  auto add = [&](const nlohmann::json& x) {
    if (!x.is_number_integer() ||
        (x.is_number_unsigned() ? x.get<uint64_t>() > std::numeric_limits<int32_t>::max()
                                : x.get<int64_t>() < 0 ||
                                      x.get<int64_t>() > std::numeric_limits<int32_t>::max()))
      throw Error(file + ": eos_token_id must be an integer in [0, 2147483647] or a list of them, "
                         "found " + json_preview(x));
    out.push_back(static_cast<int32_t>(x.get<int64_t>()));
  };
  if (v.is_null()) return;
  if (v.is_array()) {
    if (v.size() > kMaxEosIds)
      throw Error(file + ": eos_token_id lists " + std::to_string(v.size()) + " ids, more than the " +
                  std::to_string(kMaxEosIds) + " allowed");
    for (const auto& x : v) add(x);
  } else {
    add(v);
  }
}

std::vector<int32_t> ids_of(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source + ": expected a JSON object, found " + json_preview(j));
  std::vector<int32_t> out;
  if (auto it = j.find("eos_token_id"); it != j.end()) collect(*it, source, out);
  return out;
}

}  // namespace

std::vector<int32_t> eos_ids_from_json(std::string_view text, const std::string& source) {
  return ids_of(parse_json(text, source), source);
}

#ifdef HUGINN_HAVE_TOKENIZER
namespace {
class DecoderStream : public TextStream {
 public:
  explicit DecoderStream(std::shared_ptr<const Tokenizer> tok) : dec_(std::move(tok)) {}
  std::string push(int32_t id) override { return dec_.push(id); }
  std::string finish() override { return dec_.finish(); }

 private:
  StreamDecoder dec_;
};
}  // namespace
#endif

std::unique_ptr<TextStream> tokenizer_text_stream(std::shared_ptr<const Tokenizer> tok) {
#ifdef HUGINN_HAVE_TOKENIZER
  return std::make_unique<DecoderStream>(std::move(tok));
#else
  throw Error("text streaming needs the tokenizer layer, which this build does not have");
#endif
}

std::vector<int32_t> model_stop_ids(const std::string& model_dir, const Tokenizer* tok) {
  std::vector<int32_t> ids = read_eos_ids(model_dir);
#ifdef HUGINN_HAVE_TOKENIZER
  if (tok) {
    if (tok->eos_id() >= 0) ids.push_back(tok->eos_id());
    for (const char* name : {"<|begin_text|>", "<|end_text|>", "<|end_turn|>", "<|im_end|>"})
      if (tok->token_to_id(name) >= 0) ids.push_back(tok->token_to_id(name));
  }
#endif
  return ids;
}

std::vector<int32_t> read_eos_ids(const std::string& dir) {
  for (const char* name : {"generation_config.json", "config.json"}) {
    const std::string path = dir + "/" + name;
    if (!std::filesystem::exists(path)) continue;
    JsonLimits lim;
    lim.max_bytes = kMaxFileBytes;
    std::vector<int32_t> out = ids_of(read_json_file(path, lim), path);
    if (!out.empty()) return out;
  }
  return {};
}

}  // namespace huginn
