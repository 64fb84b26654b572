// huginn tokenize: text lines from stdin to token ids (one line of ids per line), or back with
// --decode.
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "huginn/error.h"
#include "huginn/tokenizer.h"

namespace huginn::cli {
namespace {

struct Options {
  std::string tokenizer;
  bool special = false, json = false, decode = false, skip_special = false;
};

// "1 2 3", "1,2,3" or "[1, 2, 3]" -> ids; names the line in errors.
std::vector<int32_t> parse_ids(const std::string& line, size_t line_no) {
  std::vector<int32_t> ids;
  std::string tok;
  auto flush = [&] {
    if (tok.empty()) return;
    try {
      size_t used = 0;
      long v = std::stol(tok, &used);
      if (used != tok.size() || v < INT32_MIN || v > INT32_MAX) throw std::invalid_argument(tok);
      ids.push_back(static_cast<int32_t>(v));
    } catch (const std::exception&) {
      throw Error("stdin line " + std::to_string(line_no) + ": '" + tok +
                  "' is not a token id (expected integers separated by spaces or commas)");
    }
    tok.clear();
  };
  for (char c : line) {
    if (c == ' ' || c == ',' || c == '\t' || c == '[' || c == ']' || c == '\r')
      flush();
    else
      tok.push_back(c);
  }
  flush();
  return ids;
}

void run(const Options& o) {
  auto tok = Tokenizer::load(o.tokenizer);
  std::string line;
  size_t line_no = 0;
  std::string out;
  while (std::getline(std::cin, line)) {
    ++line_no;
    out.clear();
    if (o.decode) {
      std::string text = tok->decode(parse_ids(line, line_no), o.skip_special);
      out = o.json ? nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) : text;
    } else {
      std::vector<int32_t> ids = tok->encode(line, o.special);
      if (o.json) {
        out = nlohmann::json(ids).dump();
      } else {
        for (size_t k = 0; k < ids.size(); ++k) {
          if (k) out += ' ';
          out += std::to_string(ids[k]);
        }
      }
    }
    out += '\n';
    std::fwrite(out.data(), 1, out.size(), stdout);
  }
  std::fflush(stdout);
}

Registrar reg(40, [](CLI::App& app, Common&) {
  auto o = std::make_shared<Options>();
  CLI::App* sub = app.add_subcommand(
      "tokenize", "Encode stdin lines to token ids (one line each), or decode ids with --decode");
  sub->add_option("--tokenizer", o->tokenizer, "tokenizer.json (Hugging Face format)")->required();
  sub->add_flag("--special", o->special, "add the post-processor's special tokens (e.g. <s>)");
  sub->add_flag("--json", o->json, "one JSON array (or, with --decode, JSON string) per line");
  sub->add_flag("--decode", o->decode, "read ids (spaces, commas or a JSON array) and print text");
  sub->add_flag("--skip-special", o->skip_special, "with --decode: drop special tokens");
  sub->callback([o] { run(*o); });
});

}  // namespace
}  // namespace huginn::cli
