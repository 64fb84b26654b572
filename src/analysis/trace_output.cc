// Per-token analysis of a recorded trajectory and the files `huginn trace` writes: safetensors,
// summary.json and the three plots. T = tokens, R = steps, Tk / Ik = kept tokens / iterations.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "huginn/plot.h"
#include "huginn/safetensors.h"
#include "huginn/trajectory.h"
#include "util/mapped_file.h"

namespace huginn {

namespace fs = std::filesystem;

namespace {

Tensor grid_tensor(const Grid& g) {
  Tensor t = Tensor::empty({g.rows, g.cols});
  for (size_t i = 0; i < g.v.size(); ++i) t.f32()[i] = static_cast<float>(g.v[i]);
  return t;
}

Tensor i64_tensor(const std::vector<int64_t>& v, std::initializer_list<int64_t> shape) {
  Tensor t = Tensor::empty(shape, DType::kI64);
  std::copy(v.begin(), v.end(), t.data<int64_t>());
  return t;
}

double json_num(double v) { return std::isfinite(v) ? v : std::nan(""); }

std::string label(const TraceOutputOptions& o, const Trajectory& tr, int64_t i) {
  std::string s = std::to_string(i) + ":";
  if (i < int64_t(o.token_text.size())) return s + o.token_text[i];
  return s + std::to_string(tr.ids[i]);
}

// Up to 6 kept tokens spread over the sequence (the last one included).
std::vector<int64_t> default_plot_tokens(const Trajectory& tr) {
  const size_t n = tr.token_index.size();
  std::vector<int64_t> out;
  const size_t want = std::min<size_t>(6, n);
  for (size_t k = 0; k < want; ++k) {
    const size_t idx = want == 1 ? n - 1 : k * (n - 1) / (want - 1);
    if (out.empty() || out.back() != tr.token_index[idx]) out.push_back(tr.token_index[idx]);
  }
  return out;
}

void write_safetensors(const std::string& path, const Trajectory& tr,
                       const std::vector<TokenAnalysis>& an, const TraceOutputOptions& o) {
  const int64_t T = tr.n_tokens(), Tk = int64_t(tr.token_index.size()),
                Ik = int64_t(tr.iteration_index.size()), R1 = tr.steps + 1;
  SafetensorsWriter w;
  w.add("states", tr.states);
  if (tr.adapter_out.defined()) w.add("adapter_out", tr.adapter_out);
  w.add("latent", tr.latent);
  w.add("logits", tr.logits);
  w.add("input_ids", i64_tensor({tr.ids.begin(), tr.ids.end()}, {T}));
  w.add("token_index", i64_tensor(tr.token_index, {Tk}));
  w.add("iteration_index", i64_tensor({tr.iteration_index.begin(), tr.iteration_index.end()}, {Ik}));
  w.add("metrics.rel_change", grid_tensor(tr.rel_change));
  w.add("metrics.dist_to_final", grid_tensor(tr.dist_to_final));
  w.add("metrics.kl", grid_tensor(tr.kl));
  w.add("metrics.entropy", grid_tensor(tr.entropy));
  std::vector<int64_t> top1;
  for (const auto& row : tr.top1) top1.insert(top1.end(), row.begin(), row.end());
  w.add("metrics.top1", i64_tensor(top1, {T, R1}));
  for (const ExitSteps& ex : tr.exits)
    w.add("exit." + ex.spec, i64_tensor({ex.step.begin(), ex.step.end()}, {T}));
  if (!an.empty()) {
    const int k = an.front().pca.k;
    Tensor proj = Tensor::empty({Tk, Ik, k}), expl = Tensor::empty({Tk, k});
    for (int64_t a = 0; a < Tk; ++a)
      for (int c = 0; c < k && c < an[a].pca.k; ++c) {
        expl.f32()[a * k + c] = static_cast<float>(an[a].pca.explained(c));
        for (int64_t i = 0; i < Ik; ++i)
          proj.f32()[(a * Ik + i) * k + c] = static_cast<float>(an[a].pca.projection[i * an[a].pca.k + c]);
      }
    w.add("pca.projection", proj);
    w.add("pca.explained", expl);
  }
  if (tr.paths.seeds > 0) {
    w.add("seeds.final_states", tr.paths.final_states);
    w.add("seeds.spread", grid_tensor(tr.paths.spread));
  }
  for (const auto& [k, v] : o.settings) w.add_metadata(k, v);
  w.add_metadata("steps", std::to_string(tr.steps));
  w.write(path);
}

void write_summary(const std::string& path, const Trajectory& tr,
                   const std::vector<TokenAnalysis>& an, const TraceOutputOptions& o) {
  using nlohmann::json;
  const int R = tr.steps;
  json j;
  json settings = json::object();
  for (const auto& [k, v] : o.settings) settings[k] = v;
  j["settings"] = settings;
  j["tokens"] = tr.n_tokens();
  j["steps"] = R;
  j["n_embd"] = tr.n_embd;
  j["exit_rules_from"] = trajectory_uses_exit_policies() ? "generation ExitPolicy"
                                                         : "kl_exit_steps (KL rule only)";
  json classes = {{"converging", 0}, {"orbiting", 0}, {"drifting", 0}, {"undetermined", 0}};
  json toks = json::array();
  for (int64_t i = 0; i < tr.n_tokens(); ++i) {
    json t;
    t["index"] = i;
    t["id"] = tr.ids[i];
    if (i < int64_t(o.token_text.size())) t["text"] = o.token_text[i];
    t["final_rel_change"] = json_num(tr.rel_change.at(i, R));
    t["final_kl"] = json_num(tr.kl.at(i, R));
    t["final_entropy"] = json_num(tr.entropy.at(i, R));
    t["final_top1"] = tr.top1[i][R];
    int settle = R;  // the first iteration from which the top-1 never changes again
    while (settle > 1 && tr.top1[i][settle - 1] == tr.top1[i][R]) --settle;
    t["top1_settled_at"] = tr.top1[i][R] < 0 ? json(nullptr) : json(settle);
    json ex = json::object();
    for (const ExitSteps& e : tr.exits) ex[e.spec] = e.step[i] == 0 ? json(nullptr) : json(e.step[i]);
    t["exit_step"] = ex;
    if (tr.paths.seeds > 0) {
      t["seed_spread_initial"] = json_num(tr.paths.spread.at(i, 0));
      t["seed_spread_final"] = json_num(tr.paths.spread.at(i, R));
    }
    for (const TokenAnalysis& a : an) {
      if (a.token != i) continue;
      const Classification& c = a.cls;
      t["class"] = trajectory_class_name(c.cls);
      classes[trajectory_class_name(c.cls)] = classes[trajectory_class_name(c.cls)].get<int>() + 1;
      t["tail_window"] = c.window;
      t["tail_change"] = json_num(c.tail_change);
      t["contraction"] = json_num(c.contraction);
      t["straightness"] = json_num(c.straightness);
      t["return_lag"] = c.return_lag;
      t["return_distance"] = json_num(c.return_distance);
      json ev = json::array();
      for (int k = 0; k < a.pca.k; ++k) ev.push_back(a.pca.explained(k));
      t["pca_explained"] = ev;
    }
    toks.push_back(t);
  }
  j["classes"] = classes;
  j["per_token"] = toks;
  const std::string text = j.dump(2) + "\n";
  write_file_atomic(path, text.data(), text.size());
}

std::vector<double> iota_d(int from, int to) {
  std::vector<double> v;
  for (int t = from; t <= to; ++t) v.push_back(t);
  return v;
}

plot::Figure pca_figure(const Trajectory& tr, const std::vector<TokenAnalysis>& an,
                        const TraceOutputOptions& o) {
  plot::Figure f;
  f.title = "Latent trajectories, PCA of each token's states s_0..s_" + std::to_string(tr.steps) +
            " (start: circle, end: square)";
  std::vector<int64_t> toks = o.plot_tokens.empty() ? default_plot_tokens(tr) : o.plot_tokens;
  for (int64_t tok : toks) {
    const TokenAnalysis* a = nullptr;
    for (const TokenAnalysis& x : an)
      if (x.token == tok) a = &x;
    if (!a || a->pca.k < 1) continue;
    plot::Axes ax;
    ax.title = "token " + label(o, tr, tok) + " (" + trajectory_class_name(a->cls.cls) + ")";
    char buf[64];
    std::snprintf(buf, sizeof buf, "PC1 (%.0f%%)", 100 * a->pca.explained(0));
    ax.xlabel = buf;
    std::snprintf(buf, sizeof buf, "PC2 (%.0f%%)", a->pca.k > 1 ? 100 * a->pca.explained(1) : 0.0);
    ax.ylabel = buf;
    ax.legend = false;
    plot::Series s;
    s.style = "linespoints";
    s.mark_ends = true;
    for (int64_t i = 0; i < a->pca.n; ++i) {
      s.x.push_back(a->pca.projection[i * a->pca.k]);
      s.y.push_back(a->pca.k > 1 ? a->pca.projection[i * a->pca.k + 1] : 0.0);
    }
    ax.series.push_back(std::move(s));
    f.panels.push_back(std::move(ax));
  }
  f.columns = std::min<int>(3, std::max<int>(1, int(f.panels.size())));
  const int rows = (int(f.panels.size()) + f.columns - 1) / f.columns;
  f.width = 380 * f.columns + 40;
  f.height = 330 * std::max(rows, 1) + 40;
  return f;
}

plot::Figure convergence_figure(const Trajectory& tr, const TraceOutputOptions& o) {
  plot::Figure f;
  f.title = "Convergence per token over recurrences";
  const int R = tr.steps;
  auto panel = [&](const Grid& g, const std::string& title, const std::string& ylabel) {
    plot::Axes ax;
    ax.title = title;
    ax.xlabel = "iteration t";
    ax.ylabel = ylabel;
    ax.log_y = true;
    ax.legend = tr.n_tokens() <= 10;
    for (int64_t i = 0; i < tr.n_tokens(); ++i) {
      plot::Series s;
      s.title = label(o, tr, i);
      s.x = iota_d(1, R);
      for (int t = 1; t <= R; ++t) {
        const double v = g.at(i, t);
        s.y.push_back(v > 0 ? v : NAN);  // log scale: zeros leave a gap
      }
      s.line_width = 1.2;
      ax.series.push_back(std::move(s));
    }
    return ax;
  };
  f.panels.push_back(panel(tr.rel_change, "relative change |s_t - s_t-1| / |s_t|", "relative change"));
  bool decoded = false;
  for (double v : tr.kl.v) decoded = decoded || std::isfinite(v);
  if (decoded) f.panels.push_back(panel(tr.kl, "KL(p_t-1 || p_t) of the decoded distributions", "KL (nats)"));
  if (tr.paths.seeds > 0) {
    plot::Axes ax = panel(tr.paths.spread, "spread across " + std::to_string(tr.paths.seeds + 1) +
                                               " initial states", "mean distance / mean norm");
    for (size_t i = 0; i < ax.series.size(); ++i) {  // spread is defined from t = 0
      ax.series[i].x = iota_d(0, R);
      ax.series[i].y = std::vector<double>(tr.paths.spread.row(int64_t(i)).begin(),
                                           tr.paths.spread.row(int64_t(i)).end());
    }
    f.panels.push_back(std::move(ax));
  }
  f.columns = int(f.panels.size());
  f.width = 480 * f.columns + 40;
  f.height = 420;
  return f;
}

plot::Heatmap heatmap(const Trajectory& tr, const TraceOutputOptions& o) {
  plot::Heatmap m;
  const int R = tr.steps;
  m.title = "Relative change per token and iteration";
  m.xlabel = "iteration t";
  m.ylabel = "token";
  m.cblabel = "|s_t - s_t-1| / |s_t|";
  m.rows = static_cast<int>(tr.n_tokens());
  m.cols = R;
  m.log_color = true;
  m.col_values = iota_d(1, R);
  for (int64_t i = 0; i < tr.n_tokens(); ++i) {
    for (int t = 1; t <= R; ++t) m.values.push_back(tr.rel_change.at(i, t));
    m.row_labels.push_back(label(o, tr, i));
  }
  if (!tr.exits.empty()) {
    m.title += " (red: where exit " + tr.exits.front().spec + " fires)";
    for (int s : tr.exits.front().step) m.markers.push_back(s > 0 ? double(s) : NAN);
  }
  m.width = std::max(700, 24 * R + 260);
  m.height = std::clamp(14 * m.rows + 220, 420, 1600);
  return m;
}

}  // namespace

std::vector<TokenAnalysis> analyse_trajectory(const Trajectory& tr, int pca_components,
                                              const ClassifyOptions& options) {
  std::vector<TokenAnalysis> out;
  for (int64_t tok : tr.token_index) {
    TokenAnalysis a;
    a.token = tok;
    const Tensor s = tr.token_states(tok);
    a.cls = classify_trajectory(s, options);
    a.pca = pca(s, pca_components);
    out.push_back(std::move(a));
  }
  return out;
}

void ensure_output_dir(const std::string& dir) {
  if (dir.empty()) throw Error("trace: no output directory given (--out DIR)");
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    throw Error("trace: output directory '" + dir + "' exists and is not a directory");
  fs::create_directories(dir, ec);
  if (ec) throw Error("trace: cannot create output directory '" + dir + "': " + ec.message());
  if (access(dir.c_str(), W_OK | X_OK) != 0)
    throw Error("trace: output directory '" + dir + "' is not writable");
  const std::string probe = (fs::path(dir) / ".huginn-write-test").string();
  try {
    write_file_atomic(probe, "", 0);
  } catch (const Error& e) {
    throw Error("trace: output directory '" + dir + "' is not writable: " + e.what());
  }
  fs::remove(probe, ec);
}

std::vector<std::string> write_trace_outputs(const std::string& dir, const Trajectory& tr,
                                             const std::vector<TokenAnalysis>& analysis,
                                             const TraceOutputOptions& o) {
  ensure_output_dir(dir);
  std::vector<std::string> written;
  const std::string st = (fs::path(dir) / "trajectory.safetensors").string();
  write_safetensors(st, tr, analysis, o);
  written.push_back(st);
  const std::string js = (fs::path(dir) / "summary.json").string();
  write_summary(js, tr, analysis, o);
  written.push_back(js);
  if (!o.plots) return written;
  for (const std::string& fmt : o.formats) {
    if (fmt != "png" && fmt != "svg")
      throw Error("trace: plot format '" + fmt + "' is not png or svg");
    const auto p = [&](const char* name) { return (fs::path(dir) / (std::string(name) + "." + fmt)).string(); };
    plot::save(pca_figure(tr, analysis, o), p("pca"));
    plot::save(convergence_figure(tr, o), p("convergence"));
    plot::save(heatmap(tr, o), p("heatmap"));
    for (const char* n : {"pca", "convergence", "heatmap"}) written.push_back(p(n));
  }
  return written;
}

}  // namespace huginn
