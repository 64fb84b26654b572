// The public Tokenizer: loading tokenizer.json into a Pipeline, encode / decode, batch encoding,
// streaming decoding and chat templates.
#include "huginn/tokenizer.h"

#include <algorithm>
#include <fstream>

#include <nlohmann/json.hpp>

#include "huginn/error.h"
#include "huginn/thread_pool.h"
#include "util/json.h"
#include "tokenizer/components.h"
#include "tokenizer/limits.h"
#include "tokenizer/pipeline.h"
#include "tokenizer/unicode.h"

namespace huginn {

using json = nlohmann::json;
using tok::Pipeline;

namespace {

std::string read_text_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw Error(path + ": cannot open file");
  const auto size = static_cast<std::streamoff>(f.tellg());
  if (size < 0) throw Error(path + ": read error");
  if (static_cast<uint64_t>(size) > tok::kMaxFileBytes)
    throw Error(path + ": the file is " + std::to_string(size) + " bytes, more than the bound of " +
                std::to_string(tok::kMaxFileBytes) + " bytes for a tokenizer.json");
  std::string text(static_cast<size_t>(size), '\0');
  f.seekg(0);
  if (!f.read(text.data(), size)) throw Error(path + ": read error");
  return text;
}

// tokenizer.json files reach 30-40 MB (large vocabularies); nesting is bounded at 64 levels.
JsonLimits tokenizer_json_limits() {
  JsonLimits l;
  l.max_depth = tok::kMaxJsonDepth;
  l.max_bytes = tok::kMaxFileBytes;
  return l;
}

bool is_null_or_absent(const json& j, const char* name) {
  return !j.contains(name) || j.at(name).is_null();
}

std::string opt_string(const json& j, const char* name, const std::string& where) {
  if (is_null_or_absent(j, name)) return "";
  if (!j.at(name).is_string()) throw Error(where + "." + name + ": expected a string or null");
  return j.at(name).get<std::string>();
}

bool opt_bool(const json& j, const char* name, const std::string& where) {
  if (is_null_or_absent(j, name)) return false;
  if (!j.at(name).is_boolean()) throw Error(where + "." + name + ": expected true or false");
  return j.at(name).get<bool>();
}

std::unique_ptr<tok::BpeModel> load_bpe(const json& m, const std::string& where) {
  if (!m.is_object()) throw Error(where + ": expected an object");
  std::string type = m.contains("type") && m.at("type").is_string() ? m.at("type").get<std::string>() : "";
  if (type.empty() && m.contains("merges")) type = "BPE";  // old files name no type
  if (type != "BPE")
    throw Error(where + ": unsupported model type '" + tok::quote(type) + "' (only BPE is supported)");
  if (!is_null_or_absent(m, "dropout")) {
    const json& d = m.at("dropout");
    if (!d.is_number() || d.get<double>() != 0.0)
      throw Error(where + ".dropout: BPE dropout is not supported (encoding would be random)");
  }
  tok::BpeOptions opt;
  opt.unk_token = opt_string(m, "unk_token", where);
  opt.has_unk = !is_null_or_absent(m, "unk_token");
  opt.fuse_unk = opt_bool(m, "fuse_unk", where);
  opt.byte_fallback = opt_bool(m, "byte_fallback", where);
  opt.ignore_merges = opt_bool(m, "ignore_merges", where);
  opt.continuing_subword_prefix = opt_string(m, "continuing_subword_prefix", where);
  opt.end_of_word_suffix = opt_string(m, "end_of_word_suffix", where);

  if (!m.contains("vocab") || !m.at("vocab").is_object())
    throw Error(where + ".vocab: expected an object of token -> id");
  // Ids index arrays sized by the largest one: bounded by the entries that pay for them.
  const json& vj = m.at("vocab");
  const int64_t id_bound = std::min<int64_t>(tok::kMaxId, static_cast<int64_t>(vj.size()) + tok::kIdSlack);
  std::vector<std::string> vocab;
  for (const auto& [token, idj] : vj.items()) {
    if (!idj.is_number_integer() || idj.get<int64_t>() < 0 || idj.get<int64_t>() >= id_bound)
      throw Error(where + ".vocab['" + tok::quote(token) + "']: expected an id in [0, " +
                  std::to_string(id_bound) + ") (the bound: min(2^26, " + std::to_string(vj.size()) +
                  " entries + 65536)), found " +
                  (idj.is_number() ? idj.dump() : std::string("a ") + idj.type_name()));
    size_t id = idj.get<size_t>();
    if (id >= vocab.size()) vocab.resize(id + 1);
    vocab[id] = token;
  }
  std::vector<std::pair<std::string, std::string>> merges;
  if (m.contains("merges")) {
    const json& ml = m.at("merges");
    if (!ml.is_array()) throw Error(where + ".merges: expected an array");
    if (ml.size() > tok::kMaxMerges)
      throw Error(where + ".merges: " + std::to_string(ml.size()) + " merges, more than the bound of " +
                  std::to_string(tok::kMaxMerges));
    merges.reserve(ml.size());
    for (size_t k = 0; k < ml.size(); ++k) {
      const json& e = ml[k];
      if (e.is_string()) {
        const std::string& s = e.get_ref<const std::string&>();
        size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          throw Error(where + ".merges[" + std::to_string(k) + "]: expected \"a b\", found '" + tok::quote(s) + "'");
        merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
        merges.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
      } else {
        throw Error(where + ".merges[" + std::to_string(k) + "]: expected \"a b\" or [\"a\", \"b\"]");
      }
    }
  }
  return std::make_unique<tok::BpeModel>(std::move(vocab), merges, std::move(opt), where);
}

void load_added(const json& list, const std::string& where, Pipeline& p) {
  if (!list.is_array()) throw Error(where + ": expected an array");
  if (list.size() > tok::kMaxAddedTokens)
    throw Error(where + ": " + std::to_string(list.size()) + " added tokens, more than the bound of " +
                std::to_string(tok::kMaxAddedTokens));
  // As for the vocabulary: ids bounded by the entries (of both) that pay for them.
  const int64_t entries = p.model->size() + static_cast<int64_t>(list.size());
  const int64_t id_bound = std::min<int64_t>(tok::kMaxId, entries + tok::kIdSlack);
  for (size_t k = 0; k < list.size(); ++k) {
    const json& a = list[k];
    std::string w = where + "[" + std::to_string(k) + "]";
    if (!a.is_object() || !a.contains("id") || !a.at("id").is_number_integer() ||
        !a.contains("content") || !a.at("content").is_string())
      throw Error(w + ": expected {\"id\": integer, \"content\": string, ...}");
    const int64_t id = a.at("id").get<int64_t>();
    if (id < 0 || id >= id_bound)
      throw Error(w + ".id: expected an id in [0, " + std::to_string(id_bound) +
                  ") (the bound: min(2^26, " + std::to_string(entries) +
                  " vocabulary and added entries + 65536)), found " + std::to_string(id));
    tok::AddedToken t;
    t.id = a.at("id").get<int32_t>();
    t.content = a.at("content").get<std::string>();
    if (t.content.empty()) throw Error(w + ".content: an added token cannot be empty");
    if (t.content.size() > tok::kMaxAddedTokenBytes)
      throw Error(w + ".content: " + std::to_string(t.content.size()) +
                  " bytes, more than the bound of " + std::to_string(tok::kMaxAddedTokenBytes));
    t.special = opt_bool(a, "special", w);
    t.lstrip = opt_bool(a, "lstrip", w);
    t.rstrip = opt_bool(a, "rstrip", w);
    t.single_word = opt_bool(a, "single_word", w);
    t.normalized = a.contains("normalized") ? opt_bool(a, "normalized", w) : !t.special;
    p.added.push_back(std::move(t));
  }
}

// bos/eos/pad from tokenizer_config.json: a string or {"content": ...}.
std::string config_token(const json& cfg, const char* name) {
  if (!cfg.is_object() || !cfg.contains(name)) return "";
  const json& v = cfg.at(name);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v.at("content").is_string())
    return v.at("content").get<std::string>();
  return "";
}

}  // namespace

