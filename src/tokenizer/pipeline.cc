#include "tokenizer/pipeline.h"

#include <algorithm>
#include <cstring>

#include "huginn/error.h"
#include "tokenizer/components.h"
#include "tokenizer/scanner.h"
#include "tokenizer/unicode.h"

namespace huginn::tok {

// ---------------------------------------------------------------------------------------------
// Added tokens

void AddedMatcher::build(std::vector<std::string> patterns, std::vector<const AddedToken*> tokens) {
  patterns_ = std::move(patterns);
  tokens_ = std::move(tokens);
  ends_.assign(1, -1);
  edges_.clear();
  std::fill(std::begin(root_child_), std::end(root_child_), -1);
  for (size_t k = 0; k < patterns_.size(); ++k) {
    const std::string& p = patterns_[k];
    if (p.empty()) continue;  // (a normalizer may empty a pattern; it then matches nothing)
    int32_t node = 0;
    for (unsigned char c : p) {
      int32_t* child;
      if (node == 0) {
        child = &root_child_[c];
      } else {
        auto [it, fresh] = edges_.try_emplace((static_cast<uint64_t>(node) << 8) | c, -1);
        child = &it->second;
      }
      if (*child < 0) {
        *child = static_cast<int32_t>(ends_.size());
        ends_.push_back(-1);
      }
      node = *child;
    }
    if (ends_[node] < 0) ends_[node] = static_cast<int32_t>(k);  // the first of equal patterns
  }
}

int AddedMatcher::longest_at(std::string_view text, size_t at) const {
  int32_t node = root_child_[static_cast<uint8_t>(text[at])];
  int best = -1;
  for (size_t i = at + 1; node >= 0; ++i) {
    if (ends_[node] >= 0) best = ends_[node];
    if (i == text.size()) break;
    auto it = edges_.find((static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(text[i]));
    node = it == edges_.end() ? -1 : it->second;
  }
  return best;
}

namespace {

bool ends_with_word(std::string_view s) {
  if (s.empty()) return false;
  size_t k = s.size() - 1;
  while (k > 0 && (static_cast<uint8_t>(s[k]) & 0xC0) == 0x80) --k;
  int len;
  int32_t cp = utf8_decode(s, k, &len);
  return cp >= 0 && is_alphanumeric(cp);
}

bool starts_with_word(std::string_view s) {
  if (s.empty()) return false;
  int len;
  int32_t cp = utf8_decode(s, 0, &len);
  return cp >= 0 && is_alphanumeric(cp);
}

// Start of the run of whitespace at the end of s.
size_t space_leftmost_at_end(std::string_view s) {
  size_t e = s.size();
  while (e > 0) {
    size_t k = e - 1;
    while (k > 0 && (static_cast<uint8_t>(s[k]) & 0xC0) == 0x80) --k;
    int len;
    int32_t cp = utf8_decode(s, k, &len);
    if (cp < 0 || k + len != e || !is_white_space(cp)) return e;
    e = k;
  }
  return 0;
}

// Length of the run of whitespace at the start of s.
size_t space_rightmost_at_start(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    int len;
    int32_t cp = utf8_decode(s, i, &len);
    if (cp < 0 || !is_white_space(cp)) break;
    i += len;
  }
  return i;
}

}  // namespace

void AddedMatcher::split(std::string_view text, std::vector<Split>& out) const {
  size_t start_offset = 0;
  size_t pos = 0;
  const size_t n = text.size();
  while (pos < n) {
    // Leftmost position where a pattern matches; there the longest pattern.
    int hit = -1;
    size_t at = pos;
    for (; at < n; ++at)
      if (root_child_[static_cast<uint8_t>(text[at])] >= 0 && (hit = longest_at(text, at)) >= 0) break;
    if (hit < 0) break;
    size_t start = at, stop = at + patterns_[hit].size();
    pos = stop;  // the next search starts after this match, whatever is kept of it
    const AddedToken& tok = *tokens_[hit];
    if (tok.single_word) {
      bool start_space = start == 0 || !ends_with_word(text.substr(0, start));
      bool stop_space = stop == n || !starts_with_word(text.substr(stop));
      if (!start_space || !stop_space) continue;
    }
    if (tok.lstrip) start = std::max(space_leftmost_at_end(text.substr(0, start)), start_offset);
    if (tok.rstrip) stop += space_rightmost_at_start(text.substr(stop));
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, tok.id});
    start_offset = stop;
  }
  if (start_offset < n) out.push_back({start_offset, n, -1});
}

