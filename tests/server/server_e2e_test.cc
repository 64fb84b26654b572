// huginn serve end to end: a server on 127.0.0.1 (free port) running tiny-b with a byte-level
// BPE tokenizer trained here (Huginn's chat markers fit tiny-b's 300-token vocabulary), driven
// by the official openai npm client (js/e2e.mjs), a hostile-request corpus (js/corpus.mjs,
// hostile_corpus.json) and a bounded load test (js/load.mjs); and, over raw sockets (no node),
// the server under abuse: slow headers, slow bodies, idle sockets, connection floods, oversized
// chunked bodies, and flags and fields at the edges of their ranges.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "huginn/server.h"
#include "huginn/thread_pool.h"
#include "huginn/tokenizer.h"
#include "raw_http.h"
#include "test_util.h"

namespace huginn {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;
constexpr const char* kKey = "test-key-123";

bool node_ready() {
  static const bool ok = [] {
    if (test::run_command("command -v node >/dev/null && command -v npm >/dev/null") != 0)
      return false;
    const std::string js = HUGINN_SERVER_JS;
    std::string out;
    const int rc = test::run_command("flock /tmp/huginn-server-npm.lock sh -c 'cd " + js +
                                         " && { [ -d node_modules/openai ] && [ -d "
                                         "node_modules/puppeteer-core ] || npm ci --no-audit "
                                         "--no-fund --silent; }'",
                                     &out);
    if (rc != 0) std::fprintf(stderr, "npm ci failed: %s\n", out.c_str());
    return rc == 0;
  }();
  return ok;
}

// A model directory: tiny-b's config and weights plus a trained tokenizer.json.
std::string make_model_dir() {
  const std::string dir = test::make_temp_dir("server_model") + "/tiny";
  fs::create_directories(dir);
  for (const char* f : {"config.json", "model.safetensors"})
    fs::copy_file(test::golden_dir("tiny-b") + "/" + f, dir + "/" + f);
  BpeTrainOptions o;
  o.vocab_size = 280;
  o.special_tokens = {"<|begin_text|>", "<|end_text|>", "<|begin_header|>", "<|end_header|>",
                      "<|end_turn|>"};
  o.progress = false;
  ThreadPool pool(1);
  std::ofstream(dir + "/tokenizer.json")
      << train_bpe({"hello world, hello there. the world says hello back", "hello hello world"},
                   o, pool);
  return dir;
}

// `huginn serve` as a child process; killed (SIGTERM, then SIGKILL) when destroyed.
class ServerProcess {
 public:
  ServerProcess(const std::string& model, const std::string& extra) {
    int fds[2];
    EXPECT_EQ(pipe(fds), 0);
    log_ = model + "/../server.log";
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], 1);
      close(fds[0]);
      const std::string cmd = std::string("exec ") + HUGINN_CLI + " serve --model " + model +
                              " --host 127.0.0.1 --port 0 --api-key " + kKey + " --threads 1 " +
                              extra + " 2>" + log_;
      execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(fds[1]);
    FILE* f = fdopen(fds[0], "r");
    char line[256] = {0};
    if (f && std::fgets(line, sizeof line, f)) {
      const char* p = std::strrchr(line, ':');
      if (p) port_ = std::atoi(p + 1);
    }
    if (f) std::fclose(f);
  }
  // A server stops cleanly on SIGTERM: exit status 0 within 15 s. A crash, a hang or a
  // sanitizer's report at exit (a leak: make test-asan's servers are instrumented) fails the test.
  ~ServerProcess() {
    if (pid_ <= 0) return;
    if (!reap(WNOHANG)) {
      kill(pid_, SIGTERM);
      for (int i = 0; i < 150 && !reap(WNOHANG); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (!reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      ADD_FAILURE() << "huginn serve did not stop within 15 s of SIGTERM\n" << log();
      return;
    }
    EXPECT_TRUE(WIFEXITED(status_) && WEXITSTATUS(status_) == 0)
        << "huginn serve ended with " << (WIFEXITED(status_) ? "exit status " : "signal ")
        << (WIFEXITED(status_) ? WEXITSTATUS(status_) : WTERMSIG(status_)) << "\n" << log();
  }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  bool alive() const { return pid_ > 0 && !reap(WNOHANG); }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string log() const {
    std::ifstream in(log_);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  long rss_kb() const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
    std::string k;
    long v = 0;
    while (in >> k) {
      if (k == "VmRSS:") {
        in >> v;
        return v;
      }
    }
    return -1;
  }

 private:
  // Whether the server has ended (its status then in status_); waitpid reaps it only once.
  bool reap(int flags) const {
    if (!reaped_ && waitpid(pid_, &status_, flags) == pid_) reaped_ = true;
    return reaped_;
  }

  pid_t pid_ = -1;
  int port_ = 0;
  std::string log_;
  mutable bool reaped_ = false;
  mutable int status_ = 0;
};

json run_js(const std::string& script, const std::string& args) {
  std::string out;
  const int rc = test::run_command("node " + std::string(HUGINN_SERVER_JS) + "/" + script + " " +
                                       args + " 2>&1",
                                   &out);
  EXPECT_EQ(rc, 0) << out;
  const size_t brace = out.find_first_of("{[");
  json j = json::parse(brace == std::string::npos ? std::string("null") : out.substr(brace),
                       nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << out;
  return j;
}

json cli_generate(const std::string& model, const std::string& args, int max_new = 8) {
  std::string out;
  const int rc = test::run_command(std::string(HUGINN_CLI) + " generate --model " + model +
                                       " --threads 1 --json --max-new " + std::to_string(max_new) + " " + args + " 2>/dev/null",
                                   &out);
  EXPECT_EQ(rc, 0) << out;
  return json::parse(out, nullptr, false);
}

class ServeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A missing tool fails the test (never a skip): make test installs node and the client.
    if (!node_ready())
      FAIL() << "node/npm or the openai npm client in " << HUGINN_SERVER_JS
             << " is missing; scripts/install-deps.sh installs them (make test runs it)";
    model_ = make_model_dir();
  }
  void TearDown() override {
    if (!model_.empty()) fs::remove_all(fs::path(model_).parent_path());
  }
  std::string js_args(const ServerProcess& s) const {
    return s.url() + "/v1 tiny " + kKey;
  }
  std::string model_;
};

TEST_F(ServeTest, OpenAIClientGreedyEqualsGenerateAndNumStepsChangesOutput) {
  ServerProcess s(model_, "--parallel 2");
  ASSERT_GT(s.port(), 0) << s.log();
  const json r = run_js("e2e.mjs", js_args(s));
  ASSERT_TRUE(r.is_object()) << s.log();
  EXPECT_EQ(r["models"], json::array({"tiny"}));

  const json chat = cli_generate(model_, "--chat --prompt 'hello world' --steps 4");
  const json comp = cli_generate(model_, "--prompt 'hello world' --steps 4");
  ASSERT_TRUE(chat.is_object() && comp.is_object());
  EXPECT_EQ(r["chat"]["text"], chat["text"]);
  EXPECT_EQ(r["chat"]["object"], "chat.completion");
  EXPECT_EQ(r["chat_stream"]["text"], chat["text"]);
  EXPECT_EQ(r["chat_stream"]["role"], "assistant");
  EXPECT_EQ(r["chat_stream"]["usage"]["completion_tokens"], chat["tokens"].size());
  EXPECT_EQ(r["chat_stream"]["usage"]["prompt_tokens"], chat["prompt_tokens"]);
  EXPECT_EQ(r["completion"]["text"], comp["text"]);
  EXPECT_EQ(r["completion"]["usage"]["completion_tokens"], comp["tokens"].size());
  EXPECT_DOUBLE_EQ(r["completion"]["usage"]["mean_iterations_per_token"].get<double>(), 4.0);
  EXPECT_EQ(r["completion_stream"]["text"], comp["text"]);
  EXPECT_EQ(r["completion_stream"]["finish"], r["completion"]["finish"]);
  for (const json& it : r["completion_stream"]["iterations"]) EXPECT_EQ(it, 4);
  // With return_iterations a stream has one chunk per token (a stop id's too).
  EXPECT_EQ(r["completion_stream"]["iterations"].size(), r["completion"]["usage"]["completion_tokens"]);

  // num_steps: the same output as huginn generate at that depth, and reported per token.
  for (int steps : {1, 8}) {
    const json want = cli_generate(model_, "--prompt 'hello world' --steps " + std::to_string(steps), 12);
    const json& got = r["steps" + std::to_string(steps)];
    EXPECT_EQ(got["text"], want["text"]) << steps;
    EXPECT_EQ(got["usage"]["iterations_per_token"], want["steps"]) << steps;
    EXPECT_DOUBLE_EQ(got["usage"]["mean_iterations_per_token"].get<double>(), steps);
  }
  EXPECT_NE(r["steps1"]["text"], r["steps8"]["text"]);
  const json kl = cli_generate(model_, "--prompt 'hello world' --exit kl:0.01 --max-steps 16", 12);
  EXPECT_EQ(r["exit_kl"]["text"], kl["text"]);
  EXPECT_EQ(r["exit_kl"]["usage"]["iterations_per_token"], kl["steps"]);

  // Echo + logprobs: every prompt token scored (the first has none), then the completion.
  const json& lp = r["logprobs"]["logprobs"];
  const size_t n_prompt = r["logprobs"]["usage"]["prompt_tokens"].get<size_t>();
  ASSERT_GE(lp["tokens"].size(), n_prompt + 1);
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  for (size_t i = 1; i < lp["tokens"].size(); ++i) {
    const double v = lp["token_logprobs"][i].get<double>();
    EXPECT_LE(v, 0.0);
    EXPECT_EQ(lp["top_logprobs"][i].size(), 3u);
    if (i >= n_prompt) {  // greedy: the chosen token is the most likely one
      double best = -1e9;
      for (const auto& [k, x] : lp["top_logprobs"][i].items()) best = std::max(best, x.get<double>());
      EXPECT_NEAR(v, best, 1e-6);
    }
  }
  const json& clp = r["chat_logprobs"]["logprobs"]["content"];
  ASSERT_FALSE(clp.empty());
  EXPECT_EQ(clp[0]["top_logprobs"].size(), 2u);
  EXPECT_EQ(r["bad_model"]["status"], 404);
  EXPECT_TRUE(s.alive());
}

