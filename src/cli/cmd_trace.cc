// huginn trace: record every token's latent state at every recurrence, decode each iteration
// through the coda, analyse the trajectories (metrics, PCA, classification, path independence)
// and write safetensors, summary.json and plots. The work is the library's (huginn/trajectory.h).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <sstream>

#include "cli/command.h"
#include "huginn/log.h"
#include "huginn/model.h"
#include "huginn/plot.h"
#include "huginn/thread_pool.h"
#include "huginn/trajectory.h"
#include "util/json.h"
#ifdef HUGINN_HAVE_TOKENIZER
#include "huginn/tokenizer.h"
#endif

namespace huginn::cli {
namespace {

constexpr int kDefaultSteps = -1000000;  // --steps not given (any given value is validated)

struct TraceArgs {
  std::string model, tokenizer, prompt, ids, out, record_tokens, plot_tokens;
  std::string formats = "png,svg";
  std::vector<std::string> exits = {"kl"};
  int steps = kDefaultSteps, seeds = 0, record_every = 1, pca_components = 4;
  double init_scale = 0.0, seed_scale = 0.0, memory_limit_mib = 2048;
  uint64_t seed = 0;
  bool record_adapter = false, no_decode = false, no_plots = false;
  double converge_tol = ClassifyOptions{}.converge_tol;
  double converge_contraction = ClassifyOptions{}.converge_contraction;
  double drift_straightness = ClassifyOptions{}.drift_straightness;
};

// "0-15,20,31": token indices, ascending, no duplicates.
std::vector<int64_t> parse_ranges(const std::string& s, const std::string& what) {
  std::vector<int64_t> out;
  std::stringstream in(s);
  std::string part;
  while (std::getline(in, part, ',')) {
    const size_t dash = part.find('-', 1);
    auto number = [&](const std::string& x) {
      char* end = nullptr;
      const long long v = std::strtoll(x.c_str(), &end, 10);
      if (x.empty() || !end || *end != '\0' || v < 0)
        throw Error(what + ": '" + x + "' is not a non-negative integer (expected e.g. 0-15,20)");
      return int64_t(v);
    };
    const int64_t a = number(part.substr(0, dash));
    const int64_t b = dash == std::string::npos ? a : number(part.substr(dash + 1));
    if (b < a) throw Error(what + ": range '" + part + "' runs backwards");
    if (b >= (int64_t(1) << 24)) throw Error(what + ": index " + std::to_string(b) + " is too large");
    for (int64_t i = a; i <= b; ++i) out.push_back(i);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  if (out.empty()) throw Error(what + ": no token indices given");
  return out;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string part;
  while (std::getline(in, part, ','))
    if (!part.empty()) out.push_back(part);
  return out;
}

struct Tokens {
  std::vector<int32_t> ids;
  std::vector<std::string> text;  // a label per token when a tokenizer is known
};

// A model trained by `huginn task train` reads bytes (its task.json says "vocabulary": "bytes"):
// token i is byte i, so a prompt needs no tokenizer.
bool byte_vocabulary(const std::string& model_dir) {
  const std::string path = model_dir + "/task.json";
  if (!std::filesystem::exists(path)) return false;
  const nlohmann::json j = read_json_file(path);
  return j.is_object() && j.value("vocabulary", nlohmann::json()) == "bytes";
}

Tokens read_tokens(const TraceArgs& a) {
  Tokens t;
  std::string tok_path = a.tokenizer;
  if (tok_path.empty() && std::filesystem::exists(a.model + "/tokenizer.json"))
    tok_path = a.model + "/tokenizer.json";
  if (!a.ids.empty()) {
    for (int v : parse_int_list(a.ids, "--ids")) t.ids.push_back(v);
  }
  if (tok_path.empty() && byte_vocabulary(a.model)) {
    for (unsigned char ch : a.prompt) t.ids.push_back(ch);
    for (int32_t id : t.ids) t.text.push_back(std::string(1, static_cast<char>(id & 0xff)));
    return t;
  }
#ifdef HUGINN_HAVE_TOKENIZER
  std::shared_ptr<const Tokenizer> tok;
  if (!tok_path.empty()) tok = Tokenizer::load(tok_path);
  if (!a.prompt.empty()) {
    if (!tok)
      throw Error("trace: --prompt needs a tokenizer: give --tokenizer FILE or put tokenizer.json "
                  "in the model directory " + a.model + " (or pass --ids)");
    t.ids = tok->encode(a.prompt);
    if (t.ids.empty()) throw Error("trace: --prompt encodes to no tokens");
  }
  if (tok)
    for (int32_t id : t.ids) t.text.push_back(tok->decode(std::span<const int32_t>(&id, 1)));
#else
  if (!a.prompt.empty())
    throw Error("trace: --prompt needs the tokenizer layer, which this build lacks; pass --ids");
#endif
  return t;
}

void print_table(const Trajectory& tr, const std::vector<TokenAnalysis>& an, const Tokens& tk) {
  std::printf("%5s %7s %-12s %-12s %10s %8s", "token", "id", "text", "class", "rel_change",
              "top1@R");
  for (const ExitSteps& e : tr.exits) std::printf(" %14s", ("exit " + e.spec).c_str());
  std::printf("\n");
  for (const TokenAnalysis& a : an) {
    const int64_t i = a.token;
    std::string text = i < int64_t(tk.text.size()) ? tk.text[i] : "";
    for (char& c : text)
      if (c == '\n' || c == '\t') c = ' ';
    if (text.size() > 12) text = text.substr(0, 11) + "~";
    std::printf("%5lld %7d %-12s %-12s %10.3g %8d", (long long)i, tr.ids[i], text.c_str(),
                trajectory_class_name(a.cls.cls), tr.rel_change.at(i, tr.steps),
                tr.top1[i][tr.steps]);
    for (const ExitSteps& e : tr.exits) {
      if (e.step[i] > 0) std::printf(" %14d", e.step[i]);
      else std::printf(" %14s", "-");
    }
    std::printf("\n");
  }
}

void run(const TraceArgs& a, const Common& common) {
  if (a.prompt.empty() == a.ids.empty()) throw Error("trace: give exactly one of --prompt or --ids");
  ensure_output_dir(a.out);  // fail before the long work
  const std::vector<std::string> formats = split(a.formats);
  if (!a.no_plots) {
    for (const std::string& f : formats)
      if (f != "png" && f != "svg")
        throw Error("trace: --plot-format '" + f + "': expected png and/or svg");
    plot::require_gnuplot();
  }
  const Tokens tk = read_tokens(a);
  ThreadPool pool(common.threads);
  auto backend = make_backend(common.backend, pool);
  auto model = Model::load(a.model, *backend, load_options(common));
  const ModelConfig& c = model->config();

  TraceOptions o;
  o.steps = a.steps == kDefaultSteps ? c.mean_recurrence : a.steps;
  o.init.scale = a.init_scale;
  o.init.seed = a.seed;
  if (!a.record_tokens.empty()) o.record_tokens = parse_ranges(a.record_tokens, "--record-tokens");
  o.record_every = a.record_every;
  o.record_adapter = a.record_adapter;
  o.decode = !a.no_decode;
  o.exits = a.no_decode && a.exits == std::vector<std::string>{"kl"} ? std::vector<std::string>{}
                                                                     : a.exits;
  o.extra_seeds = a.seeds;
  o.seed_scale = a.seed_scale > 0 ? a.seed_scale : (a.init_scale > 0 ? a.init_scale : 1.0);
  if (!(a.memory_limit_mib >= 0)) throw Error("trace: --memory-limit must be >= 0 MiB");
  o.memory_limit = static_cast<size_t>(a.memory_limit_mib * 1048576.0);

  Runner runner(*model, *backend);
  const Trajectory tr = record_trajectory(runner, tk.ids, o);
  ClassifyOptions co;
  co.converge_tol = a.converge_tol;
  co.converge_contraction = a.converge_contraction;
  co.drift_straightness = a.drift_straightness;
  if (a.pca_components < 1) throw Error("trace: --pca-components must be at least 1");
  const std::vector<TokenAnalysis> an = analyse_trajectory(tr, a.pca_components, co);

  TraceOutputOptions out;
  out.token_text = tk.text;
  out.plots = !a.no_plots;
  out.formats = formats;
  if (!a.plot_tokens.empty()) {
    out.plot_tokens = parse_ranges(a.plot_tokens, "--plot-tokens");
    for (int64_t i : out.plot_tokens)
      if (tr.kept_token(i) < 0)
        throw Error("trace: --plot-tokens names token " + std::to_string(i) +
                    ", which is not recorded (see --record-tokens)");
  }
  out.settings = {{"model", a.model},
                  {"steps", std::to_string(o.steps)},
                  {"init_scale", std::to_string(a.init_scale)},
                  {"seed", std::to_string(a.seed)},
                  {"seeds", std::to_string(a.seeds)},
                  {"seed_scale", std::to_string(o.seed_scale)},
                  {"record_every", std::to_string(o.record_every)},
                  {"backend", common.backend}};
  const std::vector<std::string> written = write_trace_outputs(a.out, tr, an, out);
  if (!common.quiet) {
    print_table(tr, an, tk);
    for (const std::string& w : written) HUGINN_LOG_INFO("wrote %s", w.c_str());
  }
}

Registrar reg(40, [](CLI::App& app, Common& common) {
  auto a = std::make_shared<TraceArgs>();
  CLI::App* sub = app.add_subcommand(
      "trace", "Record and analyse each token's latent trajectory across recurrences; plots");
  sub->add_option("--model", a->model, "model directory (config.json + safetensors)")->required();
  sub->add_option("--tokenizer", a->tokenizer,
                  "tokenizer.json (default: the model directory's, when present)");
  auto* prompt = sub->add_option("--prompt", a->prompt,
                                 "text to trace (needs a tokenizer, or a byte-vocabulary model "
                                 "from huginn task train)");
  sub->add_option("--ids", a->ids, "token ids, comma-separated (e.g. 1,2,3)")->excludes(prompt);
  sub->add_option("--steps", a->steps, "recurrences R to record (default: mean_recurrence)");
  sub->add_option("--init-scale", a->init_scale,
                  "initial state: 0 = zeros, S = truncated normal scaled by S")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--seed", a->seed, "seed of the random initial state");
  sub->add_option("--seeds", a->seeds,
                  "path independence: N extra random initial states (seeds seed+1..seed+N)");
  sub->add_option("--seed-scale", a->seed_scale,
                  "scale of the extra seeds' initial states (default: --init-scale, or 1)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--out", a->out, "output directory (created if missing)")->required();
  sub->add_option("--record-tokens", a->record_tokens,
                  "keep states only for these tokens, e.g. 0-15,20 (metrics cover all)");
  sub->add_option("--record-every", a->record_every,
                  "keep the states of every K-th iteration (and the last)");
  sub->add_flag("--record-adapter", a->record_adapter,
                "also keep the adapter output (core input) of each recurrence");
  sub->add_flag("--no-decode", a->no_decode,
                "skip the per-iteration logit lens (no kl / entropy / top-1 / logit exits)");
  sub->add_option("--exit", a->exits,
                  "exit criteria to evaluate per token, space-separated (default kl): kl, minp-kl, "
                  "entropy-diff, latent-diff, cosine, argmax-stability, each optionally :THRESHOLD")
      ->take_all();
  sub->add_option("--memory-limit", a->memory_limit_mib,
                  "MiB the recording may hold (0 = no limit)");
  sub->add_option("--pca-components", a->pca_components, "PCA components per token");
  sub->add_option("--converge-tol", a->converge_tol,
                  "classification: median tail relative change below this = converging");
  sub->add_option("--converge-contraction", a->converge_contraction,
                  "classification: steps shrinking per iteration by a factor below this = "
                  "converging (0.9: each step 10% shorter)");
  sub->add_option("--drift-straightness", a->drift_straightness,
                  "classification: tail straightness at least this = drifting");
  sub->add_flag("--no-plots", a->no_plots, "write no plots (no gnuplot needed)");
  sub->add_option("--plot-format", a->formats, "png,svg (comma-separated)");
  sub->add_option("--plot-tokens", a->plot_tokens,
                  "tokens in the PCA plot, e.g. 0,3,5 (default: up to 6 spread out)");
  add_common_options(sub, common);
  add_dtype_option(sub, common);
  sub->callback([a, &common] { run(*a, common); });
});

}  // namespace
}  // namespace huginn::cli