void Pipeline::finish_added() {
  added_by_content.clear();
  added_by_id.clear();
  std::vector<std::string> raw_p, norm_p;
  std::vector<const AddedToken*> raw_t, norm_t;
  for (size_t k = 0; k < added.size(); ++k) {
    const AddedToken& t = added[k];
    added_by_content[t.content] = t.id;
    added_by_id[t.id] = k;
    if (t.normalized) {
      std::string c = t.content;
      if (normalizer)
        normalizer->normalize(c, GrowthBound::of(c.size(), &origin, "normalizer (of an added token)"));
      if (c.size() > kMaxAddedTokenBytes)
        throw Error(origin + ": added token '" + quote(t.content) + "' normalizes to " +
                    std::to_string(c.size()) + " bytes, more than the bound of " +
                    std::to_string(kMaxAddedTokenBytes));
      norm_p.push_back(c);
      norm_t.push_back(&t);
    } else {
      raw_p.push_back(t.content);
      raw_t.push_back(&t);
    }
  }
  raw_matcher.build(std::move(raw_p), std::move(raw_t));
  normalized_matcher.build(std::move(norm_p), std::move(norm_t));
}

// ---------------------------------------------------------------------------------------------
// Encode / decode

void Pipeline::finish_pre_tokenizer() {
  fast_ = pre_tokenizer ? pre_tokenizer->fast_split() : FastSplit{};
  if (fast_.ok && !fast_.scanner) fast_ = {};  // (an identity alone is the general path's case)
}

// The scanner's pieces straight to the model: no piece list, one cache lookup per text.
void Pipeline::encode_scanned(std::string_view text, std::vector<int32_t>& ids) const {
  thread_local std::string spaced;
  if (fast_.prefix_space && !text.empty() && text[0] != ' ') {
    spaced.assign(1, ' ');
    spaced.append(text);
    text = spaced;
  }
  WordCache* cache = model->thread_cache();
  const bool raw = byte_level_deferred;
  const auto* bytes = reinterpret_cast<const uint8_t*>(text.data());
  for (size_t i = 0, n = text.size(); i < n;) {
    const size_t valid_end = i + utf8_valid_prefix(text.substr(i));
    const size_t m = valid_end - i;
    for (size_t a = 0; a < m;) {
      bool gap;
      const size_t e = fast_.scanner->piece_at(bytes + i, m, a, &gap);
      if (!gap || fast_.keep_gaps) model->encode_word(text.substr(i + a, e - a), raw, ids, cache);
      a = e;
    }
    i = valid_end;
    if (i < n) model->encode_word(text.substr(i++, 1), raw, ids, cache);  // an invalid byte
  }
}

void Pipeline::encode_text(std::string_view text, bool at_start, std::vector<int32_t>& ids) const {
  if (fast_.ok) {
    encode_scanned(text, ids);
    return;
  }
  if (!pre_tokenizer) {
    model->encode_word(text, false, ids);
    return;
  }
  thread_local std::vector<Piece> in, out;
  thread_local Arena arena;
  in.assign(1, Piece{text, at_start});
  out.clear();
  arena.clear();
  arena.set_bound(GrowthBound::of(text.size(), &origin, "pre_tokenizer"));
  pre_tokenizer->split(in, out, arena);
  for (const Piece& p : out) model->encode_word(p.text, byte_level_deferred, ids);
  arena.clear();
}

