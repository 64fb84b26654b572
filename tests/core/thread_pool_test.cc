// ThreadPool: partitions cover [0, n) exactly once, edge cases, nesting, errors, wake-up paths.
#include "huginn/thread_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <chrono>
#include <stdexcept>
#include <vector>

namespace huginn {
namespace {

TEST(ThreadPool, PartitionCoversRangeExactlyOnce) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int64_t n : {0, 1, 2, 3, 4, 7, 100, 1001}) {
      for (int64_t grain : {0, 1, 3, 50}) {
        SCOPED_TRACE(testing::Message()
                     << "threads " << threads << " n " << n << " grain " << grain);
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::atomic<int> chunks{0};
        pool.parallel_for(n, grain, [&](int64_t b, int64_t e) {
          EXPECT_LT(b, e);
          ++chunks;
          for (int64_t i = b; i < e; ++i) ++hits[static_cast<size_t>(i)];
        });
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << i;
        const int64_t g = std::max<int64_t>(grain, 1);
        EXPECT_LE(chunks.load(), std::min<int64_t>(threads, (n + g - 1) / g));
        if (n == 0) {
          EXPECT_EQ(chunks.load(), 0);
        }
      }
    }
  }
}

TEST(ThreadPool, ChunksRespectGrainAndAreDeterministic) {
  ThreadPool pool(3);
  for (int rep = 0; rep < 2; ++rep) {
    using Range = std::pair<int64_t, int64_t>;
    std::mutex mu;
    std::vector<Range> seen;
    // Chunks are [n*t/c, n*(t+1)/c) with c = min(threads, ceil(n/grain)) = 3.
    pool.parallel_for(10, 4, [&](int64_t b, int64_t e) {
      std::lock_guard<std::mutex> lock(mu);
      seen.emplace_back(b, e);
    });
    std::sort(seen.begin(), seen.end());
    ASSERT_EQ(seen.size(), 3u);
    EXPECT_EQ(seen[0], Range(0, 3));
    EXPECT_EQ(seen[1], Range(3, 6));
    EXPECT_EQ(seen[2], Range(6, 10));
  }
}

TEST(ThreadPool, RunOnAllCallsEveryIndexOnce) {
  for (int threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    std::vector<std::atomic<int>> hits(static_cast<size_t>(threads));
    pool.run_on_all([&](int i) { ++hits[static_cast<size_t>(i)]; });
    for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  }
}

TEST(ThreadPool, NestedCallsRunInlineWithoutDeadlock) {
  ThreadPool pool(2);
  std::vector<std::atomic<int>> hits(20 * 30);
  pool.parallel_for(20, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      pool.parallel_for(30, 1, [&](int64_t b2, int64_t e2) {
        for (int64_t j = b2; j < e2; ++j) ++hits[static_cast<size_t>(i * 30 + j)];
      });
  });
  for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  std::atomic<int> calls{0};
  pool.run_on_all([&](int) { pool.run_on_all([&](int) { ++calls; }); });
  EXPECT_EQ(calls.load(), 4);
}

TEST(ThreadPool, ExceptionReachesCallerAndPoolStaysUsable) {
  ThreadPool pool(2);
  for (int thrower : {0, 1}) {
    EXPECT_THROW(pool.run_on_all([&](int i) {
      if (i == thrower) throw std::runtime_error("boom");
    }),
                 std::runtime_error);
  }
  std::atomic<int64_t> sum{0};
  pool.parallel_for(100, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) sum += i;
  });
  EXPECT_EQ(sum.load(), 4950);
}

TEST(ThreadPool, ManyShortJobsAndWakeUpAfterSleep) {
  ThreadPool pool(2);
  int64_t total = 0;
  for (int rep = 0; rep < 1000; ++rep) {
    std::atomic<int64_t> s{0};
    pool.parallel_for(4, 1, [&](int64_t b, int64_t e) { s += e - b; });
    total += s.load();
  }
  EXPECT_EQ(total, 1000 * 4);
  // Workers go to sleep after spinning idle; a job must still wake them.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::atomic<int> ran{0};
  pool.run_on_all([&](int) { ++ran; });
  EXPECT_EQ(ran.load(), 2);
}

// parallel_for's chunks are claimed by whichever thread is free (the caller included), so a
// worker that wakes late finds its job over. Interleave range jobs of many sizes with
// run_on_all jobs and exceptions on more threads than cores, so that stale workers meet newer
// jobs: every index is still covered exactly once, every run_on_all index called once.
TEST(ThreadPool, RangeJobsClaimedByAnyThreadStayExact) {
  ThreadPool pool(5);
  for (int rep = 0; rep < 3000; ++rep) {
    const int64_t n = 1 + rep % 23;
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    pool.parallel_for(n, 1 + rep % 3, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) ++hits[static_cast<size_t>(i)];
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << rep;
    if (rep % 7 == 0) {
      std::vector<std::atomic<int>> each(5);
      pool.run_on_all([&](int i) { ++each[static_cast<size_t>(i)]; });
      for (auto& h : each) ASSERT_EQ(h.load(), 1) << rep;
    }
    if (rep % 101 == 0) {
      std::atomic<int> ran{0};
      EXPECT_THROW(pool.parallel_for(10, 1, [&](int64_t b, int64_t) {
        ++ran;
        if (b == 0) throw std::runtime_error("chunk 0");
      }),
                   std::runtime_error);
      EXPECT_EQ(ran.load(), 5) << "every chunk runs before the error is rethrown";
    }
  }
}

}  // namespace
}  // namespace huginn
