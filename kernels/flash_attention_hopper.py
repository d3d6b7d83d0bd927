"""Flash attention for Hopper (sm_90): a forward with TMA tensor descriptors, a persistent grid and a
warp-specialised KV loop; a dK/dV backward kernel with TMA loads.

    out, lse = flash_attention_hopper.forward(q, k, v, cu_seqlens, max_seqlen, causal, softmax_scale)
    flash_attention_hopper.backward_dkdv(q, k, v, dout, lse, delta, dk, dv, dq_acc, cu_seqlens, max_seqlen,
                                         causal, softmax_scale, atomic_dq)
    flash_attention_hopper.supports(q, k, v)   # whether this path can take these tensors (else: the sm_80 kernels)

The sm_90 path of seedcoder.kernels.flash_attention, which dispatches to it on capability 9.x (the switch
SEEDCODER_FLASH_HOPPER=0 turns it off; =1 forces it, also in the CPU interpreter, which is how the tests run
it through the custom ops). Same inputs and outputs as that module's kernels: packed q (T, Hq, D), k/v
(T, Hkv, D), int32 cu_seqlens, fp32 lse (Hq, T) in natural log. The backward's preprocess (delta) and its
deterministic dQ kernel stay that module's; backward_dkdv replaces its dK/dV kernel (the same schedule: one
program per (key block, kv head), the GQA group summed in registers, dQ by fp32 atomics unless deterministic),
reading K, V, Q and dO by TMA boxes; query blocks that may hold rows past the document end (the next
document's queries) are masked by the document bound, so those rows' P is 0.

Loads: Q, K and V are read by device-side tensor descriptors (TMA, `cp.async.bulk.tensor`) over the 2-D views
(T, H·D) of the packed tensors, box (BLOCK, D) at column head·D; the descriptors are built once per program
(they live in a global scratch buffer from triton.set_allocator) and reused for every tile. A box starts at any
token, so it may read past its document's end into the next document's rows (or past T, which TMA fills with
zeros). Those keys never reach a kept score: a key block that can hold them is the last, partial block of a
document, which is masked by the document bound when not causal, and by the causal mask when causal (a kept
row r < seqlen keeps only keys ≤ r); query rows past the document end are computed and never stored (the output
is stored with masked pointer stores, not by TMA, which would overwrite the next document).

Schedule: a persistent grid of min(#SMs, #tiles) programs walks the (query block, document, head) tiles in a
longest-first order: query blocks from the last (the most causal work, and for varlen the blocks only long
documents have) to the first, heads innermost, so programs running side by side share a GQA group's K/V in L2.
The KV loop is `tl.range(..., warp_specialize=WARP_SPECIALIZE)`: on sm_90 Triton splits it into a TMA producer
warp group and MMA/softmax consumers with `setmaxnreg` (checked by the compile gate); the online softmax is the
sm_80 kernel's (base 2, the unmasked and masked key blocks in separate loops).

Takes head dims 64 and 128 (a power of two; the box is the head) in bf16/fp16 (and fp32 in the interpreter only),
with heads contiguous inside a token row and 16-byte aligned rows (TMA's rules); `supports` says no otherwise.
In the CPU interpreter the descriptors run (zero fill included) but warp_specialize is a no-op: the loop runs in
one thread, so the producer/consumer split is checked only by the compile gate, and timing only on a GPU. Not
warp-specialised: the backward (Triton 3.6's sm_90 warp specialisation failed, in its NVGPUWarpSpecialization
pass, on a kernel with a second loop after the specialised one; the dK/dV kernel has three).
"""

from __future__ import annotations

import itertools
import os

import torch
import triton
import triton.language as tl

try:  # Triton keeps the current allocator there (a ContextVar), privately
    from triton.runtime._allocation import NullAllocator
    from triton.runtime._allocation import _allocator as _current_allocator