std::shared_ptr<const Tokenizer> Tokenizer::from_json(const std::string& text, const std::string& origin) {
  const json j = parse_json(text, origin, tokenizer_json_limits());
  if (!j.is_object()) throw Error(origin + ": expected a JSON object at the top level");
  if (!is_null_or_absent(j, "truncation"))
    throw Error(origin + ": truncation is not supported (set \"truncation\": null)");
  if (!is_null_or_absent(j, "padding")) {
    const json& pd = j.at("padding");
    if (pd.is_object() && pd.contains("strategy") && pd.at("strategy").is_object())
      throw Error(origin + ": fixed-length padding is not supported");
  }
  std::shared_ptr<Tokenizer> t(new Tokenizer);
  t->pipeline_ = std::make_unique<Pipeline>();
  Pipeline& p = *t->pipeline_;
  p.origin = origin;
  if (!j.contains("model")) throw Error(origin + ": missing field 'model'");
  p.model = load_bpe(j.at("model"), origin + ": model");
  if (!is_null_or_absent(j, "normalizer"))
    p.normalizer = tok::make_normalizer(j.at("normalizer"), origin + ": normalizer");
  if (!is_null_or_absent(j, "pre_tokenizer"))
    p.pre_tokenizer = tok::make_pre_tokenizer(j.at("pre_tokenizer"), origin + ": pre_tokenizer",
                                              &p.byte_level_deferred);
  p.finish_pre_tokenizer();
  if (!is_null_or_absent(j, "post_processor"))
    p.post_processor = tok::make_post_processor(j.at("post_processor"), origin + ": post_processor");
  if (!is_null_or_absent(j, "decoder"))
    p.decoder = tok::make_decoder(j.at("decoder"), origin + ": decoder");
  if (!is_null_or_absent(j, "added_tokens")) load_added(j.at("added_tokens"), origin + ": added_tokens", p);
  p.finish_added();
  p.finish_decoder();
  if (p.post_processor) {
    std::vector<int32_t> ids;
    p.post_processor->inserted_ids(ids);
    for (int32_t id : ids)
      if (!p.id_to_token(id))
        throw Error(origin + ": post_processor: id " + std::to_string(id) +
                    " is neither in the vocabulary nor an added token");
  }
  for (const char* name : {"<|begin_text|>", "<s>", "<|begin_of_text|>", "<|startoftext|>"})
    if (t->bos_ < 0) t->bos_ = t->token_to_id(name);
  for (const char* name : {"<|end_text|>", "</s>", "<|end_of_text|>", "<|endoftext|>"})
    if (t->eos_ < 0) t->eos_ = t->token_to_id(name);
  for (const char* name : {"<|pad|>", "<pad>", "[PAD]"})
    if (t->pad_ < 0) t->pad_ = t->token_to_id(name);
  return t;
}

