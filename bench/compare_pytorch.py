#!/usr/bin/python3
"""Side-by-side speed: huginn-cpp vs a compact eager PyTorch implementation of the same model.

The PyTorch model below is written from the numerical conventions in the golden README
(tests/data/golden/README.md): sandwich blocks, RMSNorm with eps inside the root, interleaved
RoPE, qk_bias before RoPE, state-first adapter, ln_f twice, step-indexed KV cache. Check it:

    bench/compare_pytorch.py --check-golden          # exits 1 when a golden case is off

Compare (the model files are read by both sides; --config writes random weights once with
`huginn init` so both read the same file):

    bench/compare_pytorch.py --huginn build/huginn --config bench-m --threads 1 --dtypes f32,bf16

Workloads (the same on both sides, f32 PyTorch eager, torch.set_num_threads(T)):
  prefill  256 tokens at r = 32 through a full KV cache, last-position logits
  decode   64-token prompt, 32 greedy tokens, r = 32, full cache; rate over the 31 single-token calls
  train    batch 4 x 256, (n, k) = (6, 2), zero initial state, CE loss, clip 1.0, AdamW step;
           --train-precision f32,bf16 adds the BF16 mixed-precision step on both sides: PyTorch's
           torch.autocast("cpu", dtype=torch.bfloat16) around the forward (as the reference
           trains), huginn's `bench --train-precision bf16` (huginn train --precision bf16)

OPENBLAS_* variables are removed from the PyTorch process (it re-executes itself without them,
so OpenBLAS picks its best kernels) and OpenBLAS gets T threads through openblas_set_num_threads.
huginn runs with the caller's environment. Only Debian packages: python3-torch, python3-numpy,
libopenblas0-pthread (scripts/install-deps.sh --bench installs them).

PyTorch's BLAS is printed before any figure: torch.__config__.show(), the BLAS libraries mapped
into this process after a matmul (/proc/self/maps: which libblas.so.3 the loader picked) and a
measured f32 GEMM rate. Debian's python3-torch calls whatever libblas.so.3 points to; when that is
the reference BLAS (netlib, ~1 GFLOP/s) every ratio would flatter huginn 50-100x, so the script
refuses to compare and says how to switch to OpenBLAS.
"""
import argparse
import ctypes
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Re-exec without OPENBLAS_* before torch (and OpenBLAS) load; must precede `import torch`.
if any(k.startswith("OPENBLAS_") for k in os.environ) and "_HUGINN_CMP_CHILD" not in os.environ:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}
    env["_HUGINN_CMP_CHILD"] = "1"
    env["_HUGINN_CMP_SAVED_ENV"] = json.dumps(
        {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")})
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# ---- safetensors (the format is small: 8-byte header length, JSON header, raw data) -----------

_NP = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32,
       "U8": np.uint8, "I8": np.int8}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        raw = data[base + b: base + end]
        if e["dtype"] == "BF16":
            u = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            arr = u.view(np.float32)
        elif e["dtype"] in _NP:
            arr = np.frombuffer(raw, dtype=_NP[e["dtype"]])
        else:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {e['dtype']}")
        t = torch.from_numpy(arr.copy()).reshape(e["shape"])
        out[name] = t.float() if t.is_floating_point() else t
    return out


def load_model_dir(path):
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    tensors = {}
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    for fn in files:
        tensors.update(read_safetensors(os.path.join(path, fn)))
    return cfg, tensors


# ---- the model -----------------------------------------------------------------------------------

class Huginn:
    """Weights as plain tensors; forward / cached forward / loss written once."""

    def __init__(self, cfg, t):
        self.E = cfg["n_embd"]
        self.H = cfg.get("num_attention_heads", cfg.get("n_heads"))
        self.D = self.E // self.H
        self.V = cfg.get("vocab_size", cfg.get("padded_vocab_size"))
        self.P = cfg["n_layers_in_prelude"]
        self.C = cfg["n_layers_in_recurrent_block"]
        self.Q = cfg["n_layers_in_coda"]
        self.eps = cfg.get("norm_eps", 1e-6)
        self.base = cfg.get("rope_base", 50000.0)
        self.wte = t["transformer.wte.weight"]
        self.adapter = t["transformer.adapter.weight"]
        self.ln_f = t["transformer.ln_f.weight"]
        self.lm_head = t.get("lm_head.weight", self.wte)
        self.tied = "lm_head.weight" not in t or cfg.get("tie_embeddings", cfg.get("tie_word_embeddings", True))
        if self.tied:
            self.lm_head = self.wte
        self.blocks = {}
        for part, n in (("prelude", self.P), ("core_block", self.C), ("coda", self.Q)):
            self.blocks[part] = [self._block(t, f"transformer.{part}.{i}") for i in range(n)]
        n_pos = max(cfg.get("block_size", 4096), 4096)
        self.cos, self.sin = self._rope(n_pos)

    def _block(self, t, p):
        b = {k: t[f"{p}.{k}.weight"] for k in ("norm_1", "norm_2", "norm_3", "norm_4")}
        b["wqkv"] = t[f"{p}.attn.Wqkv.weight"]
        b["proj"] = t[f"{p}.attn.proj.weight"]
        b["fc"] = t[f"{p}.mlp.fc.weight"]
        b["mlp_proj"] = t[f"{p}.mlp.proj.weight"]
        qk = t.get(f"{p}.attn.qk_bias")
        b["qk_bias"] = qk.reshape(2, self.E) if qk is not None else None
        return b

    def _rope(self, n):
        # float32 exactly as the reference: inv = 1 / base**(arange(0, D, 2) / D), theta = p * inv.
        inv = 1.0 / (self.base ** (torch.arange(0, self.D, 2, dtype=torch.float32) / self.D))
        theta = torch.arange(n, dtype=torch.float32)[:, None] * inv[None, :]
        return torch.cos(theta), torch.sin(theta)

    def parameters(self):
        ps = [self.wte, self.adapter, self.ln_f]
        if not self.tied:
            ps.append(self.lm_head)
        for blocks in self.blocks.values():
            for b in blocks:
                ps += [v for v in b.values() if v is not None]
        return ps

    def rms(self, x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def rotate(self, x, start):  # x [B, T, H, D]; interleaved pairs (2i, 2i+1)
        T = x.shape[1]
        cos = self.cos[start:start + T][None, :, None, :]
        sin = self.sin[start:start + T][None, :, None, :]
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).flatten(-2)

    def attention(self, b, x, start, cache, idx):
        B, T, E = x.shape
        q, k, v = (x @ b["wqkv"].t()).split(E, dim=-1)
        if b["qk_bias"] is not None:
            q = q + b["qk_bias"][0]
            k = k + b["qk_bias"][1]
        q = self.rotate(q.reshape(B, T, self.H, self.D), start).transpose(1, 2)
        k = self.rotate(k.reshape(B, T, self.H, self.D), start).transpose(1, 2)
        v = v.reshape(B, T, self.H, self.D).transpose(1, 2)
        if cache is not None:
            if idx in cache:
                k = torch.cat((cache[idx][0], k), dim=2)
                v = torch.cat((cache[idx][1], v), dim=2)
            cache[idx] = (k, v)
        S = k.shape[2]
        att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.D))
        if T > 1:  # bottom-right aligned causal mask: query i sees keys 0 .. S - T + i
            mask = torch.ones(T, S, dtype=torch.bool).triu(S - T + 1)
            att = att.masked_fill(mask, float("-inf"))
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, T, E)
        return y @ b["proj"].t()

    def mlp(self, b, x):
        gate, up = (x @ b["fc"].t()).chunk(2, dim=-1)
        return (F.silu(gate) * up) @ b["mlp_proj"].t()

    def block(self, b, x, start, cache, idx):
        x = self.rms(self.attention(b, self.rms(x, b["norm_1"]), start, cache, idx) + x, b["norm_2"])
        return self.rms(self.mlp(b, self.rms(x, b["norm_3"])) + x, b["norm_4"])

    def prelude(self, ids, start=0, cache=None):
        x = self.wte[ids] * math.sqrt(self.E)
        for i, b in enumerate(self.blocks["prelude"]):
            x = self.block(b, x, start, cache, i)
        return x

    def core_step(self, s, e, t, start=0, cache=None):
        x = torch.cat((s, e), dim=-1) @ self.adapter.t()
        for j, b in enumerate(self.blocks["core_block"]):
            x = self.block(b, x, start, cache, self.P + t * self.C + j)
        return x

    def coda(self, s, start=0, cache=None, last_only=False):
        latent = self.rms(s, self.ln_f)
        x = latent
        for m, b in enumerate(self.blocks["coda"]):
            x = self.block(b, x, start, cache, -(m + 1))
        x = self.rms(x, self.ln_f)
        if last_only:
            x = x[:, -1:]
        return x @ self.lm_head.t(), latent

    def forward(self, ids, r, state=None, start=0, cache=None, last_only=False):
        e = self.prelude(ids, start, cache)
        s = torch.zeros_like(e) if state is None else state
        for t in range(r):
            s = self.core_step(s, e, t, start, cache)
        logits, latent = self.coda(s, start, cache, last_only)
        return logits, latent, s

    def loss(self, ids, labels, n_no_grad, n_with_grad):
        e = self.prelude(ids)
        s = torch.zeros_like(e)
        with torch.no_grad():
            for t in range(n_no_grad):
                s = self.core_step(s, e, t)
        s = s.detach()
        for t in range(n_no_grad, n_no_grad + n_with_grad):
            s = self.core_step(s, e, t)
        logits, _ = self.coda(s)
        return F.cross_entropy(logits.reshape(-1, self.V), labels.reshape(-1), ignore_index=-100), logits


