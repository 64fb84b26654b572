// gnuplot driver: data files + a script in a private temp directory, gnuplot run by fork/exec,
// the image renamed into place. See huginn/plot.h.
#include "huginn/plot.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "huginn/error.h"

namespace huginn::plot {

namespace fs = std::filesystem;

namespace {

// tab10: distinguishable, colour-blind-friendlier than gnuplot's defaults.
constexpr const char* kColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                   "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

// A gnuplot single-quoted string: '' stands for one quote; newlines would end the command.
std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "''";
    else if (c == '\n' || c == '\r') out += ' ';
    else out += c;
  }
  return out + "'";
}

std::string num(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// A private temp directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "huginn-plot-XXXXXX").string();
    if (!mkdtemp(tmpl.data()))
      throw Error("plot: cannot create a temporary directory under " +
                  fs::temp_directory_path().string() + ": " + std::strerror(errno));
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (fs::path(path_) / name).string(); }

 private:
  std::string path_;
};

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
  if (!f) throw Error("plot: cannot write temporary file " + path);
}

// "pngcairo" / "svg" terminal line for the output's extension.
std::string terminal(const std::string& path, int w, int h) {
  const std::string ext = fs::path(path).extension().string();
  if (ext == ".png")
    return "set terminal pngcairo size " + std::to_string(w) + "," + std::to_string(h) +
           " noenhanced font 'DejaVu Sans,10' background rgb 'white'\n";
  if (ext == ".svg")
    return "set terminal svg size " + std::to_string(w) + "," + std::to_string(h) +
           " noenhanced font 'DejaVu Sans,10' background rgb 'white'\n";
  throw Error("plot: " + path + ": unknown image format '" + ext + "', expected .png or .svg");
}

// Runs gnuplot on `script` (which writes `tmp_out`), then renames tmp_out to `path`.
void run_gnuplot(const TempDir& dir, const std::string& script, const std::string& tmp_out,
                 const std::string& path) {
  const std::string gp = require_gnuplot();
  const std::string script_path = dir.file("plot.gp"), log_path = dir.file("gnuplot.log");
  write_text(script_path, script);
  const pid_t pid = fork();
  if (pid < 0) throw Error(std::string("plot: fork failed: ") + std::strerror(errno));
  if (pid == 0) {
    const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      ::close(fd);
    }
    const int null_in = ::open("/dev/null", O_RDONLY);
    if (null_in >= 0) dup2(null_in, 0);
    execl(gp.c_str(), gp.c_str(), script_path.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  std::ifstream lf(log_path);
  std::stringstream log;
  log << lf.rdbuf();
  std::error_code ec;
  const bool made = fs::exists(tmp_out, ec) && fs::file_size(tmp_out, ec) > 0;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !made) {
    fs::remove(tmp_out, ec);
    std::string msg = log.str();
    if (msg.size() > 2000) msg = msg.substr(msg.size() - 2000);
    throw Error("plot: gnuplot (" + gp + ") failed to write " + path + ": " +
                (msg.empty() ? "exit status " + std::to_string(WEXITSTATUS(status)) : msg));
  }
  fs::rename(tmp_out, path, ec);
  if (ec) {
    fs::remove(tmp_out, ec);
    throw Error("plot: cannot move the image into place at " + path + ": " + ec.message());
  }
}

// The temporary output beside the final path (same filesystem, so the rename is atomic).
std::string temp_output(const std::string& path) {
  const fs::path p(path);
  const fs::path parent = p.has_parent_path() ? p.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(parent, ec))
    throw Error("plot: " + path + ": the directory " + parent.string() + " does not exist");
  return (parent / ("." + p.filename().string() + ".tmp-" + std::to_string(getpid()) +
                    p.extension().string()))
      .string();
}

bool finite(double v) { return std::isfinite(v); }

// One series' data: "x y" lines, a blank line (a gap) at every non-finite value.
std::string series_data(const Series& s) {
  std::string d;
  for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
    if (finite(s.x[i]) && finite(s.y[i])) d += num(s.x[i]) + " " + num(s.y[i]) + "\n";
    else d += "\n";
  }
  return d;
}