// The chat page (GET /) in headless chromium (js/chat_page.mjs): it shows the 401 of a missing
// key, then streams answers whose every token is shaded by the recurrences it took. Each answer's
// per-token counts and exit values in the DOM (and the plot's bars) are the API's own for the
// same request sent non-streamed; the controls set the request's fields; a 400 is shown and the
// chat goes on; no script error, no console error beyond the two refusals the test provokes.
TEST_F(ServeTest, ChatPageShadesEachTokenByTheRecurrencesTheApiReports) {
  std::string chromium;
  // A missing browser fails (never skips): scripts/install-deps.sh installs Debian's chromium.
  ASSERT_EQ(test::run_command("command -v chromium", &chromium), 0)
      << "chromium is missing; scripts/install-deps.sh installs it (make test runs it)";
  chromium.erase(chromium.find_last_not_of(" \n") + 1);
  ServerProcess s(model_, "--parallel 2");
  ASSERT_GT(s.port(), 0) << s.log();
  // The page's files need no key, and only their exact paths are theirs.
  const auto get = [&](const std::string& path, bool with_key) {
    const std::string auth = with_key ? std::string("Authorization: Bearer ") + kKey + "\r\n" : "";
    return test::http::exchange(
        s.port(), "GET " + path + " HTTP/1.1\r\nHost: t\r\n" + auth + "Connection: close\r\n\r\n", 10);
  };
  const test::http::Reply js = get("/chat.js", false);
  EXPECT_EQ(js.status, 200) << js.head;
  EXPECT_NE(js.head.find("text/javascript"), std::string::npos) << js.head;
  EXPECT_NE(js.body.find("return_iterations"), std::string::npos);
  EXPECT_EQ(get("/chatXjs", false).status, 401);
  EXPECT_EQ(get("/chatXjs", true).status, 404);
  const json r = run_js("chat_page.mjs", s.url() + " " + kKey + " " + chromium);
  ASSERT_TRUE(r.is_object()) << s.log();
  EXPECT_EQ(r["status"], 200);
  const std::string csp = r["headers"].value("content-security-policy", "");
  EXPECT_NE(csp.find("default-src 'none'"), std::string::npos) << csp;
  EXPECT_NE(csp.find("connect-src 'self'"), std::string::npos) << csp;
  EXPECT_NE(r["error_without_key"].get<std::string>().find("401"), std::string::npos) << r;
  EXPECT_EQ(r["model"], "tiny");
  EXPECT_EQ(r["error_hidden_after_key"], true);

  const json& answers = r["answers"];
  ASSERT_EQ(answers.size(), 4u) << r;
  for (size_t a = 0; a < answers.size(); ++a) {
    const json& ans = answers[a];
    const json& dom = ans["dom"];
    ASSERT_EQ(ans["api_status"], 200) << ans;
    EXPECT_EQ(dom["done"], "ok") << a;
    EXPECT_EQ(dom["error_hidden"], true) << a;
    EXPECT_EQ(ans["request"]["stream"], true);
    EXPECT_EQ(ans["request"]["return_iterations"], true);
    const json& usage = ans["api"]["usage"];
    const json& tokens = dom["tokens"];
    std::fprintf(stderr, "chat page answer %zu: steps %s, exit values %s\n", a,
                 usage["iterations_per_token"].dump().c_str(),
                 usage["exit_value_per_token"].dump().c_str());
    ASSERT_EQ(tokens.size(), usage["iterations_per_token"].size()) << a << ": " << ans;
    ASSERT_EQ(tokens.size(), usage["exit_value_per_token"].size()) << a;
    ASSERT_GT(tokens.size(), 0u) << a;
    EXPECT_EQ(dom["text"], ans["api"]["choices"][0]["message"]["content"]) << a;
    ASSERT_EQ(dom["bars"].size(), tokens.size()) << a;
    for (size_t i = 0; i < tokens.size(); ++i) {
      const int steps = tokens[i]["steps"].get<int>();
      EXPECT_EQ(steps, usage["iterations_per_token"][i].get<int>()) << a << ": token " << i;
      EXPECT_EQ(dom["bars"][i]["steps"], steps) << a << ": bar " << i;
      EXPECT_NE(tokens[i]["title"].get<std::string>().find(std::to_string(steps) + " recurrence"),
                std::string::npos) << tokens[i];
      const json& want = usage["exit_value_per_token"][i];
      const std::string shown = tokens[i]["exit"];
      if (want.is_null()) {
        EXPECT_EQ(shown, "") << a << ": token " << i;
      } else {  // JavaScript's String(number) round-trips the double exactly
        EXPECT_EQ(std::stod(shown), want.get<double>()) << a << ": token " << i;
      }
      // The shading is a function of the depth, one colour per depth within an answer.
      for (size_t j = 0; j < i; ++j)
        EXPECT_EQ(tokens[j]["steps"] == tokens[i]["steps"], tokens[j]["color"] == tokens[i]["color"])
            << a << ": tokens " << j << " and " << i << ": " << tokens[j] << " " << tokens[i];
    }
  }
  // Fixed depth: every token took num_steps; the controls' values are in the request.
  const json& q0 = answers[0]["request"];
  EXPECT_EQ(q0["num_steps"], 6);
  EXPECT_EQ(q0["seed"], 7);
  EXPECT_EQ(q0["temperature"], 0);
  EXPECT_EQ(q0["max_tokens"], 12);
  EXPECT_FALSE(q0.contains("exit_criterion") || q0.contains("warm_start")) << q0;
  for (const json& t : answers[0]["dom"]["tokens"]) EXPECT_EQ(t["steps"], 6);
  EXPECT_NE(r["hover"].get<std::string>().find("token 3: 6 recurrences"), std::string::npos)
      << r["hover"];
  EXPECT_EQ(r["hot_bars"], json::array({2}));
  // KL exit, sampled: depths vary; a token that stopped early was below the threshold at its
  // last check, and one that was not below it ran all 16 steps.
  const json& q1 = answers[1]["request"];
  EXPECT_EQ(q1["exit_criterion"], "kl");
  EXPECT_EQ(q1["exit_threshold"], 0.01);
  EXPECT_EQ(q1["num_steps"], 16);
  EXPECT_EQ(q1["temperature"], 0.8);
  EXPECT_EQ(q1["messages"].size(), 3u) << "the conversation so far";
  std::set<int> depths;
  for (const json& t : answers[1]["dom"]["tokens"]) {
    const int steps = t["steps"].get<int>();
    depths.insert(steps);
    ASSERT_NE(t["exit"], "") << t;
    const double v = std::stod(t["exit"].get<std::string>());
    if (steps < 16) {
      EXPECT_LT(v, 0.01) << t;
    }
    if (v >= 0.01) {
      EXPECT_EQ(steps, 16) << t;
    }
  }
  EXPECT_GE(depths.size(), 2u) << answers[1]["dom"]["tokens"];
  // Cache slots, warm start and the default threshold reach the request.
  const json& q2 = answers[2]["request"];
  EXPECT_EQ(q2["cache_slots"], 4);
  EXPECT_EQ(q2["warm_start"], "auto");
  EXPECT_EQ(q2["num_steps"], 8);
  EXPECT_EQ(q2["exit_criterion"], "kl");
  EXPECT_FALSE(q2.contains("exit_threshold")) << q2;
  // A refused request is shown, and the next one goes on without the failed turn (nor the
  // message that a blank num_steps kept from being sent).
  EXPECT_NE(r["error_blank_steps"].get<std::string>().find("num_steps"), std::string::npos) << r;
  EXPECT_EQ(r["sent_with_blank_steps"], 0);
  EXPECT_NE(r["error_400"].get<std::string>().find("num_steps"), std::string::npos) << r["error_400"];
  EXPECT_EQ(r["after_400_done"], "error");
  EXPECT_EQ(answers[3]["request"]["messages"].size(), 7u) << answers[3]["request"];
  for (const json& t : answers[3]["dom"]["tokens"]) EXPECT_EQ(t["steps"], 4);

  EXPECT_EQ(r["page_errors"], json::array()) << r["page_errors"];
  EXPECT_EQ(r["failed_requests"], json::array()) << r["failed_requests"];
  for (const json& m : r["console"]) {
    const std::string phase = m["phase"], text = m["text"];
    const bool expected = (phase == "load-without-key" || phase == "expect-400") &&
                          text.find("Failed to load resource") != std::string::npos &&
                          text.find(phase == "expect-400" ? "400" : "401") != std::string::npos;
    EXPECT_TRUE(expected) << "console " << m["type"] << " in phase " << phase << ": " << text;
  }
  EXPECT_TRUE(s.alive());

  // An error event inside a stream (HTTP 200: --timeout passes while generating 60 tokens of
  // 256 recurrences, about 3 s unloaded, 0.3 s allowed) is shown too, and the page is ready again.
  ServerProcess slow(model_, "--parallel 1 --timeout 0.3");
  ASSERT_GT(slow.port(), 0) << slow.log();
  const json t = run_js("chat_page.mjs", slow.url() + " " + kKey + " " + chromium + " timeout");
  ASSERT_TRUE(t.is_object()) << slow.log();
  ASSERT_TRUE(t["stream_error"].is_string()) << t;
  std::fprintf(stderr, "chat page, stream error shown: %s\n", t["stream_error"].dump().c_str());
  EXPECT_NE(t["stream_error"].get<std::string>().find("timed out"), std::string::npos) << t;
  EXPECT_EQ(t["stream_error_done"], "error");
  EXPECT_EQ(t["send_enabled_after"], true);
  EXPECT_EQ(t["page_errors"], json::array()) << t;
  EXPECT_EQ(t["failed_requests"], json::array()) << t;
  for (const json& m : t["console"])
    EXPECT_EQ(m["phase"], "load-without-key") << m;  // only the 401 before the key
}

