// The strict arena: device addresses and the backend's window, allocation, and the SIGSEGV
// handler that names the arena a faulting host access hit.
#include "kernels/strict/arena.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include "huginn/error.h"

namespace huginn::strict {
namespace {

// Arenas the signal handler knows, in a fixed table it reads without locks.
constexpr int kMaxArenas = 256;
struct Range {
  std::atomic<uintptr_t> begin{0}, end{0};
  std::atomic<int> id{0};
};
Range g_ranges[kMaxArenas];
std::atomic<int> g_next_id{1};
struct sigaction g_previous;

// Async-signal-safe text building (no stdio in a handler).
struct Msg {
  char buf[512];
  size_t n = 0;
  void put(const char* s) {
    while (*s && n + 1 < sizeof buf) buf[n++] = *s++;
  }
  void put_uint(uintptr_t v, int base) {
    char tmp[32];
    int k = 0;
    do {
      tmp[k++] = "0123456789abcdef"[v % base];
      v /= base;
    } while (v && k < 32);
    if (base == 16) put("0x");
    while (k > 0 && n + 1 < sizeof buf) buf[n++] = tmp[--k];
  }
};

void on_segv(int sig, siginfo_t* info, void* uctx) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(info->si_addr);
  for (const Range& r : g_ranges) {
    const uintptr_t b = r.begin.load(std::memory_order_acquire), e = r.end.load();
    if (b == 0 || a < b || a >= e) continue;
    Msg m;
    m.put("huginn: host access to backend memory at ");
    m.put_uint(a, 16);
    m.put(" in the strict backend arena #");
    m.put_uint(static_cast<uintptr_t>(r.id.load()), 10);
    m.put(" (offset ");
    m.put_uint(a - b, 10);
    m.put("): host code read or wrote a backend tensor (use Backend::download or a backend "
          "op)\n");
    (void)!::write(2, m.buf, m.n);
    ::signal(SIGABRT, SIG_DFL);
    ::abort();
  }
  // Not ours: hand the fault to whoever handled it before (or the default action).
  if (g_previous.sa_flags & SA_SIGINFO) {
    if (g_previous.sa_sigaction) return g_previous.sa_sigaction(sig, info, uctx);
  } else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    return g_previous.sa_handler(sig);
  }
  ::signal(SIGSEGV, SIG_DFL);  // the faulting instruction runs again and takes the default
}

void install_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGSEGV, &sa, &g_previous);
  });
}

}  // namespace

Arena::Arena(size_t reserve_bytes) : reserve_(reserve_bytes) {
  const int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
  void* d = ::mmap(nullptr, reserve_, PROT_NONE, flags, -1, 0);
  void* w = d == MAP_FAILED ? MAP_FAILED : ::mmap(nullptr, reserve_, PROT_READ | PROT_WRITE, flags, -1, 0);
  if (w == MAP_FAILED) {
    const int err = errno;
    if (d != MAP_FAILED) ::munmap(d, reserve_);
    throw Error("strict backend: cannot reserve 2 x " + std::to_string(reserve_ >> 20) +
                " MiB of address space for its arena: " + std::strerror(err) +
                " (HUGINN_STRICT_ARENA_MIB sets the size)");
  }
  device_ = static_cast<char*>(d);
  window_ = static_cast<char*>(w);
  id_ = g_next_id.fetch_add(1);
  install_handler();
  for (Range& r : g_ranges) {
    uintptr_t expected = 0;
    if (r.begin.load() != 0) continue;
    r.end.store(reinterpret_cast<uintptr_t>(device_) + reserve_);
    r.id.store(id_);
    if (r.begin.compare_exchange_strong(expected, reinterpret_cast<uintptr_t>(device_))) return;
  }
  // More live arenas than the table holds: faults in this one are reported without its name.
}

Arena::~Arena() {
  for (Range& r : g_ranges)
    if (r.begin.load() == reinterpret_cast<uintptr_t>(device_)) r.begin.store(0);
  ::munmap(device_, reserve_);
  ::munmap(window_, reserve_);
}

bool Arena::contains(const void* p) const {
  const char* c = static_cast<const char*>(p);
  return c >= device_ && c < device_ + reserve_;
}

void* Arena::allocate(size_t bytes) {
  const size_t n = round(bytes == 0 ? 1 : bytes);
  size_t off;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(n);
    if (it != free_.end() && !it->second.empty()) {
      off = it->second.back();
      it->second.pop_back();
      std::memset(window_ + off, 0, n);  // fresh pages are zero already
    } else {
      if (n > reserve_ - top_)
        throw Error("strict backend: its " + std::to_string(reserve_ >> 20) +
                    " MiB arena is full (HUGINN_STRICT_ARENA_MIB sets its size)");
      off = top_;
      top_ += n;
    }
  }
  return device_ + off;
}

void Arena::release(void* p, size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  free_[round(bytes == 0 ? 1 : bytes)].push_back(static_cast<size_t>(static_cast<char*>(p) - device_));
}

}  // namespace huginn::strict
