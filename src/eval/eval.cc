// The eval runner: every setting (fixed r, or an exit criterion with a maximum) over the task's
// examples; generation tasks by greedy decoding + answer extraction + exact match, multiple-choice
// tasks by the summed log-likelihood of each choice.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "huginn/backend.h"
#include "huginn/error.h"
#include "huginn/eval.h"
#include "huginn/forward.h"
#include "huginn/generate.h"
#include "huginn/host_math.h"
#include "huginn/model.h"
#include "huginn/thread_pool.h"

namespace huginn {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string fmt_time(double s) {
  char buf[32];
  const int t = static_cast<int>(std::lround(std::max(s, 0.0)));
  std::snprintf(buf, sizeof buf, "%d:%02d", t / 60, t % 60);
  return buf;
}

bool is_file_task(const std::string& task) {
  return task.size() > 6 && task.substr(task.size() - 6) == ".jsonl";
}

}  // namespace

std::string EvalSetting::label() const {
  if (exit.criterion == ExitCriterion::kNone) return "r=" + std::to_string(steps);
  return exit.to_string() + " (max " + std::to_string(steps) + ")";
}

// What feeding the prompt one token per call saw (EvalOptions::prompt_by_token).
struct PromptCalls {
  int64_t calls = 0, steps = 0;    // prompt tokens' calls and their recurrences
  int64_t labelled = 0, right = 0; // intermediate answers: positions scored, greedy hits
  int64_t labelled_steps = 0;      // the recurrences of those positions' calls
};

// The prompt's call of generate(), one token at a time (prefill of the first, then a decode per
// token: each runs its own recurrence, exit and warm start); after each token, the greedy
// prediction is scored where `labels` (one byte per prompt token, 0 = none) has an answer.
// Later calls (the generated tokens fed back) are plain decodes.
static CallFn prompt_by_token(const Generator& gen, const std::string& labels, PromptCalls& pc) {
  return [&gen, &labels, &pc](GenerationContext& ctx, std::span<const int32_t> ids) {
    if (ctx.n_past() > 0) return gen.prefill(ctx, ids);
    CallResult r;
    for (size_t t = 0; t < ids.size(); ++t) {
      r = gen.prefill(ctx, ids.subspan(t, 1));
      ++pc.calls;
      pc.steps += r.steps;
      if (labels.size() == ids.size() && labels[t] != 0) {
        ++pc.labelled;
        pc.labelled_steps += r.steps;
        const auto top = std::max_element(r.logits.begin(), r.logits.end()) - r.logits.begin();
        pc.right += top == static_cast<unsigned char>(labels[t]);
      }
    }
    return r;
  };
}

// One example's generation with the chosen decoder (EvalOptions::decode; with --prompt-by-token
// the prompt one token per call); what a depth-parallel decoder shared and drafted is added to
// `row`.
static GenerateResult generate_one(const Generator& gen, GenerationContext& ctx,
                                   std::span<const int32_t> prompt, const EvalOptions& o,
                                   const std::string& labels, PromptCalls& pc, EvalRow& row) {
  if (o.prompt_by_token) return gen.generate(ctx, prompt, {}, nullptr, prompt_by_token(gen, labels, pc));
  return generate_decoded(gen, ctx, prompt, o.decode, o.wavefront, o.speculative, o.diffusion,
                          &row.shared);
}

