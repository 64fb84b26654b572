// The strict test backend: every op is the fast CPU backend's, run on views of the arena's private
// window (arena.h) made inside the op; the tensors themselves hold device addresses, which are
// never readable. Every tensor an op receives must be this backend's (upload / alloc /
// convert_weight); a host tensor passed to an op is refused, as a device backend would have to
// refuse it. So the golden suite on this backend proves that model, generator and trainer reach
// backend memory only through backend calls: a host access throws (Tensor's accessors) or faults
// (anything else, with a message naming the arena).
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "huginn/backend.h"
#include "huginn/thread_pool.h"
#include "kernels/device_access.h"
#include "kernels/strict/arena.h"

namespace huginn {
namespace {

constexpr const char* kSpace = "strict";

size_t arena_bytes() {
  const char* env = std::getenv("HUGINN_STRICT_ARENA_MIB");
  const long mib = env ? std::atol(env) : 4096;
  if (mib <= 0) throw Error(std::string("HUGINN_STRICT_ARENA_MIB=") + env + ": expected a positive number");
  return static_cast<size_t>(mib) << 20;
}

class StrictBackend : public Backend {
 public:
  explicit StrictBackend(ThreadPool& pool)
      : cpu_(make_cpu_backend(pool)), arena_(std::make_shared<strict::Arena>(arena_bytes())) {}
  const char* name() const override { return kSpace; }

  Tensor alloc(std::initializer_list<int64_t> shape, DType dtype) override {
    const Tensor probe = Tensor::wrap(nullptr, shape, dtype);  // checks the shape
    return make(probe.shape(), dtype);
  }
  Tensor upload(const Tensor& host) override {
    if (mine(host)) return host;
    Tensor src = host.is_contiguous() ? host : host.clone();  // refuses other backends' memory
    Tensor t = make(src.shape(), src.dtype());
    std::memcpy(arena_->window(DeviceAccess::ptr(t)), src.raw(), src.nbytes());
    return t;
  }
  int64_t allocated_bytes() const override { return live_->load(std::memory_order_relaxed); }
  void download(const Tensor& t, float* host) override {
    check(t, "download");
    HUGINN_ASSERT(t.dtype() == DType::kF32, "download: F32 tensors only");
    cpu_->download(h(t), host);
  }
  void copy(const Tensor& src, Tensor& dst) override {
    Call c(*this, {&src, &dst}, "copy");
    Tensor d = h(dst);
    cpu_->copy(h(src), d);
  }
  Tensor convert_weight(const Tensor& w, DType to) override {
    check(w, "convert_weight");
    if (w.dtype() == to) return w;
    return upload(huginn::convert_weight(h(w), to));
  }
  // Numerics a device backend may well have (a GEMM exact only for a few rows, a tile to keep
  // weights in its cache), claimed although the CPU kernels beneath are exact for any M and block
  // themselves: a smaller claim stays true, and it keeps the model's row groups and column tiles
  // (ModelPass::linear) running in the suites that run on this backend.
  int64_t matmul_exact_rows() const override { return 4; }
  int64_t attention_split_rows() const override { return 0; }
  int64_t preferred_tile_bytes() const override { return 512 * 1024; }

