// Built-in reasoning tasks, JSONL task files, answer extraction, Wilson intervals, text <-> ids.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <sstream>

#include "huginn/error.h"
#include "huginn/eval.h"
#ifdef HUGINN_EVAL_HAVE_TOKENIZER
#include "huginn/tokenizer.h"
#include "util/json.h"
#endif

namespace huginn {
namespace {

using json = nlohmann::json;

uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t hash_text(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return splitmix(h);
}

struct Knob {
  const char* task;
  const char* key;
  int lo, hi;           // allowed range
  int def_lo, def_hi;   // default
};
constexpr Knob kKnobs[] = {
    {"chain", "hops", 0, 12, 4, 8},
    {"parity", "bits", 1, 40, 8, 8},
    {"add", "digits", 1, 9, 3, 3},
    {"ops", "ops", 1, 24, 4, 8},
    {"mul", "digits", 1, 9, 2, 3},
    {"sum", "terms", 1, 24, 2, 8},
    {"affine", "ops", 1, 40, 1, 8},
    {"swap", "ops", 1, 40, 1, 8},
    {"trace", "ops", 1, 40, 1, 8},
};

const Knob& knob_for(const std::string& name) {
  for (const Knob& k : kKnobs)
    if (name == k.task) return k;
  std::string names;
  for (const Knob& k : kKnobs) names += std::string(names.empty() ? "" : ", ") + k.task;
  throw Error("task '" + name + "': not a built-in task (built-in: " + names +
              "; or give a .jsonl file)");
}

// chain: two independent chains (distinct digits) so the literal digits alone do not give the
// answer; the query is the end of one of them.
TaskExample make_chain(int hops, std::mt19937_64& rng) {
  std::string letters = "abcdefghijklmnopqrstuvwxyz";
  std::shuffle(letters.begin(), letters.end(), rng);
  const int d0 = static_cast<int>(rng() % 10);
  const int d1 = static_cast<int>((d0 + 1 + rng() % 9) % 10);
  std::vector<std::string> stmts;
  char ends[2];
  for (int c = 0; c < 2; ++c) {
    const char* v = letters.data() + c * (hops + 1);
    stmts.push_back(std::string(1, v[0]) + "=" + std::to_string(c == 0 ? d0 : d1));
    for (int h = 1; h <= hops; ++h) stmts.push_back(std::string(1, v[h]) + "=" + v[h - 1]);
    ends[c] = v[hops];
  }
  std::shuffle(stmts.begin(), stmts.end(), rng);
  const int q = static_cast<int>(rng() % 2);
  TaskExample ex;
  for (const auto& s : stmts) ex.prompt += s + ";";
  ex.prompt += std::string(1, ends[q]) + "?";
  ex.answer = std::to_string(q == 0 ? d0 : d1);
  return ex;
}

TaskExample make_parity(int bits, std::mt19937_64& rng) {
  TaskExample ex;
  ex.prompt = "parity ";
  int x = 0;
  for (int i = 0; i < bits; ++i) {
    const int b = static_cast<int>(rng() & 1);
    x ^= b;
    ex.prompt += static_cast<char>('0' + b);
  }
  ex.prompt += "?";
  ex.answer = std::to_string(x);
  return ex;
}

TaskExample make_add(int digits, std::mt19937_64& rng) {
  uint64_t lo = 1, hi = 9;
  for (int i = 1; i < digits; ++i) lo *= 10, hi = hi * 10 + 9;
  if (digits == 1) lo = 0;
  const uint64_t a = lo + rng() % (hi - lo + 1), b = lo + rng() % (hi - lo + 1);
  TaskExample ex;
  ex.prompt = std::to_string(a) + "+" + std::to_string(b) + "=";
  ex.answer = std::to_string(a + b);
  return ex;
}

// mul: a `digits`-digit number times a one-digit number, "347*8=" -> "2776": every output
// digit needs the product of its column plus a carry of up to 8 from the columns to its right.
TaskExample make_mul(int digits, std::mt19937_64& rng) {
  uint64_t lo = 1, hi = 9;
  for (int i = 1; i < digits; ++i) lo *= 10, hi = hi * 10 + 9;
  if (digits == 1) lo = 0;
  const uint64_t a = lo + rng() % (hi - lo + 1), b = 2 + rng() % 8;
  TaskExample ex;
  ex.prompt = std::to_string(a) + "*" + std::to_string(b) + "=";
  ex.answer = std::to_string(a * b);
  return ex;
}

// sum: the last digit of a sum of `terms` one-digit numbers, "3+5+8+1=" -> "7". A running
// total mod 10, carried from term to term.
TaskExample make_sum(int terms, std::mt19937_64& rng) {
  int v = 0;
  TaskExample ex;
  for (int i = 0; i < terms; ++i) {
    const int d = static_cast<int>(rng() % 10);
    v = (v + d) % 10;
    ex.prompt += (i ? "+" : "") + std::to_string(d);
  }
  ex.prompt += "=";
  ex.answer = std::to_string(v);
  return ex;
}

// ops: a digit, then `ops` operations (+d or *d) applied left to right, all mod 10:
// "7*3+5*2=" -> ((7*3+5)*2) mod 10 = "2". Multiplication does not commute with addition, so
// the value must be carried through the operations in order: one sequential step per operation.
TaskExample make_ops(int ops, std::mt19937_64& rng) {
  int v = static_cast<int>(rng() % 10);
  TaskExample ex;
  ex.prompt = std::to_string(v);
  for (int i = 0; i < ops; ++i) {
    const bool mul = rng() & 1;
    const int d = static_cast<int>(rng() % 10);
    v = mul ? v * d % 10 : (v + d) % 10;
    ex.prompt += (mul ? "*" : "+") + std::to_string(d);
  }
  ex.prompt += "=";
  ex.answer = std::to_string(v);
  return ex;
}

// affine: a digit, then `ops` operations +d (d 1-9) or *d (d 3, 7 or 9) applied left to right,
// mod 10: "7*3+5*9=" -> ((7*3+5)*9) mod 10 = "4". Unlike `ops`, every operation is a bijection of
// the ten digits that changes every value (no *0 or *5 that forgets the past, no identity), so
// the answer depends on every operation and no suffix of the prompt decides it. step_labels
// holds the running value under each operand digit.
TaskExample make_affine(int ops, std::mt19937_64& rng) {
  static constexpr int kUnits[] = {3, 7, 9};
  int v = static_cast<int>(rng() % 10);
  TaskExample ex;
  auto put = [&ex](char prompt, char label) {
    ex.prompt += prompt;
    ex.step_labels += label;
  };
  put(static_cast<char>('0' + v), static_cast<char>('0' + v));
  for (int i = 0; i < ops; ++i) {
    const bool mul = rng() % 3 == 0;
    const int d = mul ? kUnits[rng() % 3] : 1 + static_cast<int>(rng() % 9);
    v = mul ? v * d % 10 : (v + d) % 10;
    put(mul ? '*' : '+', 0);
    put(static_cast<char>('0' + d), static_cast<char>('0' + v));
  }
  put('=', 0);
  ex.answer = std::to_string(v);
  return ex;
}

// swap: a ball under one of five cups a-e, then `ops` swaps of two cups: "c:ab,cd,bc=" -> "d".
// Every swap is a transposition of S5; tracking a point under a sequence of them is NC1-complete
// like the word problem of S5 (Barrington), so no constant-depth shortcut is known. The marker
// after each swap (',' and, after the last, '='; ':' before the first) is where step_labels holds
// the ball's cup so far: every marker is the same token, so finding the previous marker's value
// is the same lookup everywhere.
TaskExample make_swap(int ops, std::mt19937_64& rng) {
  int v = static_cast<int>(rng() % 5);
  TaskExample ex;
  auto put = [&ex](char prompt, char label) {
    ex.prompt += prompt;
    ex.step_labels += label;
  };
  put(static_cast<char>('a' + v), 0);
  put(':', static_cast<char>('a' + v));
  for (int i = 0; i < ops; ++i) {
    const int a = static_cast<int>(rng() % 5);
    const int b = (a + 1 + static_cast<int>(rng() % 4)) % 5;
    v = v == a ? b : v == b ? a : v;
    put(static_cast<char>('a' + a), 0);
    put(static_cast<char>('a' + b), 0);
    put(i + 1 < ops ? ',' : '=', static_cast<char>('a' + v));
  }
  ex.answer = std::string(1, static_cast<char>('a' + v));
  return ex;
}

// trace: swap's prompt, answered with the ball's cup after every swap: "c:ab,cd,bc=" -> "bdd".
// An answer of `ops` tokens, each one more step of the same tracking, so decoders that share
// weight passes between positions (wavefront, speculative, diffusion) have tokens to overlap.
TaskExample make_trace(int ops, std::mt19937_64& rng) {
  TaskExample ex = make_swap(ops, rng);
  ex.answer.clear();
  for (size_t m = 4; m < ex.step_labels.size(); m += 3) ex.answer += ex.step_labels[m];  // ',' and '='

  return ex;
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

}  // namespace

Split parse_split(const std::string& s) {
  if (s == "train") return Split::kTrain;
  if (s == "test") return Split::kTest;
  throw Error("--split: expected train or test, got '" + s + "'");
}

std::vector<std::string> TaskSpec::builtin_names() {
  std::vector<std::string> out;
  for (const Knob& k : kKnobs) out.push_back(k.task);
  return out;
}

std::string TaskSpec::to_string() const {
  const Knob& k = knob_for(name);
  std::string s = name + ":" + k.key + "=" + std::to_string(min_level);
  if (max_level != min_level) s += "-" + std::to_string(max_level);
  return s;
}

TaskSpec TaskSpec::parse(const std::string& text) {
  TaskSpec spec;
  const size_t colon = text.find(':');
  spec.name = text.substr(0, colon);
  const Knob& k = knob_for(spec.name);
  spec.min_level = k.def_lo;
  spec.max_level = k.def_hi;
  if (colon == std::string::npos) return spec;
  const std::string rest = text.substr(colon + 1);
  const std::string want = std::string(k.key) + "=";
  if (rest.rfind(want, 0) != 0)
    throw Error("task '" + text + "': expected " + spec.name + ":" + k.key + "=N or " + k.key +
                "=LO-HI");
  const std::string range = rest.substr(want.size());
  try {
    size_t used = 0;
    const size_t dash = range.find('-');
    spec.min_level = std::stoi(range.substr(0, dash), &used);
    if (used != (dash == std::string::npos ? range.size() : dash)) throw std::invalid_argument("");
    spec.max_level = spec.min_level;
    if (dash != std::string::npos) {
      const std::string hi = range.substr(dash + 1);
      spec.max_level = std::stoi(hi, &used);
      if (used != hi.size()) throw std::invalid_argument("");
    }
  } catch (const std::exception&) {
    throw Error("task '" + text + "': " + k.key + " must be N or LO-HI (integers)");
  }
  if (spec.min_level < k.lo || spec.max_level > k.hi || spec.min_level > spec.max_level)
    throw Error("task '" + text + "': " + k.key + " must lie in [" + std::to_string(k.lo) + ", " +
                std::to_string(k.hi) + "] with LO <= HI");
  return spec;
}

TaskExample make_task_example(const TaskSpec& spec, Split split, uint64_t seed, uint64_t index) {
  knob_for(spec.name);
  for (uint64_t attempt = 0;; ++attempt) {
    std::mt19937_64 rng(splitmix(splitmix(seed ^ 0x7a5c) + index * 0x100000001b3ULL + attempt));
    const int level =
        spec.min_level + static_cast<int>(rng() % (spec.max_level - spec.min_level + 1));
    TaskExample ex = spec.name == "chain"    ? make_chain(level, rng)
                     : spec.name == "parity" ? make_parity(level, rng)
                     : spec.name == "ops"    ? make_ops(level, rng)
                     : spec.name == "mul"    ? make_mul(level, rng)
                     : spec.name == "sum"    ? make_sum(level, rng)
                     : spec.name == "affine" ? make_affine(level, rng)
                     : spec.name == "swap"   ? make_swap(level, rng)
                     : spec.name == "trace"  ? make_trace(level, rng)
                                             : make_add(level, rng);
    const bool is_test = hash_text(ex.prompt) % 8 == 0;
    if (is_test == (split == Split::kTest)) return ex;
    if (attempt > 100000)
      throw Error("task '" + spec.to_string() + "': cannot draw a " +
                  (split == Split::kTest ? "test" : "train") + " example (too few distinct prompts)");
  }
}

std::vector<TaskExample> make_task(const TaskSpec& spec, Split split, int n, uint64_t seed) {
  std::vector<TaskExample> out;
  out.reserve(std::max(n, 0));
  for (int i = 0; i < n; ++i) out.push_back(make_task_example(spec, split, seed, i));
  return out;
}

std::vector<TaskExample> load_task_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path + ": cannot read the task file");
  std::vector<TaskExample> out;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (trim(line).empty()) continue;
    const std::string where = path + ":" + std::to_string(lineno);
    json j = parse_json(line, where);
    if (!j.is_object()) throw Error(where + ": expected a JSON object");
    auto str = [&](const char* key) {
      if (!j.contains(key)) throw Error(where + ": missing field '" + key + "'");
      if (!j[key].is_string()) throw Error(where + ": field '" + key + "' must be a string");
      return j[key].get<std::string>();
    };
    TaskExample ex;
    if (j.contains("choices")) {
      ex.context = str("context");
      if (!j["choices"].is_array() || j["choices"].size() < 2)
        throw Error(where + ": field 'choices' must be an array of at least 2 strings");
      for (const auto& c : j["choices"]) {
        if (!c.is_string()) throw Error(where + ": field 'choices' must hold strings");
        ex.choices.push_back(c.get<std::string>());
      }
      if (!j.contains("gold") || !j["gold"].is_number_integer())
        throw Error(where + ": field 'gold' must be an integer index into 'choices'");
      ex.gold = j["gold"].get<int>();
      if (ex.gold < 0 || ex.gold >= static_cast<int>(ex.choices.size()))
        throw Error(where + ": field 'gold' = " + std::to_string(ex.gold) + " is not in [0, " +
                    std::to_string(ex.choices.size()) + ")");
    } else {
      ex.prompt = str("prompt");
      ex.answer = str("answer");
      if (j.contains("regex")) {
        ex.regex = str("regex");
        try {
          std::regex re(ex.regex);
        } catch (const std::regex_error& e) {
          throw Error(where + ": field 'regex' is not a valid regular expression: " + e.what());
        }
      }
    }
    if (!out.empty() && out.front().multiple_choice() != ex.multiple_choice())
      throw Error(where + ": mixes generation and multiple-choice lines (one kind per file)");
    out.push_back(std::move(ex));
  }
  if (out.empty()) throw Error(path + ": no examples");
  return out;
}