EvalReport run_eval(const EvalOptions& o) {
  if (o.model.empty()) throw Error("--model: required");
  if (o.task.empty()) throw Error("--task: required (a built-in task or a .jsonl file)");
  if (o.steps.empty() && o.exits.empty()) throw Error("--steps: give at least one setting");
  for (int r : o.steps)
    if (r < 1) throw Error("--steps: every r must be >= 1, got " + std::to_string(r));
  if (o.limit < 1) throw Error("--limit: must be >= 1");
  if (o.warm_state != "auto" && o.warm_state != "latent" && o.warm_state != "raw")
    throw Error("--warm-state must be auto, latent or raw, got '" + o.warm_state + "'");
  if (!o.warm_start && o.warm_state != "auto") throw Error("--warm-state needs --warm-start");
  if (o.prompt_by_token && o.decode != "sequential")
    throw Error("--prompt-by-token needs --decode sequential, got '" + o.decode + "'");

  std::vector<TaskExample> exs;
  if (is_file_task(o.task)) {
    exs = load_task_file(o.task);
    if (static_cast<int>(exs.size()) > o.limit) exs.resize(o.limit);
  } else {
    exs = make_task(TaskSpec::parse(o.task), Split::kTest, o.limit, o.seed);
  }
  const bool mc = exs.front().multiple_choice();

  std::vector<EvalSetting> settings;
  for (int r : o.steps) settings.push_back({r, ExitSpec{}});
  const int max_steps =
      o.exit_max_steps > 0 ? o.exit_max_steps
                           : (o.steps.empty() ? 0 : *std::max_element(o.steps.begin(), o.steps.end()));
  for (const auto& e : o.exits) {
    if (max_steps < 1) throw Error("--exit needs --steps or --exit-max-steps for the maximum");
    EvalSetting s{max_steps, ExitSpec::parse(e)};
    if (s.exit.criterion == ExitCriterion::kNone) continue;
    if (mc) throw Error("--exit: multiple-choice tasks are scored at fixed r only");
    settings.push_back(s);
  }

  ThreadPool pool(o.threads);
  auto be = make_backend(o.backend, pool);
  Model::LoadOptions lo;
  lo.weight_dtype = parse_weight_dtype(o.weight_dtype);
  auto model = Model::load(o.model, *be, lo);
  const ModelConfig& cfg = model->config();
  const TextCodec codec = TextCodec::for_model(o.model, cfg.vocab_size);
  const int64_t V = cfg.vocab_size;

  // Encode once (bad bytes are reported before any work).
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::vector<std::vector<int32_t>>> choice_ids;
  size_t longest_answer = 0;
  for (size_t i = 0; i < exs.size(); ++i) {
    const std::string what = o.task + " example " + std::to_string(i + 1);
    if (mc) {
      prompts.push_back(codec.encode(exs[i].context, what + " context"));
      auto& cs = choice_ids.emplace_back();
      for (const auto& c : exs[i].choices) {
        cs.push_back(codec.encode(c, what + " choice"));
        if (cs.back().empty()) throw Error(what + ": a choice encodes to no tokens");
      }
      if (prompts.back().empty()) throw Error(what + ": the context encodes to no tokens");
    } else {
      prompts.push_back(codec.encode(exs[i].prompt, what + " prompt"));
      if (prompts.back().empty()) throw Error(what + ": the prompt encodes to no tokens");
      longest_answer = std::max(longest_answer, codec.encode(exs[i].answer, what).size());
    }
  }
  const int max_new = o.max_new_tokens > 0 ? o.max_new_tokens : static_cast<int>(longest_answer) + 2;

  EvalReport rep;
  rep.model = o.model;
  rep.task = o.task;
  rep.multiple_choice = mc;
  if (mc) {
    double c = 0;
    for (const auto& ex : exs) c += 1.0 / ex.choices.size();
    rep.chance = c / exs.size();
  } else if (!is_file_task(o.task) && TaskSpec::parse(o.task).name == "chain") {
    rep.chance = 0.5;  // two chains: picking either literal
  } else if (!is_file_task(o.task) && TaskSpec::parse(o.task).name == "parity") {
    rep.chance = 0.5;
  }

  const int64_t total_work = static_cast<int64_t>(settings.size()) * exs.size();
  int64_t done = 0;
  const auto t_start = Clock::now();
  auto last_print = t_start;
  const int32_t nl = codec.newline_id();
  // Example generations: for the first examples under the largest fixed r and every exit setting.
  for (const auto& st : settings) {
    EvalRow row;
    row.setting = st;
    const auto t0 = Clock::now();
    int64_t step_sum = 0, first_sum = 0;
    double cache_sum = 0;
    PromptCalls pc;
    if (mc) {
      Runner runner(*model, *be);
      std::vector<float> logits;
      for (size_t i = 0; i < exs.size(); ++i) {
        int best = -1;
        double best_lp = -INFINITY;
        for (size_t c = 0; c < choice_ids[i].size(); ++c) {
          std::vector<int32_t> ids = prompts[i];
          ids.insert(ids.end(), choice_ids[i][c].begin(), choice_ids[i][c].end());
          if (static_cast<int64_t>(ids.size()) > cfg.block_size)
            throw Error(o.task + " example " + std::to_string(i + 1) + ": context + choice is " +
                        std::to_string(ids.size()) + " tokens, past the model's " +
                        std::to_string(cfg.block_size));
          ForwardOutput out = runner.forward(ids, st.steps, InitState{});
          logits.resize(static_cast<size_t>(out.logits.numel()));
          be->download(out.logits, logits.data());
          double lp = 0;
          for (size_t t = prompts[i].size(); t < ids.size(); ++t)
            lp += log_prob(std::span<const float>(logits.data() + (t - 1) * V, V), ids[t]);
          if (lp > best_lp) best_lp = lp, best = static_cast<int>(c);
          row.tokens += static_cast<int64_t>(choice_ids[i][c].size());
          step_sum += static_cast<int64_t>(choice_ids[i][c].size()) * st.steps;
        }
        row.correct += best == exs[i].gold;
        ++row.n;
        ++done;
      }
    } else {
      GenerateOptions go;
      go.steps = st.steps;
      go.exit = st.exit;
      go.max_new_tokens = max_new;
      if (nl >= 0) go.stop_ids = {nl};
      if (o.warm_start)
        go.warm_start = o.warm_state == "latent" ? WarmStart::kLatent
                        : o.warm_state == "raw"  ? WarmStart::kRaw
                                                 : WarmStart::kAuto;
      if (o.cache_slots > 0) {
        go.cache_slots = o.cache_slots;
        // Prelude-aware compress-s: one rule for any prelude depth (equal to the reference's
        // compress-s for Huginn-0125, whose prelude has 2 layers).
        go.cache_strategy = KVCache::Strategy::kCompressSPrelude;
      }
      Generator gen(*model, *be, go);
      auto ctx = gen.new_context();
      const bool show = o.show_examples > 0 &&
                        (st.exit.criterion != ExitCriterion::kNone || st.steps == max_steps);
      for (size_t i = 0; i < exs.size(); ++i) {
        ctx->reset();
        const GenerateResult r = generate_one(gen, *ctx, prompts[i], o, exs[i].step_labels, pc, row);
        const std::string out = codec.decode(r.tokens);
        const bool ok = extract_answer(out, exs[i].regex) == exs[i].answer;
        row.correct += ok;
        ++row.n;
        row.tokens += static_cast<int64_t>(r.tokens.size());
        for (int s : r.steps) step_sum += s;
        if (!r.steps.empty()) first_sum += r.steps.front();
        cache_sum += static_cast<double>(r.cache_bytes);
        if (show && static_cast<int>(i) < o.show_examples) {
          EvalExample e;
          e.setting = st.label();
          e.prompt = exs[i].prompt;
          e.answer = exs[i].answer;
          e.output = out;
          e.correct = ok;
          e.steps = r.steps;
          for (int32_t id : r.tokens) e.pieces.push_back(codec.piece(id));
          rep.examples.push_back(std::move(e));
        }
        ++done;
        const auto now = Clock::now();
        if (!o.quiet && (std::chrono::duration<double>(now - last_print).count() > 2.0)) {
          last_print = now;
          const double el = std::chrono::duration<double>(now - t_start).count();
          std::fprintf(stderr, "\reval %-24s %zu/%zu  [%lld/%lld total, %s elapsed, ETA %s]   ",
                       st.label().c_str(), i + 1, exs.size(), (long long)done,
                       (long long)total_work, fmt_time(el).c_str(),
                       fmt_time(el / done * (total_work - done)).c_str());
          std::fflush(stderr);
        }
      }
    }
    row.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    row.accuracy = row.n ? static_cast<double>(row.correct) / row.n : 0.0;
    std::tie(row.ci_low, row.ci_high) = wilson_interval(row.correct, row.n);
    row.mean_steps = row.tokens ? static_cast<double>(step_sum) / row.tokens : 0.0;
    row.tok_s = row.seconds > 0 ? row.tokens / row.seconds : 0.0;
    if (!mc && row.n) {
      row.mean_first_steps = static_cast<double>(first_sum) / row.n;
      row.mean_cache_bytes = cache_sum / row.n;
      row.mean_prompt_steps = pc.calls ? static_cast<double>(pc.steps) / pc.calls : 0.0;
      row.step_n = pc.labelled;
      row.mean_step_answer_steps = pc.labelled ? static_cast<double>(pc.labelled_steps) / pc.labelled : 0.0;
      row.step_correct = pc.right;
    }
    rep.rows.push_back(row);
  }
  if (!o.quiet) std::fprintf(stderr, "\r%100s\r", "");
  if (!o.out_dir.empty()) write_eval_outputs(rep, o.out_dir, o.plots);
  return rep;
}

