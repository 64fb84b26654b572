// The gnuplot helper: real PNG / SVG files with the data in them, atomic output, and clear
// errors for a missing gnuplot, a bad extension, a missing directory or a gnuplot failure.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "huginn/error.h"
#include "huginn/plot.h"
#include "test_util.h"

namespace huginn {
namespace {

namespace fs = std::filesystem;

std::string read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

class Plot : public ::testing::Test {
 protected:
  void SetUp() override {
    // A missing gnuplot fails these tests (make test installs gnuplot-nox); the check is not
    // fatal so that the missing-gnuplot test below, which fakes its own gnuplot, still runs.
    if (plot::find_gnuplot().empty())
      ADD_FAILURE() << "gnuplot is not installed (Debian gnuplot-nox; scripts/install-deps.sh)";
    dir_ = test::make_temp_dir("plot");
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  static plot::Figure figure() {
    plot::Figure f;
    f.title = "two panels";
    f.columns = 2;
    for (int p = 0; p < 2; ++p) {
      plot::Axes ax;
      ax.title = p ? "log panel with a 'quote'" : "linear panel";
      ax.log_y = p == 1;
      for (int k = 0; k < 3; ++k) {
        plot::Series s;
        s.title = "series " + std::to_string(k);
        s.mark_ends = k == 0;
        for (int i = 0; i < 20; ++i) {
          s.x.push_back(i);
          s.y.push_back(i == 7 ? NAN : std::exp(-0.2 * i * (k + 1)));  // a gap at 7
        }
        ax.series.push_back(s);
      }
      f.panels.push_back(ax);
    }
    return f;
  }
  std::string dir_;
};

TEST_F(Plot, WritesPngAndSvg) {
  const std::string png = dir_ + "/f.png", svg = dir_ + "/f.svg";
  plot::save(figure(), png);
  plot::save(figure(), svg);
  const std::string p = read_file(png), s = read_file(svg);
  ASSERT_GT(p.size(), 1000u);
  EXPECT_EQ(p.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_NE(s.find("<svg"), std::string::npos);
  EXPECT_NE(s.find("log panel with a "), std::string::npos);  // the title survived its quote
  EXPECT_NE(s.find("series 2"), std::string::npos);
  // Only the two images are left: no temporary files beside them.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir_)) files += e.is_regular_file();
  EXPECT_EQ(files, 2);
}

TEST_F(Plot, HeatmapWithMarkersAndLabels) {
  plot::Heatmap m;
  m.title = "heat";
  m.rows = 3;
  m.cols = 5;
  m.log_color = true;
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 5; ++c) m.values.push_back(r == 1 && c == 2 ? NAN : std::pow(10.0, -c - r));
  m.col_values = {1, 2, 3, 4, 5};
  m.row_labels = {"a", "b", "c"};
  m.markers = {2, NAN, 4};
  m.marker_title = "exit";
  plot::save(m, dir_ + "/h.svg");
  const std::string s = read_file(dir_ + "/h.svg");
  EXPECT_NE(s.find("<svg"), std::string::npos);
  EXPECT_NE(s.find(">exit<"), std::string::npos);
  plot::save(m, dir_ + "/h.png");
  EXPECT_GT(fs::file_size(dir_ + "/h.png"), 500u);
  m.values.pop_back();
  EXPECT_NE(error_of([&] { plot::save(m, dir_ + "/bad.png"); }).find("rows x cols"),
            std::string::npos);
}

TEST_F(Plot, BadPathsAndAMissingGnuplotAreClearErrors) {
  EXPECT_NE(error_of([&] { plot::save(figure(), dir_ + "/f.jpg"); }).find("expected .png or .svg"),
            std::string::npos);
  EXPECT_NE(error_of([&] { plot::save(figure(), dir_ + "/nope/f.png"); }).find("does not exist"),
            std::string::npos);
  // A "gnuplot" that fails: its message comes back, and no image is left behind.
  const std::string fake = dir_ + "/fake-gnuplot";
  std::ofstream(fake) << "#!/bin/sh\necho 'line 3: something broke' >&2\nexit 1\n";
  fs::permissions(fake, fs::perms::owner_all);
  setenv("HUGINN_GNUPLOT", fake.c_str(), 1);
  const std::string e = error_of([&] { plot::save(figure(), dir_ + "/f.png"); });
  EXPECT_NE(e.find("something broke"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(dir_ + "/f.png"));
  setenv("HUGINN_GNUPLOT", (dir_ + "/missing").c_str(), 1);
  const std::string m = error_of([&] { plot::save(figure(), dir_ + "/f.png"); });
  unsetenv("HUGINN_GNUPLOT");
  EXPECT_NE(m.find("gnuplot not found"), std::string::npos) << m;
  EXPECT_NE(m.find("gnuplot-nox"), std::string::npos) << m;
}

}  // namespace
}  // namespace huginn