# ---- golden check --------------------------------------------------------------------------------

def rel_err(got, want):
    got, want = got.double(), want.double()
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()


def check_golden(golden_dir):
    failures, checked = [], 0

    def expect(case, what, err, tol):
        nonlocal checked
        checked += 1
        ok = err <= tol
        print(f"  {case:34s} {what:44s} {err:10.3e} (tol {tol:.0e}) {'ok' if ok else 'FAIL'}")
        if not ok:
            failures.append(f"{case} {what}")

    for model_name in ("tiny-a", "tiny-b"):
        d = os.path.join(golden_dir, model_name)
        cfg, w = load_model_dir(d)
        m = Huginn(cfg, w)
        if "freqs_cis" in w:
            f = w["freqs_cis"].reshape(-1, m.D // 2, 2)
            n = f.shape[0]
            err = max((f[..., 0] - m.cos[:n]).abs().max().item(), (f[..., 1] - m.sin[:n]).abs().max().item())
            expect(f"{model_name}/freqs_cis", "abs err vs own table", err, 2e-6)
        cases = sorted(fn[:-12] for fn in os.listdir(d) if fn.endswith(".safetensors") and fn != "model.safetensors")
        for case in cases:
            g = read_safetensors(os.path.join(d, case + ".safetensors"))
            name = f"{model_name}/{case}"
            if case.startswith("forward_"):
                r = int(case.rsplit("_s", 1)[1])
                with torch.no_grad():
                    logits, latent, raw = m.forward(g["input_ids"], r, state=g.get("input_state"))
                expect(name, "logits rel", rel_err(logits, g["logits"]), 1e-4)
                expect(name, "latent rel", rel_err(latent, g["latent"]), 1e-4)
                expect(name, "latent_raw rel", rel_err(raw, g["latent_raw"]), 1e-4)
            elif case == "decode_full_s8":
                ids, cache, outs, lats = g["input_ids"], {}, [], []
                with torch.no_grad():
                    for c in range(8):
                        a, b = (0, 5) if c == 0 else (4 + c, 5 + c)
                        lg, lat, _ = m.forward(ids[:, a:b], 8, start=a, cache=cache)
                        outs.append(lg)
                        lats.append(lat)
                expect(name, "logits rel (KV cache path)", rel_err(torch.cat(outs, 1), g["logits"]), 1e-4)
                expect(name, "latent rel (KV cache path)", rel_err(torch.cat(lats, 1), g["latent"]), 1e-4)
            elif case == "gen_greedy_full_s8":
                prompt = g["prompt"]
                toks = greedy(m, prompt, 8, g["tokens"].shape[1] - prompt.shape[1])
                bad = int((torch.tensor(toks) != g["tokens"][0, prompt.shape[1]:]).sum())
                expect(name, "generated tokens differing", bad, 0)
            elif case.startswith("grad_"):
                ng, wg = case[len("grad_ng"):].split("_g")
                for p in m.parameters():
                    p.requires_grad_(True)
                    p.grad = None
                loss, logits = m.loss(g["input_ids"], g["labels"], int(ng), int(wg))
                loss.backward()
                expect(name, "loss rel", rel_err(loss.detach(), g["loss"]), 1e-5)
                expect(name, "logits rel", rel_err(logits.detach(), g["logits"]), 1e-4)
                worst, worst_name = 0.0, ""
                for key, want in g.items():
                    if not key.startswith("grad."):
                        continue
                    got = param_grad(m, w, key[len("grad."):])
                    e = rel_err(got.reshape(want.shape), want)
                    if e > worst:
                        worst, worst_name = e, key
                expect(name, f"max grad rel ({worst_name[5:][-36:]})", worst, 1e-3)
                for p in m.parameters():
                    p.requires_grad_(False)
                    p.grad = None
    print(f"{checked} checks, {len(failures)} failed")
    return not failures


def param_grad(m, weights, name):
    """The gradient of the checkpoint tensor `name`, gathered from the model's views."""
    if name.endswith("attn.qk_bias"):
        part, i = name.split(".")[1], int(name.split(".")[2])
        return m.blocks[part][i]["qk_bias"].grad
    if name == "lm_head.weight":
        return m.lm_head.grad
    return weights[name].grad


@torch.no_grad()
def greedy(m, prompt, r, n_new):
    cache, out = {}, []
    logits, _, _ = m.forward(prompt, r, cache=cache, last_only=True)
    pos = prompt.shape[1]
    for i in range(n_new):
        tok = int(logits[0, -1].argmax())
        out.append(tok)
        if i + 1 == n_new:
            break
        logits, _, _ = m.forward(torch.tensor([[tok]]), r, start=pos, cache=cache, last_only=True)
        pos += 1
    return out


# ---- the timed workloads -------------------------------------------------------------------------

def ids_for(n, vocab):  # the same ids huginn bench uses: (t * 7919 + 11) % V
    return torch.tensor([[(t * 7919 + 11) % vocab for t in range(n)]], dtype=torch.long)


def time_reps(fn, reps):
    fn()  # warm-up
    out = []
    for _ in range(reps):
        out.append(fn())
    return out


def report_torch(name, xs):
    m, sd = stats(xs)
    print(f"[torch] {name}: {m:.2f} ± {sd:.2f} tok/s", file=sys.stderr, flush=True)
    return xs


def torch_prefill(m, n, r, reps):
    ids = ids_for(n, m.V)

    def one():
        t0 = time.perf_counter()
        with torch.inference_mode():
            m.forward(ids, r, cache={}, last_only=True)
        return n / (time.perf_counter() - t0)
    return time_reps(one, reps)


def torch_decode(m, prompt_len, n_new, r, reps):
    ids = ids_for(prompt_len, m.V)

    def one():
        with torch.inference_mode():
            cache = {}
            logits, _, _ = m.forward(ids, r, cache=cache, last_only=True)
            pos = prompt_len
            t0 = time.perf_counter()
            for _ in range(n_new - 1):
                tok = logits[:, -1].argmax(-1, keepdim=True)
                logits, _, _ = m.forward(tok, r, start=pos, cache=cache, last_only=True)
                pos += 1
            return (n_new - 1) / (time.perf_counter() - t0)
    return time_reps(one, reps)


def torch_train(m, batch, length, n, k, reps, bf16=False):
    seq = ids_for(length + 1, m.V).repeat(batch, 1)
    ids, labels = seq[:, :-1], seq[:, 1:]
    params = m.parameters()
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)

    def one():
        t0 = time.perf_counter()
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = m.loss(ids, labels, n, k)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return batch * length / (time.perf_counter() - t0)
    out = time_reps(one, reps)
    for p in params:
        p.requires_grad_(False)
        p.grad = None
    return out


