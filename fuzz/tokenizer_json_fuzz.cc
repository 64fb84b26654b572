// tokenizer.json: Tokenizer::from_json on arbitrary text (models, normalizers, pre-tokenizers,
// decoders, post-processors, added tokens). An accepted tokenizer encodes a few fixed texts (ASCII,
// accents and combining marks, CJK, emoji, invalid UTF-8, its own added tokens) with and without
// special tokens, decodes the ids (and every id below 512), and maps ids and tokens both ways.
// Properties: encoded ids are below id_limit(); decode returns valid UTF-8.
#include "fuzz_util.h"
#include "huginn/generate.h"
#include "huginn/tokenizer.h"

using namespace huginn;

namespace {

const char* const kTexts[] = {
    "Hello, world! It's 2026.\n\tx  y",
    "caf\xc3\xa9 cafe\xcc\x81 \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80 \xe2\x96\x81x",
    "\xff\xfe bad \xc3 utf8 \xed\xa0\x80",
    "<s></s><unk><|endoftext|><|im_start|>user\nhi<|im_end|><|begin_text|>",
};

void check_ids(const Tokenizer& t, const std::vector<int32_t>& ids) {
  for (int32_t id : ids)
    fuzz::check(id >= 0 && id < t.id_limit(), "encode() gave id " + std::to_string(id) +
                                                  " outside [0, " + std::to_string(t.id_limit()) +
                                                  ")");
  for (bool skip : {false, true})
    fuzz::check(fuzz::accepts([&] { validate_utf8(t.decode(ids, skip), "decode"); }),
                "decode() returned invalid UTF-8");
}

}  // namespace

HUGINN_FUZZ_TARGET(tokenizer_json) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::shared_ptr<const Tokenizer> t;
  if (!fuzz::accepts([&] { t = Tokenizer::from_json(text, "tokenizer.json"); })) return;
  for (const char* s : kTexts)
    for (bool special : {false, true}) check_ids(*t, t->encode(s, special));
  std::vector<int32_t> all;
  for (int32_t id = -2; id < std::min<int32_t>(t->id_limit() + 2, 512); ++id) {
    all.push_back(id);
    const std::string tok = t->id_to_token(id);
    if (!tok.empty()) {
      (void)t->token_to_id(tok);
      check_ids(*t, t->encode(tok, false));
    }
  }
  for (bool skip : {false, true})
    fuzz::check(fuzz::accepts([&] { validate_utf8(t->decode(all, skip), "decode"); }),
                "decode() of every id returned invalid UTF-8");
  (void)t->special_ids();
  (void)t->chat_format();
}
