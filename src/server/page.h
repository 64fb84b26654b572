// The chat page (src/server/page/: index.html, chat.css, chat.js), embedded in the binary at
// build time by page/embed.cmake and served by the HTTP layer at GET / and its file names.
#pragma once

#include <span>
#include <string_view>

namespace huginn::server {

struct PageFile {
  std::string_view path;          // "/", "/chat.js", ...
  std::string_view content_type;
  std::string_view body;
};

// Every file of the page; "/" is index.html.
std::span<const PageFile> page_files();

// The Content-Security-Policy the page is served with: its own scripts, styles and API only
// (nothing from elsewhere can load, inline scripts cannot run).
std::string_view page_csp();

}  // namespace huginn::server