std::string ends_data(const Series& s) {
  size_t first = s.x.size(), last = s.x.size();
  for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i)
    if (finite(s.x[i]) && finite(s.y[i])) {
      if (first == s.x.size()) first = i;
      last = i;
    }
  if (first == s.x.size()) return "";
  return num(s.x[first]) + " " + num(s.y[first]) + "\n" + num(s.x[last]) + " " +
         num(s.y[last]) + "\n";
}

std::string panel_script(const Axes& ax, const TempDir& dir, int panel) {
  std::string g = "unset logscale\nset autoscale\nunset title\n";
  g += "set title " + quote(ax.title) + "\n";
  g += "set xlabel " + quote(ax.xlabel) + "\nset ylabel " + quote(ax.ylabel) + "\n";
  // Log x axes count recurrences or steps: powers of two, written plainly (1 2 4 ... 64).
  if (ax.log_x) g += "set logscale x 2\n";
  g += "set format x '% h'\nset format y '% h'\n";
  if (ax.log_y) g += "set logscale y\nset format y '%.0e'\n";
  g += ax.legend ? "set key top right noopaque font ',8'\n" : "unset key\n";
  g += "set grid lc rgb '#dddddd'\n";
  std::string plots;
  for (size_t k = 0; k < ax.series.size(); ++k) {
    const Series& s = ax.series[k];
    const std::string color = s.color.empty() ? kColors[k % 10] : s.color;
    const std::string f = dir.file("p" + std::to_string(panel) + "_s" + std::to_string(k) + ".dat");
    write_text(f, series_data(s));
    const std::string with = s.style == "points" ? "points pt 7 ps 0.6"
                             : s.style == "linespoints" ? "linespoints pt 7 ps 0.5"
                                                        : "lines";
    if (!plots.empty()) plots += ", \\\n  ";
    plots += quote(f) + " using 1:2 with " + with + " lw " + num(s.line_width) + " lc rgb " +
             quote(color) + (s.title.empty() ? " notitle" : " title " + quote(s.title));
    if (s.mark_ends) {
      const std::string ef = f + ".ends";
      const std::string ed = ends_data(s);
      if (ed.empty()) continue;
      write_text(ef, ed);
      plots += ", \\\n  " + quote(ef) + " every ::0::0 using 1:2 with points pt 7 ps 1.4 lc rgb " +
               quote(color) + " notitle";
      plots += ", \\\n  " + quote(ef) + " every ::1::1 using 1:2 with points pt 5 ps 1.4 lc rgb " +
               quote(color) + " notitle";
    }
  }
  if (plots.empty()) {  // nothing to draw: an empty frame rather than a gnuplot error
    g += "set xrange [0:1]\nset yrange [0:1]\nplot NaN notitle\n";
    return g;
  }
  return g + "plot " + plots + "\n";
}

}  // namespace

std::string find_gnuplot() {
  auto executable = [](const std::string& p) { return !p.empty() && access(p.c_str(), X_OK) == 0; };
  if (const char* env = std::getenv("HUGINN_GNUPLOT"); env && *env)
    return executable(env) ? std::string(env) : std::string();
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/bin:/bin");
  std::string d;
  while (std::getline(dirs, d, ':')) {
    const std::string cand = (d.empty() ? std::string(".") : d) + "/gnuplot";
    if (executable(cand)) return cand;
  }
  return "";
}

std::string require_gnuplot() {
  std::string gp = find_gnuplot();
  if (gp.empty()) {
    const char* env = std::getenv("HUGINN_GNUPLOT");
    throw Error(std::string("plot: gnuplot not found") +
                (env && *env ? " at HUGINN_GNUPLOT=" + std::string(env) : " on PATH") +
                "; install the Debian package gnuplot-nox (scripts/install-deps.sh does), or "
                "skip plots (huginn trace --no-plots)");
  }
  return gp;
}