TEST_F(ServeTest, HostileCorpusGetsOpenAIErrorsAndServerStaysHealthy) {
  ServerProcess s(model_, "--parallel 2 --max-body-mib 1");
  ASSERT_GT(s.port(), 0) << s.log();
  const json corpus = json::parse(std::ifstream(HUGINN_SERVER_CORPUS));
  ASSERT_GE(corpus.size(), 30u);
  const json r = run_js("corpus.mjs", s.url() + " " + HUGINN_SERVER_CORPUS + " tiny " + kKey);
  ASSERT_EQ(r.size(), corpus.size());
  for (size_t i = 0; i < r.size(); ++i) {
    const std::string name = r[i]["name"];
    EXPECT_EQ(r[i]["status"], corpus[i]["expect"]) << name << ": " << r[i]["body"];
    const json body = json::parse(r[i]["body"].get<std::string>(), nullptr, false);
    ASSERT_FALSE(body.is_discarded()) << name << ": " << r[i]["body"];
    EXPECT_TRUE(body["error"]["message"].is_string()) << name;
    EXPECT_TRUE(body["error"]["type"].is_string()) << name;
    EXPECT_TRUE(body["error"].contains("param") && body["error"].contains("code")) << name;
  }
  EXPECT_TRUE(s.alive()) << s.log();
  // Still serving: health, a real completion, and metrics that counted the refusals.
  const json ok = run_js("e2e.mjs", js_args(s));
  EXPECT_TRUE(ok.is_object() && ok["completion"]["text"].is_string());
  std::string metrics;
  ASSERT_EQ(test::run_command("node -e \"fetch('" + s.url() +
                                  "/metrics').then(r=>r.text()).then(t=>console.log(t))\"",
                              &metrics),
            0);
  EXPECT_NE(metrics.find("huginn_requests_total{endpoint=\"/v1/completions\",code=\"400\"}"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("# TYPE huginn_request_duration_seconds histogram"), std::string::npos);
  EXPECT_NE(metrics.find("huginn_iterations_per_token_bucket{le=\"4\"}"), std::string::npos);
  EXPECT_NE(metrics.find("huginn_queue_depth 0"), std::string::npos);
}

// Small in CI (the 32 x 20 run is scripts/bench-server.sh): no errors, every response equal to
// a lone request's, memory back near its baseline.
TEST_F(ServeTest, BoundedLoadNoErrorsSameAnswersMemoryBack) {
  // 8 clients fit 2 slots + 8 queued (a finished slot may not have popped the next job yet).
  ServerProcess s(model_, "--parallel 2 --max-queue 8");
  ASSERT_GT(s.port(), 0) << s.log();
  const std::string args = s.url() + " tiny " + kKey;
  // Warm-up with the same load, three times: every HTTP thread's stack and buffers get touched
  // once (RSS then stays flat; with 16 threads: 50 -> 69 -> 69 -> 69 MB).
  for (int i = 0; i < 3; ++i) {
    const json warm = run_js("load.mjs", args + " 8 6 8 4");
    ASSERT_EQ(warm["errors"], 0) << warm;
  }
  const long base = s.rss_kb();
  json r;
  for (int i = 0; i < 2; ++i) {
    r = run_js("load.mjs", args + " 8 6 8 4");
    EXPECT_EQ(r["errors"], 0) << r;
    EXPECT_EQ(r["mismatches"], 0) << r;
    EXPECT_EQ(r["total"], 48);
  }
  const long after = s.rss_kb();
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // Under a sanitizer RSS measures its allocator, not ours (ASan keeps up to 256 MB of freed
  // memory in quarantine to catch use-after-free: 280 -> 361 MB here); leaks are LeakSanitizer's
  // to find, in the ASan build, when the server exits (every report fails make test-asan).
#else
  EXPECT_LE(after, base + 4 * 1024) << "RSS " << base << " -> " << after << " kB";
#endif
  std::fprintf(stderr, "load: %s; RSS %ld -> %ld kB\n", r.dump().c_str(), base, after);
  EXPECT_TRUE(s.alive());
}

TEST_F(ServeTest, FullQueueAnswers503WithRetryAfter) {
  ServerProcess s(model_, "--parallel 1 --max-queue 1");
  ASSERT_GT(s.port(), 0) << s.log();
  const std::string script =
      "const b=JSON.stringify({model:'tiny',prompt:'hello',max_tokens:64,num_steps:32,"
      "temperature:0});const h={'content-type':'application/json',authorization:'Bearer " +
      std::string(kKey) + "'};Promise.all(Array.from({length:8},()=>fetch('" + s.url() +
      "/v1/completions',{method:'POST',headers:h,body:b}).then(async r=>[r.status,"
      "r.headers.get('retry-after'),await r.json()]))).then(x=>console.log(JSON.stringify(x)))";
  std::string out;
  ASSERT_EQ(test::run_command("node -e \"" + script + "\"", &out), 0) << out;
  const json r = json::parse(out);
  int ok = 0, busy = 0;
  for (const json& x : r) {
    if (x[0] == 200) ++ok;
    if (x[0] == 503) {
      ++busy;
      EXPECT_EQ(x[1], "1");
      EXPECT_EQ(x[2]["error"]["code"], "queue_full");
    }
  }
  EXPECT_GE(ok, 1);
  EXPECT_GE(busy, 1);
  EXPECT_EQ(ok + busy, 8);
}


// In node: a streamed request (the fields `streamed`) to `s`, read to its first chunk and
// aborted; /metrics polled until the cancellation is counted and no slot is busy; then a request
// (`timed`) to `st`. Returns {first, cancelled, idle, cancel_ms, status, body, timeout_ms}.
json cancel_then_time_out(const ServerProcess& s, const ServerProcess& st, const std::string& streamed,
                          const std::string& timed) {
  const std::string h = "{'content-type':'application/json',authorization:'Bearer " +
                        std::string(kKey) + "'}";
  const std::string script =
      "const u='" + s.url() + "';const ut='" + st.url() + "';const h=" + h +
      ";(async()=>{const c=new AbortController();const r=await fetch(u+'/v1/completions',"
      "{method:'POST',headers:h,signal:c.signal,body:JSON.stringify({" + streamed +
      ",stream:true})});const rd=r.body.getReader();const first=new TextDecoder().decode((await rd.read()).value);"
      "c.abort();let m='';const t0=Date.now();while(Date.now()-t0<5000){m=await(await fetch(u+'/metrics'))"
      ".text();if(/huginn_requests_cancelled_total 1/.test(m)&&/huginn_active_slots 0/.test(m))break;"
      "await new Promise(x=>setTimeout(x,50));}const cancelled=/huginn_requests_cancelled_total 1/"
      ".test(m);const idle=/huginn_active_slots 0/.test(m);const t1=Date.now();"
      "const q=await fetch(ut+'/v1/completions',{method:'POST',headers:h,body:JSON.stringify({" + timed +
      "})});console.log(JSON.stringify({first,cancelled,idle,cancel_ms:t1-t0,status:q.status,"
      "body:await q.json(),timeout_ms:Date.now()-t1}))})()";
  std::string out;
  EXPECT_EQ(test::run_command("node -e \"" + script + "\"", &out), 0) << out;
  return json::parse(out, nullptr, false);
}

void expect_cancelled_then_504(const json& r) {
  ASSERT_TRUE(r.is_object()) << r;
  EXPECT_NE(r["first"].get<std::string>().find("data: "), std::string::npos) << r;
  EXPECT_TRUE(r["cancelled"].get<bool>()) << r;
  EXPECT_TRUE(r["idle"].get<bool>()) << r;
  EXPECT_EQ(r["status"], 504) << r;
  EXPECT_EQ(r["body"]["error"]["type"], "timeout_error") << r;
  EXPECT_LT(r["timeout_ms"].get<double>(), 10000) << r;
}

// A streaming client that goes away cancels its generation; a request past --timeout gets 504.
TEST_F(ServeTest, DisconnectCancelsAndTimeoutAnswers504) {
  // Two servers: the disconnect on one whose --timeout cannot fire first (on a slow machine, or
  // under a sanitizer, the first chunk may come close to a 2 s limit, and a request that times out
  // is not counted as cancelled), the timeout on one with --timeout 2.
  ServerProcess s(model_, "--parallel 1 --timeout 600");
  ServerProcess st(model_, "--parallel 1 --timeout 2");
  ASSERT_GT(s.port(), 0) << s.log();
  ASSERT_GT(st.port(), 0) << st.log();
  const std::string long_gen =
      "model:'tiny',prompt:'hello',max_tokens:4000,num_steps:32,ignore_eos:true,temperature:0";
  expect_cancelled_then_504(cancel_then_time_out(s, st, long_gen, long_gen));
  EXPECT_TRUE(s.alive());
  EXPECT_TRUE(st.alive());
}

// The samplers stream and stop like sequential decoding: a streamed speculative request whose
// client goes away after the first token is cancelled at once (its 4000 tokens not run; before,
// the first event came only when the sampler finished), and a diffusion run that would go on for
// 2^20 steps (latent-diff never freezes with exit_t 0) gets 504 at --timeout 2.
TEST_F(ServeTest, SamplersStreamAndStopAtCancelAndTimeout) {
  ServerProcess s(model_, "--parallel 1 --timeout 600");
  ServerProcess st(model_, "--parallel 1 --timeout 2");
  ASSERT_GT(s.port(), 0) << s.log();
  ASSERT_GT(st.port(), 0) << st.log();
  const std::string spec = "model:'tiny',prompt:'hello',max_tokens:4000,num_steps:32,ignore_eos:true,"
                           "temperature:0,decode:'speculative'";
  const std::string diff = "model:'tiny',prompt:'hello',max_tokens:64,num_steps:8,ignore_eos:true,"
                           "temperature:0,decode:'diffusion',diffusion:{exit_t:0,max_diffusion_steps:1048576}";
  expect_cancelled_then_504(cancel_then_time_out(s, st, spec, diff));
  EXPECT_TRUE(s.alive());
  EXPECT_TRUE(st.alive());
}

// Decode steps of concurrent requests batched (--max-batch 8; the automatic default leaves a
// model this small unbatched) or not
// (--max-batch 1): the same answers and per-token iterations, request by request, with mixed
// depths, exit rules, warm starts and samplers in flight together; the batched server did batch.
// The batched path also runs on the strict backend (memory host code cannot touch): the same
// answers again.
TEST_F(ServeTest, BatchedDecodeAnswersEqualUnbatched) {
  const char* modes[] = {"--parallel 8 --max-batch 1", "--parallel 8 --max-batch 8",
                         "--parallel 8 --max-batch 8 --backend strict"};
  json got[3];
  for (int m = 0; m < 3; ++m) {
    ServerProcess s(model_, modes[m]);
    ASSERT_GT(s.port(), 0) << s.log();
    got[m] = run_js("batch.mjs", s.url() + " " + kKey);
    ASSERT_TRUE(got[m].is_object()) << s.log();
    for (const json& a : got[m]["answers"]) ASSERT_EQ(a["status"], 200) << a;
    EXPECT_TRUE(s.alive());
  }
  const json& off = got[0];
  std::set<int> depths;
  for (size_t i = 0; i < off["answers"].size(); ++i)
    for (const json& it : off["answers"][i]["iterations"]) depths.insert(it.get<int>());
  EXPECT_GE(depths.size(), 5u) << "mixed depths in flight";
  EXPECT_EQ(off["batches"], 0);
  for (int m = 1; m < 3; ++m) {
    const json& on = got[m];
    ASSERT_EQ(on["answers"].size(), off["answers"].size()) << modes[m];
    for (size_t i = 0; i < on["answers"].size(); ++i)
      EXPECT_EQ(on["answers"][i], off["answers"][i]) << modes[m] << ": request " << i;
    std::fprintf(stderr, "%s: %d passes, %d request-tokens\n", modes[m], on["batches"].get<int>(),
                 on["rows"].get<int>());
    EXPECT_GT(on["batches"].get<int>(), 0) << modes[m];
    EXPECT_GT(on["rows"].get<int>(), on["batches"].get<int>())
        << modes[m] << ": some passes decoded several requests";
  }
}

// A non-streamed request whose client closes the connection is cancelled: counted, its slot
// freed within moments (not after its 4000 tokens), and the server answers the next request.
TEST_F(ServeTest, NonStreamedDisconnectCancels) {
  ServerProcess s(model_, "--parallel 1");
  ASSERT_GT(s.port(), 0) << s.log();
  const json r = run_js("disconnect.mjs", s.url() + " " + kKey);
  ASSERT_TRUE(r.is_object()) << s.log();
  std::fprintf(stderr, "disconnect: %s\n", r.dump().c_str());
  EXPECT_TRUE(r["started"].get<bool>()) << r;
  EXPECT_EQ(r["client"], "AbortError") << r;
  EXPECT_EQ(r["cancelled"], 1) << r;
  EXPECT_EQ(r["active"], 0) << r;
  EXPECT_LT(r["freed_ms"].get<double>(), 3000) << r;
  EXPECT_LT(r["tokens"].get<int>(), 4000) << r;
  EXPECT_EQ(r["after"], 200) << r;
  EXPECT_TRUE(s.alive());
}

// --- The server under abuse, over raw sockets ------------------------------------------------

using test::http::Clock;
using test::http::Reply;
using test::http::connect_to;
using test::http::exchange;
using test::http::read_reply;
using test::http::send_all;
using test::http::since;

std::string post(const std::string& path, const std::string& body, bool auth = true) {
  return "POST " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" +
         (auth ? std::string("Authorization: Bearer ") + kKey + "\r\n" : "") +
         "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n\r\n" + body;
}
const std::string kHealth = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
const std::string kSmallCompletion =
    R"({"model":"tiny","prompt":"hello","max_tokens":2,"temperature":0})";

class ServeAbuseTest : public ::testing::Test {
 protected:
  void SetUp() override { model_ = make_model_dir(); }
  void TearDown() override { fs::remove_all(fs::path(model_).parent_path()); }
  std::string model_;
};

// Slow headers, slow bodies and idle sockets cost the server no thread: /health and a normal
// completion answer while 100 + 100 of them trickle a byte at a time and 300 sit idle.
TEST_F(ServeAbuseTest, SlowlorisSlowBodiesAndIdleSocketsDoNotStarveHealth) {
  ServerProcess s(model_, "--parallel 1");
  ASSERT_GT(s.port(), 0) << s.log();
  std::vector<int> slow, idle;
  for (int i = 0; i < 100; ++i) {
    const int h = connect_to(s.port()), b = connect_to(s.port());
    ASSERT_GE(h, 0);
    ASSERT_GE(b, 0);
    send_all(h, "GET /health HTTP/1.1\r\nHost: x\r\n");
    send_all(b, std::string("POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ") +
                    kKey + "\r\nContent-Length: 100000\r\n\r\n{");
    slow.push_back(h);
    slow.push_back(b);
  }
  for (int i = 0; i < 300; ++i) {
    idle.push_back(connect_to(s.port()));
    ASSERT_GE(idle.back(), 0);
  }
  std::atomic<bool> stop{false};
  std::thread trickle([&] {
    while (!stop) {
      for (int fd : slow) send(fd, "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  double worst_health = 0, worst_completion = 0;
  for (int i = 0; i < 5; ++i) {
    auto t0 = Clock::now();
    const Reply h = exchange(s.port(), kHealth, 10);
    worst_health = std::max(worst_health, since(t0));
    EXPECT_EQ(h.status, 200) << h.head;
    t0 = Clock::now();
    const Reply c = exchange(s.port(), post("/v1/completions", kSmallCompletion), 10);
    worst_completion = std::max(worst_completion, since(t0));
    EXPECT_EQ(c.status, 200) << c.head << c.body;
  }
  stop = true;
  trickle.join();
  std::fprintf(stderr, "under 100 slow-header + 100 slow-body + 300 idle: /health %.3f s, "
               "completion %.3f s (worst of 5)\n", worst_health, worst_completion);
  // Generous bounds (normally milliseconds): this asserts "not starved", not a speed.
  EXPECT_LT(worst_health, 2.0);
  EXPECT_LT(worst_completion, 5.0);
  for (int fd : slow) close(fd);
  for (int fd : idle) close(fd);
  EXPECT_TRUE(s.alive());
}

// The deadlines are totals: a client sending a byte every 100 ms is still cut off (408) once
// --header-timeout / --body-timeout have passed.
TEST_F(ServeAbuseTest, HeaderAndBodyDeadlinesAreTotalsNotPerByte) {
  ServerProcess s(model_, "--header-timeout 1 --body-timeout 1");
  ASSERT_GT(s.port(), 0) << s.log();
  const std::pair<std::string, std::string> cases[] = {
      {"GET /health HTTP/1.1\r\n", "headers"},
      {"POST /v1/completions HTTP/1.1\r\nContent-Length: 1000\r\n\r\n", "body"}};
  for (const auto& [start, what] : cases) {
    const int fd = connect_to(s.port());
    ASSERT_GE(fd, 0);
    const auto t0 = Clock::now();
    send_all(fd, start);
    Reply r;
    while (since(t0) < 10) {
      send(fd, "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      r = read_reply(fd, 0.1);
      if (r.status != -2) break;
    }
    const double took = since(t0);
    EXPECT_EQ(r.status, 408) << what << ": " << r.head;
    EXPECT_NE(r.body.find("request " + what + " did not arrive within 1 s"), std::string::npos)
        << r.body;
    EXPECT_NE(r.body.find("timeout_error"), std::string::npos) << r.body;
    EXPECT_GE(took, 0.9) << what;
    EXPECT_LT(took, 5.0) << what;
    close(fd);
  }
  const Reply m = exchange(s.port(), "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n", 10);
  EXPECT_NE(m.body.find("huginn_connections_refused_total{reason=\"header_timeout\"} 1\n"),
            std::string::npos) << m.body;
  EXPECT_NE(m.body.find("huginn_connections_refused_total{reason=\"body_timeout\"} 1\n"),
            std::string::npos) << m.body;
  EXPECT_NE(m.body.find("huginn_connections_open "), std::string::npos) << m.body;
  EXPECT_TRUE(s.alive());
}

// 200 connections at once, each with a completion: every one is answered (200, or 503 when
// the slots, queue and workers are full) and /health answers during the flood. Past
// --max-connections, connections are refused at once with 503 and closed.
TEST_F(ServeAbuseTest, ConnectionFloodAllAnsweredOrFastRejected) {
  ServerProcess s(model_, "--parallel 2 --max-queue 8 --max-connections 300");
  ASSERT_GT(s.port(), 0) << s.log();
  const std::string req = post("/v1/completions", kSmallCompletion);
  std::vector<int> fds;
  for (int i = 0; i < 200; ++i) {
    fds.push_back(connect_to(s.port()));
    ASSERT_GE(fds.back(), 0) << i;
  }
  const auto t0 = Clock::now();
  for (int fd : fds) send_all(fd, req);
  const auto th = Clock::now();
  const Reply h = exchange(s.port(), kHealth, 10);
  const double health_s = since(th);
  int ok = 0, busy = 0, other = 0;
  for (int fd : fds) {
    const Reply r = read_reply(fd, std::max(1.0, 60.0 - since(t0)));
    if (r.status == 200) ++ok;
    else if (r.status == 503) ++busy;
    else ++other;
    close(fd);
  }
  std::fprintf(stderr, "200-connection flood: %d answered 200, %d 503, %d other in %.2f s; "
               "/health %.3f s\n", ok, busy, other, since(t0), health_s);
  EXPECT_EQ(h.status, 200);
  EXPECT_LT(health_s, 2.0);
  EXPECT_EQ(other, 0);
  EXPECT_GE(ok, 10);  // at least the 2 slots + 8 queue places of the first wave
  EXPECT_EQ(ok + busy, 200);

  // The cap: hold 300 connections, then each further one is answered 503 and closed.
  std::vector<int> held;
  for (int i = 0; i < 300; ++i) held.push_back(connect_to(s.port()));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto tc = Clock::now();
  const Reply capped = exchange(s.port(), kHealth, 10);
  EXPECT_LT(since(tc), 2.0);
  EXPECT_TRUE(capped.status == 503 || capped.status == -1) << capped.head;
  if (capped.status == 503) {
    EXPECT_NE(capped.body.find("connection limit (300)"), std::string::npos) << capped.body;
  }
  for (int fd : held) close(fd);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(exchange(s.port(), kHealth, 10).status, 200);
  EXPECT_TRUE(s.alive());
}

// The body limit holds for chunked bodies (a 200 MiB one used to be accepted whole), for
// Content-Length bodies before any byte of them is read, and compressed bodies are refused
// (httplib would inflate them past the limit); a chunked body within the limit still works.
TEST_F(ServeAbuseTest, BodyLimitHoldsForChunkedAndCompressedBodies) {
  ServerProcess s(model_, "--max-body-mib 1");
  ASSERT_GT(s.port(), 0) << s.log();
  const int fd = connect_to(s.port());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(send_all(fd, std::string("POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: "
                                       "Bearer ") + kKey + "\r\nTransfer-Encoding: chunked\r\n\r\n"));
  const std::string chunk = "10000\r\n" + std::string(65536, ' ') + "\r\n";  // 64 KiB each
  size_t sent = 0;
  Reply r;
  const auto t0 = Clock::now();
  while (sent < (200u << 20) && since(t0) < 30) {  // up to 200 MiB, until the server answers
    if (send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL) <= 0) break;
    sent += 65536;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 0) > 0) break;
  }
  r = read_reply(fd, 10);
  close(fd);
  EXPECT_EQ(r.status, 413) << r.head;
  EXPECT_NE(r.body.find("1048576 bytes"), std::string::npos) << r.body;
  EXPECT_LE(sent, 16u << 20) << "refused early, not after the whole body";

  const Reply big = exchange(s.port(), "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                                       "Content-Length: 209715200\r\n\r\n", 10);
  EXPECT_EQ(big.status, 413) << big.head;
  const Reply gz = exchange(s.port(), "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                                      "Content-Encoding: gzip\r\nContent-Length: 2\r\n\r\nxx", 10);
  EXPECT_EQ(gz.status, 415) << gz.head;

  std::string chunked = std::string("POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: "
                                    "close\r\nAuthorization: Bearer ") + kKey +
                        "\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (size_t at = 0; at < kSmallCompletion.size(); at += 7) {
    const std::string part = kSmallCompletion.substr(at, 7);
    char size[16];
    std::snprintf(size, sizeof size, "%zx\r\n", part.size());
    chunked += size + part + "\r\n";
  }
  chunked += "0\r\n\r\n";
  const Reply ok = exchange(s.port(), chunked);
  EXPECT_EQ(ok.status, 200) << ok.head << ok.body;
  EXPECT_NE(ok.body.find("text_completion"), std::string::npos) << ok.body;

  // Expect: 100-continue: the front answers "100 Continue" before the body is sent.
  const int ec = connect_to(s.port());
  ASSERT_GE(ec, 0);
  const std::string full = post("/v1/completions", kSmallCompletion);
  const size_t split = full.find("\r\n\r\n") + 2;
  ASSERT_TRUE(send_all(ec, full.substr(0, split) + "Expect: 100-continue\r\n\r\n"));
  const Reply cont = read_reply(ec, 10);
  EXPECT_EQ(cont.status, 100) << cont.head;
  ASSERT_TRUE(send_all(ec, full.substr(split + 2)));
  const Reply after = read_reply(ec, 30);
  EXPECT_EQ(after.status, 200) << after.head << after.body;
  close(ec);
  EXPECT_TRUE(s.alive());
}

// Flags out of range are refused at start with their bounds; --max-queue 0 means "no waiting"
// (it answered every request 503).
// The prefix cache: a second prompt sharing a long system prompt with the first reports cached
// prompt tokens (a multiple of the CPU attention's split, at least one block left to run) and
// gets the answer a server without the cache gives; an adaptive-exit request and one with shared
// cache slots reuse nothing (README: their prefix entries depend on what follows the prefix).
TEST_F(ServeAbuseTest, PrefixCacheReusesASharedSystemPromptWithTheSameAnswers) {
  json c = json::parse(std::ifstream(model_ + "/config.json"));
  c["block_size"] = 1024;  // room for a long prompt (the RoPE table's length only)
  std::ofstream(model_ + "/config.json") << c.dump();
  std::string system;
  for (int i = 0; i < 40; ++i) system += "hello world, hello there. the world says ";
  auto ask = [&](const ServerProcess& s, const std::string& tail, const std::string& depth) {
    json body = json::parse(R"({"model":"tiny","max_tokens":6,"temperature":0,"logprobs":2})");
    body.update(json::parse(depth));
    body["prompt"] = system + tail;
    const Reply r = exchange(s.port(), post("/v1/completions", body.dump()), 60);
    EXPECT_EQ(r.status, 200) << r.body;
    return json::parse(r.body, nullptr, false);
  };
  const std::string fixed = R"({"num_steps":4})", kl = R"({"exit_criterion":"kl","max_steps":8})",
                    slots = R"({"num_steps":4,"cache_slots":2})";
  json want[4];
  {
    ServerProcess off(model_, "--prefix-cache-mb 0");
    ASSERT_GT(off.port(), 0) << off.log();
    want[0] = ask(off, "hello back", fixed);
    want[1] = ask(off, "hello hello world", fixed);
    want[2] = ask(off, "hello hello world", kl);
    want[3] = ask(off, "hello hello world", slots);
    for (const json& w : want) EXPECT_EQ(w["usage"]["prompt_tokens_details"]["cached_tokens"], 0) << w;
  }
  ServerProcess on(model_, "");
  ASSERT_GT(on.port(), 0) << on.log();
  const json a = ask(on, "hello back", fixed), b = ask(on, "hello hello world", fixed),
             again = ask(on, "hello hello world", fixed), k = ask(on, "hello hello world", kl),
             sl = ask(on, "hello hello world", slots);
  const int prompt = b["usage"]["prompt_tokens"].get<int>();
  ASSERT_GT(prompt, 200);
  EXPECT_EQ(a["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  const int cached = b["usage"]["prompt_tokens_details"]["cached_tokens"].get<int>();
  EXPECT_GE(cached, 128);
  EXPECT_EQ(cached % 64, 0);
  EXPECT_LE(cached, prompt - 64);
  EXPECT_GE(again["usage"]["prompt_tokens_details"]["cached_tokens"].get<int>(), cached);
  EXPECT_EQ(k["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  EXPECT_EQ(sl["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  // Text and every logprob (JSON doubles round-trip exactly).
  EXPECT_EQ(a["choices"][0], want[0]["choices"][0]);
  EXPECT_EQ(b["choices"][0], want[1]["choices"][0]);
  EXPECT_EQ(again["choices"][0], want[1]["choices"][0]);
  EXPECT_EQ(k["choices"][0], want[2]["choices"][0]);
  EXPECT_EQ(sl["choices"][0], want[3]["choices"][0]);
  EXPECT_TRUE(on.alive());
}

// Chunked prefill (--prefill-chunk): long prompts in the decode batch run as 64-token chunks
// and every answer (text and logprobs) equals an unchunked server's: a seeded random s_0 (the
// API's default init_scale 1), zeros with warm start, a request with shared cache slots and one
// with a KL exit (both run whole), a short and a long request at once, and with the prefix
// cache on, a prompt that reuses a prefix and chunks the rest. The strict backend (prompts
// prefill alone there) answers as before with the flag. /metrics counts the chunks.
TEST_F(ServeAbuseTest, ChunkedPrefillAnswersEqualAnUnchunkedServer) {
  json c = json::parse(std::ifstream(model_ + "/config.json"));
  c["block_size"] = 1024;
  std::ofstream(model_ + "/config.json") << c.dump();
  std::string doc;
  for (int i = 0; i < 25; ++i) doc += "the world says hello back, hello there. ";
  const std::vector<std::pair<std::string, std::string>> asks = {
      {doc + "hello", R"({"num_steps":4})"},
      {doc + "world", R"({"num_steps":3,"init_scale":0,"warm_start":"latent"})"},
      {doc + "there", R"({"num_steps":4,"cache_slots":2})"},
      {doc + "back", R"({"exit_criterion":"kl","max_steps":8})"},
      {"hello world", R"({"num_steps":4})"},
      {doc + "hello hello world, the world says hello", R"({"num_steps":4})"}};
  auto ask = [&](const ServerProcess& s, size_t i) {
    json body = json::parse(R"({"model":"tiny","max_tokens":5,"temperature":0,"logprobs":2})");
    body.update(json::parse(asks[i].second));
    body["prompt"] = asks[i].first;
    const Reply r = exchange(s.port(), post("/v1/completions", body.dump()), 120);
    EXPECT_EQ(r.status, 200) << r.body;
    return json::parse(r.body, nullptr, false);
  };
  auto chunks = [](const ServerProcess& s) {
    const Reply m = exchange(s.port(), "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n", 10);
    const size_t at = m.body.find("\nhuginn_prefill_chunks_total ");
    return at == std::string::npos ? -1L : std::atol(m.body.c_str() + at + 29);
  };
  const std::string batch = "--parallel 2 --max-batch 2 ";
  std::vector<json> want;
  {
    ServerProcess off(model_, batch + "--prefill-chunk 0 --prefix-cache-mb 0");
    ASSERT_GT(off.port(), 0) << off.log();
    for (size_t i = 0; i < asks.size(); ++i) want.push_back(ask(off, i));
    EXPECT_EQ(chunks(off), 0);
  }
  ASSERT_GT(want[0]["usage"]["prompt_tokens"].get<int>(), 300);
  {
    ServerProcess on(model_, batch + "--prefill-chunk 64 --prefix-cache-mb 0");
    ASSERT_GT(on.port(), 0) << on.log();
    for (size_t i = 0; i < 4; ++i) EXPECT_EQ(ask(on, i)["choices"][0], want[i]["choices"][0]) << i;
    const long two = chunks(on);
    EXPECT_GE(two, 8) << "the two fixed-depth full-cache prompts ran in chunks";
    json got[2];  // the short request and a long one in the batch together
    std::thread t([&] { got[0] = ask(on, 4); });
    got[1] = ask(on, 0);
    t.join();
    EXPECT_EQ(got[0]["choices"][0], want[4]["choices"][0]);
    EXPECT_EQ(got[1]["choices"][0], want[0]["choices"][0]);
    EXPECT_GT(chunks(on), two);
  }
  {
    ServerProcess on(model_, batch + "--prefill-chunk 64");  // with the prefix cache
    ASSERT_GT(on.port(), 0) << on.log();
    EXPECT_EQ(ask(on, 0)["choices"][0], want[0]["choices"][0]);
    const json r = ask(on, 5);
    EXPECT_GE(r["usage"]["prompt_tokens_details"]["cached_tokens"].get<int>(), 256);
    EXPECT_EQ(r["choices"][0], want[5]["choices"][0]);
  }
  json strict_want;
  {
    ServerProcess off(model_, batch + "--backend strict --prefill-chunk 0");
    ASSERT_GT(off.port(), 0) << off.log();
    strict_want = ask(off, 0);
  }
  ServerProcess strict(model_, batch + "--backend strict --prefill-chunk 64");
  ASSERT_GT(strict.port(), 0) << strict.log();
  EXPECT_EQ(ask(strict, 0)["choices"][0], strict_want["choices"][0]);
  EXPECT_EQ(chunks(strict), 0) << "the strict backend's prompts prefill whole, alone";
}

TEST_F(ServeAbuseTest, FlagsAreBoundedAndMaxQueueZeroServes) {
  const std::pair<std::string, std::string> bad[] = {
      {"--timeout 1e10", "--timeout must be a number of seconds in [0, 86400]"},
      {"--timeout inf", "--timeout"},
      {"--timeout -1", "--timeout must be a number of seconds in [0, 86400]"},
      {"--max-queue -1", "--max-queue must be in [0, 100000]"},
      {"--max-body-mib 4096", "--max-body-mib must be in (0, 1024]"},
      {"--max-connections 0", "--max-connections must be in [1, 65536]"},
      {"--max-connections-per-address -1", "--max-connections-per-address must be in [0, 65536]"},
      {"--header-timeout 0", "--header-timeout must be a number of seconds in [0.05, 3600]"},
      {"--body-timeout 1e9", "--body-timeout must be a number of seconds in [0.05, 3600]"},
  };
  for (const auto& [flags, want] : bad) {
    std::string out;
    // Bounded: a flag that is wrongly accepted starts a server, which `timeout` ends.
    const int rc = test::run_command(std::string("timeout 30 ") + HUGINN_CLI + " serve --model " +
                                         model_ + " --port 0 " + flags + " 2>&1",
                                     &out);
    EXPECT_NE(rc, 0) << flags;
    EXPECT_NE(out.find(want), std::string::npos) << flags << ": " << out;
  }
  ServerProcess s(model_, "--parallel 1 --max-queue 0");
  ASSERT_GT(s.port(), 0) << s.log();
  // One request at a time, each served (a retry covers the moment between a slot finishing
  // its job and waiting for the next one, when "no waiting" rightly says 503).
  for (int i = 0; i < 3; ++i) {
    Reply r;
    for (int attempt = 0; attempt < 3; ++attempt) {
      r = exchange(s.port(), post("/v1/completions", kSmallCompletion));
      if (r.status != 503) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_EQ(r.status, 200) << r.head << r.body;
  }
}

// seed: an exact int64 (OpenAI's range); 2^63 as a double or an integer is out of range, not
// converted. temperature below 1e-5 is greedy (logits / 1e-40 overflowed to NaN sampling).
TEST_F(ServeAbuseTest, SeedAndTemperatureAreCheckedExactly) {
  ServerProcess s(model_, "--parallel 1");
  ASSERT_GT(s.port(), 0) << s.log();
  auto with = [](const std::string& extra) {
    return post("/v1/completions", R"({"model":"tiny","prompt":"hello","max_tokens":6,)" + extra + "}");
  };
  for (const char* seed : {"9223372036854775808.0", "9223372036854775808", "1e19", "-1e19",
                           "1.5", "\"7\""}) {
    const Reply r = exchange(s.port(), with(std::string(R"("seed":)") + seed));
    EXPECT_EQ(r.status, 400) << seed << ": " << r.body;
    EXPECT_NE(r.body.find("'seed' must be an integer"), std::string::npos) << seed << ": " << r.body;
  }
  for (const char* seed : {"9223372036854775807", "-9223372036854775808", "4611686018427387904.0", "0"}) {
    const Reply r = exchange(s.port(), with(std::string(R"("seed":)") + seed));
    EXPECT_EQ(r.status, 200) << seed << ": " << r.body;
  }
  const Reply greedy = exchange(s.port(), with(R"("temperature":0)"));
  ASSERT_EQ(greedy.status, 200) << greedy.body;
  const std::string want = json::parse(greedy.body)["choices"][0]["text"];
  for (const char* t : {"1e-40", "1e-6", "5e-324"}) {
    for (int seed : {1, 2, 3}) {
      const Reply r = exchange(s.port(), with(std::string(R"("temperature":)") + t +
                                              R"(,"seed":)" + std::to_string(seed)));
      ASSERT_EQ(r.status, 200) << t << ": " << r.body;
      EXPECT_EQ(json::parse(r.body)["choices"][0]["text"], want) << "temperature " << t;
    }
  }
  const Reply hot = exchange(s.port(), with(R"("temperature":2.0000001)"));
  EXPECT_EQ(hot.status, 400) << hot.body;
  // Deep nesting is refused before parsing, on every JSON route.
  std::string deep;
  for (int i = 0; i < 100000; ++i) deep += R"({"a":)";
  for (const char* path : {"/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"}) {
    const Reply r = exchange(s.port(), post(path, deep));
    EXPECT_EQ(r.status, 400) << path;
    EXPECT_NE(r.body.find("nests deeper than 64"), std::string::npos) << path << ": " << r.body;
  }
  EXPECT_TRUE(s.alive());
}

// The per-request "decode" field: the reference's speculative sampler at threshold 1 answers
// exactly as sequential decoding (random initial states per call included), diffusion answers,
// wavefront answers the same as sequential, both with sequential's logprobs (the verified row's,
// the final decode's); bad settings are 400s naming the field, logprobs with diffusion too.
TEST_F(ServeAbuseTest, DecodeFieldRunsTheReferenceSamplers) {
  ServerProcess s(model_, "--parallel 2");
  ASSERT_GT(s.port(), 0) << s.log();
  auto with = [](const std::string& extra) {
    return post("/v1/completions", R"({"model":"tiny","prompt":"hello","max_tokens":8,"temperature":0,"num_steps":4,"ignore_eos":true,"return_iterations":true)" + extra + "}");
  };
  const Reply seq = exchange(s.port(), with(""));
  ASSERT_EQ(seq.status, 200) << seq.body;
  const json want = json::parse(seq.body);
  const Reply seq_lp = exchange(s.port(), with(R"(,"logprobs":2)"));
  ASSERT_EQ(seq_lp.status, 200) << seq_lp.body;
  const json want_lp = json::parse(seq_lp.body)["choices"][0]["logprobs"];
  ASSERT_EQ(want_lp["token_logprobs"].size(), 8u) << seq_lp.body;
  for (const char* extra : {R"(,"decode":"speculative","speculative":{"draft_steps":1,"lookahead_for_draft":3})",
                            R"(,"decode":"wavefront")"}) {
    const Reply r = exchange(s.port(), with(extra));
    ASSERT_EQ(r.status, 200) << extra << ": " << r.body;
    const json got = json::parse(r.body);
    EXPECT_EQ(got["choices"][0]["text"], want["choices"][0]["text"]) << extra;
    EXPECT_EQ(got["usage"]["completion_tokens"], want["usage"]["completion_tokens"]) << extra;
    const Reply lp = exchange(s.port(), with(std::string(extra) + R"(,"logprobs":2)"));
    ASSERT_EQ(lp.status, 200) << extra << ": " << lp.body;
    EXPECT_EQ(json::parse(lp.body)["choices"][0]["logprobs"], want_lp) << extra;
  }
  const Reply diff = exchange(s.port(), with(R"(,"decode":"diffusion","diffusion":{"inner_recurrence":2,"freeze_strategy":"fixed","max_wavefront":0})"));
  ASSERT_EQ(diff.status, 200) << diff.body;
  EXPECT_EQ(json::parse(diff.body)["usage"]["completion_tokens"], 8) << diff.body;
  // fixed freeze, steps 4, inner 2: every token after the first came from a state of
  // 2·(4/2 + 2) = 8 recurrences (the first: the prompt's 4).
  const json its = json::parse(diff.body)["usage"]["iterations_per_token"];
  ASSERT_EQ(its.size(), 8u) << diff.body;
  EXPECT_EQ(its[0], 4);
  EXPECT_EQ(its[7], 8) << diff.body;
  const std::pair<const char*, const char*> bad[] = {
      {R"(,"decode":"sideways")", "decode"},
      {R"(,"speculative":{"draft_steps":1})", "speculative"},
      {R"(,"decode":"speculative","speculative":{"lookahead":3})", "speculative"},
      {R"(,"decode":"speculative","speculative":{"verification_threshold":1.5})", "verification_threshold"},
      {R"(,"decode":"diffusion","diffusion":{"headway":0})", "headway"},
      {R"(,"decode":"diffusion","diffusion":{"freeze_strategy":"often"})", "freeze-strategy"},
      {R"(,"decode":"speculative","exit_criterion":"kl")", "--exit"},
      {R"(,"decode":"diffusion","logprobs":2)", "logprobs"}};
  for (const auto& [extra, field] : bad) {
    const Reply r = exchange(s.port(), with(extra));
    EXPECT_EQ(r.status, 400) << extra << ": " << r.body;
    EXPECT_NE(r.body.find(field), std::string::npos) << extra << ": " << r.body;
  }
  EXPECT_TRUE(s.alive());
}

// Sequential, wavefront, speculative and diffusion requests at once through the batched engine
// (--max-batch 4, cpu and strict backends): every answer (text, per-token iterations, logprobs)
// equals the same request sent alone with "decode": "sequential" (wavefront, and speculative at
// threshold 1, are lossless), diffusion's the same diffusion request alone; and the other
// decoders' rows did share the depth batch's core passes with the sequential calls, and no pass
// carried more than --max-batch slots (/metrics).
TEST_F(ServeAbuseTest, OtherDecodersRideTheDepthBatchBesideSequentialRequests) {
  const char* prompts[] = {"hello", "the world says", "hello there", "world", "hello hello world", "there"};
  const char* depth[] = {R"("num_steps":8)", R"("num_steps":6)",
                         R"("num_steps":12,"exit_criterion":"kl","exit_threshold":0.005)"};
  const std::string decode[] = {"sequential", "wavefront", "sequential", "speculative", "diffusion", "wavefront"};
  auto body = [&](int i, const std::string& how) {
    const std::string extra = how == "diffusion"
        ? R"("diffusion":{"inner_recurrence":2,"freeze_strategy":"fixed","max_wavefront":0})"
        : R"("logprobs":2)";
    return post("/v1/completions", std::string(R"({"model":"tiny","prompt":")") + prompts[i] +
                                       R"(","max_tokens":16,"temperature":0,"ignore_eos":true,)"
                                       R"("return_iterations":true,)" + extra + "," + depth[i % 3] +
                                       R"(,"decode":")" + how + "\"}");
  };
  auto metric = [](const ServerProcess& s, const std::string& name) {
    const Reply m = exchange(s.port(), "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n", 10);
    const size_t at = m.body.find("\n" + name + " ");
    return at == std::string::npos ? -1L : std::atol(m.body.c_str() + at + name.size() + 2);
  };
  for (const char* backend : {"cpu", "strict"}) {
    ServerProcess s(model_, std::string("--parallel 6 --max-batch 4 --backend ") + backend);
    ASSERT_GT(s.port(), 0) << s.log();
    Reply got[6];
    std::vector<std::thread> threads;
    for (int i = 0; i < 6; ++i)
      threads.emplace_back([&, i] { got[i] = exchange(s.port(), body(i, decode[i]), 120); });
    for (auto& t : threads) t.join();
    for (int i = 0; i < 6; ++i) {
      const Reply alone = exchange(s.port(), body(i, decode[i] == "diffusion" ? "diffusion" : "sequential"), 120);
      ASSERT_EQ(got[i].status, 200) << backend << " " << i << ": " << got[i].body;
      ASSERT_EQ(alone.status, 200) << alone.body;
      const json a = json::parse(got[i].body), b = json::parse(alone.body);
      EXPECT_EQ(a["choices"][0]["text"], b["choices"][0]["text"]) << backend << " request " << i;
      EXPECT_EQ(a["choices"][0]["logprobs"], b["choices"][0]["logprobs"]) << backend << " request " << i;
      EXPECT_EQ(a["usage"]["iterations_per_token"], b["usage"]["iterations_per_token"]) << backend << " request " << i;
    }
    EXPECT_GT(metric(s, "huginn_decode_batch_rider_rows_total"), 0) << backend;
    EXPECT_GT(metric(s, "huginn_decode_batch_shared_passes_total"), 0) << backend;
    // --max-batch holds for the riders' rows too (a lone rider larger than it aside).
    EXPECT_GT(metric(s, "huginn_decode_batch_max_load"), 0) << backend;
    EXPECT_LE(metric(s, "huginn_decode_batch_max_load"), 4) << backend;
    EXPECT_TRUE(s.alive());
  }
}

// A deadline inside a long diffusion step (65,536 inner recurrences of a one-row window, riding
// the depth batch) cuts the step within one core pass: the request gets its 504 and, once the
// engine is idle, the core passes its rows rode (/metrics) are far fewer than the step's (the
// step ran to its end before: 65,536 at least).
TEST_F(ServeAbuseTest, ADeadlineInsideALongDiffusionStepStopsIt) {
  ServerProcess s(model_, "--parallel 2 --max-batch 2 --timeout 0.5 --max-steps-limit 65536");
  ASSERT_GT(s.port(), 0) << s.log();
  auto metric = [&](const std::string& name) {
    const Reply m = exchange(s.port(), "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n", 10);
    const size_t at = m.body.find("\n" + name + " ");
    return at == std::string::npos ? -1L : std::atol(m.body.c_str() + at + name.size() + 2);
  };
  const Reply r = exchange(
      s.port(),
      post("/v1/completions",
           R"({"model":"tiny","prompt":"hello","max_tokens":8,"temperature":0,"num_steps":4,)"
           R"("decode":"diffusion","diffusion":{"inner_recurrence":65536}})"),
      300);
  EXPECT_EQ(r.status, 504) << r.body;
  for (int i = 0; i < 600 && metric("huginn_active_slots") != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(metric("huginn_active_slots"), 0);
  const long rode = metric("huginn_decode_batch_rider_rows_total");
  EXPECT_GT(rode, 0) << "the step had begun";
  EXPECT_LT(rode, 65536) << "the step ran past the deadline";
  std::printf("core passes of the diffusion step before its deadline: %ld of 65536\n", rode);
  EXPECT_EQ(metric("huginn_requests_timed_out_total"), 1);
  EXPECT_TRUE(s.alive());
}

// --max-connections-per-address reaches the front: a fourth connection from 127.0.0.1 is refused
// with 503 while three are held, gets in once one closes, and /metrics counts the refusal.
TEST_F(ServeAbuseTest, ConnectionsPerAddressAreCapped) {
  ServerProcess s(model_, "--max-connections-per-address 3");
  ASSERT_GT(s.port(), 0) << s.log();
  std::vector<int> held;
  for (int i = 0; i < 3; ++i) held.push_back(connect_to(s.port()));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const Reply refused = exchange(s.port(), kHealth, 10);
  EXPECT_EQ(refused.status, 503) << refused.head << refused.body;
  EXPECT_NE(refused.body.find("too many connections from your address (the limit is 3)"),
            std::string::npos) << refused.body;
  close(held[0]);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(exchange(s.port(), kHealth, 10).status, 200);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // that connection has closed
  const Reply m = exchange(s.port(), "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n", 10);
  EXPECT_NE(m.body.find("huginn_connections_refused_total{reason=\"address_limit\"} 1\n"),
            std::string::npos) << m.body;
  for (size_t i = 1; i < held.size(); ++i) close(held[i]);
}

// Server::stop() from another thread (serve's signal watcher) is never lost: a stop() before
// run(), or while run() binds and starts listening, used to find httplib not yet listening, do
// nothing, and leave run() serving for ever (a SIGTERM while the model loaded was ignored).
TEST_F(ServeAbuseTest, StopBeforeOrWhileStartingIsNotLost) {
  ServerOptions o;
  o.model_dir = model_;
  o.port = 0;
  o.threads = 1;
  // run() in a thread, which must end within 10 s; if it does not, a later stop() (which works
  // once listening) ends it so that the test fails instead of hanging.
  auto ends = [](Server& server, const std::function<void()>& stopper) {
    auto done = std::async(std::launch::async, [&] { server.run(); });
    stopper();
    const bool ended = done.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
    if (!ended) server.stop();
    done.get();
    return ended;
  };
  {
    Server server(o);
    server.stop();  // before run(): run() returns at once
    EXPECT_TRUE(ends(server, [] {}));
  }
  for (int round = 0; round < 5; ++round) {  // racing run()'s start
    Server server(o);
    EXPECT_TRUE(ends(server, [&] {
      std::this_thread::sleep_for(std::chrono::microseconds(200 * round));
      server.stop();
    })) << "round " << round;
  }
}

}  // namespace
}  // namespace huginn