std::shared_ptr<const Tokenizer> Tokenizer::load(const std::string& path) {
  auto t = from_json(read_text_file(path), path);
  std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
  std::string cfg_path = dir + "/tokenizer_config.json";
  std::ifstream probe(cfg_path);
  if (probe) {
    json cfg = read_json_file(cfg_path);
    auto* mt = const_cast<Tokenizer*>(t.get());  // still private to this function
    auto set = [&](int32_t& slot, const char* name) {
      std::string s = config_token(cfg, name);
      if (s.empty()) return;
      int32_t id = t->token_to_id(s);
      if (id < 0) throw Error(cfg_path + ": " + name + " '" + tok::quote(s) + "' is not in the vocabulary");
      slot = id;
    };
    set(mt->bos_, "bos_token");
    set(mt->eos_, "eos_token");
    set(mt->pad_, "pad_token");
  }
  return t;
}

Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 4 + 16);  // real text averages 3-4 bytes per token
  pipeline_->encode(text, add_special, ids);
  return ids;
}

std::vector<std::vector<int32_t>> Tokenizer::encode_batch(const std::vector<std::string>& texts,
                                                          bool add_special, ThreadPool& pool) const {
  std::vector<std::vector<int32_t>> out(texts.size());
  pool.parallel_for(static_cast<int64_t>(texts.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) pipeline_->encode(texts[i], add_special, out[i]);
  });
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  return pipeline_->decode(ids.data(), ids.size(), skip_special);
}

