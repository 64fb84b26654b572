// Plots through gnuplot (Debian package gnuplot-nox): line plots with several series,
// trajectory / scatter plots, grids of panels and heat maps, written as PNG (pngcairo) or SVG by
// the file's extension. Data go to a private temp directory with a generated script; gnuplot
// runs as a child process (fork/exec, no shell) and the image is renamed into place, so a failed
// plot never leaves a partial file. Text is drawn verbatim (no gnuplot "enhanced" markup).
#pragma once

#include <string>
#include <vector>

namespace huginn::plot {

struct Series {
  std::string title;           // legend entry ("" = none)
  std::vector<double> x, y;    // same length; NaN values leave a gap
  std::string style = "lines"; // lines | points | linespoints
  double line_width = 1.5;
  std::string color;           // "" = gnuplot's cycle; else e.g. "#1f77b4"
  bool mark_ends = false;      // a filled circle at the first point, a square at the last
};

struct Axes {
  std::string title, xlabel, ylabel;
  bool log_x = false, log_y = false;
  bool legend = true;
  std::vector<Series> series;
};

// One or more panels (laid out `columns` wide, row by row).
struct Figure {
  std::string title;
  std::vector<Axes> panels;
  int columns = 1;
  int width = 900, height = 600;  // pixels (SVG: the same size in user units)
};

// Values [rows, cols] row-major drawn as cells: x = column, y = row (row 0 at the top).
struct Heatmap {
  std::string title, xlabel, ylabel, cblabel;
  int rows = 0, cols = 0;
  std::vector<double> values;            // NaN cells are left blank
  std::vector<double> col_values;        // x value of each column (default 0..cols-1)
  std::vector<std::string> row_labels;   // optional, one per row
  bool log_color = false;                // log-scaled colour axis (non-positive cells blank)
  // Optional markers drawn on top, one per row: the column value to mark (NaN = none).
  std::vector<double> markers;
  std::string marker_title;
  int width = 900, height = 600;
};

// The gnuplot executable: $HUGINN_GNUPLOT when set, else `gnuplot` on PATH; "" when absent.
std::string find_gnuplot();
// Throws huginn::Error with how to install it when gnuplot is missing.
std::string require_gnuplot();

// Write `path` (.png or .svg). Throws huginn::Error naming the path for another extension, a
// missing gnuplot, or a gnuplot failure (with its message).
void save(const Figure& fig, const std::string& path);
void save(const Heatmap& map, const std::string& path);

}  // namespace huginn::plot