std::string EvalReport::table() const {
  std::ostringstream s;
  char buf[256];
  // Depth-parallel decoders add what they shared (rows per core pass, drafts accepted); a prompt
  // fed by token its recurrences per token and the intermediate answers.
  const bool shared = std::any_of(rows.begin(), rows.end(), [](const EvalRow& r) { return r.shared.core_passes > 0; });
  const bool by_token = std::any_of(rows.begin(), rows.end(), [](const EvalRow& r) { return r.mean_prompt_steps > 0; });
  std::snprintf(buf, sizeof buf, "%-26s %6s %18s %12s %10s", "setting", "n", "accuracy [95% CI]",
                "steps/token", "tokens/s");
  s << buf << (shared ? "   rows/pass   drafts accepted" : "")
    << (by_token ? "  prompt steps/token  step answers (their steps)" : "") << '\n';
  for (const auto& r : rows) {
    std::snprintf(buf, sizeof buf, "%-26s %6lld %6.1f%% [%4.1f,%5.1f] %12.2f %10.1f",
                  r.setting.label().c_str(), (long long)r.n, 100 * r.accuracy, 100 * r.ci_low,
                  100 * r.ci_high, r.mean_steps, r.tok_s);
    s << buf;
    if (shared) {
      const SamplerStats& sh = r.shared;
      std::snprintf(buf, sizeof buf, " %11.2f %17s", sh.rows_per_core_pass(),
                    sh.drafted ? (std::to_string(sh.accepted) + " / " + std::to_string(sh.drafted)).c_str() : "-");
      s << buf;
    }
    if (by_token) {
      std::snprintf(buf, sizeof buf, "  %18.2f  %5.1f%% of %lld (%.2f)", r.mean_prompt_steps,
                    r.step_n ? 100.0 * r.step_correct / r.step_n : 0.0, (long long)r.step_n,
                    r.mean_step_answer_steps);
      s << buf;
    }
    s << '\n';
  }
  return s.str();
}