int32_t Tokenizer::token_to_id(std::string_view token) const { return pipeline_->token_to_id(token); }

std::string Tokenizer::id_to_token(int32_t id) const {
  const std::string* t = pipeline_->id_to_token(id);
  return t ? *t : std::string();
}

bool Tokenizer::is_special(int32_t id) const { return pipeline_->is_special(id); }

int32_t Tokenizer::vocab_size(bool with_added) const {
  int32_t n = pipeline_->model->size();
  if (!with_added) return n;
  for (const auto& a : pipeline_->added)
    if (pipeline_->model->token_to_id(a.content) < 0) ++n;
  return n;
}

int32_t Tokenizer::id_limit() const {
  int32_t n = pipeline_->model->id_limit();
  for (const auto& a : pipeline_->added) n = std::max(n, a.id + 1);
  return n;
}

std::vector<int32_t> Tokenizer::special_ids() const {
  std::vector<int32_t> ids;
  for (const auto& a : pipeline_->added)
    if (a.special) ids.push_back(a.id);
  return ids;
}

int32_t Tokenizer::unk_id() const { return pipeline_->model->unk_id(); }

ChatFormat Tokenizer::chat_format() const {
  if (token_to_id("<|begin_header|>") >= 0 && token_to_id("<|end_header|>") >= 0 &&
      token_to_id("<|end_turn|>") >= 0)
    return ChatFormat::kHuginn;
  if (token_to_id("<|im_start|>") >= 0 && token_to_id("<|im_end|>") >= 0) return ChatFormat::kChatML;
  return ChatFormat::kNone;
}

std::string Tokenizer::apply_chat_template(const std::vector<ChatMessage>& messages,
                                           bool add_generation_prompt) const {
  ChatFormat f = chat_format();
  if (f == ChatFormat::kNone)
    throw Error("tokenizer has no chat format (neither Huginn's <|begin_header|> nor ChatML's "
                "<|im_start|> tokens)");
  return render_chat(f, messages, add_generation_prompt);
}

namespace {
std::string trim_ws(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}
}  // namespace

std::string render_chat(ChatFormat format, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt) {
  std::string out;
  switch (format) {
    case ChatFormat::kHuginn:
      out = "<|begin_text|>";
      for (const ChatMessage& m : messages) {
        std::string role = m.role == "assistant" ? "Huginn" : m.role;
        out += "<|begin_header|>" + role + "<|end_header|>\n\n" + trim_ws(m.content) + "<|end_turn|>";
      }
      if (add_generation_prompt) out += "<|begin_header|>Huginn<|end_header|>\n\n";
      return out;
    case ChatFormat::kChatML:
      for (const ChatMessage& m : messages)
        out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      return out;
    case ChatFormat::kNone:
      break;
  }
  throw Error("render_chat: no chat format given");
}

// ---------------------------------------------------------------------------------------------
// StreamDecoder: the library's DecodeStream, holding back text that a later token may change.

StreamDecoder::StreamDecoder(std::shared_ptr<const Tokenizer> tokenizer, bool skip_special)
    : tok_(std::move(tokenizer)), skip_special_(skip_special) {}

void StreamDecoder::reset() {
  ids_.clear();
  prefix_ids_ = 0;
  prefix_.clear();
  context_bytes_.clear();
  pending_bytes_.clear();
  context_valid_ = true;
}

