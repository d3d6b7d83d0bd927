"""Flash attention (FlashAttention-2 style) in Triton: causal or not, grouped-query, packed variable-length documents.

    out = flash_attention(q, k, v, causal=True, cu_seqlens=cu, max_seqlen=S_max)      # q (T, Hq, D) packed
    out = flash_attention(q, k, v)                                                      # q (B, S, Hq, D)
    out, lse = flash_attention(q, k, v, return_lse=True)

q has Hq heads, k and v Hkv heads with Hq % Hkv == 0 (query head h reads kv head h // (Hq // Hkv); K/V are
never repeated in memory). Packed input: T tokens of concatenated documents with int32 boundaries cu_seqlens
(docs + 1,), rising from 0 to T; a token attends only inside its own document (and, when causal, to earlier
tokens). A (B, S, ...) batch is the packed case with B documents of length S. D is any size up to 256 (the
tile is the next power of two; tuned for 64 and 128). bf16/fp16 inputs (fp32 too: exact-fp32 dots, slow, for
checks), fp32 accumulation; the output has q's dtype; lse (natural log, fp32) is (Hq, T) packed, (B, Hq, S)
batched, as in flash-attn.

Forward, one program per (query block, head), documents flattened into the first grid axis: online softmax in
base 2 (scores pre-multiplied by scale·log2 e, so exp2 replaces exp), key blocks wholly visible run without any
mask, only the diagonal block (causal) or the last partial block (not causal) is masked. Blocks never mix
documents: a program's keys come from its own document, rows past the document end are loaded as zeros and
never stored. Query blocks are launched longest-first (causal work grows with the block index).

Backward (recomputes P from the saved lse, no S×S matrix in memory):
  1. preprocess: delta = rowsum(dO ∘ O) per (head, token), fp32;
  2. dK/dV: one program per (key block, kv head) loops over the query blocks of its document and over the
     Hq/Hkv query heads of its group, so the grouped-query reduction happens in registers, without atomics;
  3. dQ: default: the dK/dV program also adds ds·K into an fp32 dQ buffer with atomics (5 matmuls per block
     pair); deterministic=True: a separate dQ kernel, one program per (query block, head) (7 matmuls, no
     atomics, bitwise reproducible).

Dispatch as for every op (seedcoder.kernels._common): CUDA tensors launch the kernels (autotuned per GPU
generation: sm_90 and sm_80 configuration lists); CPU tensors use the fp32 torch reference (forward) and its
closed-form gradient (backward), or the kernels in Triton's interpreter under TRITON_INTERPRET=1 (small fixed
tiles). Either runs inside the torch custom ops seedcoder::flash_attn_fwd / flash_attn_bwd, whose backward is
registered, so torch.compile(fullgraph=True) traces callers without graph breaks. Nothing syncs with the host,
except that max_seqlen is computed from cu_seqlens when it is not given (the loader gives it).

Hopper (capability 9.x): the forward goes to seedcoder.kernels.flash_attention_hopper (TMA descriptor loads
of Q/K/V, a persistent longest-first grid, a warp-specialised KV loop; the same out and lse) when it takes the
layout (head dim 64 or 128, heads contiguous in a token row, 16-byte aligned rows); SEEDCODER_FLASH_HOPPER=0
keeps the kernels here, =1 forces the Hopper forward (the interpreter too). The kernels here are the sm_80
path and the fallback: pointer loads pipelined with cp.async by num_stages, dots lowered to wgmma on sm_90
(both paths checked by the compile gate). On the same switch the backward's dK/dV kernel (atomic dQ or not) is
the Hopper module's (this schedule, TMA loads); the preprocess and the deterministic dQ kernel are this module's.
"""

from __future__ import annotations

import itertools
import math

import torch
import triton
import triton.language as tl

from . import _common, autotune_table, flash_attention_hopper
from ._common import CompileSpec, check_tensor, next_power_of_2, register_compile_spec

__all__ = ["flash_attention", "flash_attention_reference", "flash_attention_reference_backward"]

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
MAX_HEAD_DIM = 256
MAX_BWD_HEAD_DIM = 128  # the backward keeps dK, dV, K and V tiles on chip; 256-wide heads would spill
PREPROCESS_BLOCK_T = 64


# ================================================================================================ kernels
@triton.jit
def _fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, n0, seqlen, offs_m, offs_n, offs_d,
               d_ok, qk_scale_log2, CAUSAL: tl.constexpr, MASKED: tl.constexpr, DOT_PRECISION: tl.constexpr):
    cols = n0 + offs_n
    col_ok = cols < seqlen
    kt = tl.load(k_base + cols[None, :] * stride_kt + offs_d[:, None], mask=col_ok[None, :] & d_ok[:, None], other=0.0)
    qk = tl.dot(q, kt, input_precision=DOT_PRECISION) * qk_scale_log2
    if MASKED:
        visible = col_ok[None, :]
        if CAUSAL:
            visible = visible & (offs_m[:, None] >= cols[None, :])
        qk = tl.where(visible, qk, float("-inf"))
    # Every row sees at least one key in its first block, so m_new is finite and exp2 never sees -inf - -inf.
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    p = tl.exp2(qk - m_new[:, None])
    alpha = tl.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    v = tl.load(v_base + cols[:, None] * stride_vt + offs_d[None, :], mask=col_ok[:, None] & d_ok[None, :], other=0.0)
    acc = acc * alpha[:, None]
    acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)
    return acc, l_i, m_new