std::string task_to_jsonl(const std::vector<TaskExample>& examples) {
  std::string out;
  for (const auto& ex : examples) {
    json j;
    if (ex.multiple_choice()) {
      j["context"] = ex.context;
      j["choices"] = ex.choices;
      j["gold"] = ex.gold;
    } else {
      j["prompt"] = ex.prompt;
      j["answer"] = ex.answer;
      if (!ex.regex.empty()) j["regex"] = ex.regex;
    }
    out += j.dump() + "\n";
  }
  return out;
}

std::string extract_answer(const std::string& output, const std::string& regex) {
  if (regex.empty()) {
    const size_t nl = output.find('\n');
    return trim(output.substr(0, nl));
  }
  const std::regex re(regex);
  std::smatch m;
  if (!std::regex_search(output, m, re)) return "";
  return trim(m.size() > 1 ? m[1].str() : m[0].str());
}

std::pair<double, double> wilson_interval(int64_t k, int64_t n, double z) {
  if (n <= 0) return {0.0, 1.0};
  const double p = static_cast<double>(k) / n, z2 = z * z, nn = static_cast<double>(n);
  const double denom = 1 + z2 / nn;
  const double center = (p + z2 / (2 * nn)) / denom;
  const double half = z * std::sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn)) / denom;
  return {std::max(0.0, center - half), std::min(1.0, center + half)};
}

