// huginn chat: an interactive REPL in the model's chat template. Each turn re-renders the whole
// conversation; when the cached tokens are a prefix of it only the new tokens are evaluated,
// otherwise the context restarts. Lines: /reset clears the conversation, /quit (or EOF) ends.
#include <cstdio>
#include <iostream>

#include "cli/generate_flags.h"
#include "huginn/model.h"
#include "huginn/thread_pool.h"

namespace huginn::cli {
namespace {

struct Args {
  GenFlags g;
  std::string system;
};

#ifdef HUGINN_HAVE_TOKENIZER
void run(const Args& a, const Common& common) {
  const std::string path = tokenizer_path(a.g);
  if (path.empty())
    throw Error("huginn chat needs a tokenizer: give --tokenizer FILE or put tokenizer.json in " +
                a.g.model);
  auto tok = Tokenizer::load(path);
  if (tok->chat_format() == ChatFormat::kNone)
    throw Error(path + ": the vocabulary has no chat markers (Huginn or ChatML); use generate");
  GenerateOptions opt = make_gen_options(a.g, a.g.model, tok.get());
  ThreadPool pool(common.threads);
  auto backend = make_backend(common.backend, pool);
  auto model = Model::load(a.g.model, *backend, load_options(common));
  Generator gen(*model, *backend, opt);
  auto ctx = gen.new_context();
  std::vector<ChatMessage> msgs;
  if (!a.system.empty()) msgs.push_back({"system", a.system});
  const size_t base = msgs.size();
  std::string line;
  while (true) {
    std::fprintf(stdout, "> ");
    std::fflush(stdout);
    if (!std::getline(std::cin, line) || line == "/quit") break;
    if (line == "/reset") {
      msgs.resize(base);
      ctx->reset();
      continue;
    }
    if (line.empty()) continue;
    try {
      validate_utf8(line, "input line");
    } catch (const Error& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      continue;
    }
    msgs.push_back({"user", line});
    const std::vector<int32_t> ids = tok->encode(tok->apply_chat_template(msgs, true), false);
    const auto& hist = ctx->history();
    const bool prefix = hist.size() < ids.size() && std::equal(hist.begin(), hist.end(), ids.begin());
    if (!prefix) ctx->reset();
    std::span<const int32_t> fresh(ids.data() + (prefix ? hist.size() : 0),
                                   ids.size() - (prefix ? hist.size() : 0));
    std::unique_ptr<TextStream> stream = tokenizer_text_stream(tok);
    GenerateResult r;
    try {
      r = gen.generate(*ctx, fresh,
                       [](const TokenEvent& ev) {
                         std::fwrite(ev.text.data(), 1, ev.text.size(), stdout);
                         std::fflush(stdout);
                         return true;
                       },
                       stream.get());
    } catch (const Error& e) {  // e.g. the context is full: say so, keep the REPL alive
      std::fprintf(stderr, "\nerror: %s (use /reset)\n", e.what());
      msgs.pop_back();
      ctx->reset();
      continue;
    }
    std::printf("\n");
    msgs.push_back({"assistant", r.text});
    if (!common.quiet) {
      double mean = 0;
      for (int s : r.steps) mean += s;
      std::fprintf(stderr, "[%zu tokens, %.1f tok/s, %.1f steps/token, kv %.2f MB]\n",
                   r.tokens.size(), r.decode_tok_s(), r.steps.empty() ? 0.0 : mean / r.steps.size(),
                   r.cache_bytes / 1e6);
    }
  }
}
#else
void run(const Args&, const Common&) {
  throw Error("huginn chat needs the tokenizer library, which this build lacks");
}
#endif

Registrar reg(41, [](CLI::App& app, Common& common) {
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("chat", "Interactive chat in the model's chat template");
  add_gen_flags(sub, a->g);
  sub->add_option("--system", a->system, "system message");
  add_common_options(sub, common);
  add_dtype_option(sub, common);
  sub->callback([a, &common] { run(*a, common); });
});

}  // namespace
}  // namespace huginn::cli
