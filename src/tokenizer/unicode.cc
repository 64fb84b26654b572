#include "tokenizer/unicode.h"

#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "huginn/error.h"

namespace huginn::tok {

int32_t utf8_decode(std::string_view s, size_t i, int* len) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data()) + i;
  size_t n = s.size() - i;
  uint8_t c = p[0];
  *len = 1;
  if (c < 0x80) return c;
  int need;
  int32_t cp;
  if (c >= 0xC2 && c <= 0xDF) {
    need = 1, cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 2, cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3, cp = c & 0x07;
  } else {
    return -1;
  }
  if (n < static_cast<size_t>(need) + 1) return -1;
  // The second byte's range also rules out overlong forms, surrogates and > U+10FFFF.
  uint8_t lo = 0x80, hi = 0xBF;
  if (c == 0xE0) lo = 0xA0;
  if (c == 0xED) hi = 0x9F;
  if (c == 0xF0) lo = 0x90;
  if (c == 0xF4) hi = 0x8F;
  if (p[1] < lo || p[1] > hi) return -1;
  for (int k = 1; k <= need; ++k) {
    if ((p[k] & 0xC0) != 0x80) return -1;
    cp = (cp << 6) | (p[k] & 0x3F);
  }
  *len = need + 1;
  return cp;
}

size_t utf8_valid_prefix(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      // ASCII runs eight bytes at a time (no high bit set in the word).
      while (i + 8 <= s.size()) {
        uint64_t w;
        std::memcpy(&w, s.data() + i, 8);
        if (w & 0x8080808080808080ULL) break;
        i += 8;
      }
      continue;
    }
    int len;
    if (utf8_decode(s, i, &len) < 0) return i;
    i += len;
  }
  return i;
}

bool utf8_valid(std::string_view s) { return utf8_valid_prefix(s) == s.size(); }

void utf8_append(std::string& out, int32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string utf8_lossy(std::string_view s) {
  if (utf8_valid(s)) return std::string(s);
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    size_t ok = i + utf8_valid_prefix(s.substr(i));
    out.append(s.data() + i, ok - i);
    if (ok == s.size()) break;
    // Skip the maximal subpart of an ill-formed sequence: the lead byte plus the continuation
    // bytes that could still have completed it (Unicode "substitution of maximal subparts").
    const auto* p = reinterpret_cast<const uint8_t*>(s.data());
    uint8_t c = p[ok];
    size_t j = ok + 1;
    int need = (c >= 0xC2 && c <= 0xDF) ? 1 : (c >= 0xE0 && c <= 0xEF) ? 2 : (c >= 0xF0 && c <= 0xF4) ? 3 : 0;
    if (need > 0 && j < s.size()) {
      uint8_t lo = 0x80, hi = 0xBF;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
      if (p[j] >= lo && p[j] <= hi) {
        ++j;
        for (int k = 1; k < need && j < s.size() && (p[j] & 0xC0) == 0x80; ++k) ++j;
      }
    }
    out.append("\xEF\xBF\xBD");
    i = j;
  }
  return out;
}

