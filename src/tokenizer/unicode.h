// UTF-8 and Unicode helpers for the tokenizer: decoding with explicit handling of invalid bytes,
// Unicode normalization (utf8proc), White_Space, the GPT-2 byte-level alphabet, and Rust's
// String::from_utf8_lossy (which the byte-level decoder uses).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace huginn::tok {

// Decodes the character at s[i]; sets *len to its byte length. Returns -1 (with *len = 1) for a
// byte that does not start a valid UTF-8 sequence (overlong, surrogate, > U+10FFFF, truncated).
int32_t utf8_decode(std::string_view s, size_t i, int* len);
bool utf8_valid(std::string_view s);
void utf8_append(std::string& out, int32_t cp);
// Number of leading bytes of `s` that form complete valid characters, stopping at the first
// invalid byte.
size_t utf8_valid_prefix(std::string_view s);

// Rust String::from_utf8_lossy: each maximal invalid subsequence becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);

// Unicode White_Space (Rust char::is_whitespace, Oniguruma \s).
bool is_white_space(int32_t cp);
// General category helpers (utf8proc tables).
bool is_numeric(int32_t cp);      // N*: Rust char::is_numeric
bool is_alphanumeric(int32_t cp); // L* or N* (Rust char::is_alphanumeric, without Other_Alphabetic)
bool is_punctuation(int32_t cp);  // P*

enum class NormForm { kNFC, kNFD, kNFKC, kNFKD };
// Normalizes each maximal valid UTF-8 run of `s`; invalid bytes are kept as they are. Only the
// chunks between normalization boundaries that hold a character that may change are passed to
// utf8proc, so mostly-normalized text is copied at memory speed. O(n log n) in the length of a
// run of combining marks (the canonical reordering is a stable sort, not utf8proc's swaps).
std::string normalize(std::string_view s, NormForm form);
// The plain reference: every valid run through utf8proc whole (quadratic in the length of a run
// of out-of-order combining marks).
std::string normalize_reference(std::string_view s, NormForm form);

// The GPT-2 byte-level alphabet: byte b is written as the character byte_char(b).
int32_t byte_char(uint8_t b);
// The inverse: the byte of a byte-level character, or -1.
int byte_of_char(int32_t cp);
// Maps every byte of `s` to its byte-level character, as UTF-8.
std::string bytes_to_byte_level(std::string_view s);

}  // namespace huginn::tok
