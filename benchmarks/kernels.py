"""Kernel benchmarks: our Triton (and CUDA) kernels against torch eager, torch.compile, Liger-Kernel and apex; our
flash attention against SDPA (each backend forced), FlexAttention and flash-attn.

    python -m benchmarks.kernels [--op rms_norm rotary cross_entropy fused_linear_cross_entropy attention]
                                 [--dtype bf16]
                                 [--quick] [--out results/kernels] [--dry-run]

Prints a markdown report (environment header with the measured copy bandwidth and bf16 matmul rate, one row
per implementation per case, the issue's targets with PASS/MISS computed from the rows, and the model-bytes
formula of each op) and writes kernels.md / kernels.csv / kernels.json under --out. Needs a CUDA GPU; on a
machine without one it says so and exits 0. --dry-run lists the cases, implementations and formulas without
measuring anything (works anywhere).

--quick is the set `make gpu-check` measures within its time budget: one shape per op (CE and fused linear CE
at Seed-Coder's vocabulary), attention forward and backward at two dense lengths, shorter timing runs, and no
peers that compile per case (torch.compile, FlexAttention: tens of seconds each).

Each op has one function that yields its Cases: the shapes, the model traffic (the bytes the op must read and
write at minimum, from which GB/s and % of copy bandwidth follow) and the implementations (name + a factory
that allocates inputs and returns the callable to time). "torch eager" is the op's torch reference from
seedcoder.kernels (fp32 math), "torch.compile" is that reference compiled; for fused linear cross-entropy
the eager baseline is what a model does without fusion: a bf16 matmul to full logits, then F.cross_entropy
on their fp32 upcast.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
from collections.abc import Iterator

import torch

from benchmarks.common import (
    Case,
    Impl,
    Skip,
    Traffic,
    collect_environment,
    compiled,
    eprint,
    measure_case,
    module_available,
    need_gpu_message,
    optional_import,
    prepare,
)
from benchmarks.report import Target, build_report, render_markdown, write_report
from seedcoder.kernels import autotune_table

OPS = ("rms_norm", "rotary", "cross_entropy", "fused_linear_cross_entropy", "attention")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
EPS = 1e-6
THETA = 500_000.0  # Seed-Coder's rotary base
VOCAB = 155_136  # Seed-Coder's vocabulary
IGNORE_INDEX = -100

# Shapes (from the targets) and device, read when cases are built: tests shrink them to run every
# implementation once on the CPU.
DEVICE = "cuda"
RMS_NORM_ROWS, RMS_NORM_HIDDEN, RMS_NORM_HIDDEN_QUICK = 16384, (2048, 4096, 8192), (4096,)
ROTARY_SHAPE = (4, 4096, 32, 8, 128)  # batch, seq, q heads, kv heads, head dim: Llama-3-8B-like, 16K tokens
CE_ROWS, CE_ROWS_QUICK = (4096, 8192), (4096,)
FLCE_ROWS, FLCE_HIDDEN = 16384, 4096
# Attention: Seed-Coder-8B heads (32 query / 8 kv heads of 128), 16K tokens per case: B = 16K / S rows of S.
ATTN_HEADS, ATTN_KV_HEADS, ATTN_HEAD_DIM, ATTN_TOKENS = 32, 8, 128, 16384
ATTN_SEQLENS, ATTN_SEQLENS_QUICK = (1024, 2048, 4096, 8192, 16384), (2048, 8192)
ATTN_DOC_RANGE, ATTN_VARLEN_ROWS = (512, 8192), 2  # varlen: documents of 0.5K-8K tokens packed into 16K rows
# The sm_90 path's grid (full set): at the two longest dense lengths (8K, 16K), D64 causal and not, D128 not causal
# (D128 causal is the rows above); the same GQA 4:1 heads.
ATTN_GRID_HEAD_DIMS = (64, 128)

# The goals (H100, bf16). Checked on every 'ours' row of the op/mode; PASS/MISS comes from the rows.
TARGETS = [
    Target("RMSNorm fwd ≥ 85% of copy BW", "rms_norm", "fwd", "pct_copy_bw", ">=", 85.0),
    Target("RMSNorm bwd (dx + dW) ≥ 75% of copy BW", "rms_norm", "bwd", "pct_copy_bw", ">=", 75.0),
    Target("RMSNorm fwd ≥ 1.5× torch.compile", "rms_norm", "fwd", "speedup_vs", ">=", 1.5, peer="torch.compile"),
    Target("RMSNorm bwd ≥ 1.5× torch.compile", "rms_norm", "bwd", "speedup_vs", ">=", 1.5, peer="torch.compile"),
    Target("rotary fwd ≥ 80% of copy BW", "rotary", "fwd", "pct_copy_bw", ">=", 80.0),
    Target("rotary bwd ≥ 80% of copy BW", "rotary", "bwd", "pct_copy_bw", ">=", 80.0),
    Target("CE fwd+bwd ≥ 80% of copy BW", "cross_entropy", "fwd+bwd", "pct_copy_bw", ">=", 80.0),
    Target("CE fwd+bwd ≥ 1.8× Liger", "cross_entropy", "fwd+bwd", "speedup_vs", ">=", 1.8, peer="liger"),
    Target("FLCE extra memory < 1 GB", "fused_linear_cross_entropy", "fwd+bwd", "extra_mem_gb", "<", 1.0),
    Target("FLCE time ≤ 1.1× eager matmul+CE", "fused_linear_cross_entropy", "fwd+bwd", "time_ratio_vs", "<=", 1.1,
           peer="torch eager"),
    Target("attention fwd ≥ 0.9× SDPA-cuDNN", "attention", "fwd", "speedup_vs", ">=", 0.9, peer="sdpa-cudnn"),
    Target("attention fwd ≥ 1.3× SDPA-flash", "attention", "fwd", "speedup_vs", ">=", 1.3, peer="sdpa-flash"),
    Target("attention bwd ≥ 0.8× SDPA-cuDNN", "attention", "bwd", "speedup_vs", ">=", 0.8, peer="sdpa-cudnn"),
    Target("attention varlen fwd+bwd within 5% of dense at equal FLOPs", "attention", "fwd+bwd", "tflops_vs_case", ">=",
           0.95, peer="dense-matched", shape="varlen"),
    Target("attention deterministic bwd ≤ 1.25× default", "attention", "bwd", "time_ratio_vs", "<=", 1.25,
           peer="seedcoder", impl="seedcoder-deterministic"),
    # On sm_90 'seedcoder' is the Hopper path (TMA, persistent, warp-specialised); seedcoder-sm80 the kernel it replaced.
    Target("attention fwd (sm_90 path) ≥ 1.0× our sm_80 kernel", "attention", "fwd", "speedup_vs", ">=", 1.0,
           peer="seedcoder-sm80"),
    Target("attention bwd (sm_90 dK/dV) ≥ 1.0× our sm_80 kernel", "attention", "bwd", "speedup_vs", ">=", 1.0,
           peer="seedcoder-sm80"),
    # The premise, measured rather than assumed: the unfused baseline needs > 10 GB.
    Target("(context) eager matmul+CE extra memory > 10 GB", "fused_linear_cross_entropy", "fwd+bwd", "extra_mem_gb", ">",
           10.0, impl="torch eager"),
]

NOTES = [
    "median / p20 / p80: triton.testing.do_bench(..., quantiles=[0.5, 0.2, 0.8]) (L2 flushed before each call; "
    "at least 20 timed calls per implementation).",
    "GB/s = model bytes / median time; % copy BW = GB/s / measured copy bandwidth. Model bytes are the minimum "
    "traffic (table below), so an implementation that re-reads its input shows < 100% even at full bandwidth.",
    "t / t(ours) = this implementation's median / the median of the first 'seedcoder' row of the case (> 1: ours is faster).",
    "peak Δ MB = torch.cuda.max_memory_allocated() during one call minus the memory allocated before it (outputs and "
    "gradients included). FLCE 'extra memory' = peak Δ minus dX and dW, which every implementation must return.",
    "fwd rows of rms_norm/rotary are training forwards (inputs require grad, so ours also writes rstd); "
    "cross_entropy fwd is a no-grad loss evaluation; fwd+bwd is loss + backward (ours writes dlogits in place).",
    "torch eager = the op's torch reference in seedcoder.kernels (fp32 math); torch.compile = that reference "
    "compiled (default mode); SKIP(reason) = the peer is not installed or failed (reason shown), never a number.",
    "attention TFLOP/s = FLOPs / median time, FLOPs = 4·Σ_docs S²·Hq·D (causal: halved), bwd = 2.5× that, fwd+bwd = "
    "3.5×. bf16, Hq 32 / Hkv 8 (GQA 4:1), causal and D 128 unless the shape says otherwise. 'varlen' packs "
    "documents of 0.5K-8K tokens into 16K rows (a row's last document is cut to fit); 'dense-matched' is the dense "
    "batch with the same tokens and FLOPs (S = Σ L² / Σ L). SDPA backends get the packed documents as a boolean "
    "block-diagonal causal mask (the flash backend takes no mask: SKIP); FlexAttention a compiled document-causal "
    "BlockMask. fwd+bwd times out.sum().backward().",
    "attention rows named '... D64', '... non-causal' are the sm_90 path's grid (full set): D64 causal and not, D128 "
    "not causal, at 8K and 16K. 'seedcoder' is what flash_attention dispatches to (on sm_90: the TMA / persistent / "
    "warp-specialised forward, the TMA dK/dV kernel); 'seedcoder-sm80' forces the sm_80 kernels "
    "(SEEDCODER_FLASH_HOPPER=0, in its forward and its backward), in the same run.",
]


# ------------------------------------------------------------------------------------------ RMSNorm
def rms_norm_cases(dtype: torch.dtype, quick: bool) -> Iterator[Case]:
    rows, e = RMS_NORM_ROWS, dtype.itemsize
    for hidden in RMS_NORM_HIDDEN_QUICK if quick else RMS_NORM_HIDDEN:
        nh = rows * hidden
        fwd = (Traffic().read("x", "N·H", nh, e).read("w", "H", hidden, e)
               .write("y", "N·H", nh, e).write("rstd", "N", rows, 4))
        bwd = (Traffic().read("x", "N·H", nh, e).read("dy", "N·H", nh, e).read("w", "H", hidden, e).read("rstd", "N", rows, 4)
               .write("dx", "N·H", nh, e).write("dw", "H", hidden, e))
        for mode, traffic in (("fwd", fwd), ("bwd", bwd)):
            yield Case("rms_norm", mode, f"{rows}x{hidden}", _name(dtype), traffic,
                       list(rms_norm_impls(mode, rows, hidden, dtype)))


def rms_norm_impls(mode: str, rows: int, hidden: int, dtype: torch.dtype) -> Iterator[Impl]:
    def inputs():
        x = torch.randn(rows, hidden, device=DEVICE, dtype=dtype, requires_grad=True)
        w = torch.empty(hidden, device=DEVICE, dtype=dtype).uniform_(0.5, 1.5).requires_grad_()
        return x, w

    def ours(backend):
        def make():
            rms_norm = optional_import("seedcoder.kernels.rms_norm", "rms_norm")
            return prepare(mode, lambda x, w: rms_norm(x, w, EPS, backend=backend), inputs())
        return make

    def eager():
        reference = optional_import("seedcoder.kernels.rms_norm", "rms_norm_reference")
        return prepare(mode, lambda x, w: reference(x, w, EPS), inputs())

    def torch_compile():
        reference = compiled(optional_import("seedcoder.kernels.rms_norm", "rms_norm_reference"))
        return prepare(mode, lambda x, w: reference(x, w, EPS), inputs())

    def liger():
        fn = optional_import("liger_kernel.ops.rms_norm", "LigerRMSNormFunction")
        # casting_mode "llama" is HF Llama's math; in_place=False so repeated backward calls keep dy intact
        return prepare(mode, lambda x, w: fn.apply(x, w, EPS, 0.0, "llama", False), inputs())

    def apex():
        fn = optional_import("apex.normalization.fused_layer_norm", "fused_rms_norm_affine")
        return prepare(mode, lambda x, w: fn(x, w, (hidden,), EPS), inputs())

    yield Impl("seedcoder", ours("triton"), ours=True)
    yield Impl("seedcoder-cuda", ours("cuda"), ours=True)
    yield Impl("torch eager", eager)
    yield Impl("torch.compile", torch_compile)
    yield Impl("liger", liger, module="liger_kernel")
    yield Impl("apex", apex, module="apex")


# ------------------------------------------------------------------------------------------ rotary
def rotary_cases(dtype: torch.dtype, quick: bool) -> Iterator[Case]:
    batch, seq, q_heads, kv_heads, head_dim = ROTARY_SHAPE
    e = dtype.itemsize
    nq, nk, tokens = batch * seq * q_heads * head_dim, batch * seq * kv_heads * head_dim, batch * seq
    fwd = (Traffic().read("q", "B·S·Hq·D", nq, e).read("k", "B·S·Hkv·D", nk, e).read("pos", "B·S", tokens, 8)
           .write("q_out", "B·S·Hq·D", nq, e).write("k_out", "B·S·Hkv·D", nk, e))
    bwd = (Traffic().read("dq_out", "B·S·Hq·D", nq, e).read("dk_out", "B·S·Hkv·D", nk, e).read("pos", "B·S", tokens, 8)
           .write("dq", "B·S·Hq·D", nq, e).write("dk", "B·S·Hkv·D", nk, e))
    shape = f"B{batch} S{seq} H{q_heads}/{kv_heads} D{head_dim}"
    for mode, traffic in (("fwd", fwd), ("bwd", bwd)):
        yield Case("rotary", mode, shape, _name(dtype), traffic,
                   list(rotary_impls(mode, batch, seq, q_heads, kv_heads, head_dim, dtype)))


def rotary_tables(position_ids: torch.Tensor, head_dim: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """HF LlamaRotaryEmbedding's cos/sin tables, (B, S, D) in the activation dtype (not timed)."""
    inv_freq = 1.0 / (THETA ** (torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32) / head_dim))
    freqs = position_ids[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotary_impls(mode, batch, seq, q_heads, kv_heads, head_dim, dtype) -> Iterator[Impl]:
    def inputs():
        # (B, S, H, D) storage, as the q/k projections produce it; HF-layout peers get the (B, H, S, D) view.
        q = torch.randn(batch, seq, q_heads, head_dim, device=DEVICE, dtype=dtype, requires_grad=True)
        k = torch.randn(batch, seq, kv_heads, head_dim, device=DEVICE, dtype=dtype, requires_grad=True)
        position_ids = torch.arange(seq, device=DEVICE).expand(batch, seq).contiguous()
        return q, k, position_ids

    def ours(backend):
        def make():
            apply_rotary = optional_import("seedcoder.kernels.rotary", "apply_rotary")
            return prepare(mode, lambda q, k, pos: apply_rotary(q, k, pos, theta=THETA, backend=backend), inputs())
        return make

    def ours_tables():
        apply_rotary = optional_import("seedcoder.kernels.rotary", "apply_rotary")
        q, k, pos = inputs()
        cos, sin = rotary_tables(pos, head_dim, dtype)
        return prepare(mode, lambda q, k: apply_rotary(q, k, cos=cos, sin=sin), (q, k))

    def eager():
        reference = optional_import("seedcoder.kernels.rotary", "rotary_reference")
        return prepare(mode, lambda q, k, pos: reference(q, k, pos, theta=THETA), inputs())

    def torch_compile():
        reference = compiled(optional_import("seedcoder.kernels.rotary", "rotary_reference"))
        return prepare(mode, lambda q, k, pos: reference(q, k, pos, theta=THETA), inputs())

    def liger():
        fn = optional_import("liger_kernel.ops.rope", "LigerRopeFunction")
        q, k, pos = inputs()
        cos, sin = rotary_tables(pos, head_dim, dtype)
        return prepare(mode, lambda q, k: fn.apply(q.transpose(1, 2), k.transpose(1, 2), cos, sin), (q, k))

    yield Impl("seedcoder", ours("triton"), ours=True)
    yield Impl("seedcoder-cuda", ours("cuda"), ours=True)
    yield Impl("seedcoder (cos/sin tables)", ours_tables, ours=True)
    yield Impl("torch eager", eager)
    yield Impl("torch.compile", torch_compile)
    yield Impl("liger", liger, module="liger_kernel")


# ------------------------------------------------------------------------------------------ cross-entropy
def cross_entropy_cases(dtype: torch.dtype, quick: bool) -> Iterator[Case]:
    e = dtype.itemsize
    for rows in CE_ROWS_QUICK if quick else CE_ROWS:
        nv = rows * VOCAB
        fwd = Traffic().read("logits", "N·V", nv, e).read("labels", "N", rows, 8)
        fwd_bwd = Traffic().read("logits", "N·V", nv, e).read("labels", "N", rows, 8).write("dlogits", "N·V", nv, e)
        for mode, traffic in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
            yield Case("cross_entropy", mode, f"{rows}x{VOCAB}", _name(dtype), traffic,
                       list(cross_entropy_impls(mode, rows, VOCAB, dtype)))


def ce_labels(rows: int, vocab: int) -> torch.Tensor:
    labels = torch.randint(0, vocab, (rows,), device=DEVICE)
    labels[::16] = IGNORE_INDEX  # some padding / prompt tokens, as in real batches
    return labels


def cross_entropy_impls(mode: str, rows: int, vocab: int, dtype: torch.dtype) -> Iterator[Impl]:
    def inputs():
        logits = torch.randn(rows, vocab, device=DEVICE, dtype=dtype).mul_(2.0).requires_grad_(mode != "fwd")
        return logits, ce_labels(rows, vocab)

    def make(module, name, call):
        def factory():
            fn = optional_import(module, name)
            return prepare(mode, lambda logits, labels: call(fn, logits, labels), inputs())
        return factory

    def torch_compile():
        reference = compiled(optional_import("seedcoder.kernels.cross_entropy", "cross_entropy_reference"))
        return prepare(mode, lambda logits, labels: reference(logits, labels, ignore_index=IGNORE_INDEX), inputs())

    yield Impl("seedcoder", make("seedcoder.kernels.cross_entropy", "cross_entropy",
                                 lambda fn, x, y: fn(x, y, ignore_index=IGNORE_INDEX)), ours=True)
    yield Impl("torch eager", make("seedcoder.kernels.cross_entropy", "cross_entropy_reference",
                                   lambda fn, x, y: fn(x, y, ignore_index=IGNORE_INDEX)))
    yield Impl("torch.compile", torch_compile)
    yield Impl("liger", make("liger_kernel.transformers.functional", "liger_cross_entropy",
                             lambda fn, x, y: fn(x, y, ignore_index=IGNORE_INDEX)), module="liger_kernel")


# ------------------------------------------------------------------------------------------ fused linear CE
def fused_linear_cross_entropy_cases(dtype: torch.dtype, quick: bool) -> Iterator[Case]:
    rows, hidden, vocab, e = FLCE_ROWS, FLCE_HIDDEN, VOCAB, dtype.itemsize
    traffic = (Traffic().read("hidden", "N·H", rows * hidden, e).read("weight", "V·H", vocab * hidden, e)
               .read("labels", "N", rows, 8)
               .write("dhidden", "N·H", rows * hidden, e).write("dweight", "V·H", vocab * hidden, e))
    yield Case("fused_linear_cross_entropy", "fwd+bwd", f"N{rows} H{hidden} V{vocab}", _name(dtype), traffic,
               list(fused_linear_cross_entropy_impls(rows, hidden, vocab, dtype)),
               flops=3 * 2 * rows * hidden * vocab,  # logits, dhidden and dweight matmuls
               required_output_bytes=(rows * hidden + vocab * hidden) * e)


def eager_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The unfused baseline (HF's causal-LM loss): full logits in the model dtype, CE on their fp32 upcast."""
    logits = hidden @ weight.t()
    return torch.nn.functional.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)


def fused_linear_cross_entropy_impls(rows: int, hidden: int, vocab: int, dtype: torch.dtype) -> Iterator[Impl]:
    mode = "fwd+bwd"

    def inputs():
        h = torch.randn(rows, hidden, device=DEVICE, dtype=dtype, requires_grad=True)
        w = (torch.randn(vocab, hidden, device=DEVICE, dtype=dtype) * hidden**-0.5).requires_grad_()
        return h, w, ce_labels(rows, vocab)

    def ours():
        fn = optional_import("seedcoder.kernels.fused_linear_cross_entropy", "fused_linear_cross_entropy")
        return prepare(mode, lambda h, w, y: fn(h, w, y, ignore_index=IGNORE_INDEX), inputs())

    def torch_compile():
        fn = compiled(eager_linear_cross_entropy)
        return prepare(mode, fn, inputs())

    def liger():
        fn = optional_import("liger_kernel.transformers.functional", "liger_fused_linear_cross_entropy")
        return prepare(mode, lambda h, w, y: fn(h, w, y, ignore_index=IGNORE_INDEX), inputs())

    yield Impl("seedcoder", ours, ours=True)
    yield Impl("torch eager", lambda: prepare(mode, eager_linear_cross_entropy, inputs()))
    yield Impl("torch.compile", torch_compile)
    yield Impl("liger", liger, module="liger_kernel")


# ------------------------------------------------------------------------------------------ attention
HOPPER_SWITCH_ENV = "SEEDCODER_FLASH_HOPPER"  # seedcoder.kernels.flash_attention_hopper.SWITCH_ENV ("0": sm_80 path)


class EnvSwitch:
    """os.environ[name] = value between enter() and exit() (the old value restored), reusable: a switch the callee
    reads per call, such as SEEDCODER_FLASH_HOPPER."""

    def __init__(self, name: str, value: str):
        self.name, self.value, self.old = name, value, None

    def enter(self) -> None:
        self.old = os.environ.get(self.name)
        os.environ[self.name] = self.value

    def exit(self) -> None:
        if self.old is None:
            os.environ.pop(self.name, None)
        else:
            os.environ[self.name] = self.old

    @contextlib.contextmanager
    def scope(self):
        self.enter()
        try:
            yield
        finally:
            self.exit()


class _ActionInBackward(torch.autograd.Function):
    """Identity on tensors whose backward runs action() first: placed after an op it acts before the op's backward,
    placed before it, after (the bwd mode times torch.autograd.backward alone, outside any `with`)."""

    @staticmethod
    def forward(ctx, action, *tensors):
        ctx.action = action
        return tuple(t.view_as(t) for t in tensors)

    @staticmethod
    def backward(ctx, *grads):
        ctx.action()
        return (None, *grads)


def switched(f, switch: EnvSwitch):
    """f with the switch on in its forward and in its backward."""
    def g(*tensors):
        tensors = _ActionInBackward.apply(switch.exit, *tensors)
        with switch.scope():
            out = f(*tensors)
        return _ActionInBackward.apply(switch.enter, out)[0]
    return g


def attention_flops(doc_lengths: list[int], heads: int, head_dim: int, causal: bool = True) -> int:
    """Forward FLOPs: QK^T and PV, 2·S²·D each per head; causal halves them."""
    flops = 4 * sum(n * n for n in doc_lengths) * heads * head_dim
    return flops // 2 if causal else flops


ATTN_MODE_FLOPS = {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5}


def varlen_rows(rows: int, row_len: int, doc_range: tuple[int, int], seed: int = 0) -> list[list[int]]:
    """Document lengths packed into rows, as the loader packs them: a row's last document is cut to fit."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(rows):
        docs, left = [], row_len
        while left > 0:
            n = min(int(torch.randint(doc_range[0], doc_range[1] + 1, (1,), generator=g)), left)
            docs.append(n)
            left -= n
        out.append(docs)
    return out


def attention_cases(dtype: torch.dtype, quick: bool) -> Iterator[Case]:
    """Dense rows at each length (D128, causal); the full set adds packed documents (varlen), the dense batch of
    equal FLOPs, the fwd+bwd mode, and the sm_90 path's grid (D64 causal and not, D128 not causal, fwd and bwd at the
    two longest lengths)."""
    h, hkv, e = ATTN_HEADS, ATTN_KV_HEADS, dtype.itemsize
    layouts = []  # (shape label, rows, head dim, causal, modes)
    modes = [m for m in ATTN_MODE_FLOPS if not quick or m != "fwd+bwd"]
    for s in ATTN_SEQLENS_QUICK if quick else ATTN_SEQLENS:
        layouts.append((f"dense S{s}", [[s]] * max(1, ATTN_TOKENS // s), ATTN_HEAD_DIM, True, modes))
    if not quick:
        row_len = max(r[0] for _, rows, *_ in layouts for r in rows)
        packed = varlen_rows(ATTN_VARLEN_ROWS, row_len, ATTN_DOC_RANGE)
        lengths = [n for row in packed for n in row]
        s_eq = max(64, round(sum(n * n for n in lengths) / sum(lengths) / 64) * 64)
        layouts += [("varlen", packed, ATTN_HEAD_DIM, True, modes),
                    ("dense-matched", [[s_eq]] * max(1, round(sum(lengths) / s_eq)), ATTN_HEAD_DIM, True, modes)]
        for s, d, causal in itertools.product(sorted(set(ATTN_SEQLENS))[-2:], ATTN_GRID_HEAD_DIMS, (True, False)):
            if (d, causal) != (ATTN_HEAD_DIM, True):  # that one is the dense row above
                label = f"dense S{s} D{d}" + ("" if causal else " non-causal")
                layouts.append((label, [[s]] * max(1, ATTN_TOKENS // s), d, causal, ["fwd", "bwd"]))
    for shape, rows, d, causal, case_modes in layouts:
        docs = [n for row in rows for n in row]
        tokens = sum(docs)
        traffic = (Traffic().read("q", "T·Hq·D", tokens * h * d, e).read("k,v", "2·T·Hkv·D", 2 * tokens * hkv * d, e)
                   .write("out", "T·Hq·D", tokens * h * d, e))
        fwd_flops = attention_flops(docs, h, d, causal)
        for mode in case_modes:
            yield Case("attention", mode, shape, _name(dtype), traffic,
                       list(attention_impls(mode, rows, dtype, head_dim=d, causal=causal)),
                       flops=int(fwd_flops * ATTN_MODE_FLOPS[mode]))


def attention_impls(mode: str, rows: list[list[int]], dtype: torch.dtype, *, head_dim: int | None = None,
                    causal: bool = True) -> Iterator[Impl]:
    h, hkv, d = ATTN_HEADS, ATTN_KV_HEADS, head_dim or ATTN_HEAD_DIM
    n_rows, row_len = len(rows), sum(rows[0])
    one_doc_per_row = all(len(r) == 1 for r in rows)
    bounds = [0]
    for n in (n for row in rows for n in row):
        bounds.append(bounds[-1] + n)

    def inputs():
        """q (B, S, Hq, D), k and v (B, S, Hkv, D): the loader's rows; other layouts are views of them."""
        make = lambda heads: torch.randn(n_rows, row_len, heads, d, device=DEVICE, dtype=dtype, requires_grad=True)
        return make(h), make(hkv), make(hkv)

    def scalar(fn):
        return (lambda *a: fn(*a).sum()) if mode == "fwd+bwd" else fn

    def ours(deterministic, hopper_switch=None):
        """hopper_switch "0": the sm_80 forward even on sm_90 (SEEDCODER_FLASH_HOPPER, set around each call)."""
        def make():
            attn = optional_import("seedcoder.kernels.flash_attention", "flash_attention")
            cu = torch.tensor(bounds, dtype=torch.int32, device=DEVICE)
            max_len = max(n for row in rows for n in row)

            def call(q, k, v):
                if one_doc_per_row:
                    return attn(q, k, v, causal=causal, deterministic=deterministic)
                return attn(q.view(-1, h, d), k.view(-1, hkv, d), v.view(-1, hkv, d), causal=causal, cu_seqlens=cu,
                            max_seqlen=max_len, deterministic=deterministic)

            f = call if hopper_switch is None else switched(call, EnvSwitch(HOPPER_SWITCH_ENV, hopper_switch))
            return prepare(mode, scalar(f), inputs())
        return make

    def document_mask():
        doc = torch.repeat_interleave(torch.arange(len(bounds) - 1, device=DEVICE),
                                      torch.tensor([n for row in rows for n in row], device=DEVICE)).view(n_rows, row_len)
        keep = torch.ones(row_len, row_len, dtype=torch.bool, device=DEVICE)
        keep = keep.tril() if causal else keep
        return ((doc[:, :, None] == doc[:, None, :]) & keep).unsqueeze(1)

    def sdpa(backend_name):
        def make():
            from torch.nn.attention import SDPBackend, sdpa_kernel

            backend = getattr(SDPBackend, backend_name)
            mask = None if one_doc_per_row else document_mask()
            if mask is not None and backend == SDPBackend.FLASH_ATTENTION:
                raise Skip("SDPA's flash backend takes no attention mask: packed documents cannot be expressed")

            def f(q, k, v):
                with sdpa_kernel(backend):
                    out = torch.nn.functional.scaled_dot_product_attention(
                        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask,
                        is_causal=mask is None and causal, enable_gqa=True)
                return out.transpose(1, 2)
            return prepare(mode, scalar(f), inputs())
        return make

    def flex():
        flex_attention = optional_import("torch.nn.attention.flex_attention", "flex_attention")
        create_block_mask = optional_import("torch.nn.attention.flex_attention", "create_block_mask")
        doc = torch.repeat_interleave(torch.arange(len(bounds) - 1, device=DEVICE),
                                      torch.tensor([n for row in rows for n in row], device=DEVICE)).view(n_rows, row_len)

        def document_causal(b, _h, q_idx, kv_idx):
            same_doc = doc[b, q_idx] == doc[b, kv_idx]
            return (q_idx >= kv_idx) & same_doc if causal else same_doc

        block_mask = create_block_mask(document_causal, n_rows, None, row_len, row_len, device=DEVICE)
        fn = compiled(flex_attention) if str(DEVICE).startswith("cuda") else flex_attention

        def f(q, k, v):
            out = fn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=block_mask, enable_gqa=True)
            return out.transpose(1, 2)
        return prepare(mode, scalar(f), inputs())

    def flash_attn():
        varlen = optional_import("flash_attn", "flash_attn_varlen_func")
        cu = torch.tensor(bounds, dtype=torch.int32, device=DEVICE)
        max_len = max(n for row in rows for n in row)

        def f(q, k, v):
            return varlen(q.view(-1, h, d), k.view(-1, hkv, d), v.view(-1, hkv, d), cu, cu, max_len, max_len,
                          causal=causal)
        return prepare(mode, scalar(f), inputs())

    yield Impl("seedcoder", ours(False), ours=True)
    if mode != "fwd":
        yield Impl("seedcoder-deterministic", ours(True), ours=True)
    yield Impl("seedcoder-sm80", ours(False, hopper_switch="0"))
    yield Impl("sdpa-cudnn", sdpa("CUDNN_ATTENTION"))
    yield Impl("sdpa-flash", sdpa("FLASH_ATTENTION"))
    yield Impl("sdpa-efficient", sdpa("EFFICIENT_ATTENTION"))
    yield Impl("flex-attention", flex)
    yield Impl("flash-attn", flash_attn, module="flash_attn")


