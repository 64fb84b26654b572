// Hugging Face `tokenizer.json` BPE tokenizers, encoding exactly as the `tokenizers` library does;
// decoding, streaming decoding for generation, chat templates and BPE training.
//
// Text is UTF-8 bytes in std::string / std::string_view. Invalid UTF-8 (which the Rust library
// cannot even receive) is accepted: byte-level tokenizers encode the raw bytes, and normalizers
// and regexes see each invalid byte as a lone character that belongs to no class but \S. Decoding
// always returns valid UTF-8, with U+FFFD where the ids spell invalid UTF-8, like the library.
//
// Every size, count, id and nesting depth a tokenizer.json gives is bounded (src/tokenizer/limits.h);
// encode and decode throw huginn::Error when the file's components would grow a text past
// 32 x its size + 4 KiB (a Replace that doubles it, for one), which no real tokenizer does.
//
// A Tokenizer is immutable once loaded and may be shared between threads.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace huginn {

class ThreadPool;

namespace tok {
class Pipeline;  // the loaded components (src/tokenizer/pipeline.h)
}

// A chat message: role ("system", "user", "assistant", ...) and its text.
struct ChatMessage {
  std::string role;
  std::string content;
};

enum class ChatFormat {
  kNone,    // the vocabulary has no known chat markers
  kHuginn,  // Huginn-0125: <|begin_text|>, <|begin_header|>role<|end_header|>\n\n ... <|end_turn|>
  kChatML,  // <|im_start|>role\n ... <|im_end|>\n
};

// Renders messages in `format`. Huginn-0125: BOS once, then each message as
// <|begin_header|>ROLE<|end_header|>\n\n + content trimmed of surrounding whitespace +
// <|end_turn|>, where the role "assistant" is written "Huginn"; the generation prompt is
// <|begin_header|>Huginn<|end_header|>\n\n. ChatML: <|im_start|>ROLE\n + content + <|im_end|>\n
// per message; the generation prompt is <|im_start|>assistant\n. Throws huginn::Error for kNone.
std::string render_chat(ChatFormat format, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt);

class Tokenizer {
 public:
  // Loads a Hugging Face tokenizer.json. A tokenizer_config.json beside it, when present,
  // names the bos/eos/pad tokens. Throws huginn::Error naming the file and the field for a
  // malformed file, and naming the component for an unsupported one (e.g. a Unigram model).
  static std::shared_ptr<const Tokenizer> load(const std::string& path);
  // Same, from the JSON text; `origin` names it in error messages.
  static std::shared_ptr<const Tokenizer> from_json(const std::string& json_text,
                                                    const std::string& origin = "tokenizer.json");
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // encode(text, add_special_tokens): added tokens (special or not) are always recognized in the
  // raw text; add_special only runs the post-processor (e.g. a leading <s>).
  std::vector<int32_t> encode(std::string_view text, bool add_special = false) const;
  // Encodes each text, spread over the pool's threads; results are identical to encode().
  std::vector<std::vector<int32_t>> encode_batch(const std::vector<std::string>& texts,
                                                 bool add_special, ThreadPool& pool) const;
  // decode(ids, skip_special_tokens). Unknown ids are skipped, as the library does.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // -1 when the token is not in the vocabulary (added tokens included).
  int32_t token_to_id(std::string_view token) const;
  // The token's string; empty when the id is unknown.
  std::string id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;
  // Number of ids: the model's vocabulary, plus added tokens outside it when with_added.
  int32_t vocab_size(bool with_added = true) const;
  // One past the largest id (an embedding table needs this many rows).
  int32_t id_limit() const;
  std::vector<int32_t> special_ids() const;

  // Named special tokens, -1 when unknown: from tokenizer_config.json when it was found, else
  // from well-known token names.
  int32_t bos_id() const { return bos_; }
  int32_t eos_id() const { return eos_; }
  int32_t pad_id() const { return pad_; }
  int32_t unk_id() const;

  // The chat format this vocabulary supports, by its marker tokens.
  ChatFormat chat_format() const;
  // render_chat in chat_format(); throws huginn::Error when there is none.
  std::string apply_chat_template(const std::vector<ChatMessage>& messages,
                                  bool add_generation_prompt) const;

  const tok::Pipeline& pipeline() const { return *pipeline_; }

 private:
  Tokenizer() = default;
  std::unique_ptr<tok::Pipeline> pipeline_;
  int32_t bos_ = -1, eos_ = -1, pad_ = -1;
};

// Decodes a token stream incrementally for generation: push() returns the text that became
// final with this token (possibly empty: an unfinished UTF-8 character, or a byte token that a
// later one may turn invalid, is held back), finish() returns the rest. The concatenation of all
// pushes and finish() equals tokenizer.decode(all ids, skip_special).
class StreamDecoder {
 public:
  explicit StreamDecoder(std::shared_ptr<const Tokenizer> tokenizer, bool skip_special = false);
  std::string push(int32_t id);
  std::string finish();
  void reset();

 private:
  std::shared_ptr<const Tokenizer> tok_;
  bool skip_special_;
  std::vector<int32_t> ids_;  // context ids, then pending ids
  size_t prefix_ids_ = 0;     // ids_[0, prefix_ids_) decode to prefix_
  std::string prefix_;
  std::string text_;          // the decoding of ids_ (a buffer kept between pushes)
  // ByteLevel decoders: the bytes of the context ids and of the pending ids.
  std::string context_bytes_, pending_bytes_;
  bool context_valid_ = true;  // context_bytes_ is valid UTF-8 (it is then its own text; prefix_
                               // is kept only otherwise)
  std::string push_bytes(int32_t id);
};

// BPE training (byte-level, like the GPT-2/GPT-4 tokenizers).
struct BpeTrainOptions {
  int32_t vocab_size = 32000;             // total, including the 256 bytes and the specials
  std::vector<std::string> special_tokens;  // given ids 0, 1, ... in this order
  // Pre-tokenizer split regex; empty means the GPT-4 (cl100k) pattern.
  std::string split_regex;
  int32_t min_frequency = 2;  // a pair seen fewer times is never merged
  bool progress = true;       // progress lines through huginn::log
};

// Trains on the texts and returns the tokenizer.json text (loadable by Tokenizer and by the
// Hugging Face library). Word counting runs on the pool.
std::string train_bpe(const std::vector<std::string>& texts, const BpeTrainOptions& options,
                      ThreadPool& pool);

}  // namespace huginn
