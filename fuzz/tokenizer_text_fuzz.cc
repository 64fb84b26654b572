// Tokenizer encode/decode on arbitrary bytes with the real tokenizers of tests/data/tokenizers
// (cl100k, gpt-oss, mistral-7b, qwen3). Byte 0 picks the tokenizer and the flags; the rest is
// the text, and also (read as little-endian int32s) an id sequence of any values.
// Properties: every encoded id is below id_limit(); decode returns valid UTF-8; the streaming
// decoder's pushes + finish() equal decode() (huginn/tokenizer.h); and for the byte-level
// tokenizers without a normalizer (cl100k, gpt-oss) decode(encode(text)) == text for valid UTF-8.
#include <cstring>

#include "fuzz_util.h"
#include "huginn/generate.h"
#include "huginn/tokenizer.h"

using namespace huginn;

namespace {

struct Loaded {
  const char* name;
  bool lossless;  // byte-level, no normalizer: decode(encode(t)) == t
  std::shared_ptr<const Tokenizer> tok;
};

std::vector<Loaded>& tokenizers() {
  static std::vector<Loaded> all = [] {
    std::vector<Loaded> v = {{"cl100k", true, nullptr},
                             {"gpt-oss", true, nullptr},
                             {"mistral-7b", false, nullptr},
                             {"qwen3", false, nullptr}};
    for (Loaded& l : v)
      l.tok = Tokenizer::load(fuzz::test_data(std::string("tokenizers/") + l.name + "/tokenizer.json"));
    return v;
  }();
  return all;
}

bool valid_utf8(std::string_view s) {
  return fuzz::accepts([&] { validate_utf8(s, "text"); });
}

void check_decode(const Loaded& l, std::span<const int32_t> ids, bool skip) {
  const std::string text = l.tok->decode(ids, skip);
  fuzz::check(valid_utf8(text), std::string(l.name) + ": decode() returned invalid UTF-8");
  StreamDecoder sd(l.tok, skip);
  std::string streamed;
  for (int32_t id : ids) streamed += sd.push(id);
  streamed += sd.finish();
  fuzz::check(streamed == text, std::string(l.name) + ": streamed decode differs from decode()");
}

const fuzz::Setup setup([] {
  tokenizers();
});

}  // namespace

HUGINN_FUZZ_TARGET(tokenizer_text) {
  if (size == 0) return;
  const Loaded& l = tokenizers()[data[0] % 4];
  const bool add_special = data[0] & 4, skip = data[0] & 8;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);

  const std::vector<int32_t> ids = l.tok->encode(text, add_special);
  for (int32_t id : ids)
    fuzz::check(id >= 0 && id < l.tok->id_limit(),
                std::string(l.name) + ": encode() gave id " + std::to_string(id) +
                    " outside [0, " + std::to_string(l.tok->id_limit()) + ")");
  check_decode(l, ids, skip);
  if (l.lossless && !add_special && valid_utf8(text))
    fuzz::check(l.tok->decode(ids, false) == text,
                std::string(l.name) + ": decode(encode(text)) != text");

  std::vector<int32_t> raw((size - 1) / 4);
  if (!raw.empty()) std::memcpy(raw.data(), data + 1, raw.size() * 4);
  check_decode(l, raw, skip);
  for (int32_t id : raw) {
    const std::string t = l.tok->id_to_token(id);
    (void)l.tok->is_special(id);
    if (!t.empty()) (void)l.tok->token_to_id(t);
  }
}