  void embedding(const Tensor& table, std::span<const int32_t> ids, float scale,
                 Tensor& out) override {
    Call c(*this, {&table, &out}, "embedding");
    Tensor o = h(out);
    cpu_->embedding(h(table), ids, scale, o);
  }
  void matmul(const Tensor& x, const Tensor& w, Tensor& y) override {
    Call c(*this, {&x, &w, &y}, "matmul");
    Tensor yy = h(y);
    cpu_->matmul(h(x), h(w), yy);
  }
  void rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& y) override {
    Call c(*this, {&x, &w, &y}, "rmsnorm");
    Tensor yy = h(y);
    cpu_->rmsnorm(h(x), h(w), eps, yy);
  }
  void add(const Tensor& a, const Tensor& b, Tensor& y) override {
    Call c(*this, {&a, &b, &y}, "add");
    Tensor yy = h(y);
    cpu_->add(h(a), h(b), yy);
  }
  void add_bias(Tensor& x, const Tensor& bias) override {
    Call c(*this, {&x, &bias}, "add_bias");
    Tensor xx = h(x);
    cpu_->add_bias(xx, h(bias));
  }
  void rope(Tensor& x, const Tensor& cos_sin, std::span<const int32_t> positions,
            int head_dim) override {
    Call c(*this, {&x, &cos_sin}, "rope");
    Tensor xx = h(x);
    cpu_->rope(xx, h(cos_sin), positions, head_dim);
  }
  void attention(const Tensor& q, const Tensor& k, const Tensor& v, int n_heads,
                 Tensor& out) override {
    Call c(*this, {&q, &k, &v, &out}, "attention");
    Tensor o = h(out);
    cpu_->attention(h(q), h(k), h(v), n_heads, o);
  }
  void swiglu(const Tensor& fc, Tensor& out) override {
    Call c(*this, {&fc, &out}, "swiglu");
    Tensor o = h(out);
    cpu_->swiglu(h(fc), o);
  }
  void concat_cols(const Tensor& a, const Tensor& b, Tensor& out) override {
    Call c(*this, {&a, &b, &out}, "concat_cols");
    Tensor o = h(out);
    cpu_->concat_cols(h(a), h(b), o);
  }
  void log_softmax(const Tensor& x, Tensor& y) override {
    Call c(*this, {&x, &y}, "log_softmax");
    Tensor yy = h(y);
    cpu_->log_softmax(h(x), yy);
  }

  void fill(Tensor& x, float value) override {
    Call c(*this, {&x}, "fill");
    Tensor xx = h(x);
    cpu_->fill(xx, value);
  }
  void scale(Tensor& x, float s) override {
    Call c(*this, {&x}, "scale");
    Tensor xx = h(x);
    cpu_->scale(xx, s);
  }
  double sum_squares(const Tensor& x, double acc) override {
    Call c(*this, {&x}, "sum_squares");
    return cpu_->sum_squares(h(x), acc);
  }
  int64_t count_non_finite(const Tensor& x, int64_t* first) override {
    Call c(*this, {&x}, "count_non_finite");
    return cpu_->count_non_finite(h(x), first);
  }
  void adamw_step(Tensor& w, const Tensor& g, Tensor& m, Tensor& v, const AdamWStep& p) override {
    Call c(*this, {&w, &g, &m, &v}, "adamw_step");
    Tensor ww = h(w), mm = h(m), vv = h(v);
    cpu_->adamw_step(ww, h(g), mm, vv, p);
  }