bool is_white_space(int32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

bool is_numeric(int32_t cp) {
  auto c = utf8proc_category(cp);
  return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

bool is_alphanumeric(int32_t cp) {
  auto c = utf8proc_category(cp);
  return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) || is_numeric(cp);
}

bool is_punctuation(int32_t cp) {
  auto c = utf8proc_category(cp);
  return c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO;
}

namespace {

// True when `s` is certainly unchanged by `form`: every character below U+0300 is in NFC (lead
// bytes below 0xCC), and ASCII is stable under every form.
bool trivially_normal(std::string_view s, NormForm form) {
  uint8_t limit = form == NormForm::kNFC ? 0xCC : 0x80;
  for (char ch : s)
    if (static_cast<uint8_t>(ch) >= limit) return false;
  return true;
}

utf8proc_option_t options_of(NormForm form) {
  int opts = UTF8PROC_STABLE;
  switch (form) {
    case NormForm::kNFC: opts |= UTF8PROC_COMPOSE; break;
    case NormForm::kNFD: opts |= UTF8PROC_DECOMPOSE; break;
    case NormForm::kNFKC: opts |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
    case NormForm::kNFKD: opts |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
  }
  return static_cast<utf8proc_option_t>(opts);
}

void normalize_valid(std::string_view s, NormForm form, std::string& out) {
  utf8proc_uint8_t* dst = nullptr;
  utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                    static_cast<utf8proc_ssize_t>(s.size()), &dst, options_of(form));
  if (n < 0) {
    std::free(dst);
    throw Error(std::string("Unicode normalization failed: ") + utf8proc_errmsg(n));
  }
  out.append(reinterpret_cast<const char*>(dst), static_cast<size_t>(n));
  std::free(dst);
}

// The same result as normalize_valid in O(n log n): utf8proc decomposes each character and
// composes the whole, but the canonical reordering between them is a stable sort of each run of
// non-starters by combining class. utf8proc's own reordering swaps neighbours one step at a time
// (quadratic: 80,000 alternating marks took 19 s).
void normalize_valid_fast(std::string_view s, NormForm form, std::string& out) {
  const utf8proc_option_t options = options_of(form);
  thread_local std::vector<utf8proc_int32_t> cps;
  cps.clear();
  cps.reserve(s.size() + 16);
  for (size_t i = 0; i < s.size();) {
    int len;
    int32_t cp = utf8_decode(s, i, &len);
    HUGINN_ASSERT(cp >= 0, "normalize_valid_fast takes valid UTF-8");
    i += len;
    size_t at = cps.size();
    cps.resize(at + 32);  // the longest decomposition (U+FDFA, compatibility) is 18
    int boundclass = 0;
    utf8proc_ssize_t n = utf8proc_decompose_char(cp, cps.data() + at, 32, options, &boundclass);
    if (n > 32) {
      cps.resize(at + static_cast<size_t>(n));
      n = utf8proc_decompose_char(cp, cps.data() + at, n, options, &boundclass);
    }
    if (n < 0) throw Error(std::string("Unicode normalization failed: ") + utf8proc_errmsg(n));
    cps.resize(at + static_cast<size_t>(n));
  }
  // Canonical ordering: each maximal run of characters of non-zero class, sorted stably.
  auto ccc = [](utf8proc_int32_t c) { return utf8proc_get_property(c)->combining_class; };
  for (size_t i = 0; i < cps.size();) {
    if (ccc(cps[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i + 1;
    while (j < cps.size() && ccc(cps[j]) != 0) ++j;
    if (j - i > 1)
      std::stable_sort(cps.begin() + static_cast<std::ptrdiff_t>(i),
                       cps.begin() + static_cast<std::ptrdiff_t>(j),
                       [&](utf8proc_int32_t a, utf8proc_int32_t b) { return ccc(a) < ccc(b); });
    i = j;
  }
  size_t n = cps.size();
  if (options & UTF8PROC_COMPOSE) {
    utf8proc_ssize_t m = utf8proc_normalize_utf32(cps.data(), static_cast<utf8proc_ssize_t>(n), options);
    if (m < 0) throw Error(std::string("Unicode normalization failed: ") + utf8proc_errmsg(m));
    n = static_cast<size_t>(m);
  }
  for (size_t k = 0; k < n; ++k) utf8_append(out, cps[k]);
  if (cps.capacity() > (size_t{1} << 16)) std::vector<utf8proc_int32_t>().swap(cps);  // a rare long run
}

}  // namespace

namespace {

bool is_hangul(int32_t cp) {
  return (cp >= 0x1100 && cp <= 0x11FF) || (cp >= 0xA960 && cp <= 0xA97F) ||
         (cp >= 0xAC00 && cp <= 0xD7FF);
}

// A normalization boundary: a starter that nothing before it can compose with, so that
// normalize(X + Y) == normalize(X) + normalize(Y) when Y begins with one.
bool is_boundary(int32_t cp, const utf8proc_property_t* p) {
  if (cp < 0x80) return true;
  bool second = p->comb_index != UINT16_MAX && p->comb_index >= 0x8000;
  return p->combining_class == 0 && !second && !is_hangul(cp);
}

// True when the character may change the text under `form` (decomposes, reorders, composes
// with a previous character).
bool may_change(int32_t cp, const utf8proc_property_t* p, NormForm form) {
  if (cp < (form == NormForm::kNFC ? 0x300 : 0x80)) return false;  // all below U+0300 are NFC
  bool canonical = form == NormForm::kNFC || form == NormForm::kNFD;
  bool second = p->comb_index != UINT16_MAX && p->comb_index >= 0x8000;
  bool decomposes = p->decomp_seqindex != UINT16_MAX && (!canonical || p->decomp_type == 0);
  return p->combining_class != 0 || second || decomposes || is_hangul(cp);
}

}  // namespace

std::string normalize_reference(std::string_view s, NormForm form) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    size_t ok = utf8_valid_prefix(s.substr(i));
    if (ok > 0) normalize_valid(s.substr(i, ok), form, out);
    i += ok;
    if (i < s.size()) out.push_back(s[i++]);
  }
  return out;
}

// Copies the text through, sending to utf8proc only the chunks (from one boundary to the next)
// that hold a character that may change; invalid bytes are kept and also end a chunk.
std::string normalize(std::string_view s, NormForm form) {
  if (trivially_normal(s, form)) return std::string(s);
  std::string out;
  out.reserve(s.size() + s.size() / 8);
  size_t chunk = 0;          // start of the text not yet written
  size_t last_boundary = 0;  // the latest boundary at or after `chunk`
  bool dirty = false;        // [chunk, i) must go through utf8proc
  auto close = [&](size_t end) {
    if (dirty)
      normalize_valid_fast(s.substr(chunk, end - chunk), form, out);
    else
      out.append(s.substr(chunk, end - chunk));
    chunk = last_boundary = end;
    dirty = false;
  };
  for (size_t i = 0; i < s.size();) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      if (dirty) close(i);
      last_boundary = i++;
      continue;
    }
    int len;
    int32_t cp = utf8_decode(s, i, &len);
    if (cp < 0) {  // an invalid byte stays as it is
      close(i);
      out.push_back(s[i]);
      chunk = last_boundary = ++i;
      continue;
    }
    const utf8proc_property_t* p = utf8proc_get_property(cp);
    if (is_boundary(cp, p)) {
      if (dirty) close(i);
      last_boundary = i;
    }
    if (!dirty && may_change(cp, p, form)) {
      out.append(s.substr(chunk, last_boundary - chunk));
      chunk = last_boundary;
      dirty = true;
    }
    i += len;
  }
  close(s.size());
  return out;
}

namespace {
struct ByteLevelTables {
  std::array<int32_t, 256> to_char{};
  std::array<int16_t, 324> to_byte{};  // every byte-level character is below U+0144
  ByteLevelTables() {
    to_byte.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      to_char[b] = printable ? b : 256 + n++;
    }
    for (int b = 0; b < 256; ++b) to_byte[to_char[b]] = static_cast<int16_t>(b);
  }
};
const ByteLevelTables& byte_tables() {
  static const ByteLevelTables t;
  return t;
}
}  // namespace

int32_t byte_char(uint8_t b) { return byte_tables().to_char[b]; }

int byte_of_char(int32_t cp) {
  if (cp < 0 || cp >= 324) return -1;
  return byte_tables().to_byte[cp];
}

std::string bytes_to_byte_level(std::string_view s) {
  std::string out;
  out.reserve(s.size() * 2);
  for (char c : s) utf8_append(out, byte_char(static_cast<uint8_t>(c)));
  return out;
}

}  // namespace huginn::tok
