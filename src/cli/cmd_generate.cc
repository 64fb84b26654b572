// huginn generate: prompt -> streamed tokens with fixed or adaptive recurrence, then a summary
// (prefill and decode tok/s, steps per token, KV-cache size); --json prints the result instead.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/generate_flags.h"
#include "cli/sampler_flags.h"
#include "huginn/model.h"
#include "huginn/thread_pool.h"
#include "huginn/wavefront.h"

namespace huginn::cli {
namespace {

struct Args {
  GenFlags g;
  std::string prompt, ids, system;
  bool prompt_given = false, chat = false, json = false;
  std::string decode = "sequential";
  WavefrontOptions wf;
  SamplerFlags sf;
};

struct Text {
#ifdef HUGINN_HAVE_TOKENIZER
  std::shared_ptr<const Tokenizer> tok;
#endif
  bool available() const {
#ifdef HUGINN_HAVE_TOKENIZER
    return tok != nullptr;
#else
    return false;
#endif
  }
};

Text load_text(const Args& a) {
  Text t;
  const std::string path = tokenizer_path(a.g);
#ifdef HUGINN_HAVE_TOKENIZER
  if (!path.empty()) t.tok = Tokenizer::load(path);
#else
  if (!a.g.tokenizer.empty())
    throw Error("--tokenizer: this build has no tokenizer library; use --ids");
#endif
  return t;
}

std::vector<int32_t> prompt_ids(const Args& a, const Text& text) {
  if (!a.ids.empty()) {
    if (a.chat) throw Error("--chat needs --prompt text, not --ids");
    std::vector<int> v = parse_int_list(a.ids, "--ids");
    return {v.begin(), v.end()};
  }
  validate_utf8(a.prompt, "--prompt");
  if (!text.available())
    throw Error("--prompt needs a tokenizer: give --tokenizer FILE (or put tokenizer.json in " +
                a.g.model + "), or pass token ids with --ids");
#ifdef HUGINN_HAVE_TOKENIZER
  if (!a.chat) return text.tok->encode(a.prompt, /*add_special=*/false);
  std::vector<ChatMessage> msgs;
  if (!a.system.empty()) msgs.push_back({"system", a.system});
  msgs.push_back({"user", a.prompt});
  return text.tok->encode(text.tok->apply_chat_template(msgs, true), false);
#else
  return {};
#endif
}

void print_summary(const GenerateResult& r, const Generator& gen) {
  if (r.steps.empty()) return;
  double mean = 0;
  for (int s : r.steps) mean += s;
  mean /= static_cast<double>(r.steps.size());
  const auto [mn, mx] = std::minmax_element(r.steps.begin(), r.steps.end());
  std::fprintf(stderr,
               "\n[%d prompt tokens, %zu generated, finish: %s]\n"
               "prefill  %.3g tok/s\ndecode   %.3g tok/s\n"
               "steps    mean %.2f, min %d, max %d (limit %d, exit %s)\n"
               "kv cache %.3f MB\n",
               r.prompt_tokens, r.tokens.size(), r.finish_reason.c_str(), r.prefill_tok_s(),
               r.decode_tok_s(), mean, *mn, *mx, gen.steps(),
               gen.options().exit.to_string().c_str(), r.cache_bytes / 1e6);
}

nlohmann::json stats_json(const SamplerStats& st) {
  return {{"core_passes", st.core_passes}, {"rows_per_core_pass", st.rows_per_core_pass()},
          {"rounds", st.rounds}, {"drafted", st.drafted}, {"accepted", st.accepted},
          {"acceptance", st.acceptance()}, {"standing_waves", st.standing_waves}};
}

// --decode speculative|diffusion: one prompt, or several (--ids A;B;...) run as one batch.
void run_sampler(const Args& a, const Generator& gen, const std::vector<std::vector<int32_t>>& prompts,
                 TextStream* stream, bool quiet) {
  std::vector<std::unique_ptr<GenerationContext>> ctxs;
  std::vector<SamplerRequest> reqs;
  for (const auto& p : prompts) {
    ctxs.push_back(gen.new_context());
    reqs.push_back({ctxs.back().get(), p, prompts.size() == 1 ? stream : nullptr});
  }
  SamplerStats st;
  const std::vector<GenerateResult> rs =
      a.decode == "speculative" ? generate_speculative(gen, reqs, a.sf.spec, &st)
                                : generate_diffusion(gen, reqs, diffusion_options(a.sf), &st);
  if (a.json) {
    nlohmann::json all = nlohmann::json::array();
    for (const GenerateResult& r : rs)
      all.push_back({{"tokens", r.tokens}, {"steps", r.steps}, {"finish_reason", r.finish_reason},
                     {"prompt_tokens", r.prompt_tokens},
                     {"text", stream && rs.size() == 1 ? nlohmann::json(r.text) : nlohmann::json(nullptr)}});
    nlohmann::json j = rs.size() == 1 ? all[0] : nlohmann::json{{"results", all}};
    j[a.decode] = stats_json(st);
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return;
  }
  for (const GenerateResult& r : rs) {
    if (stream && rs.size() == 1) {
      std::printf("%s\n", r.text.c_str());
      continue;
    }
    for (size_t i = 0; i < r.tokens.size(); ++i) std::printf("%s%d", i ? " " : "", r.tokens[i]);
    std::printf("\n");
  }
  if (quiet) return;
  print_summary(rs[0], gen);
  std::fprintf(stderr, "%s: %lld core passes, %.2f positions per pass, %lld rounds", a.decode.c_str(),
               (long long)st.core_passes, st.rows_per_core_pass(), (long long)st.rounds);
  if (a.decode == "speculative")
    std::fprintf(stderr, ", drafts %lld: %lld accepted (%.1f %%)", (long long)st.drafted,
                 (long long)st.accepted, 100.0 * st.acceptance());
  else
    std::fprintf(stderr, ", %lld standing waves", (long long)st.standing_waves);
  std::fprintf(stderr, "\n");
}

void run(const Args& a, const Common& common) {
  if (a.ids.empty() == !a.prompt_given) throw Error("give exactly one of --prompt and --ids");
  if (a.prompt_given && a.prompt.empty()) throw Error("--prompt is empty");
  Text text = load_text(a);
  if (!a.g.stop_strings.empty() && !text.available())
    throw Error("--stop needs a tokenizer to see text (use --stop-id with --ids)");
  const Tokenizer* tok = nullptr;
#ifdef HUGINN_HAVE_TOKENIZER
  tok = text.tok.get();
#endif
  GenerateOptions opt = make_gen_options(a.g, a.g.model, tok);
  ThreadPool pool(common.threads);
  auto backend = make_backend(common.backend, pool);
  const auto t_load = std::chrono::steady_clock::now();
  auto model = Model::load(a.g.model, *backend, load_options(common));
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
  const bool sampler = a.decode == "speculative" || a.decode == "diffusion";
  if (!sampler && a.ids.find(';') != std::string::npos)
    throw Error("--ids: several prompts (A;B;...) need --decode speculative or diffusion");
  std::vector<std::vector<int32_t>> prompts;
  if (sampler && a.ids.find(';') != std::string::npos) {
    for (size_t at = 0; at <= a.ids.size();) {
      const size_t end = std::min(a.ids.find(';', at), a.ids.size());
      const std::vector<int> v = parse_int_list(a.ids.substr(at, end - at), "--ids");
      prompts.emplace_back(v.begin(), v.end());
      at = end + 1;
    }
  } else {
    prompts.push_back(prompt_ids(a, text));
  }
  const std::vector<int32_t>& ids = prompts[0];
  Generator gen(*model, *backend, opt);
  auto ctx = gen.new_context();

  std::unique_ptr<TextStream> stream;
#ifdef HUGINN_HAVE_TOKENIZER
  if (text.tok) stream = tokenizer_text_stream(text.tok);
#endif
  TokenCallback on_token;
  bool first = true;
  if (!a.json)
    on_token = [&](const TokenEvent& ev) {
      if (stream) {
        std::fwrite(ev.text.data(), 1, ev.text.size(), stdout);
      } else if (ev.id >= 0) {
        std::printf("%s%d", first ? "" : " ", ev.id);
        first = false;
      }
      std::fflush(stdout);
      return true;
    };
  if (sampler) {
    if (a.decode == "speculative") a.sf.spec.validate(opt);
    else diffusion_options(a.sf).validate(opt, gen.steps());
    run_sampler(a, gen, prompts, stream.get(), common.quiet);
    return;
  }
  const bool wavefront = a.decode == "wavefront";
  if (wavefront) a.wf.validate(opt, gen.steps());  // before the prompt runs
  WavefrontStats wst;
  GenerateResult r = wavefront ? generate_wavefront(gen, *ctx, ids, a.wf, on_token, stream.get(), &wst)
                               : gen.generate(*ctx, ids, on_token, stream.get());
  if (a.json) {
    nlohmann::json j;
    j["tokens"] = r.tokens;
    j["steps"] = r.steps;
    j["text"] = stream ? nlohmann::json(r.text) : nlohmann::json(nullptr);
    j["finish_reason"] = r.finish_reason;
    j["prompt_tokens"] = r.prompt_tokens;
    j["kv_cache_bytes"] = r.cache_bytes;
    if (wavefront)
      j["wavefront"] = {{"core_passes", wst.core_passes}, {"rows_per_core_pass", wst.rows_per_core_pass()},
                        {"drafts", wst.drafts}, {"accepted", wst.accepted}, {"rejected", wst.rejected}};
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return;
  }
  std::printf("\n");
  if (common.quiet) return;
  print_summary(r, gen);
  std::fprintf(stderr, "load     %.1f s (--dtype %s)\n", load_s, common.dtype.c_str());
  if (wavefront)
    std::fprintf(stderr, "wavefront %lld core passes, %.2f positions per pass, drafts %lld: "
                 "%lld accepted, %lld rejected\n", (long long)wst.core_passes,
                 wst.rows_per_core_pass(), (long long)wst.drafts, (long long)wst.accepted,
                 (long long)wst.rejected);
}

Registrar reg(40, [](CLI::App& app, Common& common) {
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(
      "generate", "Generate tokens with fixed or adaptive recurrence, streaming as they come");
  add_gen_flags(sub, a->g);
  auto* p = sub->add_option("--prompt", a->prompt, "prompt text (needs a tokenizer)");
  sub->add_option("--ids", a->ids, "prompt token ids, comma-separated")->excludes(p);
  sub->add_flag("--chat", a->chat, "wrap --prompt in the model's chat template");
  sub->add_option("--system", a->system, "system message with --chat");
  sub->add_flag("--json", a->json,
                "print {\"tokens\", \"steps\", \"text\", ...} instead of streaming");
  sub->add_option("--decode", a->decode,
                  "sequential; wavefront: lossless depth-parallel greedy decoding (the next "
                  "token drafted from an intermediate depth runs its first recurrences in the same "
                  "core passes as this one's last; identical output); speculative: the reference's "
                  "draft-and-verify sampler; diffusion: the reference's diffusion-forcing sampler "
                  "(both take several prompts as --ids A;B;...)")
      ->check(CLI::IsMember({"sequential", "wavefront", "speculative", "diffusion"}));
  add_sampler_flags(sub, a->sf);
  sub->add_option("--draft-depth", a->wf.draft_depth,
                  "with --decode wavefront: recurrences before a token drafts the next (0 = steps/4)");
  sub->add_option("--lanes", a->wf.max_lanes,
                  "with --decode wavefront: positions in flight at most (default 8)");
  add_common_options(sub, common);
  add_dtype_option(sub, common);
  sub->callback([a, p, &common] {
    a->prompt_given = p->count() > 0;
    run(*a, common);
  });
});

}  // namespace
}  // namespace huginn::cli