void Pipeline::encode(std::string_view text, bool add_special, std::vector<int32_t>& ids) const {
  std::vector<AddedMatcher::Split> raw, norm;
  if (raw_matcher.empty()) {
    if (!text.empty()) raw.push_back({0, text.size(), -1});
  } else {
    raw_matcher.split(text, raw);
  }
  std::string normalized;
  for (const auto& r : raw) {
    if (r.id >= 0) {
      ids.push_back(r.id);
      continue;
    }
    std::string_view seg = text.substr(r.start, r.end - r.start);
    if (seg.empty()) continue;
    std::string_view cur = seg;
    if (normalizer) {
      normalized.assign(seg);
      normalizer->normalize(normalized, GrowthBound::of(seg.size(), &origin, "normalizer"));
      cur = normalized;
    }
    if (cur.empty()) continue;
    bool at_start = r.start == 0;
    if (normalized_matcher.empty()) {
      encode_text(cur, at_start, ids);
      continue;
    }
    norm.clear();
    normalized_matcher.split(cur, norm);
    for (const auto& s : norm) {
      if (s.id >= 0)
        ids.push_back(s.id);
      else if (s.end > s.start)
        encode_text(cur.substr(s.start, s.end - s.start), at_start && s.start == 0, ids);
    }
  }
  if (post_processor) post_processor->process(ids, add_special);
}

int32_t Pipeline::token_to_id(std::string_view token) const {
  auto it = added_by_content.find(std::string(token));
  if (it != added_by_content.end()) return it->second;
  return model->token_to_id(token);
}

const std::string* Pipeline::id_to_token(int32_t id) const {
  auto it = added_by_id.find(id);
  if (it != added_by_id.end()) return &added[it->second].content;
  return model->id_to_token(id);
}

bool Pipeline::is_special(int32_t id) const {
  auto it = added_by_id.find(id);
  return it != added_by_id.end() && added[it->second].special;
}

void Pipeline::finish_decoder() {
  byte_text_.clear();
  byte_off_.clear();
  id_kind_.clear();
  if (!decoder || !decoder->is_byte_level()) return;
  int32_t limit = model->id_limit();
  for (const AddedToken& a : added) limit = std::max(limit, a.id + 1);
  byte_off_.reserve(static_cast<size_t>(limit) + 1);
  id_kind_.assign(static_cast<size_t>(limit), 0);
  for (int32_t id = 0; id < limit; ++id) {
    byte_off_.push_back(static_cast<uint32_t>(byte_text_.size()));
    const std::string* t = id_to_token(id);
    if (!t) continue;
    id_kind_[id] = is_special(id) ? 2 : 1;
    byte_level_token_bytes(*t, byte_text_);
    if (byte_text_.size() > UINT32_MAX) throw Error(origin + ": more than 4 GiB of token text");
  }
  byte_off_.push_back(static_cast<uint32_t>(byte_text_.size()));
}

void Pipeline::decode_bytes(const int32_t* ids, size_t n, bool skip_special, std::string& bytes) const {
  bytes.clear();
  bytes.reserve(n * 4);
  const uint8_t skip_kind = skip_special ? 2 : 3;
  for (size_t k = 0; k < n; ++k) {
    const int32_t id = ids[k];
    if (id < 0 || static_cast<size_t>(id) >= id_kind_.size()) continue;  // unknown: skipped
    const uint8_t kind = id_kind_[id];
    if (kind == 0 || kind == skip_kind) continue;
    bytes.append(byte_text_, byte_off_[id], byte_off_[id + 1] - byte_off_[id]);
  }
  if (!utf8_valid(bytes)) bytes = utf8_lossy(bytes);
}

void Pipeline::decode_to(const int32_t* ids, size_t n, bool skip_special, std::string& out) const {
  if (id_kind_.empty())
    out = decode(ids, n, skip_special);
  else
    decode_bytes(ids, n, skip_special, out);
}

std::string Pipeline::decode(const int32_t* ids, size_t n, bool skip_special) const {
  if (!id_kind_.empty()) {
    std::string out;
    decode_bytes(ids, n, skip_special, out);
    return out;
  }
  std::vector<std::string> tokens;
  tokens.reserve(n);
  for (size_t k = 0; k < n; ++k) {
    const std::string* t = id_to_token(ids[k]);
    if (!t) continue;  // unknown ids are skipped, as the library does
    if (skip_special && is_special(ids[k])) continue;
    tokens.push_back(*t);
  }
  if (!decoder) {
    std::string out;
    for (size_t k = 0; k < tokens.size(); ++k) {
      if (k) out += ' ';
      out += tokens[k];
    }
    return out;
  }
  size_t bytes = 0;
  for (const std::string& t : tokens) bytes += t.size();
  decoder->decode_chain(tokens, GrowthBound::of(bytes, &origin, "decoder"));
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

}  // namespace huginn::tok