void save(const Figure& fig, const std::string& path) {
  std::string g = terminal(path, fig.width, fig.height);
  require_gnuplot();
  const std::string tmp_out = temp_output(path);
  TempDir dir;
  g += "set output " + quote(tmp_out) + "\n";
  const int n = static_cast<int>(fig.panels.size());
  const int cols = std::max(1, std::min(fig.columns, std::max(n, 1)));
  const int rows = std::max(1, (n + cols - 1) / cols);
  g += "set multiplot layout " + std::to_string(rows) + "," + std::to_string(cols) +
       (fig.title.empty() ? "" : " title " + quote(fig.title) + " font ',12'") + "\n";
  for (int p = 0; p < n; ++p) g += panel_script(fig.panels[p], dir, p);
  g += "unset multiplot\nset output\n";
  run_gnuplot(dir, g, tmp_out, path);
}

void save(const Heatmap& m, const std::string& path) {
  if (m.rows < 1 || m.cols < 1 || m.values.size() != size_t(m.rows) * size_t(m.cols))
    throw Error("plot: heat map " + path + ": values must be rows x cols (" +
                std::to_string(m.rows) + " x " + std::to_string(m.cols) + "), got " +
                std::to_string(m.values.size()));
  std::string g = terminal(path, m.width, m.height);
  require_gnuplot();
  const std::string tmp_out = temp_output(path);
  TempDir dir;
  auto colx = [&](int c) { return c < int(m.col_values.size()) ? m.col_values[c] : double(c); };
  std::string d;
  bool any = false;
  for (int r = 0; r < m.rows; ++r) {
    for (int c = 0; c < m.cols; ++c) {
      double v = m.values[size_t(r) * m.cols + c];
      if (!finite(v) || (m.log_color && v <= 0)) v = NAN;
      else any = true;
      d += num(colx(c)) + " " + std::to_string(r) + " " + (finite(v) ? num(v) : "NaN") + "\n";
    }
    d += "\n";
  }
  const std::string f = dir.file("map.dat");
  write_text(f, d);
  g += "set output " + quote(tmp_out) + "\n";
  g += "set title " + quote(m.title) + "\nset xlabel " + quote(m.xlabel) + "\nset ylabel " +
       quote(m.ylabel) + "\nset cblabel " + quote(m.cblabel) + "\n";
  g += "set palette defined (0 '#440154', 1 '#3b528b', 2 '#21918c', 3 '#5ec962', 4 '#fde725')\n";
  if (m.log_color) g += "set logscale cb\nset format cb '%.0e'\n";
  const double x0 = colx(0), x1 = colx(m.cols - 1);
  const double half = m.cols > 1 ? 0.5 * (x1 - x0) / (m.cols - 1) : 0.5;
  g += "set xrange [" + num(x0 - half) + ":" + num(x1 + half) + "]\n";
  g += "set yrange [" + num(m.rows - 0.5) + ":-0.5]\n";  // row 0 at the top
  if (!m.row_labels.empty() && m.rows <= 48) {
    g += "set ytics (";
    for (int r = 0; r < m.rows && r < int(m.row_labels.size()); ++r)
      g += (r ? ", " : "") + quote(m.row_labels[r]) + " " + std::to_string(r);
    g += ") font ',8'\n";
  }
  g += m.marker_title.empty() ? "unset key\n" : "set key below\n";
  if (!any) g += "set cbrange [0:1]\n";
  std::string plots = quote(f) + " using 1:2:3 with image notitle";
  std::string md;
  for (size_t r = 0; r < m.markers.size() && r < size_t(m.rows); ++r)
    if (finite(m.markers[r])) md += num(m.markers[r]) + " " + std::to_string(r) + "\n";
  if (!md.empty()) {
    const std::string mf = dir.file("markers.dat");
    write_text(mf, md);
    plots += ", " + quote(mf) + " using 1:2 with points pt 7 ps 1.0 lc rgb '#ff2020' " +
             (m.marker_title.empty() ? std::string("notitle") : "title " + quote(m.marker_title));
  }
  g += "plot " + plots + "\nset output\n";
  run_gnuplot(dir, g, tmp_out, path);
}

}  // namespace huginn::plot