except ImportError:  # a Triton that moved it: _ensure_allocator always sets ours
    NullAllocator, _current_allocator = None, None

from . import _common, autotune_table
from ._common import CompileSpec, register_compile_spec

__all__ = ["backward_dkdv", "enabled", "forward", "supports"]

HEAD_DIMS = (64, 128)
SWITCH_ENV = "SEEDCODER_FLASH_HOPPER"  # "0": never; "1": always (the interpreter too); unset: sm_90 GPUs


# ================================================================================================ kernels
@triton.jit
def _fwd_kv_loop(acc, l_i, m_i, q, k_desc, v_desc, kv_row0, kv_col, lo, hi, seqlen, offs_m, offs_n, qk_scale_log2,
                 CAUSAL: tl.constexpr, MASKED: tl.constexpr, WARP_SPECIALIZE: tl.constexpr,
                 DOT_PRECISION: tl.constexpr, BLOCK_N: tl.constexpr):
    for n0 in tl.range(lo, hi, BLOCK_N, warp_specialize=WARP_SPECIALIZE):
        k = k_desc.load([kv_row0 + n0, kv_col])
        qk = tl.dot(q, k.T, input_precision=DOT_PRECISION) * qk_scale_log2
        if MASKED:
            # The box may hold the next document's keys (or TMA's zeros past T): the document bound drops them.
            cols = n0 + offs_n
            visible = cols[None, :] < seqlen
            if CAUSAL:
                visible = visible & (offs_m[:, None] >= cols[None, :])
            qk = tl.where(visible, qk, float("-inf"))
        # Every row sees at least one key in its first block, so m_new is finite and exp2 never sees -inf - -inf.
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.exp2(qk - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        v = v_desc.load([kv_row0 + n0, kv_col])
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd_hopper_kernel(
    Q, K, V, O, LSE, CU_SEQLENS,  # noqa: E741 (O: the output, as in the paper)
    qk_scale_log2, max_seqlen, total_tokens, n_docs, n_heads, n_kv_heads,
    stride_qt, stride_kt, stride_vt, stride_ot, stride_oh,
    group, seq_bucket,
    HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr, WARP_SPECIALIZE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    q_desc = tl.make_tensor_descriptor(Q, shape=[total_tokens, n_heads * HEAD_DIM], strides=[stride_qt, 1],
                                       block_shape=[BLOCK_M, HEAD_DIM])
    k_desc = tl.make_tensor_descriptor(K, shape=[total_tokens, n_kv_heads * HEAD_DIM], strides=[stride_kt, 1],
                                       block_shape=[BLOCK_N, HEAD_DIM])
    v_desc = tl.make_tensor_descriptor(V, shape=[total_tokens, n_kv_heads * HEAD_DIM], strides=[stride_vt, 1],
                                       block_shape=[BLOCK_N, HEAD_DIM])
    n_m_blocks = tl.cdiv(max_seqlen, BLOCK_M)
    tiles_per_block = n_docs * n_heads
    n_tiles = n_m_blocks * tiles_per_block
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    for tile in range(tl.program_id(0), n_tiles, tl.num_programs(0)):
        m_block = n_m_blocks - 1 - tile // tiles_per_block  # longest-first
        doc = (tile // n_heads) % n_docs
        head = tile % n_heads
        start = tl.load(CU_SEQLENS + doc)
        seqlen = tl.load(CU_SEQLENS + doc + 1) - start
        m0 = m_block * BLOCK_M
        if m0 < seqlen:  # documents shorter than max_seqlen have fewer query blocks
            offs_m = m0 + tl.arange(0, BLOCK_M)
            q = q_desc.load([start + m0, head * HEAD_DIM])
            kv_col = (head // group) * HEAD_DIM
            m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
            l_i = tl.zeros([BLOCK_M], tl.float32)
            acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
            if CAUSAL:
                hi = tl.minimum(m0 + BLOCK_M, seqlen)
                mask_lo = (m0 // BLOCK_N) * BLOCK_N  # key blocks before this one lie wholly below the diagonal
            else:
                hi = seqlen
                mask_lo = (seqlen // BLOCK_N) * BLOCK_N  # only the last, partial key block needs a mask
            if WARP_SPECIALIZE:
                # Triton 3.6's Hopper warp specialisation fails on a kernel with a second KV loop after the
                # specialised one: one loop, every block masked (a few ALU ops per score, off the MMA's path).
                acc, l_i, m_i = _fwd_kv_loop(acc, l_i, m_i, q, k_desc, v_desc, start, kv_col, 0, hi, seqlen, offs_m,
                                             offs_n, qk_scale_log2, CAUSAL, True, True, DOT_PRECISION, BLOCK_N)
            else:
                acc, l_i, m_i = _fwd_kv_loop(acc, l_i, m_i, q, k_desc, v_desc, start, kv_col, 0, mask_lo, seqlen,
                                             offs_m, offs_n, qk_scale_log2, CAUSAL, False, False, DOT_PRECISION, BLOCK_N)
                acc, l_i, m_i = _fwd_kv_loop(acc, l_i, m_i, q, k_desc, v_desc, start, kv_col, mask_lo, hi, seqlen,
                                             offs_m, offs_n, qk_scale_log2, CAUSAL, True, False, DOT_PRECISION, BLOCK_N)
            acc = acc / l_i[:, None]
            row_ok = offs_m < seqlen
            start64 = start.to(tl.int64)
            o_base = O + start64 * stride_ot + head * stride_oh
            tl.store(o_base + offs_m[:, None] * stride_ot + offs_d[None, :], acc.to(O.dtype.element_ty),
                     mask=row_ok[:, None])
            lse = (m_i + tl.log2(l_i)) * 0.6931471805599453  # natural log, what callers expect
            tl.store(LSE + head.to(tl.int64) * total_tokens + start64 + offs_m, lse, mask=row_ok)


@triton.jit
def _bwd_q_loop(dk, dv, k, v, q_desc, do_desc, lse_base, delta_base, dq_base, stride_dqt, q_row0, q_col, lo, hi,
                seqlen, offs_n, offs_d, qk_scale_log2, CAUSAL: tl.constexpr, MASKED: tl.constexpr,
                ATOMIC_DQ: tl.constexpr, DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr):
    for m0 in range(lo, hi, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        row_ok = rows < seqlen
        q = q_desc.load([q_row0 + m0, q_col])
        lse2 = tl.load(lse_base + rows, mask=row_ok, other=0.0) * 1.4426950408889634
        pt = tl.exp2(tl.dot(k, q.T, input_precision=DOT_PRECISION) * qk_scale_log2 - lse2[None, :])
        if MASKED:
            # The boxes may hold the next document's queries and output gradients (rows past this document's
            # end): their P is set to 0, so they add nothing to dV, dK or dQ.
            visible = (offs_n[:, None] < seqlen) & row_ok[None, :]
            if CAUSAL:
                visible = visible & (rows[None, :] >= offs_n[:, None])
            pt = tl.where(visible, pt, 0.0)
        do = do_desc.load([q_row0 + m0, q_col])
        dv = tl.dot(pt.to(do.dtype), do, dv, input_precision=DOT_PRECISION)
        delta = tl.load(delta_base + rows, mask=row_ok, other=0.0)
        dpt = tl.dot(v, do.T, input_precision=DOT_PRECISION)
        dst = (pt * (dpt - delta[None, :])).to(q.dtype)
        dk = tl.dot(dst, q, dk, input_precision=DOT_PRECISION)
        if ATOMIC_DQ:
            dq = tl.dot(dst.T, k, input_precision=DOT_PRECISION)
            tl.atomic_add(dq_base + rows[:, None] * stride_dqt + offs_d[None, :], dq, mask=row_ok[:, None],
                          sem="relaxed")
    return dk, dv


@triton.jit
def _attn_bwd_dkdv_hopper_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, DQ_ACC, CU_SEQLENS,
    qk_scale_log2, sm_scale, max_seqlen, total_tokens, n_heads, n_kv_heads,
    stride_qt, stride_kt, stride_vt, stride_dot, stride_dkt, stride_dkh, stride_dvt, stride_dvh, stride_dqt, stride_dqh,
    group, seq_bucket,
    HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, ATOMIC_DQ: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """The sm_80 dK/dV kernel's schedule (one program per (key block, kv head), the GQA group's query heads summed
    in registers) with K, V, Q and dO read by TMA boxes. Query blocks that can hold rows past the document end
    (the last, partial one) run masked: the first masked loop (the causal diagonal, or every block of a partial
    key block), the unmasked middle, and the masked tail."""
    n_n_blocks = tl.cdiv(max_seqlen, BLOCK_N)
    pid = tl.program_id(0)
    doc = pid // n_n_blocks
    n0 = (pid % n_n_blocks) * BLOCK_N  # causal: early key blocks have the most work, and they launch first
    kv_head = tl.program_id(1)
    start = tl.load(CU_SEQLENS + doc)
    seqlen = tl.load(CU_SEQLENS + doc + 1) - start
    if n0 >= seqlen:
        return
    q_desc = tl.make_tensor_descriptor(Q, shape=[total_tokens, n_heads * HEAD_DIM], strides=[stride_qt, 1],
                                       block_shape=[BLOCK_M, HEAD_DIM])
    do_desc = tl.make_tensor_descriptor(DO, shape=[total_tokens, n_heads * HEAD_DIM], strides=[stride_dot, 1],
                                        block_shape=[BLOCK_M, HEAD_DIM])
    k_desc = tl.make_tensor_descriptor(K, shape=[total_tokens, n_kv_heads * HEAD_DIM], strides=[stride_kt, 1],
                                       block_shape=[BLOCK_N, HEAD_DIM])
    v_desc = tl.make_tensor_descriptor(V, shape=[total_tokens, n_kv_heads * HEAD_DIM], strides=[stride_vt, 1],
                                       block_shape=[BLOCK_N, HEAD_DIM])
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    # Key rows past the document end are the next document's (or zeros): every query block masks them below.
    k = k_desc.load([start + n0, kv_head * HEAD_DIM])
    v = v_desc.load([start + n0, kv_head * HEAD_DIM])
    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    if CAUSAL:
        lo = (n0 // BLOCK_M) * BLOCK_M  # the first query block that sees any of these keys
        unmasked_lo = tl.minimum(tl.cdiv(n0 + BLOCK_N, BLOCK_M) * BLOCK_M, seqlen)  # blocks that see them all
    else:
        lo = 0
        unmasked_lo = tl.where(n0 + BLOCK_N > seqlen, seqlen, 0)  # a partial key block masks every query block
    unmasked_hi = tl.maximum((seqlen // BLOCK_M) * BLOCK_M, unmasked_lo)  # a partial last query block is masked
    start64 = start.to(tl.int64)
    for g in range(group):
        head = kv_head * group + g
        lse_base = LSE + head.to(tl.int64) * total_tokens + start64
        delta_base = DELTA + head.to(tl.int64) * total_tokens + start64
        dq_base = DQ_ACC + start64 * stride_dqt + head * stride_dqh
        dk, dv = _bwd_q_loop(dk, dv, k, v, q_desc, do_desc, lse_base, delta_base, dq_base, stride_dqt, start,
                             head * HEAD_DIM, lo, unmasked_lo, seqlen, offs_n, offs_d, qk_scale_log2, CAUSAL, True,
                             ATOMIC_DQ, DOT_PRECISION, BLOCK_M)
        dk, dv = _bwd_q_loop(dk, dv, k, v, q_desc, do_desc, lse_base, delta_base, dq_base, stride_dqt, start,
                             head * HEAD_DIM, unmasked_lo, unmasked_hi, seqlen, offs_n, offs_d, qk_scale_log2, CAUSAL,
                             False, ATOMIC_DQ, DOT_PRECISION, BLOCK_M)
        dk, dv = _bwd_q_loop(dk, dv, k, v, q_desc, do_desc, lse_base, delta_base, dq_base, stride_dqt, start,
                             head * HEAD_DIM, unmasked_hi, seqlen, seqlen, offs_n, offs_d, qk_scale_log2, CAUSAL, True,
                             ATOMIC_DQ, DOT_PRECISION, BLOCK_M)
    dk = dk * sm_scale
    kv_ok = (offs_n < seqlen)[:, None]
    tl.store(DK + start64 * stride_dkt + kv_head * stride_dkh + offs_n[:, None] * stride_dkt + offs_d[None, :],
             dk.to(DK.dtype.element_ty), mask=kv_ok)
    tl.store(DV + start64 * stride_dvt + kv_head * stride_dvh + offs_n[:, None] * stride_dvt + offs_d[None, :],
             dv.to(DV.dtype.element_ty), mask=kv_ok)


# ============================================================================================ configurations
# (BLOCK_M, BLOCK_N, num_warps, num_stages, warp_specialize) per head dim; the autotuner picks per (head dim,
# causal, sequence-length bucket). Every entry is built by the compile gate for sm_90a.
# Warp-specialised configs take num_warps=4: the consumers, to which Triton adds the producer warps (12 warps
# in all on sm_90); with 8 it does not specialise (no setmaxnreg).
CONFIGS = {
    64: [(128, 128, 4, 2, True), (128, 64, 4, 3, True), (128, 64, 4, 3, False), (128, 128, 8, 3, False)],
    128: [(128, 128, 4, 2, True), (128, 64, 4, 2, True), (128, 64, 8, 2, False), (128, 128, 8, 2, False)],
}
# The dK/dV kernel: (BLOCK_M, BLOCK_N, num_warps, num_stages), the sm_80 kernel's sm_90 list (same schedule).
DKDV_CONFIGS = {
    64: [(32, 128, 4, 3), (64, 128, 8, 3), (64, 64, 4, 3)],
    128: [(32, 64, 4, 3), (64, 64, 4, 2), (32, 128, 8, 2)],
}
# The interpreter pays per program and per op: small tiles whose blocks differ, and few programs, so every
# program walks several tiles of the persistent loop. Tests may override them.
INTERPRETER_BLOCKS = (32, 16)
INTERPRETER_DKDV_BLOCKS = (16, 32)
INTERPRETER_PROGRAMS = 3


def enabled(device: torch.device) -> bool:
    """Whether flash_attention's forward takes this path on `device` (before `supports` looks at the tensors)."""
    switch = os.environ.get(SWITCH_ENV, "")
    if switch == "0":
        return False
    if switch == "1":
        return device.type == "cuda" or _common.interpreting()
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] == 9


def supports(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """TMA's rules on packed (T, H, D) tensors: a power-of-two head dim it is tuned for, heads contiguous inside a
    token row (the 2-D view (T, H·D) a descriptor reads), token rows and base addresses 16-byte aligned."""
    head_dim = q.shape[-1]
    if head_dim not in HEAD_DIMS or q.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        return False
    if q.dtype == torch.float32 and q.is_cuda:  # fp32 (exact dots, for checks) is not tuned here: the sm_80 kernels
        return False
    for t in (q, k, v):
        if t.stride(2) != 1 or t.stride(1) != head_dim or (t.stride(0) * t.element_size()) % 16 \
                or t.data_ptr() % 16 or t.stride(0) < t.shape[1] * head_dim:
            return False
    return True


def _scratch(size: int, alignment: int, stream) -> torch.Tensor:
    return torch.empty(size, dtype=torch.int8, device="cuda" if torch.cuda.is_available() else "cpu")


def _ensure_allocator() -> None:
    """Device-side descriptors are written to a global scratch buffer; Triton asks triton.set_allocator's
    allocator for it. Keep a caller's allocator; set a torch one only where none is set."""
    if _current_allocator is None or isinstance(_current_allocator.get(), NullAllocator):
        triton.set_allocator(_scratch)


_tuned: dict[tuple[str, int], triton.runtime.Autotuner] = {}


def _autotuned(kernel: str, head_dim: int):
    if (kernel, head_dim) not in _tuned:
        if kernel == "fwd":
            configs = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "WARP_SPECIALIZE": ws}, num_warps=w, num_stages=s)
                       for bm, bn, w, s, ws in CONFIGS[head_dim]]
            fn, reset = _attn_fwd_hopper_kernel, None
        else:
            configs = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
                       for bm, bn, w, s in DKDV_CONFIGS[head_dim]]
            fn, reset = _attn_bwd_dkdv_hopper_kernel, ["DQ_ACC"]  # atomics accumulate across the tuner's trials
        _tuned[kernel, head_dim] = autotune_table.register(
            f"flash_attention_hopper.{kernel}.d{head_dim}",
            triton.autotune(configs=configs, key=["HEAD_DIM", "CAUSAL", "seq_bucket"], reset_to_zero=reset)(fn))
    return _tuned[kernel, head_dim]


def _dot_precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def seq_bucket(max_seqlen: int) -> int:
    """Autotuning key: sequence lengths within a power of two share a tuned config."""
    return min(_common.next_power_of_2(max(max_seqlen, 1)), 1 << 17)


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
            causal: bool, softmax_scale: float, *, blocks: tuple[int, int] | None = None,
            programs: int | None = None, warp_specialize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed forward -> (out (T, Hq, D) in q's dtype, lse fp32 (Hq, T)); inputs as flash_attention's custom op
    takes them, checked by its caller, and `supports(q, k, v)` true. blocks/programs/warp_specialize fix the
    tiles, the persistent grid's size and the loop's warp specialisation (the interpreter's tests); on a GPU, left
    None, the autotuner picks the tiles and the grid is one program per SM."""
    if not supports(q, k, v):
        raise ValueError(f"flash_attention_hopper: q {tuple(q.shape)} strides {q.stride()} is not a TMA layout "
                         f"(head dim in {HEAD_DIMS}, heads contiguous, 16-byte aligned rows)")
    total, n_heads, head_dim = q.shape
    out = _common.new_empty(q.shape, dtype=q.dtype, device=q.device)
    lse = _common.new_empty((n_heads, total), dtype=torch.float32, device=q.device)
    n_docs = cu_seqlens.numel() - 1
    if total == 0 or n_docs == 0 or max_seqlen == 0:
        return out, lse
    _ensure_allocator()
    n_kv_heads = k.shape[1]
    args = (q, k, v, out, lse, cu_seqlens, softmax_scale * 1.4426950408889634, max_seqlen, total, n_docs, n_heads,
            n_kv_heads, q.stride(0), k.stride(0), v.stride(0), out.stride(0), out.stride(1), n_heads // n_kv_heads,
            seq_bucket(max_seqlen))
    constexprs = {"HEAD_DIM": head_dim, "CAUSAL": causal, "DOT_PRECISION": _dot_precision(q.dtype)}

    def n_tiles(block_m: int) -> int:
        return triton.cdiv(max_seqlen, block_m) * n_docs * n_heads

    if q.is_cuda and blocks is None:
        sms = torch.cuda.get_device_properties(q.device).multi_processor_count
        _autotuned("fwd", head_dim)[lambda meta: (min(sms, n_tiles(meta["BLOCK_M"])),)](*args, **constexprs)
    else:
        bm, bn = blocks or INTERPRETER_BLOCKS
        grid = min(programs or (INTERPRETER_PROGRAMS if not q.is_cuda else
                                torch.cuda.get_device_properties(q.device).multi_processor_count), n_tiles(bm))
        _attn_fwd_hopper_kernel[(grid,)](*args, **constexprs, WARP_SPECIALIZE=warp_specialize, BLOCK_M=bm, BLOCK_N=bn)
    return out, lse


def backward_dkdv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dout: torch.Tensor, lse: torch.Tensor,
                  delta: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor, dq_acc: torch.Tensor, cu_seqlens: torch.Tensor,
                  max_seqlen: int, causal: bool, softmax_scale: float, atomic_dq: bool, *,
                  blocks: tuple[int, int] | None = None) -> None:
    """dK and dV (and, with atomic_dq, dQ·(1/scale) added into the fp32 dq_acc) into the given buffers, from
    flash_attention's backward op (which computed delta = rowsum(dO ∘ O)); q, k, v and dout must pass `supports`.
    blocks fixes the tiles (the interpreter's tests); on a GPU, left None, the autotuner picks them."""
    if not supports(q, k, v) or not supports(dout, k, v):
        raise ValueError(f"flash_attention_hopper: q {tuple(q.shape)} strides {q.stride()} / dout strides "
                         f"{dout.stride()} is not a TMA layout (head dim in {HEAD_DIMS}, heads contiguous, 16-byte rows)")
    total, n_heads, head_dim = q.shape
    n_kv_heads = k.shape[1]
    n_docs = cu_seqlens.numel() - 1
    if total == 0 or n_docs == 0 or max_seqlen == 0:
        return
    _ensure_allocator()
    dq_strides = (dq_acc.stride(0), dq_acc.stride(1)) if atomic_dq else (1, 1)  # not touched without atomics
    args = (q, k, v, dout, lse, delta, dk, dv, dq_acc, cu_seqlens, softmax_scale * 1.4426950408889634, softmax_scale,
            max_seqlen, total, n_heads, n_kv_heads, q.stride(0), k.stride(0), v.stride(0), dout.stride(0),
            dk.stride(0), dk.stride(1), dv.stride(0), dv.stride(1), *dq_strides, n_heads // n_kv_heads,
            seq_bucket(max_seqlen))
    constexprs = {"HEAD_DIM": head_dim, "CAUSAL": causal, "ATOMIC_DQ": atomic_dq,
                  "DOT_PRECISION": _dot_precision(q.dtype)}
    if q.is_cuda and blocks is None:
        _autotuned("dkdv", head_dim)[lambda meta: (n_docs * triton.cdiv(max_seqlen, meta["BLOCK_N"]), n_kv_heads)](
            *args, **constexprs)
    else:
        bm, bn = blocks or INTERPRETER_DKDV_BLOCKS
        _attn_bwd_dkdv_hopper_kernel[(n_docs * triton.cdiv(max_seqlen, bn), n_kv_heads)](
            *args, **constexprs, BLOCK_M=bm, BLOCK_N=bn)


# ============================================================================================ compile specs
def _register_compile_specs() -> None:
    """Every sm_90a config of both kernels, bf16 (fp16 once: d=128 causal), at a representative launch: 8K tokens
    (4 documents), 32 query / 8 kv heads (GQA 4:1), contiguous (T, H, D). Each must show wgmma and TMA, and the
    forward setmaxnreg where its KV loop is warp-specialised (CompileSpec.expect; the gate fails a build that lost
    one). The deterministic dK/dV launch passes a (1, 1) dummy dQ buffer, as flash_attention's does."""
    tokens, q_heads, kv_heads = 8192, 32, 8
    for dtype, (head_dim, configs), causal in itertools.product(("bf16", "fp16"), CONFIGS.items(), (True, False)):
        if dtype == "fp16" and (head_dim != 128 or not causal):
            continue
        for index, (bm, bn, warps, stages, ws) in enumerate(configs):
            cx = {"HEAD_DIM": head_dim, "CAUSAL": causal, "DOT_PRECISION": "tf32", "WARP_SPECIALIZE": ws,
                  "BLOCK_M": bm, "BLOCK_N": bn}
            sig = {n: f"*{dtype}" for n in ("Q", "K", "V", "O")} | {"LSE": "*fp32", "CU_SEQLENS": "*i32",
                                                                    "qk_scale_log2": "fp32"}
            ints = {"max_seqlen": tokens, "total_tokens": tokens, "n_docs": 4, "n_heads": q_heads,
                    "n_kv_heads": kv_heads, "stride_qt": q_heads * head_dim, "stride_kt": kv_heads * head_dim,
                    "stride_vt": kv_heads * head_dim, "stride_ot": q_heads * head_dim, "stride_oh": head_dim,
                    "group": q_heads // kv_heads, "seq_bucket": seq_bucket(tokens)}
            sig |= {n: "i32" for n in ints} | {n: "constexpr" for n in cx}
            quick = dtype == "bf16" and head_dim == 128 and index in (0, 2)  # warp-specialised and not
            register_compile_spec(CompileSpec(
                f"flash_attn_hopper_fwd[{dtype},d={head_dim},causal={int(causal)},ws={int(ws)}]",
                _attn_fwd_hopper_kernel, sig, cx, num_warps=warps, num_stages=stages, archs=(90,), quick=quick,
                ints=ints, hot=quick, expect=("wgmma", "tma") + (("setmaxnreg",) if ws else ())))
    for dtype, (head_dim, configs), causal, atomic in itertools.product(("bf16", "fp16"), DKDV_CONFIGS.items(),
                                                                        (True, False), (True, False)):
        if dtype == "fp16" and (head_dim != 128 or not causal):
            continue
        for index, (bm, bn, warps, stages) in enumerate(configs):
            cx = {"HEAD_DIM": head_dim, "CAUSAL": causal, "ATOMIC_DQ": atomic, "DOT_PRECISION": "tf32", "BLOCK_M": bm,
                  "BLOCK_N": bn}
            sig = {n: f"*{dtype}" for n in ("Q", "K", "V", "DO", "DK", "DV")} | {
                "LSE": "*fp32", "DELTA": "*fp32", "DQ_ACC": "*fp32", "CU_SEQLENS": "*i32", "qk_scale_log2": "fp32",
                "sm_scale": "fp32"}
            ints = {"max_seqlen": tokens, "total_tokens": tokens, "n_heads": q_heads, "n_kv_heads": kv_heads,
                    "stride_qt": q_heads * head_dim, "stride_kt": kv_heads * head_dim, "stride_vt": kv_heads * head_dim,
                    "stride_dot": q_heads * head_dim, "stride_dkt": kv_heads * head_dim, "stride_dkh": head_dim,
                    "stride_dvt": kv_heads * head_dim, "stride_dvh": head_dim,
                    "stride_dqt": q_heads * head_dim if atomic else 1, "stride_dqh": head_dim if atomic else 1,
                    "group": q_heads // kv_heads, "seq_bucket": seq_bucket(tokens)}
            sig |= {n: "i32" for n in ints} | {n: "constexpr" for n in cx}
            quick = dtype == "bf16" and head_dim == 128 and index == 0 and causal == atomic  # as the sm_80 kernel's
            register_compile_spec(CompileSpec(
                f"flash_attn_hopper_dkdv[{dtype},d={head_dim},causal={int(causal)},atomic_dq={int(atomic)}]",
                _attn_bwd_dkdv_hopper_kernel, sig, cx, num_warps=warps, num_stages=stages, archs=(90,), quick=quick,
                ints=ints, hot=quick, expect=("wgmma", "tma")))


_register_compile_specs()