# ---- driver --------------------------------------------------------------------------------------

BUILTIN = {
    "bench-m": dict(n_embd=1024, num_attention_heads=16, intermediate_size=2816, vocab_size=32768,
                    n_layers_in_prelude=2, n_layers_in_recurrent_block=4, n_layers_in_coda=2),
    "tiny": dict(n_embd=64, num_attention_heads=4, intermediate_size=128, vocab_size=256,
                 n_layers_in_prelude=1, n_layers_in_recurrent_block=2, n_layers_in_coda=1),
}


def prepare_model(args):
    """The model directory both sides read: --model as is, or random weights written once."""
    if args.model:
        return args.model
    if args.config in BUILTIN:
        cfg = dict(name=args.config, block_size=4096, tie_embeddings=True, **BUILTIN[args.config])
    else:
        with open(args.config) as f:
            cfg = json.load(f)
    out = args.workdir or os.path.join(tempfile.gettempdir(),
                                       f"huginn-cmp-{os.path.basename(args.config)}-seed{args.seed}")
    if os.path.exists(os.path.join(out, "model.safetensors")):
        return out
    os.makedirs(out, exist_ok=True)
    cfg_path = os.path.join(out, "input-config.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    run([args.huginn, "init", "--model-config", cfg_path, "--out", out, "--seed", str(args.seed), "--force"])
    return out


def huginn_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("_HUGINN_CMP_")}
    env.update(json.loads(os.environ.get("_HUGINN_CMP_SAVED_ENV", "{}")))
    return env