TaskTokens task_tokens(const TextCodec& codec, const TaskExample& ex, bool steps) {
  TaskTokens t;
  t.ids = codec.encode(ex.prompt, "task prompt");
  t.prompt_len = t.ids.size();
  const auto a = codec.encode(ex.answer + "\n", "task answer");
  t.ids.insert(t.ids.end(), a.begin(), a.end());
  t.labels.assign(t.ids.size() - 1, -100);
  for (size_t i = t.prompt_len - 1; i < t.labels.size(); ++i) t.labels[i] = t.ids[i + 1];
  if (steps && !ex.step_labels.empty()) {
    if (ex.step_labels.size() != ex.prompt.size() || t.prompt_len != ex.prompt.size())
      throw Error("task example '" + ex.prompt + "': step labels need one byte per prompt token");
    for (size_t i = 0; i + 1 < t.prompt_len; ++i)
      if (ex.step_labels[i] != 0) t.labels[i] = static_cast<unsigned char>(ex.step_labels[i]);
  }
  return t;
}

// ---- TextCodec --------------------------------------------------------------------------------------

TextCodec TextCodec::bytes(int64_t vocab_size) {
  TextCodec c;
  c.vocab_ = vocab_size;
  return c;
}

TextCodec TextCodec::for_model(const std::string& model_dir, int64_t vocab_size) {
  TextCodec c = bytes(vocab_size);
  const std::string path = model_dir + "/tokenizer.json";
  if (std::filesystem::exists(path)) {
#ifdef HUGINN_EVAL_HAVE_TOKENIZER
    c.tok_ = Tokenizer::load(path);
#else
    throw Error(path + ": this build has no tokenizer library");
#endif
  }
  return c;
}