@triton.jit
def _attn_fwd_kernel(
    Q, K, V, O, LSE, CU_SEQLENS,  # noqa: E741 (O: the output, as in the paper)
    qk_scale_log2, max_seqlen, total_tokens,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    group, seq_bucket,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    n_m_blocks = tl.cdiv(max_seqlen, BLOCK_M)
    pid = tl.program_id(0)
    doc = pid // n_m_blocks
    m_block = n_m_blocks - 1 - pid % n_m_blocks  # longest-first
    head = tl.program_id(1)
    start = tl.load(CU_SEQLENS + doc)
    seqlen = tl.load(CU_SEQLENS + doc + 1) - start
    m0 = m_block * BLOCK_M
    if m0 >= seqlen:
        return
    start = start.to(tl.int64)
    kv_head = head // group
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    row_ok = offs_m < seqlen
    q_base = Q + start * stride_qt + head * stride_qh
    q = tl.load(q_base + offs_m[:, None] * stride_qt + offs_d[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    k_base = K + start * stride_kt + kv_head * stride_kh
    v_base = V + start * stride_vt + kv_head * stride_vh

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    if CAUSAL:
        hi = tl.minimum(m0 + BLOCK_M, seqlen)
        mask_lo = (m0 // BLOCK_N) * BLOCK_N  # key blocks before this one lie wholly below the diagonal
    else:
        hi = seqlen
        mask_lo = (seqlen // BLOCK_N) * BLOCK_N  # only the last, partial key block needs a mask
    for n0 in range(0, mask_lo, BLOCK_N):
        acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, n0, seqlen, offs_m, offs_n,
                                   offs_d, d_ok, qk_scale_log2, CAUSAL, False, DOT_PRECISION)
    for n0 in range(mask_lo, hi, BLOCK_N):
        acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, n0, seqlen, offs_m, offs_n,
                                   offs_d, d_ok, qk_scale_log2, CAUSAL, True, DOT_PRECISION)

    acc = acc / l_i[:, None]
    o_base = O + start * stride_ot + head * stride_oh
    tl.store(o_base + offs_m[:, None] * stride_ot + offs_d[None, :], acc.to(O.dtype.element_ty),
             mask=row_ok[:, None] & d_ok[None, :])
    lse = (m_i + tl.log2(l_i)) * 0.6931471805599453  # natural log, what callers expect
    tl.store(LSE + head.to(tl.int64) * total_tokens + start + offs_m, lse, mask=row_ok)


@triton.jit
def _attn_bwd_preprocess_kernel(O, DO, DELTA,  # noqa: E741
                                 total_tokens, stride_ot, stride_oh, stride_dot, stride_doh,
                                HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    head = tl.program_id(1)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (rows[:, None] < total_tokens) & (offs_d[None, :] < HEAD_DIM)
    rows64 = rows.to(tl.int64)
    o = tl.load(O + head * stride_oh + rows64[:, None] * stride_ot + offs_d[None, :], mask=mask, other=0.0)
    do = tl.load(DO + head * stride_doh + rows64[:, None] * stride_dot + offs_d[None, :], mask=mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + head.to(tl.int64) * total_tokens + rows, delta, mask=rows < total_tokens)


@triton.jit
def _bwd_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, dq_base, stride_qt, stride_dot, stride_dqt,
                    m0, seqlen, offs_n, offs_d, d_ok, qk_scale_log2,
                    CAUSAL: tl.constexpr, MASKED: tl.constexpr, ATOMIC_DQ: tl.constexpr, DOT_PRECISION: tl.constexpr,
                    BLOCK_M: tl.constexpr):
    rows = m0 + tl.arange(0, BLOCK_M)
    row_ok = rows < seqlen
    # Rows past the document end load as zeros (q, dO, lse, delta), which makes their P finite and their dS zero.
    qt = tl.load(q_base + rows[None, :] * stride_qt + offs_d[:, None], mask=row_ok[None, :] & d_ok[:, None], other=0.0)
    lse2 = tl.load(lse_base + rows, mask=row_ok, other=0.0) * 1.4426950408889634
    pt = tl.exp2(tl.dot(k, qt, input_precision=DOT_PRECISION) * qk_scale_log2 - lse2[None, :])
    if MASKED:
        visible = offs_n[:, None] < seqlen
        if CAUSAL:
            visible = visible & (rows[None, :] >= offs_n[:, None])
        pt = tl.where(visible, pt, 0.0)
    do = tl.load(do_base + rows[:, None] * stride_dot + offs_d[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    dv = tl.dot(pt.to(do.dtype), do, dv, input_precision=DOT_PRECISION)
    delta = tl.load(delta_base + rows, mask=row_ok, other=0.0)
    dpt = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
    dst = (pt * (dpt - delta[None, :])).to(qt.dtype)
    dk = tl.dot(dst, tl.trans(qt), dk, input_precision=DOT_PRECISION)
    if ATOMIC_DQ:
        dq = tl.dot(tl.trans(dst), k, input_precision=DOT_PRECISION)
        tl.atomic_add(dq_base + rows[:, None] * stride_dqt + offs_d[None, :], dq, mask=row_ok[:, None] & d_ok[None, :],
                      sem="relaxed")
    return dk, dv


@triton.jit
def _attn_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, DQ_ACC, CU_SEQLENS,
    qk_scale_log2, sm_scale, max_seqlen, total_tokens,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
    stride_dkt, stride_dkh, stride_dvt, stride_dvh, stride_dqt, stride_dqh,
    group, seq_bucket,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr, ATOMIC_DQ: tl.constexpr,
    DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    n_n_blocks = tl.cdiv(max_seqlen, BLOCK_N)
    pid = tl.program_id(0)
    doc = pid // n_n_blocks
    n0 = (pid % n_n_blocks) * BLOCK_N  # causal: early key blocks have the most work, and they launch first
    kv_head = tl.program_id(1)
    start = tl.load(CU_SEQLENS + doc)
    seqlen = tl.load(CU_SEQLENS + doc + 1) - start
    if n0 >= seqlen:
        return
    start = start.to(tl.int64)
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    kv_mask = (offs_n[:, None] < seqlen) & d_ok[None, :]
    k = tl.load(K + start * stride_kt + kv_head * stride_kh + offs_n[:, None] * stride_kt + offs_d[None, :],
                mask=kv_mask, other=0.0)
    v = tl.load(V + start * stride_vt + kv_head * stride_vh + offs_n[:, None] * stride_vt + offs_d[None, :],
                mask=kv_mask, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    if CAUSAL:
        lo = (n0 // BLOCK_M) * BLOCK_M  # the first query block that sees any of these keys
        unmasked_lo = tl.minimum(tl.cdiv(n0 + BLOCK_N, BLOCK_M) * BLOCK_M, seqlen)  # blocks that see them all
    else:
        lo = 0
        # A partial last key block masks its missing keys in every query block (exp2(-lse) of a zero key could
        # overflow); full key blocks need no mask at all.
        unmasked_lo = tl.where(n0 + BLOCK_N > seqlen, seqlen, 0)
    for g in range(group):
        head = kv_head * group + g
        q_base = Q + start * stride_qt + head * stride_qh
        do_base = DO + start * stride_dot + head * stride_doh
        dq_base = DQ_ACC + start * stride_dqt + head * stride_dqh
        lse_base = LSE + head.to(tl.int64) * total_tokens + start
        delta_base = DELTA + head.to(tl.int64) * total_tokens + start
        for m0 in range(lo, unmasked_lo, BLOCK_M):
            dk, dv = _bwd_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, dq_base, stride_qt,
                                     stride_dot, stride_dqt, m0, seqlen, offs_n, offs_d, d_ok, qk_scale_log2,
                                     CAUSAL, True, ATOMIC_DQ, DOT_PRECISION, BLOCK_M)
        for m0 in range(unmasked_lo, seqlen, BLOCK_M):
            dk, dv = _bwd_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, dq_base, stride_qt,
                                     stride_dot, stride_dqt, m0, seqlen, offs_n, offs_d, d_ok, qk_scale_log2,
                                     CAUSAL, False, ATOMIC_DQ, DOT_PRECISION, BLOCK_M)
    dk = dk * sm_scale
    tl.store(DK + start * stride_dkt + kv_head * stride_dkh + offs_n[:, None] * stride_dkt + offs_d[None, :],
             dk.to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + start * stride_dvt + kv_head * stride_dvh + offs_n[:, None] * stride_dvt + offs_d[None, :],
             dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _bwd_dq_inner(dq, q, do, lse2, delta, k_base, v_base, stride_kt, stride_vt, n0, seqlen, offs_m, offs_n, offs_d,
                  d_ok, qk_scale_log2, CAUSAL: tl.constexpr, MASKED: tl.constexpr, DOT_PRECISION: tl.constexpr):
    cols = n0 + offs_n
    col_ok = cols < seqlen
    kt = tl.load(k_base + cols[None, :] * stride_kt + offs_d[:, None], mask=col_ok[None, :] & d_ok[:, None], other=0.0)
    vt = tl.load(v_base + cols[None, :] * stride_vt + offs_d[:, None], mask=col_ok[None, :] & d_ok[:, None], other=0.0)
    p = tl.exp2(tl.dot(q, kt, input_precision=DOT_PRECISION) * qk_scale_log2 - lse2[:, None])
    if MASKED:
        visible = col_ok[None, :]
        if CAUSAL:
            visible = visible & (offs_m[:, None] >= cols[None, :])
        p = tl.where(visible, p, 0.0)
    dp = tl.dot(do, vt, input_precision=DOT_PRECISION)
    ds = (p * (dp - delta[:, None])).to(kt.dtype)
    return tl.dot(ds, tl.trans(kt), dq, input_precision=DOT_PRECISION)


@triton.jit
def _attn_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, CU_SEQLENS,
    qk_scale_log2, sm_scale, max_seqlen, total_tokens,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh, stride_dqt, stride_dqh,
    group, seq_bucket,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    n_m_blocks = tl.cdiv(max_seqlen, BLOCK_M)
    pid = tl.program_id(0)
    doc = pid // n_m_blocks
    m_block = n_m_blocks - 1 - pid % n_m_blocks
    head = tl.program_id(1)
    start = tl.load(CU_SEQLENS + doc)
    seqlen = tl.load(CU_SEQLENS + doc + 1) - start
    m0 = m_block * BLOCK_M
    if m0 >= seqlen:
        return
    start = start.to(tl.int64)
    kv_head = head // group
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    row_ok = offs_m < seqlen
    tile_mask = row_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + start * stride_qt + head * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :],
                mask=tile_mask, other=0.0)
    do = tl.load(DO + start * stride_dot + head * stride_doh + offs_m[:, None] * stride_dot + offs_d[None, :],
                 mask=tile_mask, other=0.0)
    lse2 = tl.load(LSE + head.to(tl.int64) * total_tokens + start + offs_m, mask=row_ok, other=0.0) * 1.4426950408889634
    delta = tl.load(DELTA + head.to(tl.int64) * total_tokens + start + offs_m, mask=row_ok, other=0.0)
    k_base = K + start * stride_kt + kv_head * stride_kh
    v_base = V + start * stride_vt + kv_head * stride_vh
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    if CAUSAL:
        hi = tl.minimum(m0 + BLOCK_M, seqlen)
        mask_lo = (m0 // BLOCK_N) * BLOCK_N
    else:
        hi = seqlen
        mask_lo = (seqlen // BLOCK_N) * BLOCK_N
    for n0 in range(0, mask_lo, BLOCK_N):
        dq = _bwd_dq_inner(dq, q, do, lse2, delta, k_base, v_base, stride_kt, stride_vt, n0, seqlen, offs_m, offs_n,
                           offs_d, d_ok, qk_scale_log2, CAUSAL, False, DOT_PRECISION)
    for n0 in range(mask_lo, hi, BLOCK_N):
        dq = _bwd_dq_inner(dq, q, do, lse2, delta, k_base, v_base, stride_kt, stride_vt, n0, seqlen, offs_m, offs_n,
                           offs_d, d_ok, qk_scale_log2, CAUSAL, True, DOT_PRECISION)
    dq = dq * sm_scale
    tl.store(DQ + start * stride_dqt + head * stride_dqh + offs_m[:, None] * stride_dqt + offs_d[None, :],
             dq.to(DQ.dtype.element_ty), mask=tile_mask)


# ============================================================================================ configurations
# (BLOCK_M, BLOCK_N, num_warps, num_stages) per kernel, per GPU generation, per head-dim class; the autotuner
# picks among them per (head dim, causal, sequence-length bucket). Every entry is built by the compile gate.
_SM90 = {
    "fwd": {64: [(128, 64, 4, 3), (128, 128, 8, 3), (128, 64, 4, 4)],
            128: [(128, 64, 8, 3), (128, 128, 8, 2), (64, 64, 4, 3)],
            256: [(64, 64, 4, 2), (128, 32, 8, 2)]},
    "dkdv": {64: [(32, 128, 4, 3), (64, 128, 8, 3), (64, 64, 4, 3)],
             128: [(32, 64, 4, 3), (64, 64, 4, 2), (32, 128, 8, 2)]},
    "dq": {64: [(128, 32, 4, 3), (128, 64, 8, 3), (64, 64, 4, 3)],
           128: [(64, 32, 4, 3), (64, 64, 4, 2), (128, 32, 8, 2)]},
}
_SM80 = {  # 164 KiB of shared memory instead of 228: fewer stages
    "fwd": {64: [(128, 64, 4, 3), (64, 64, 4, 3)],
            128: [(128, 64, 8, 2), (64, 64, 4, 2)],
            256: [(64, 32, 4, 2)]},
    "dkdv": {64: [(32, 128, 4, 2), (64, 64, 4, 2)],
             128: [(32, 64, 4, 2), (64, 64, 8, 2)]},
    "dq": {64: [(128, 32, 4, 2), (64, 64, 4, 2)],
           128: [(64, 32, 4, 2), (64, 64, 8, 2)]},
}
# The interpreter pays per program and per op: one small tile pair whose blocks differ (BLOCK_M != BLOCK_N) so
# every masked/unmasked loop boundary is exercised. Tests may override it.
INTERPRETER_BLOCKS = {"fwd": (32, 16), "dkdv": (16, 32), "dq": (32, 16)}


def _dim_class(block_d: int, kernel: str) -> int:
    classes = sorted(_SM90[kernel])
    return next(c for c in classes if block_d <= c)


def _configs(kernel: str, block_d: int, arch: int) -> list[tuple[int, int, int, int]]:
    table = _SM90 if arch >= 90 else _SM80
    return table[kernel][_dim_class(block_d, kernel)]


def _gpu_arch(device: torch.device) -> int:
    major, minor = torch.cuda.get_device_capability(device)
    return major * 10 + minor


_tuned: dict[tuple[str, int, int], triton.runtime.Autotuner] = {}
_RAW = {"fwd": _attn_fwd_kernel, "dkdv": _attn_bwd_dkdv_kernel, "dq": _attn_bwd_dq_kernel}


def _autotuned(kernel: str, block_d: int, arch: int):
    """The autotuned launcher of one kernel for a head-dim class and GPU generation (built once)."""
    key = (kernel, _dim_class(block_d, kernel), 90 if arch >= 90 else 80)
    if key not in _tuned:
        configs = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
                   for bm, bn, w, s in _configs(kernel, block_d, arch)]
        reset = ["DQ_ACC"] if kernel == "dkdv" else None  # atomics accumulate across the tuner's trial runs
        _tuned[key] = autotune_table.register(
            f"flash_attention.{kernel}.d{key[1]}.sm{key[2]}",
            triton.autotune(configs=configs, key=["HEAD_DIM", "CAUSAL", "seq_bucket"], reset_to_zero=reset)(_RAW[kernel]))
    return _tuned[key]


def _launch(kernel: str, device: torch.device, block_d: int, grid_of, args: tuple, constexprs: dict) -> None:
    if device.type == "cuda":
        _autotuned(kernel, block_d, _gpu_arch(device))[lambda meta: grid_of(meta["BLOCK_M"], meta["BLOCK_N"])](
            *args, **constexprs)
    else:
        bm, bn = INTERPRETER_BLOCKS[kernel]
        _RAW[kernel][grid_of(bm, bn)](*args, **constexprs, BLOCK_M=bm, BLOCK_N=bn)


def _seq_bucket(max_seqlen: int) -> int:
    """Autotuning key: sequence lengths within a power of two share a tuned config."""
    return min(next_power_of_2(max(max_seqlen, 1)), 1 << 17)


def _dot_precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"  # fp32 inputs get exact fp32 dots; 16-bit ignore it


# ============================================================================================ compile specs
def _quick(kernel: str, dtype: str, head_dim: int, config_index: int, causal: bool, atomic: bool | None) -> bool:
    """The quick gate's representatives: bf16, D=128, the first config; both forward masks, the backward's two
    dK/dV variants that differ most (causal + atomic dQ, non-causal deterministic), the causal dQ kernel."""
    if dtype != "bf16" or head_dim != 128 or config_index != 0:
        return False
    return kernel == "fwd" or (kernel == "dkdv" and causal == atomic) or (kernel == "dq" and causal)


_POINTERS = {  # the kernels' tensor arguments: "x" = the input dtype; the rest are fixed
    "fwd": {"Q": "x", "K": "x", "V": "x", "O": "x", "LSE": "fp32", "CU_SEQLENS": "i32"},
    "dkdv": {"Q": "x", "K": "x", "V": "x", "DO": "x", "LSE": "fp32", "DELTA": "fp32", "DK": "x", "DV": "x",
             "DQ_ACC": "fp32", "CU_SEQLENS": "i32"},
    "dq": {"Q": "x", "K": "x", "V": "x", "DO": "x", "LSE": "fp32", "DELTA": "fp32", "DQ": "x", "CU_SEQLENS": "i32"},
}
_SCALARS = {"fwd": ["qk_scale_log2", "max_seqlen", "total_tokens"],
            "dkdv": ["qk_scale_log2", "sm_scale", "max_seqlen", "total_tokens"],
            "dq": ["qk_scale_log2", "sm_scale", "max_seqlen", "total_tokens"]}
_STRIDED = {"fwd": ["q", "k", "v", "o"], "dkdv": ["q", "k", "v", "do", "dk", "dv", "dq"], "dq": ["q", "k", "v", "do", "dq"]}


def _signature(kernel: str, dtype: str, constexprs: dict) -> dict[str, str]:
    sig = {name: f"*{dtype if t == 'x' else t}" for name, t in _POINTERS[kernel].items()}
    sig |= {name: "fp32" if "scale" in name else "i32" for name in _SCALARS[kernel]}
    for s in _STRIDED[kernel]:
        sig |= {f"stride_{s}t": "i32", f"stride_{s}h": "i32"}
    return sig | {"group": "i32", "seq_bucket": "i32"} | {name: "constexpr" for name in constexprs}


def _launch_ints(kernel: str, head_dim: int, atomic_dq: bool | None) -> dict[str, int]:
    """The int arguments of a representative launch (CompileSpec.ints): one 8K-token row, 32 query / 8 kv heads
    (GQA 4:1), contiguous (T, H, D) tensors; the deterministic dK/dV launch passes a (1, 1) dummy DQ_ACC."""
    tokens, q_heads, kv_heads = 8192, 32, 8
    heads = {"q": q_heads, "o": q_heads, "do": q_heads, "dq": q_heads, "k": kv_heads, "v": kv_heads, "dk": kv_heads,
             "dv": kv_heads}
    ints = {"max_seqlen": tokens, "total_tokens": tokens, "group": q_heads // kv_heads, "seq_bucket": _seq_bucket(tokens)}
    for s in _STRIDED[kernel]:
        ints |= {f"stride_{s}t": heads[s] * head_dim, f"stride_{s}h": head_dim}
    if atomic_dq is False:
        ints |= {"stride_dqt": 1, "stride_dqh": 1}
    return ints


def _register_compile_specs() -> None:
    for dtype, (arch, table) in itertools.product(("bf16", "fp16"), ((90, _SM90), (80, _SM80))):
        for kernel, per_dim in table.items():
            for dim_class, configs in per_dim.items():
                head_dims = [dim_class] + ([96] if dim_class == 128 else [])  # 96 pads its tile to 128
                atomics = (True, False) if kernel == "dkdv" else (None,)
                for head_dim, causal, atomic, (index, (bm, bn, warps, stages)) in itertools.product(
                        head_dims, (True, False), atomics, enumerate(configs)):
                    if dtype == "fp16" and (head_dim != 128 or not causal):
                        continue  # fp16 lowers to the same code as bf16; one class of it is enough
                    cx = {"HEAD_DIM": head_dim, "BLOCK_D": next_power_of_2(head_dim), "CAUSAL": causal,
                          "DOT_PRECISION": "tf32", "BLOCK_M": bm, "BLOCK_N": bn}
                    tag = f"{dtype},d={head_dim},causal={int(causal)}"
                    if atomic is not None:
                        cx["ATOMIC_DQ"] = atomic
                        tag += f",atomic_dq={int(atomic)}"
                    quick = _quick(kernel, dtype, head_dim, index, causal, atomic)
                    register_compile_spec(CompileSpec(
                        f"flash_attn_{kernel}[{tag}]", _RAW[kernel], _signature(kernel, dtype, cx), cx, num_warps=warps,
                        num_stages=stages, archs=(arch,), quick=quick, ints=_launch_ints(kernel, head_dim, atomic),
                        hot=quick))
        for head_dim in (64, 128):
            cx = {"HEAD_DIM": head_dim, "BLOCK_D": head_dim, "BLOCK_T": PREPROCESS_BLOCK_T}
            sig = {"O": f"*{dtype}", "DO": f"*{dtype}", "DELTA": "*fp32", "total_tokens": "i32", "stride_ot": "i32",
                   "stride_oh": "i32", "stride_dot": "i32", "stride_doh": "i32"} | {n: "constexpr" for n in cx}
            if arch == 90:  # once per dtype
                ints = {k: v for k, v in _launch_ints("fwd", head_dim, None).items() if k in sig}
                ints |= {"stride_dot": ints["stride_ot"], "stride_doh": ints["stride_oh"]}
                register_compile_spec(CompileSpec(f"flash_attn_bwd_preprocess[{dtype},d={head_dim}]",
                                                  _attn_bwd_preprocess_kernel, sig, cx, num_warps=4, ints=ints))


_register_compile_specs()


# ================================================================================================ reference
def _document_bounds(q: torch.Tensor, cu_seqlens: torch.Tensor | None) -> tuple[list[int], bool]:
    """The document boundaries [0, ..., T] over the flattened tokens, and whether q is a (B, S, H, D) batch."""
    if cu_seqlens is None:
        b, s = q.shape[:2]
        return [i * s for i in range(b + 1)], True
    return cu_seqlens.tolist(), False


def _document_probs(qd: torch.Tensor, kd: torch.Tensor, scale: float, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities (H, L, L) and lse (H, L) of one document; qd, kd (H, L, D) in the compute dtype."""
    scores = qd @ kd.transpose(1, 2) * scale
    if causal:
        length = qd.shape[1]
        keep = torch.ones(length, length, dtype=torch.bool, device=qd.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    lse = torch.logsumexp(scores, -1)
    return torch.exp(scores - lse[..., None]), lse


def flash_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = True,
                              softmax_scale: float | None = None, cu_seqlens: torch.Tensor | None = None,
                              return_lse: bool = False, compute_dtype: torch.dtype = torch.float32):
    """Per-document math attention in compute_dtype (the test oracle and the CPU forward), differentiable. Same
    shapes and lse layout as flash_attention; the output is returned in compute_dtype."""
    bounds, batched = _document_bounds(q, cu_seqlens)
    if batched:
        b, s = q.shape[:2]
        q, k, v = q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1)
    total, n_heads, head_dim = q.shape
    group = n_heads // k.shape[1]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(head_dim)
    out = torch.zeros(total, n_heads, v.shape[-1], dtype=compute_dtype, device=q.device)
    lse = torch.zeros(n_heads, total, dtype=compute_dtype, device=q.device)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi == lo:
            continue
        qd = q[lo:hi].to(compute_dtype).transpose(0, 1)  # (H, L, D)
        kd = k[lo:hi].to(compute_dtype).transpose(0, 1).repeat_interleave(group, 0)
        vd = v[lo:hi].to(compute_dtype).transpose(0, 1).repeat_interleave(group, 0)
        probs, doc_lse = _document_probs(qd, kd, scale, causal)
        out[lo:hi] = (probs @ vd).transpose(0, 1)
        lse[:, lo:hi] = doc_lse
    if batched:
        out = out.view(b, s, n_heads, -1)
        lse = lse.view(n_heads, b, s).transpose(0, 1)
    return (out, lse) if return_lse else out


def flash_attention_reference_backward(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                                       causal: bool = True, softmax_scale: float | None = None,
                                       cu_seqlens: torch.Tensor | None = None,
                                       compute_dtype: torch.dtype = torch.float32):
    """(dq, dk, dv) of flash_attention_reference in compute_dtype, in closed form (the CPU backward).

    Closed form rather than autograd because it runs inside the backward custom op, where autograd records
    nothing: dV = Pᵀ dO, dS = P ∘ (dO Vᵀ − rowsum(P ∘ dO Vᵀ)), dQ = scale · dS K, dK = scale · dSᵀ Q, with
    dK and dV summed over the query heads of each kv head."""
    bounds, batched = _document_bounds(q, cu_seqlens)
    shapes = q.shape, k.shape, v.shape
    if batched:
        dout, q, k, v = dout.flatten(0, 1), q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1)
    n_heads, n_kv_heads, head_dim = q.shape[1], k.shape[1], q.shape[2]
    group = n_heads // n_kv_heads
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(head_dim)
    dq, dk, dv = (torch.zeros(t.shape, dtype=compute_dtype, device=t.device) for t in (q, k, v))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi == lo:
            continue
        qd, dod = (t[lo:hi].to(compute_dtype).transpose(0, 1) for t in (q, dout))  # (H, L, D)
        kd, vd = (t[lo:hi].to(compute_dtype).transpose(0, 1).repeat_interleave(group, 0) for t in (k, v))
        probs, _ = _document_probs(qd, kd, scale, causal)
        dprobs = dod @ vd.transpose(1, 2)
        dscores = probs * (dprobs - (probs * dprobs).sum(-1, keepdim=True))
        dq[lo:hi] = (dscores @ kd).transpose(0, 1) * scale
        per_head_dk, per_head_dv = dscores.transpose(1, 2) @ qd * scale, probs.transpose(1, 2) @ dod
        dk[lo:hi] = per_head_dk.unflatten(0, (n_kv_heads, group)).sum(1).transpose(0, 1)
        dv[lo:hi] = per_head_dv.unflatten(0, (n_kv_heads, group)).sum(1).transpose(0, 1)
    return tuple(g.view(shape) for g, shape in zip((dq, dk, dv), shapes))


# ================================================================================================ custom ops
def _strides(t: torch.Tensor) -> tuple[int, int]:
    return t.stride(0), t.stride(1)


def _fwd_fake(q, k, v, cu_seqlens, max_seqlen, causal, softmax_scale, deterministic):
    return torch.empty_like(q), q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)


@torch.library.custom_op("seedcoder::flash_attn_fwd", mutates_args=())
def _flash_attn_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
                       causal: bool, softmax_scale: float, deterministic: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed forward: q (T, Hq, D), k/v (T, Hkv, D), int32 cu_seqlens -> (out (T, Hq, D), lse fp32 (Hq, T)).
    deterministic does not change the forward; it is an argument so the backward registered on this op sees it."""
    if not _common.use_triton(q):
        out, lse = flash_attention_reference(q, k, v, causal=causal, softmax_scale=softmax_scale,
                                             cu_seqlens=cu_seqlens, return_lse=True)
        return out.to(q.dtype), lse
    if flash_attention_hopper.enabled(q.device) and flash_attention_hopper.supports(q, k, v):
        return flash_attention_hopper.forward(q, k, v, cu_seqlens, max_seqlen, causal, softmax_scale)
    total, n_heads, head_dim = q.shape
    out = _common.new_empty(q.shape, dtype=q.dtype, device=q.device)
    lse = _common.new_empty((n_heads, total), dtype=torch.float32, device=q.device)
    n_docs = cu_seqlens.numel() - 1
    if total == 0 or n_docs == 0:
        return out, lse
    block_d = next_power_of_2(head_dim)
    args = (q, k, v, out, lse, cu_seqlens, softmax_scale * LOG2E, max_seqlen, total,
            *_strides(q), *_strides(k), *_strides(v), *_strides(out), n_heads // k.shape[1], _seq_bucket(max_seqlen))
    constexprs = {"HEAD_DIM": head_dim, "BLOCK_D": block_d, "CAUSAL": causal, "DOT_PRECISION": _dot_precision(q.dtype)}
    _launch("fwd", q.device, block_d, lambda bm, bn: (n_docs * triton.cdiv(max_seqlen, bm), n_heads), args, constexprs)
    return out, lse


_flash_attn_fwd_op.register_fake(_fwd_fake)


def _bwd_fake(dout, q, k, v, out, lse, cu_seqlens, max_seqlen, causal, softmax_scale, deterministic):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


@torch.library.custom_op("seedcoder::flash_attn_bwd", mutates_args=())
def _flash_attn_bwd_op(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                       lse: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int, causal: bool, softmax_scale: float,
                       deterministic: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Packed backward -> (dq, dk, dv) in the inputs' dtype."""
    if not _common.use_triton(q):
        grads = flash_attention_reference_backward(dout, q, k, v, causal=causal, softmax_scale=softmax_scale,
                                                   cu_seqlens=cu_seqlens)
        return tuple(g.to(t.dtype) for g, t in zip(grads, (q, k, v)))
    total, n_heads, head_dim = q.shape
    n_kv_heads = k.shape[1]
    group = n_heads // n_kv_heads
    dout = dout if dout.stride(-1) == 1 else dout.contiguous()
    dk = _common.new_empty(k.shape, dtype=k.dtype, device=k.device)
    dv = _common.new_empty(v.shape, dtype=v.dtype, device=v.device)
    n_docs = cu_seqlens.numel() - 1
    if total == 0 or n_docs == 0:
        return _common.new_empty(q.shape, dtype=q.dtype, device=q.device), dk, dv
    block_d = next_power_of_2(head_dim)
    delta = _common.new_empty((n_heads, total), dtype=torch.float32, device=q.device)
    _attn_bwd_preprocess_kernel[(triton.cdiv(total, PREPROCESS_BLOCK_T), n_heads)](
        out, dout, delta, total, *_strides(out), *_strides(dout),
        HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_T=PREPROCESS_BLOCK_T, num_warps=4)
    constexprs = {"HEAD_DIM": head_dim, "BLOCK_D": block_d, "CAUSAL": causal, "DOT_PRECISION": _dot_precision(q.dtype)}
    scale2, bucket = softmax_scale * LOG2E, _seq_bucket(max_seqlen)
    if deterministic:
        dq = _common.new_empty(q.shape, dtype=q.dtype, device=q.device)
        dq_acc = q.new_empty((1, 1), dtype=torch.float32)  # not touched with ATOMIC_DQ=False (only zeroed by tuning)
    else:
        dq_acc = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    if flash_attention_hopper.enabled(q.device) and flash_attention_hopper.supports(q, k, v) \
            and flash_attention_hopper.supports(dout, k, v):
        flash_attention_hopper.backward_dkdv(q, k, v, dout, lse, delta, dk, dv, dq_acc, cu_seqlens, max_seqlen, causal,
                                             softmax_scale, not deterministic)
    else:
        _launch("dkdv", q.device, block_d, lambda bm, bn: (n_docs * triton.cdiv(max_seqlen, bn), n_kv_heads),
                (q, k, v, dout, lse, delta, dk, dv, dq_acc, cu_seqlens, scale2, softmax_scale, max_seqlen, total,
                 *_strides(q), *_strides(k), *_strides(v), *_strides(dout), *_strides(dk), *_strides(dv),
                 *_strides(dq_acc), group, bucket),
                {**constexprs, "ATOMIC_DQ": not deterministic})
    if deterministic:
        _launch("dq", q.device, block_d, lambda bm, bn: (n_docs * triton.cdiv(max_seqlen, bm), n_heads),
                (q, k, v, dout, lse, delta, dq, cu_seqlens, scale2, softmax_scale, max_seqlen, total,
                 *_strides(q), *_strides(k), *_strides(v), *_strides(dout), *_strides(dq), group, bucket),
                constexprs)
    else:
        dq = (dq_acc * softmax_scale).to(q.dtype)
    return dq, dk, dv


_flash_attn_bwd_op.register_fake(_bwd_fake)


def _setup_context(ctx, inputs, output):
    q, k, v, cu_seqlens, max_seqlen, causal, softmax_scale, deterministic = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cu_seqlens)
    ctx.max_seqlen, ctx.causal, ctx.softmax_scale, ctx.deterministic = max_seqlen, causal, softmax_scale, deterministic
    ctx.mark_non_differentiable(lse)


def _backward(ctx, dout, dlse):
    q, k, v, out, lse, cu_seqlens = ctx.saved_tensors
    dq, dk, dv = torch.ops.seedcoder.flash_attn_bwd(dout, q, k, v, out, lse, cu_seqlens, ctx.max_seqlen, ctx.causal,
                                                    ctx.softmax_scale, ctx.deterministic)
    return dq, dk, dv, None, None, None, None, None


_flash_attn_fwd_op.register_autograd(_backward, setup_context=_setup_context)


# ================================================================================================ public API
def _check_inputs(q, k, v, cu_seqlens, max_seqlen):
    packed = cu_seqlens is not None
    ndim = 3 if packed else 4
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, t, dtypes=(torch.bfloat16, torch.float16, torch.float32), ndim=ndim, device=q.device,
                     last_dim_contiguous=True)
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"flash_attention: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.shape != v.shape:
        raise ValueError(f"flash_attention: k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[:-2] != k.shape[:-2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"flash_attention: q {tuple(q.shape)} and k {tuple(k.shape)} must agree on every dimension "
                         f"except the number of heads (self-attention over the same tokens)")
    n_heads, n_kv_heads, head_dim = q.shape[-2], k.shape[-2], q.shape[-1]
    if n_kv_heads == 0 or n_heads % n_kv_heads:
        raise ValueError(f"flash_attention: the {n_heads} query heads must be a multiple of the {n_kv_heads} kv heads")
    if not 0 < head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"flash_attention: head dim {head_dim} is not supported (1..{MAX_HEAD_DIM})")
    if head_dim > MAX_BWD_HEAD_DIM and torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        raise ValueError(f"flash_attention: the backward supports head dims up to {MAX_BWD_HEAD_DIM}, got {head_dim} "
                         f"(the forward alone runs up to {MAX_HEAD_DIM}: call it under torch.no_grad())")
    if packed:
        check_tensor("cu_seqlens", cu_seqlens, dtypes=(torch.int32,), ndim=1, device=q.device)
        if cu_seqlens.numel() < 2:
            raise ValueError("cu_seqlens: needs at least 2 entries (0 and the total token count)")
        # Values are checked on the host only (on a GPU it would sync every call), and not while tracing.
        if not cu_seqlens.is_cuda and not torch.compiler.is_compiling():
            bounds = cu_seqlens.tolist()
            if bounds[0] != 0 or bounds[-1] != q.shape[0] or any(b < a for a, b in zip(bounds, bounds[1:])):
                raise ValueError(f"cu_seqlens: must rise from 0 to the {q.shape[0]} tokens of q, got {bounds[:8]}"
                                 f"{' ...' if len(bounds) > 8 else ''}")
            if max_seqlen is not None and max_seqlen < max(b - a for a, b in zip(bounds, bounds[1:])):
                raise ValueError(f"max_seqlen={max_seqlen} is smaller than the longest document in cu_seqlens")
    if max_seqlen is not None and (not isinstance(max_seqlen, int) or max_seqlen < 0):
        raise ValueError(f"max_seqlen: expected a non-negative int, got {max_seqlen!r}")


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = True,
                    softmax_scale: float | None = None, cu_seqlens: torch.Tensor | None = None,
                    max_seqlen: int | None = None, deterministic: bool = False, return_lse: bool = False):
    """Attention over packed documents (q (T, Hq, D) + cu_seqlens) or a batch (q (B, S, Hq, D)); see the module doc.

    max_seqlen: the longest document (an upper bound works too: it only sizes the grid); computed from
    cu_seqlens (a host sync) when None. deterministic: bitwise-reproducible gradients (no atomics).
    """
    _check_inputs(q, k, v, cu_seqlens, max_seqlen)
    scale = float(softmax_scale) if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    batched = cu_seqlens is None
    if batched:
        b, s = q.shape[:2]
        q3, k3, v3 = (t.reshape(b * s, *t.shape[2:]) for t in (q, k, v))
        cu_seqlens = torch.arange(0, (b + 1) * s, s, dtype=torch.int32, device=q.device) if s else \
            torch.zeros(b + 1, dtype=torch.int32, device=q.device)
        max_seqlen = s
    else:
        q3, k3, v3 = q, k, v
        if max_seqlen is None:
            max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max()) if cu_seqlens.numel() > 1 else 0
    out, lse = torch.ops.seedcoder.flash_attn_fwd(q3, k3, v3, cu_seqlens, max_seqlen, causal, scale, deterministic)
    if batched:
        out = out.view(q.shape)
        lse = lse.view(q.shape[2], b, s).transpose(0, 1)
    return (out, lse) if return_lse else out