  void matmul_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx,
                       Tensor* dw) override {
    Call c(*this, {&x, &w, &dy, dx, dw}, "matmul_backward");
    Tensor dxx = dx ? h(*dx) : Tensor(), dww = dw ? h(*dw) : Tensor();
    cpu_->matmul_backward(h(x), h(w), h(dy), dx ? &dxx : nullptr, dw ? &dww : nullptr);
  }
  void matmul_bf16(const Tensor& x, const Tensor& w, Tensor& y) override {
    Call c(*this, {&x, &w, &y}, "matmul_bf16");
    Tensor yy = h(y);
    cpu_->matmul_bf16(h(x), h(w), yy);
  }
  void matmul_backward_bf16(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx,
                            Tensor* dw) override {
    Call c(*this, {&x, &w, &dy, dx, dw}, "matmul_backward_bf16");
    Tensor dxx = dx ? h(*dx) : Tensor(), dww = dw ? h(*dw) : Tensor();
    cpu_->matmul_backward_bf16(h(x), h(w), h(dy), dx ? &dxx : nullptr, dw ? &dww : nullptr);
  }
  void round_bf16(const Tensor& w, Tensor& wb) override {
    Call c(*this, {&w, &wb}, "round_bf16");
    Tensor out = h(wb);
    cpu_->round_bf16(h(w), out);
  }
  void rmsnorm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx,
                        Tensor& dw) override {
    Call c(*this, {&x, &w, &dy, &dx, &dw}, "rmsnorm_backward");
    Tensor dxx = h(dx), dww = h(dw);
    cpu_->rmsnorm_backward(h(x), h(w), eps, h(dy), dxx, dww);
  }
  void add_bias_backward(const Tensor& dy, Tensor& dbias) override {
    Call c(*this, {&dy, &dbias}, "add_bias_backward");
    Tensor db = h(dbias);
    cpu_->add_bias_backward(h(dy), db);
  }
  void rope_backward(Tensor& dx, const Tensor& cos_sin, std::span<const int32_t> positions,
                     int head_dim) override {
    Call c(*this, {&dx, &cos_sin}, "rope_backward");
    Tensor dxx = h(dx);
    cpu_->rope_backward(dxx, h(cos_sin), positions, head_dim);
  }
  void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                          const Tensor& dout, int n_heads, Tensor& dq, Tensor& dk,
                          Tensor& dv) override {
    Call c(*this, {&q, &k, &v, &out, &dout, &dq, &dk, &dv}, "attention_backward");
    Tensor a = h(dq), b = h(dk), d = h(dv);
    cpu_->attention_backward(h(q), h(k), h(v), h(out), h(dout), n_heads, a, b, d);
  }
  void swiglu_backward(const Tensor& fc, const Tensor& dout, Tensor& dfc) override {
    Call c(*this, {&fc, &dout, &dfc}, "swiglu_backward");
    Tensor d = h(dfc);
    cpu_->swiglu_backward(h(fc), h(dout), d);
  }
  void concat_cols_backward(const Tensor& dout, Tensor& da, Tensor& db) override {
    Call c(*this, {&dout, &da, &db}, "concat_cols_backward");
    Tensor a = h(da), b = h(db);
    cpu_->concat_cols_backward(h(dout), a, b);
  }
  void embedding_backward(const Tensor& dout, std::span<const int32_t> ids, float scale,
                          Tensor& dtable) override {
    Call c(*this, {&dout, &dtable}, "embedding_backward");
    Tensor d = h(dtable);
    cpu_->embedding_backward(h(dout), ids, scale, d);
  }
  float cross_entropy(const Tensor& logits, std::span<const int32_t> labels, float dscale,
                      Tensor* dlogits) override {
    Call c(*this, {&logits, dlogits}, "cross_entropy");
    Tensor d = dlogits ? h(*dlogits) : Tensor();
    return cpu_->cross_entropy(h(logits), labels, dscale, dlogits ? &d : nullptr);
  }

 private:
  // An op's call: its tensors checked to be this backend's.
  struct Call {
    Call(StrictBackend& b, std::initializer_list<const Tensor*> ts, const char* op) {
      for (const Tensor* t : ts)
        if (t) b.check(*t, op);
    }
  };

  bool mine(const Tensor& t) const {
    return !t.on_host() && std::strcmp(t.space_name(), kSpace) == 0 &&
           arena_->contains(DeviceAccess::ptr(t));
  }
  void check(const Tensor& t, const char* op) const {
    if (!t.defined() || mine(t)) return;
    throw Error(std::string("strict backend: ") + op + " was given a " + dtype_name(t.dtype()) +
                " tensor " + t.shape_str() + " in " + t.space_name() +
                " memory, not one of this backend's (upload it first)");
  }
  // The window view of one of this backend's tensors, for the CPU kernels.
  Tensor h(const Tensor& t) const {
    return DeviceAccess::host_view_at(t, arena_->window(DeviceAccess::ptr(t)));
  }

  Tensor make(std::span<const int64_t> shape, DType dtype) {
    int64_t n = 1;
    for (int64_t d : shape)
      if (__builtin_mul_overflow(n, d, &n)) throw Error("strict backend: tensor too large");
    const size_t bytes = storage_bytes(dtype, n);
    void* p = arena_->allocate(bytes);
    std::shared_ptr<strict::Arena> arena = arena_;
    std::shared_ptr<std::atomic<int64_t>> live = live_;
    live->fetch_add(static_cast<int64_t>(bytes), std::memory_order_relaxed);
    std::shared_ptr<void> owner(p, [arena, live, bytes](void* q) {
      arena->release(q, bytes);
      live->fetch_sub(static_cast<int64_t>(bytes), std::memory_order_relaxed);
    });
    return DeviceAccess::in_space(Tensor::wrap(p, shape, dtype, std::move(owner)), kSpace);
  }

  std::unique_ptr<Backend> cpu_;
  std::shared_ptr<strict::Arena> arena_;
  std::shared_ptr<std::atomic<int64_t>> live_ = std::make_shared<std::atomic<int64_t>>(0);
};

}  // namespace

std::unique_ptr<Backend> make_strict_backend(ThreadPool& pool) {
  return std::make_unique<StrictBackend>(pool);
}

}  // namespace huginn