CASES = {
    "rms_norm": rms_norm_cases,
    "rotary": rotary_cases,
    "cross_entropy": cross_entropy_cases,
    "fused_linear_cross_entropy": fused_linear_cross_entropy_cases,
    "attention": attention_cases,
}


def _name(dtype: torch.dtype) -> str:
    return next(k for k, v in DTYPES.items() if v == dtype)


COMPILING_PEERS = ("torch.compile", "flex-attention")  # compile per case (tens of seconds each): not in --quick


def build_cases(ops, dtype: torch.dtype, quick: bool) -> list[Case]:
    """Cases only describe work: building them allocates nothing (the impl factories allocate when run)."""
    cases = [case for op in ops for case in CASES[op](dtype, quick)]
    if quick:
        for case in cases:
            case.impls = [impl for impl in case.impls if impl.name not in COMPILING_PEERS]
    return cases


def dry_run_text(cases: list[Case]) -> str:
    lines = ["benchmarks.kernels --dry-run: what a run would measure (nothing is measured here).", ""]
    for case in cases:
        lines.append(f"{case.label}: model bytes {case.traffic.total / 1e6:.1f} MB = {case.traffic.formula}"
                     + (f"; {case.flops / 1e12:.2f} TFLOP" if case.flops else ""))
        for impl in case.impls:
            status = "" if impl.module is None or module_available(impl.module) else f"  (SKIP: {impl.module} not installed)"
            lines.append(f"    {impl.name}{status}")
    lines += ["", "targets:"] + [f"    {t.description} [{t.op} {t.mode}, needs {t.needs()}]" for t in TARGETS]
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kernels", description=__doc__.split("\n\n")[0])
    parser.add_argument("--op", nargs="+", choices=OPS, default=list(OPS), help="ops to benchmark (default: all)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--quick", action="store_true",
                        help="the gpu-check set: one shape per op, attention fwd/bwd at 2 lengths, no compiling peers, "
                             "shorter timing runs")
    parser.add_argument("--out", default=os.path.join("results", "kernels"), help="folder for kernels.{md,csv,json}")
    parser.add_argument("--dry-run", action="store_true", help="list cases, implementations and formulas; measure nothing")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cases = build_cases(args.op, DTYPES[args.dtype], args.quick)
    if args.dry_run:
        print(dry_run_text(cases))
        return 0
    if not torch.cuda.is_available():
        print(need_gpu_message("benchmarks.kernels"))
        return 0
    warmup_ms, rep_ms = (10, 40) if args.quick else (25, 100)
    eprint("measuring the copy bandwidth and the bf16 matmul rate ...")
    env = collect_environment(dtype=args.dtype, quick=args.quick, timing=f"do_bench warmup={warmup_ms} ms rep={rep_ms} ms")
    results = {}
    for case in cases:
        results[case.label] = measure_case(case, warmup_ms=warmup_ms, rep_ms=rep_ms, log=sys.stderr)
    report = build_report("seedcoder kernel benchmarks", cases, results, env, TARGETS, notes=NOTES)
    print(render_markdown(report))
    paths = write_report(report, args.out, "kernels")
    tuned = os.path.join(args.out, "autotune.json")  # every autotuned key this run met: the GPU's table
    autotune_table.write_table(autotune_table.dump(torch.cuda.get_device_name()), tuned)
    eprint("wrote " + ", ".join([*paths.values(), tuned]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