std::vector<int32_t> TextCodec::encode(const std::string& text, const std::string& what) const {
#ifdef HUGINN_EVAL_HAVE_TOKENIZER
  if (tok_) return tok_->encode(text);
#endif
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (unsigned char ch : text) {
    if (ch >= vocab_)
      throw Error(what + ": byte " + std::to_string(ch) + " is outside the model's vocabulary of " +
                  std::to_string(vocab_) + " (byte vocabulary; add a tokenizer.json to the model)");
    ids.push_back(ch);
  }
  return ids;
}

std::string TextCodec::decode(const std::vector<int32_t>& ids) const {
#ifdef HUGINN_EVAL_HAVE_TOKENIZER
  if (tok_) return tok_->decode(ids);
#endif
  std::string s;
  for (int32_t id : ids)
    if (id >= 0 && id < 256) s += static_cast<char>(id);
  return s;
}

std::string TextCodec::piece(int32_t id) const { return decode({id}); }

int32_t TextCodec::newline_id() const {
#ifdef HUGINN_EVAL_HAVE_TOKENIZER
  if (tok_) {
    auto ids = tok_->encode("\n");
    return ids.size() == 1 ? ids[0] : -1;
  }
#endif
  return vocab_ > '\n' ? '\n' : -1;
}

}  // namespace huginn