std::string EvalReport::to_json() const {
  json j = {{"model", model}, {"task", task}, {"multiple_choice", multiple_choice}, {"chance", chance}};
  j["rows"] = json::array();
  for (const auto& r : rows)
    j["rows"].push_back({{"setting", r.setting.label()},
                         {"steps", r.setting.steps},
                         {"exit", r.setting.exit.criterion == ExitCriterion::kNone
                                      ? json(nullptr)
                                      : json(r.setting.exit.to_string())},
                         {"n", r.n}, {"correct", r.correct}, {"accuracy", r.accuracy},
                         {"ci_low", r.ci_low}, {"ci_high", r.ci_high},
                         {"mean_steps_per_token", r.mean_steps},
                         {"mean_first_token_steps", r.mean_first_steps},
                         {"mean_cache_bytes", r.mean_cache_bytes},
                         {"mean_prompt_steps_per_token", r.mean_prompt_steps},
                         {"step_answers", r.step_n}, {"step_answers_correct", r.step_correct},
                         {"mean_step_answer_steps", r.mean_step_answer_steps},
                         {"tokens", r.tokens},
                         {"seconds", r.seconds}, {"tokens_per_second", r.tok_s},
                         {"core_passes", r.shared.core_passes},
                         {"rows_per_core_pass", r.shared.rows_per_core_pass()},
                         {"drafted", r.shared.drafted}, {"accepted", r.shared.accepted}});
  j["examples"] = json::array();
  for (const auto& e : examples)
    j["examples"].push_back({{"setting", e.setting}, {"prompt", e.prompt}, {"answer", e.answer},
                             {"output", e.output}, {"tokens", e.pieces}, {"steps", e.steps},
                             {"correct", e.correct}});
  return j.dump(2) + "\n";
}

std::string EvalReport::to_csv() const {
  std::ostringstream s;
  s << "setting,steps,exit,n,correct,accuracy,ci_low,ci_high,mean_steps_per_token,tokens,seconds,"
       "tokens_per_second,mean_first_token_steps,mean_cache_bytes,mean_prompt_steps_per_token,"
       "step_answers,step_answers_correct,mean_step_answer_steps,rows_per_core_pass,drafted,accepted\n";
  for (const auto& r : rows) {
    const bool fixed = r.setting.exit.criterion == ExitCriterion::kNone;
    s << '"' << r.setting.label() << "\"," << r.setting.steps << ','
      << (fixed ? "" : r.setting.exit.to_string()) << ',' << r.n << ',' << r.correct << ','
      << r.accuracy << ',' << r.ci_low << ',' << r.ci_high << ',' << r.mean_steps << ','
      << r.tokens << ',' << r.seconds << ',' << r.tok_s << ',' << r.mean_first_steps << ','
      << r.mean_cache_bytes << ',' << r.mean_prompt_steps << ',' << r.step_n << ','
      << r.step_correct << ',' << r.mean_step_answer_steps << ',' << r.shared.rows_per_core_pass()
      << ',' << r.shared.drafted << ',' << r.shared.accepted << '\n';
  }
  return s.str();
}

}  // namespace huginn