def run(cmd):
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    res = subprocess.run(cmd, stdout=subprocess.PIPE, env=huginn_env())
    if res.returncode != 0:
        sys.exit(f"compare_pytorch: command failed ({res.returncode}): {' '.join(cmd)}")
    return res.stdout.decode()


def huginn_bench(args, model_dir, dtype, tests):
    cmd = [args.huginn, "bench", "--model", model_dir, "--dtype", dtype, "--tests", ",".join(tests),
           "-r", str(args.r), "-p", str(args.prompt), "--decode-prompt", str(args.decode_prompt),
           "-g", str(args.gen), "--train-batch", str(args.train_batch), "--train-len", str(args.train_len),
           "--train-n", str(args.train_n), "--train-k", str(args.train_k), "-n", str(args.reps),
           "--train-precision", args.train_precision,
           "--threads", str(args.threads), "--json"]
    if args.no_peak:
        cmd.append("--no-peak")
    report = json.loads(run(cmd))
    for res in report["results"]:  # as soon as known: a long run keeps what it measured
        print(f"[huginn] {res['name']} r={res['r']} {dtype}: {res['tok_s_mean']:.2f} tok/s", file=sys.stderr, flush=True)
    return report


def stats(xs):
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def mapped_blas_libraries():
    """Shared libraries of this process whose names say BLAS/LAPACK/MKL, as the loader mapped them."""
    libs = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 6:
                continue
            path = parts[5]
            name = os.path.basename(path).lower()
            if any(k in name for k in ("blas", "lapack", "mkl", "blis", "flame")) and path not in libs:
                libs.append(path)
    return libs


