// A SAX handler that builds the DOM itself (nlohmann's parser is iterative; only what we do with
// the result recurses), checking depth and duplicate keys as it goes. It also avoids nlohmann's
// callback parser, which rescans the parent object at every closing brace: quadratic in the
// number of entries of a large object such as a safetensors header.
#include "util/json.h"

#include <vector>

#include "huginn/error.h"
#include "util/mapped_file.h"

namespace huginn {
namespace {

using json = nlohmann::json;

constexpr size_t kMaxErrorDetail = 200;  // characters of a parser message or path kept

// The first n bytes of s, moved back to a UTF-8 character boundary so that a message stays valid
// UTF-8 (it may end up in a JSON error response).
std::string utf8_prefix(const std::string& s, size_t n) {
  if (n >= s.size()) return s;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}

std::string clip(const std::string& s, size_t n = kMaxErrorDetail) {
  return s.size() > n ? utf8_prefix(s, n - 3) + "..." : s;
}

// 'key', escaped as JSON escapes it (without the double quotes) and cut to a readable length.
std::string quoted_key(const std::string& k) {
  const std::string d = json(k).dump(-1, ' ', false, json::error_handler_t::replace);
  return "'" + clip(d.substr(1, d.size() - 2), 80) + "'";
}

class BoundedBuilder {
 public:
  using number_integer_t = json::number_integer_t;
  using number_unsigned_t = json::number_unsigned_t;
  using number_float_t = json::number_float_t;
  using string_t = json::string_t;
  using binary_t = json::binary_t;

  BoundedBuilder(const std::string& source, const JsonLimits& limits)
      : source_(source), limits_(limits) {}

  json take() { return std::move(root_); }

  bool null() { return put(json(nullptr)); }
  bool boolean(bool v) { return put(json(v)); }
  bool number_integer(number_integer_t v) { return put(json(v)); }
  bool number_unsigned(number_unsigned_t v) { return put(json(v)); }
  bool number_float(number_float_t v, const string_t&) { return put(json(v)); }
  bool string(string_t& v) { return put(json(std::move(v))); }
  bool binary(binary_t& v) { return put(json::binary(std::move(v))); }
  bool start_object(std::size_t) { return open(json::object()); }
  bool start_array(std::size_t) { return open(json::array()); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }
  bool key(string_t& k) {
    json& obj = *stack_.back();
    if (limits_.reject_duplicate_keys && obj.contains(k))
      throw Error(source_ + ": key " + quoted_key(k) + " appears twice in the object at " +
                  where() + " (each key may appear once)");
    key_ = std::move(k);
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) {
    throw Error(source_ + ": not valid JSON (" + clip(e.what()) + ")");
  }

 private:
  // Stores v where the parser is (root, next array element, or value of the last key) and
  // returns its address there.
  json* place(json&& v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    json& parent = *stack_.back();
    if (parent.is_array()) {
      parent.push_back(std::move(v));
      return &parent.back();
    }
    json& slot = parent[key_];
    slot = std::move(v);
    return &slot;
  }
  bool put(json&& v) {
    place(std::move(v));
    return true;
  }
  bool open(json&& container) {
    // Only the innermost open container is ever appended to, so the addresses of the outer
    // ones (elements of their parents) stay valid while they are open.
    std::string seg;
    if (!stack_.empty())
      seg = stack_.back()->is_array() ? std::to_string(stack_.back()->size()) : key_;
    if (static_cast<int>(stack_.size()) + 1 > limits_.max_depth) {
      path_.push_back(std::move(seg));
      throw Error(source_ + ": JSON nested deeper than " + std::to_string(limits_.max_depth) +
                  " levels (at " + where() + "; the limit is " +
                  std::to_string(limits_.max_depth) + ")");
    }
    json* c = place(std::move(container));
    stack_.push_back(c);
    path_.push_back(std::move(seg));
    return true;
  }
  bool close() {
    stack_.pop_back();
    path_.pop_back();
    return true;
  }
  // The JSON pointer of the innermost open container (path_[0] is the root's empty segment),
  // cut to a readable length.
  std::string where() const {
    if (path_.size() <= 1) return "the top level";
    std::string p;
    for (size_t i = 1; i < path_.size(); ++i) {
      p += "/" + clip(path_[i], 40);
      if (p.size() > kMaxErrorDetail) return clip(p);
    }
    return p;
  }

  const std::string& source_;
  const JsonLimits& limits_;
  json root_;
  std::vector<json*> stack_;
  std::vector<std::string> path_;  // key or index of each open container in its parent
  std::string key_;
};

// Appends s as a JSON string, cut first to what the budget can still show (the replace handler
// keeps a cut UTF-8 sequence printable).
void preview_string(const std::string& s, std::string& out, size_t budget) {
  const size_t room = out.size() < budget ? budget - out.size() + 1 : 1;
  out += json(s.size() > room ? s.substr(0, room) : s)
             .dump(-1, ' ', false, json::error_handler_t::replace);
}

void preview(const json& v, std::string& out, size_t budget, int depth) {
  if (out.size() > budget) return;
  constexpr int kDepth = 6;
  if (v.is_string()) {
    preview_string(v.get_ref<const std::string&>(), out, budget);
  } else if (v.is_binary()) {
    out += "<binary>";
  } else if (!v.is_structured()) {
    out += v.dump();  // a number, bool or null: short
  } else {
    const bool obj = v.is_object();
    if (depth >= kDepth) {
      out += obj ? "{...}" : "[...]";
      return;
    }
    out += obj ? '{' : '[';
    bool first = true;
    for (auto it = v.begin(); it != v.end() && out.size() <= budget; ++it) {
      if (!first) out += ',';
      first = false;
      if (obj) {
        preview_string(it.key(), out, budget);
        out += ':';
      }
      preview(it.value(), out, budget, depth + 1);
    }
    out += obj ? '}' : ']';
  }
}

}  // namespace

json parse_json(std::string_view text, const std::string& source, const JsonLimits& limits) {
  BoundedBuilder b(source, limits);
  json::sax_parse(text.data(), text.data() + text.size(), &b);
  return b.take();
}

json read_json_file(const std::string& path, const JsonLimits& limits) {
  auto f = MappedFile::open(path);
  if (f->size() > limits.max_bytes)
    throw Error(path + ": the file is " + std::to_string(f->size()) +
                " bytes, more than the limit of " + std::to_string(limits.max_bytes) +
                " bytes for this JSON file");
  const char* b = reinterpret_cast<const char*>(f->data());
  return parse_json(std::string_view(b ? b : "", f->size()), path, limits);
}

std::string json_preview(const json& v, size_t max_chars) {
  if (max_chars < 4) max_chars = 4;
  std::string text;
  preview(v, text, max_chars, 0);
  return std::string(v.type_name()) + " " + clip(text, max_chars);
}

}  // namespace huginn