namespace {
bool ends_with_replacement(const std::string& s) {
  return s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0;
}
bool is_byte_token(const std::string& t) {
  return t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>';
}
}  // namespace

// The same steps as push() below for a ByteLevel decoder, where decode(ids) is
// utf8_lossy(bytes of the ids): the bytes of the context and of the pending ids are kept, so a
// push appends one token's bytes instead of decoding every id again.
std::string StreamDecoder::push_bytes(int32_t id) {
  const tok::Pipeline& p = tok_->pipeline();
  std::string_view bytes;
  if (!p.token_bytes(id, skip_special_, &bytes)) return "";
  pending_bytes_.append(bytes);
  // The common case: valid context and pending bytes. Then the text is context + pending, its
  // part past the context's text (the context itself) is the pending bytes, and they become the
  // context. (prefix_ is kept only for a context that is not valid UTF-8.)
  if (context_valid_ && tok::utf8_valid(pending_bytes_)) {
    if (pending_bytes_.empty() || ends_with_replacement(pending_bytes_)) return "";
    std::string fresh = pending_bytes_;
    context_bytes_.swap(pending_bytes_);
    pending_bytes_.clear();
    return fresh;
  }
  const std::string& prefix = context_valid_ ? context_bytes_ : prefix_;
  text_.assign(context_bytes_);
  text_.append(pending_bytes_);
  if (!tok::utf8_valid(text_)) text_ = tok::utf8_lossy(text_);
  if (text_.size() <= prefix.size() || ends_with_replacement(text_)) return "";
  size_t common = 0;
  while (common < prefix.size() && text_[common] == prefix[common]) ++common;
  std::string fresh = text_.substr(common);
  context_bytes_.swap(pending_bytes_);
  pending_bytes_.clear();
  context_valid_ = tok::utf8_valid(context_bytes_);
  if (!context_valid_) prefix_ = tok::utf8_lossy(context_bytes_);
  return fresh;
}

std::string StreamDecoder::push(int32_t id) {
  const tok::Pipeline& p = tok_->pipeline();
  if (p.byte_level_decoding()) return push_bytes(id);
  // An id that decode() drops (unknown, or special and skipped) changes no text; it must not end
  // a run of byte tokens either, which decode() groups across it.
  if (!p.id_to_token(id) || (skip_special_ && p.is_special(id))) return "";
  ids_.push_back(id);
  // A byte token may still turn its run invalid (ByteFallback emits one U+FFFD per byte then).
  if (p.decoder && p.decoder->has_byte_fallback() && is_byte_token(*p.id_to_token(id))) return "";
  p.decode_to(ids_.data(), ids_.size(), skip_special_, text_);
  if (text_.size() <= prefix_.size() || ends_with_replacement(text_)) return "";
  size_t common = 0;
  while (common < prefix_.size() && text_[common] == prefix_[common]) ++common;
  std::string fresh = text_.substr(common);
  // The pending tokens become the context for the next ones.
  ids_.erase(ids_.begin(), ids_.begin() + static_cast<std::ptrdiff_t>(prefix_ids_));
  prefix_ids_ = ids_.size();
  p.decode_to(ids_.data(), ids_.size(), skip_special_, prefix_);
  return fresh;
}

std::string StreamDecoder::finish() {
  const tok::Pipeline& p = tok_->pipeline();
  if (p.byte_level_decoding()) {
    text_.assign(context_bytes_);
    text_.append(pending_bytes_);
    if (!tok::utf8_valid(text_)) text_ = tok::utf8_lossy(text_);
  } else {
    p.decode_to(ids_.data(), ids_.size(), skip_special_, text_);
  }
  const std::string& prefix = p.byte_level_decoding() && context_valid_ ? context_bytes_ : prefix_;
  std::string fresh;
  if (text_.size() > prefix.size()) {
    size_t common = 0;
    while (common < prefix.size() && text_[common] == prefix[common]) ++common;
    fresh = text_.substr(common);
  }
  reset();
  return fresh;
}

}  // namespace huginn