def gemm_gflops(n=512, reps=5):
    """Best-of-reps f32 n x n x n torch.mm rate at the current torch thread count."""
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    torch.mm(a, b)  # warm-up (and the BLAS is loaded by now)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


def reference_blas(libs):
    """The loaded library that is the reference (netlib) BLAS, or None.

    Debian installs it as /usr/lib/<arch>/blas/libblas.so.3; OpenBLAS, BLIS and MKL live
    elsewhere (openblas-pthread/, blis-openmp/, ...) and export their own entry points."""
    for path in libs:
        if os.path.basename(os.path.dirname(path)) == "blas" and os.path.basename(path).startswith("libblas.so"):
            return path
    for path in libs:
        if not os.path.basename(path).startswith("libblas.so"):
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if not any(hasattr(lib, sym) for sym in ("openblas_get_config", "bli_info_get_version_str",
                                                 "MKL_Get_Version", "mkl_get_version")):
            return path
    return None


def blas_report(threads):
    """Prints PyTorch's BLAS (build config, mapped libraries, GEMM GFLOP/s); returns a dict."""
    config = torch.__config__.show()
    torch.mm(torch.ones(64, 64), torch.ones(64, 64))  # make sure the BLAS is loaded and mapped
    libs = mapped_blas_libraries()
    blas_info = [ln.strip() for ln in config.splitlines() if "BLAS" in ln or "LAPACK" in ln or "MKL" in ln]
    gflops = gemm_gflops()
    ref = reference_blas(libs)
    print("PyTorch build configuration (torch.__config__.show()):", file=sys.stderr)
    print("\n".join("  " + ln for ln in config.strip().splitlines()), file=sys.stderr)
    print("BLAS libraries mapped after a matmul (/proc/self/maps):", file=sys.stderr)
    for path in libs or ["(none: BLAS compiled into libtorch)"]:
        print(f"  {path}", file=sys.stderr)
    print(f"f32 GEMM 512^3, {threads} thread(s): {gflops:.1f} GFLOP/s"
          + (f"  <- the reference BLAS {ref}" if ref else ""), file=sys.stderr, flush=True)
    return dict(config=blas_info, libraries=libs, gemm_gflops=gflops, reference_blas=ref)


def refuse_reference_blas(blas):
    libdir = os.path.dirname(os.path.dirname(blas["reference_blas"]))  # /usr/lib/<arch>
    arch = os.path.basename(libdir)
    sys.exit(
        f"compare_pytorch: PyTorch runs on the reference BLAS ({blas['reference_blas']}, "
        f"{blas['gemm_gflops']:.1f} GFLOP/s f32 GEMM). Ratios against it would flatter huginn 50-100x, "
        "so none are reported. Fix: scripts/install-deps.sh --bench (installs libopenblas0-pthread "
        "and selects it), or by hand:\n"
        "  sudo apt-get install libopenblas0-pthread\n"
        f"  sudo update-alternatives --set libblas.so.3-{arch} {libdir}/openblas-pthread/libblas.so.3")


def set_threads(n):
    torch.set_num_threads(n)
    try:  # OpenBLAS (Debian's BLAS for torch) keeps its own pool; give it the same count.
        lib = ctypes.CDLL("libopenblas.so.0")
        lib.openblas_set_num_threads(n)
        return lib.openblas_get_num_threads()
    except (OSError, AttributeError):
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check-golden", action="store_true", help="check the PyTorch model against the golden files and exit")
    ap.add_argument("--golden", default=os.path.join(ROOT, "tests", "data", "golden"), help="golden directory")
    ap.add_argument("--huginn", default=os.path.join(ROOT, "build", "huginn"), help="huginn executable")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--model", help="model directory (config.json + safetensors)")
    src.add_argument("--config", default="bench-m", help="config.json, tiny or bench-m: random weights via huginn init")
    ap.add_argument("--seed", type=int, default=1, help="seed of the random weights")
    ap.add_argument("--workdir", help="where --config weights are written (default: a temp dir per config and seed)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtypes", default="f32", help="huginn weight formats for prefill/decode, comma list (f32,bf16,q8)")
    ap.add_argument("--tests", default="prefill,decode,train")
    ap.add_argument("-r", type=int, default=32, help="recurrences for prefill and decode")
    ap.add_argument("-p", "--prompt", type=int, default=256)
    ap.add_argument("--decode-prompt", type=int, default=64)
    ap.add_argument("-g", "--gen", type=int, default=32)
    ap.add_argument("--train-batch", type=int, default=4)
    ap.add_argument("--train-len", type=int, default=256)
    ap.add_argument("--train-n", type=int, default=6)
    ap.add_argument("--train-k", type=int, default=2)
    ap.add_argument("--train-precision", default="f32",
                    help="comma list of f32, bf16 (bf16: huginn train --precision bf16 vs PyTorch bf16 autocast)")
    ap.add_argument("-n", "--reps", type=int, default=3)
    ap.add_argument("--no-peak", action="store_true", help="huginn bench --no-peak")
    ap.add_argument("--json", help="also write all figures to this JSON file")
    args = ap.parse_args()

    if args.check_golden:  # numbers, not speed: any BLAS will do, but say which
        torch.set_num_threads(1)
        blas_report(1)
        ok = check_golden(args.golden)
        sys.exit(0 if ok else 1)

    tests = [t for t in args.tests.split(",") if t]
    dtypes = [d for d in args.dtypes.split(",") if d]
    if not os.access(args.huginn, os.X_OK):
        sys.exit(f"compare_pytorch: {args.huginn} is not an executable (build it or pass --huginn)")
    blas_threads = set_threads(args.threads)
    blas = blas_report(args.threads)
    if blas["reference_blas"]:
        refuse_reference_blas(blas)
    model_dir = prepare_model(args)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), OpenBLAS threads {blas_threads}, "
          f"model {model_dir}", file=sys.stderr)
    cfg, w = load_model_dir(model_dir)
    m = Huginn(cfg, w)

    ours = {}
    for d in dtypes:
        infer = [t for t in tests if t != "train"]
        if infer:
            for res in huginn_bench(args, model_dir, d, infer)["results"]:
                ours[(res["test"], d)] = res
    precisions = [p for p in args.train_precision.split(",") if p]
    if any(p not in ("f32", "bf16") for p in precisions):
        sys.exit(f"compare_pytorch: --train-precision takes f32 and/or bf16, got '{args.train_precision}'")
    if "train" in tests:
        for res, p in zip(huginn_bench(args, model_dir, "f32", ["train"])["results"], precisions):
            ours[("train" if p == "f32" else "train-" + p, "f32")] = res

    theirs = {}
    if "prefill" in tests:
        print(f"[torch] prefill {args.prompt} tokens r={args.r}", file=sys.stderr)
        theirs["prefill"] = report_torch("prefill", torch_prefill(m, args.prompt, args.r, args.reps))
    if "decode" in tests:
        print(f"[torch] decode r={args.r}", file=sys.stderr)
        theirs["decode"] = report_torch("decode", torch_decode(m, args.decode_prompt, args.gen, args.r, args.reps))
    for p in precisions if "train" in tests else []:
        key = "train" if p == "f32" else "train-" + p
        print(f"[torch] train step ({p})", file=sys.stderr)
        theirs[key] = report_torch(key, torch_train(m, args.train_batch, args.train_len, args.train_n,
                                                    args.train_k, args.reps, bf16=(p == "bf16")))

    rows = []
    for (test, d), res in ours.items():
        tm, tsd = stats(theirs[test])
        rows.append(dict(test=test, huginn_dtype=d, r=res["r"], huginn_tok_s=res["tok_s_mean"],
                         huginn_sd=res["tok_s_sd"], torch_tok_s=tm, torch_sd=tsd,
                         ratio=res["tok_s_mean"] / tm, huginn_pct_flop_peak=res.get("pct_flop_peak"),
                         huginn_pct_bw_peak=res.get("pct_bw_peak")))
    blas_name = ", ".join(os.path.basename(p) for p in blas["libraries"]) or "built in"
    print(f"\nmodel {cfg.get('name', model_dir)}, {args.threads} thread(s), {args.reps} reps; "
          f"PyTorch {torch.__version__} eager f32 (train-bf16: bf16 autocast), BLAS {blas_name} ({blas['gemm_gflops']:.1f} GFLOP/s GEMM)\n")
    print("| test | huginn weights | huginn tok/s | PyTorch tok/s | huginn / PyTorch |")
    print("|---|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['test']} r={row['r']} | {row['huginn_dtype']} | {row['huginn_tok_s']:.2f} ± {row['huginn_sd']:.2f} "
              f"| {row['torch_tok_s']:.2f} ± {row['torch_sd']:.2f} | {row['ratio']:.2f}x |")
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump(dict(args=vars(args), torch=torch.__version__, blas=blas, rows=rows, torch_tok_s=theirs), f, indent=1)
        os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
    main()
