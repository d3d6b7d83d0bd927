"""Rotary position embedding (RoPE), Llama / Hugging Face `rotate_half` layout, q and k in one launch.

For a head vector x of width D the pairs are (x[i], x[i + D/2]), i < D/2, rotated by the angle
a = pos * inv_freq[i], inv_freq[i] = theta ** (-2i / D):

    out[i]       = x[i] * cos(a) - x[i + D/2] * sin(a)
    out[i + D/2] = x[i + D/2] * cos(a) + x[i] * sin(a)

which is HF's `x * cos + rotate_half(x) * sin` with the duplicated-halves tables cos = cat(cos(a), cos(a)).
The backward pass is the transposed map, i.e. the rotation by -a: the same kernel with sin negated.

Angles. By default they are computed in the kernel the way HF's LlamaRotaryEmbedding does in fp32:
inv_freq = fp32(1 / fp32(theta ** fp32(2i / D))), angle = fp32(fp32(pos) * inv_freq), then fp32 cos/sin
(precise libdevice sinf/cosf, not the approximate instructions: angles reach ~1e5 rad). inv_freq is
evaluated in fp64 and rounded to fp32 at the same points as HF (so it is the correctly rounded fp32 value HF
gets from a correctly rounded powf); it costs a few fp64 ops per program, not per element. Alternatively the
caller passes HF-format tables cos, sin of shape (B or 1, S, D) (e.g. Llama-3.1 scaled RoPE); then the kernel
reads both halves of each table and computes exactly HF's formula (so non-duplicated tables work too; the
backward is its transpose: out1 = x1 c1 + x2 s2, out2 = x2 c2 - x1 s1).

Layout. q is (B, S, Hq, D) or packed (T, Hq, D) (then B = 1, S = T and documents restart their position ids
at 0); k has the same leading dims with Hkv heads (GQA). Leading dims may have any strides (an HF
(B, H, S, D) tensor transposed to (B, S, H, D) works without a copy); the last dim must be contiguous.
Outputs are new contiguous tensors, or q and k themselves with inplace=True.

Kernel. One program owns a tile of BLOCK_S tokens of one sequence and a round-robin share of the Hq + Hkv
heads (q heads first, then k heads): it computes the (BLOCK_S, D/2) cos/sin tile once, then streams its heads
through it, two (BLOCK_S, D) head slices per loop step (each as two half-tiles x1 = x[:, :D/2] and
x2 = x[:, D/2:]; both heads' loads are in flight before the first store). The number of head groups is a
runtime argument picked so that the grid fills the GPU even for short sequences;
BLOCK_D = next_pow2(D/2) (at least 32) and BLOCK_S = 1024 // BLOCK_D are the only constexprs, so the set of
compiled variants stays small (see the compile specs at the bottom). The head loop is a `while` loop: a
runtime-bounded `range` does not run in Triton 3.6's interpreter with numpy >= 2.4.

Autograd for inplace=True is supported: one launch rotates q and k in place, and autograd records the
mutation of each (marked dirty), so gradients flow correctly when q and k are non-leaf tensors, views of a
projection output included. (An autograd.Function may not return two dirty views, so q's and k's records are
two Functions, RotaryInplaceQFunction and RotaryInplaceKFunction, and their backward is two launches, one per
tensor.) As for any in-place op, leaf tensors that require grad are refused (a clear RuntimeError, raised
before anything is modified). Without grad, inplace=True is just the launch.

Backends: "triton" (default; plain CPU tensors without TRITON_INTERPRET=1 use the torch reference), "cuda"
(the CUDA C++ kernel of csrc/cuda/rotary.cu through the seedcoder._cuda extension), "torch" (the reference).
"""

from __future__ import annotations

import functools
import importlib.util
import struct

import torch
import triton
import triton.language as tl

from . import _common, _cuda_ext

MAX_HEAD_DIM = 256
TILE_ELEMENTS = 1024  # BLOCK_S * BLOCK_D: elements of one half-tile (4 per thread with 8 warps)
MIN_BLOCK_D = 32
NUM_WARPS = 8
POSITION_DTYPES = (torch.int32, torch.int64)
BACKENDS = ("triton", "cuda", "torch")


# ----------------------------------------------------------------------------------------------- Triton
@triton.jit
def _rotate_heads(
    x_ptr, out_ptr, x_tok, out_tok, x_stride_h, out_stride_h,
    first_head, num_heads, head_step, d, mask, HALF_D,
    cos_a, cos_b, sin_a, sin_b,
):
    """Rotate heads first_head, first_head + head_step, ... < num_heads of one token tile, two heads per
    step: both heads' loads are issued before the first store, doubling the bytes in flight per program."""
    h = first_head
    while h < num_heads:
        h_next = h + head_step
        x_ptrs = x_ptr + (x_tok + h.to(tl.int64) * x_stride_h + d)
        xn_ptrs = x_ptr + (x_tok + h_next.to(tl.int64) * x_stride_h + d)
        mask_next = mask & (h_next < num_heads)
        x1 = tl.load(x_ptrs, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(x_ptrs + HALF_D, mask=mask, other=0.0).to(tl.float32)
        xn1 = tl.load(xn_ptrs, mask=mask_next, other=0.0).to(tl.float32)
        xn2 = tl.load(xn_ptrs + HALF_D, mask=mask_next, other=0.0).to(tl.float32)
        out_ptrs = out_ptr + (out_tok + h.to(tl.int64) * out_stride_h + d)
        outn_ptrs = out_ptr + (out_tok + h_next.to(tl.int64) * out_stride_h + d)
        tl.store(out_ptrs, (x1 * cos_a - x2 * sin_a).to(out_ptr.dtype.element_ty), mask=mask)
        tl.store(out_ptrs + HALF_D, (x2 * cos_b + x1 * sin_b).to(out_ptr.dtype.element_ty), mask=mask)
        tl.store(outn_ptrs, (xn1 * cos_a - xn2 * sin_a).to(out_ptr.dtype.element_ty), mask=mask_next)
        tl.store(outn_ptrs + HALF_D, (xn2 * cos_b + xn1 * sin_b).to(out_ptr.dtype.element_ty), mask=mask_next)
        h = h_next + head_step


@triton.jit(do_not_specialize=["seqlen", "q_heads", "k_heads", "num_groups", "inverse"])
def _rotary_kernel(
    q_ptr, k_ptr, q_out_ptr, k_out_ptr, pos_ptr, cos_ptr, sin_ptr,
    q_stride_b, q_stride_s, q_stride_h, k_stride_b, k_stride_s, k_stride_h,
    q_out_stride_b, q_out_stride_s, q_out_stride_h, k_out_stride_b, k_out_stride_s, k_out_stride_h,
    pos_stride_b, pos_stride_s, table_stride_b, table_stride_s,
    seqlen, q_heads, k_heads, HALF_D, theta, num_groups, inverse,
    HAS_POS: tl.constexpr, HAS_TABLE: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):
    num_s_blocks = tl.cdiv(seqlen, BLOCK_S)
    pid = tl.program_id(0)
    b = (pid // num_s_blocks).to(tl.int64)
    s = (pid % num_s_blocks) * BLOCK_S + tl.arange(0, BLOCK_S)
    group = tl.program_id(1)
    d = tl.arange(0, BLOCK_D)
    s_mask = s < seqlen
    mask = s_mask[:, None] & (d < HALF_D)[None, :]
    s64 = s.to(tl.int64)

    if HAS_TABLE:
        table_offs = b * table_stride_b + s64[:, None] * table_stride_s + d[None, :]
        cos1 = tl.load(cos_ptr + table_offs, mask=mask, other=0.0).to(tl.float32)
        cos2 = tl.load(cos_ptr + table_offs + HALF_D, mask=mask, other=0.0).to(tl.float32)
        sin1 = tl.load(sin_ptr + table_offs, mask=mask, other=0.0).to(tl.float32)
        sin2 = tl.load(sin_ptr + table_offs + HALF_D, mask=mask, other=0.0).to(tl.float32)
    else:
        if HAS_POS:
            pos = tl.load(pos_ptr + b * pos_stride_b + s64 * pos_stride_s, mask=s_mask, other=0)
        else:
            pos = s
        # HF (fp32): inv_freq = 1 / theta ** (arange(0, D, 2) / D); each step rounded to fp32 like HF.
        exponent = (d.to(tl.float64) / HALF_D).to(tl.float32).to(tl.float64)
        theta_pow = tl.exp(exponent * tl.log(tl.cast(theta, tl.float64))).to(tl.float32)
        inv_freq = (1.0 / theta_pow.to(tl.float64)).to(tl.float32)
        angle = pos.to(tl.float32)[:, None] * inv_freq[None, :]
        cos1 = tl.cos(angle)
        sin1 = tl.sin(angle)
        cos2 = cos1
        sin2 = sin1
    # out1 = x1 cos_a - x2 sin_a, out2 = x2 cos_b + x1 sin_b; the inverse (backward) is the transpose.
    is_inverse = inverse != 0
    sin_a = tl.where(is_inverse, -sin2, sin1)
    sin_b = tl.where(is_inverse, -sin1, sin2)

    q_tok = b * q_stride_b + s64[:, None] * q_stride_s
    q_out_tok = b * q_out_stride_b + s64[:, None] * q_out_stride_s
    _rotate_heads(q_ptr, q_out_ptr, q_tok, q_out_tok, q_stride_h, q_out_stride_h,
                  group, q_heads, num_groups, d[None, :], mask, HALF_D, cos1, cos2, sin_a, sin_b)
    # k heads continue the round-robin numbering after the q heads: global head j = q_heads + h.
    k_first = (group + num_groups - q_heads % num_groups) % num_groups
    k_tok = b * k_stride_b + s64[:, None] * k_stride_s
    k_out_tok = b * k_out_stride_b + s64[:, None] * k_out_stride_s
    _rotate_heads(k_ptr, k_out_ptr, k_tok, k_out_tok, k_stride_h, k_out_stride_h,
                  k_first, k_heads, num_groups, d[None, :], mask, HALF_D, cos1, cos2, sin_a, sin_b)


# ------------------------------------------------------------------------------------------ heuristics
def block_sizes(head_dim: int) -> tuple[int, int]:
    """(BLOCK_S, BLOCK_D) for a head dim: BLOCK_D covers D/2, BLOCK_S * BLOCK_D = TILE_ELEMENTS."""
    block_d = max(MIN_BLOCK_D, _common.next_power_of_2(head_dim // 2))
    return TILE_ELEMENTS // block_d, block_d


def num_head_groups(batch: int, seqlen: int, total_heads: int, block_s: int, num_sms: int) -> int:
    """Split the heads of a token tile over programs until the grid has ~8 programs per SM, keeping at
    least ~4 heads per program so the cos/sin tile is amortised."""
    token_programs = batch * _common.cdiv(seqlen, block_s)
    wanted = _common.cdiv(8 * num_sms, max(1, token_programs))
    return max(1, min(wanted, _common.cdiv(total_heads, 4)))


@functools.cache
def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 132  # the interpreter runs the launch an H100 would get


# ------------------------------------------------------------------------------------------ arguments
def _check_args(q, k, position_ids, cos, sin) -> None:
    """Raise a clear TypeError/ValueError for anything the kernels do not accept."""
    _common.check_tensor("q", q, ndim=(3, 4), last_dim_contiguous=True)
    _common.check_tensor("k", k, ndim=(3, 4), device=q.device, last_dim_contiguous=True)
    _common.check_same_dtype(q=q, k=k)
    head_dim = q.shape[-1]
    if head_dim % 2 or head_dim == 0:
        raise ValueError(f"q: the head dim must be even (rotate_half pairs i with i + D/2), got D={head_dim}")
    if head_dim > MAX_HEAD_DIM:
        raise ValueError(f"q: head dim D={head_dim} exceeds the supported maximum {MAX_HEAD_DIM}")
    if k.shape[-1] != head_dim:
        raise ValueError(f"k: head dim {k.shape[-1]} != q's head dim {head_dim}")
    if k.dim() != q.dim() or k.shape[:-2] != q.shape[:-2]:
        raise ValueError(f"q and k must agree on the leading dims ((B, S) or packed (T,)): "
                         f"q {tuple(q.shape)}, k {tuple(k.shape)}")
    lead = tuple(q.shape[:-2])
    packed = q.dim() == 3
    if position_ids is not None:
        if cos is not None or sin is not None:
            raise ValueError("give either position_ids (angles from theta) or cos/sin tables, not both")
        _common.check_tensor("position_ids", position_ids, dtypes=POSITION_DTYPES, device=q.device)
        ok = position_ids.shape == lead if packed else (
            position_ids.dim() == 2 and position_ids.shape[1] == lead[1] and position_ids.shape[0] in (1, lead[0]))
        if not ok:
            want = f"({lead[0]},)" if packed else f"({lead[0]} or 1, {lead[1]})"
            raise ValueError(f"position_ids: shape {tuple(position_ids.shape)} does not match q {tuple(q.shape)} "
                             f"(expected {want})")
    if (cos is None) != (sin is None):
        raise ValueError("cos and sin tables must be given together")
    if cos is not None:
        for name, table in (("cos", cos), ("sin", sin)):
            _common.check_tensor(name, table, dtypes=(torch.float32, q.dtype), ndim=(2, 3) if packed else 3,
                                 device=q.device, last_dim_contiguous=True)
            seq = lead[0] if packed else lead[1]
            ok = table.shape[-1] == head_dim and table.shape[-2] == seq and (
                table.dim() == 2 or table.shape[0] in (1, 1 if packed else lead[0]))
            if not ok:
                want = f"({seq}, {head_dim}) or (1, {seq}, {head_dim})" if packed else (
                    f"({lead[0]} or 1, {lead[1]}, {head_dim})")
                raise ValueError(f"{name}: shape {tuple(table.shape)} does not match q {tuple(q.shape)} (expected {want})")
        if cos.shape != sin.shape or cos.dtype != sin.dtype:
            raise ValueError(f"cos and sin must have the same shape and dtype, got {tuple(cos.shape)} {cos.dtype} "
                             f"and {tuple(sin.shape)} {sin.dtype}")


def _as_batched(q, k, position_ids, cos, sin):
    """(B, S, H, D) views of q and k, (B or 1, S) positions and (B or 1, S, D) tables (packed: B = 1)."""
    if q.dim() == 3:
        q, k = q.unsqueeze(0), k.unsqueeze(0)
        if position_ids is not None:
            position_ids = position_ids.unsqueeze(0)
        if cos is not None and cos.dim() == 2:
            cos, sin = cos.unsqueeze(0), sin.unsqueeze(0)
    if cos is not None and cos.stride() != sin.stride():  # the kernel takes one set of table strides
        cos, sin = cos.contiguous(), sin.contiguous()
    return q, k, position_ids, cos, sin


def _as_fp32(x: float) -> float:
    """x rounded to fp32, the precision of a Triton float argument (the interpreter would keep fp64)."""
    return struct.unpack("f", struct.pack("f", x))[0]


def _batch_stride(t: torch.Tensor) -> int:
    return 0 if t.shape[0] == 1 else t.stride(0)


# ------------------------------------------------------------------------------------------ launcher
def _launch(q, k, q_out, k_out, position_ids, cos, sin, theta: float, inverse: bool) -> None:
    q4, k4, pos, cos3, sin3 = _as_batched(q, k, position_ids, cos, sin)
    q_out4, k_out4 = (q_out.unsqueeze(0), k_out.unsqueeze(0)) if q.dim() == 3 else (q_out, k_out)
    batch, seqlen, q_heads, head_dim = q4.shape
    k_heads = k4.shape[2]
    if q4.numel() + k4.numel() == 0:
        return
    block_s, block_d = block_sizes(head_dim)
    groups = num_head_groups(batch, seqlen, q_heads + k_heads, block_s, _num_sms(q.device))
    grid = (batch * _common.cdiv(seqlen, block_s), groups)
    _rotary_kernel[grid](
        q4, k4, q_out4, k_out4, pos, cos3, sin3,
        *q4.stride()[:3], *k4.stride()[:3], *q_out4.stride()[:3], *k_out4.stride()[:3],
        _batch_stride(pos) if pos is not None else 0, pos.stride(1) if pos is not None else 0,
        _batch_stride(cos3) if cos3 is not None else 0, cos3.stride(1) if cos3 is not None else 0,
        seqlen, q_heads, k_heads, head_dim // 2, _as_fp32(theta), groups, int(inverse),
        HAS_POS=pos is not None, HAS_TABLE=cos3 is not None, BLOCK_S=block_s, BLOCK_D=block_d,
        num_warps=NUM_WARPS,
    )


# ------------------------------------------------------------------------------------------ custom ops
@torch.library.custom_op("seedcoder::rotary", mutates_args=())
def _rotary_op(q: torch.Tensor, k: torch.Tensor, position_ids: torch.Tensor | None, cos: torch.Tensor | None,
               sin: torch.Tensor | None, theta: float, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    q_out = _common.new_empty(q.shape, dtype=q.dtype, device=q.device)
    k_out = _common.new_empty(k.shape, dtype=k.dtype, device=k.device)
    _launch(q, k, q_out, k_out, position_ids, cos, sin, theta, inverse)
    return q_out, k_out


@_rotary_op.register_fake
def _(q, k, position_ids, cos, sin, theta, inverse):
    return q.new_empty(q.shape), k.new_empty(k.shape)


@torch.library.custom_op("seedcoder::rotary_inplace", mutates_args=("q", "k"))
def _rotary_inplace_op(q: torch.Tensor, k: torch.Tensor, position_ids: torch.Tensor | None, cos: torch.Tensor | None,
                       sin: torch.Tensor | None, theta: float, inverse: bool) -> None:
    _launch(q, k, q, k, position_ids, cos, sin, theta, inverse)


@_rotary_inplace_op.register_fake
def _(q, k, position_ids, cos, sin, theta, inverse):
    return None


# CUDA C++ ops (csrc/cuda/rotary_ops.cpp): same schemas under torch.ops.seedcoder_cuda; their fake impls are
# registered here once the extension is loaded.
_cuda_fakes_registered = False


def load_cuda_ops():
    """Load the CUDA extension and register the fake impls of its rotary ops (clear error when not built)."""
    global _cuda_fakes_registered
    ops = _cuda_ext.cuda_ops()
    if not _cuda_fakes_registered:
        torch.library.register_fake("seedcoder_cuda::rotary")(lambda q, k, position_ids, cos, sin, theta, inverse: (
            q.new_empty(q.shape), k.new_empty(k.shape)))
        torch.library.register_fake("seedcoder_cuda::rotary_inplace")(
            lambda q, k, position_ids, cos, sin, theta, inverse: None)
        _cuda_fakes_registered = True
    return ops


def _rotate(q, k, position_ids, cos, sin, theta: float, inverse: bool, backend: str):
    if backend == "cuda":
        return torch.ops.seedcoder_cuda.rotary(q, k, position_ids, cos, sin, theta, inverse)
    return torch.ops.seedcoder.rotary(q, k, position_ids, cos, sin, theta, inverse)


def _rotate_inplace(q, k, position_ids, cos, sin, theta: float, inverse: bool, backend: str) -> None:
    if backend == "cuda":
        torch.ops.seedcoder_cuda.rotary_inplace(q, k, position_ids, cos, sin, theta, inverse)
    else:
        torch.ops.seedcoder.rotary_inplace(q, k, position_ids, cos, sin, theta, inverse)


def _contiguous_last_dim(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


class RotaryFunction(torch.autograd.Function):
    """Out-of-place RoPE: forward rotates q and k by +angle (one launch), backward rotates the grads by -angle."""

    @staticmethod
    def forward(ctx, q, k, position_ids, cos, sin, theta: float, backend: str):
        ctx.save_for_backward(position_ids, cos, sin)
        ctx.theta, ctx.backend = theta, backend
        return _rotate(q, k, position_ids, cos, sin, theta, False, backend)

    @staticmethod
    def backward(ctx, grad_q, grad_k):
        position_ids, cos, sin = ctx.saved_tensors
        grad_q, grad_k = _rotate(_contiguous_last_dim(grad_q), _contiguous_last_dim(grad_k), position_ids, cos, sin,
                                 ctx.theta, True, ctx.backend)
        return grad_q, grad_k, None, None, None, None, None


def _rotate_one(grad, position_ids, cos, sin, theta, backend):
    """Inverse rotation of one tensor: the same kernel with a zero-head partner."""
    grad = _contiguous_last_dim(grad)
    return _rotate(grad, grad[..., :0, :], position_ids, cos, sin, theta, True, backend)[0]


class RotaryInplaceQFunction(torch.autograd.Function):
    """In-place RoPE, part 1: one launch rotates q AND k in place; this node owns q's gradient.

    autograd.Function cannot mark two dirty outputs when an input is a view (the usual case: q and k are
    views of a projection output), so k's in-place update is recorded by RotaryInplaceKFunction, applied
    right after on the already rotated k (its forward does nothing but mark k dirty).
    """

    @staticmethod
    def forward(ctx, q, k, position_ids, cos, sin, theta: float, backend: str):
        _rotate_inplace(q, k, position_ids, cos, sin, theta, False, backend)
        ctx.save_for_backward(position_ids, cos, sin)
        ctx.theta, ctx.backend = theta, backend
        ctx.mark_dirty(q)
        return q

    @staticmethod
    def backward(ctx, grad_q):
        position_ids, cos, sin = ctx.saved_tensors
        return _rotate_one(grad_q, position_ids, cos, sin, ctx.theta, ctx.backend), None, None, None, None, None, None


class RotaryInplaceKFunction(torch.autograd.Function):
    """In-place RoPE, part 2: records that k (already rotated by part 1) was modified in place."""

    @staticmethod
    def forward(ctx, k, position_ids, cos, sin, theta: float, backend: str):
        ctx.save_for_backward(position_ids, cos, sin)
        ctx.theta, ctx.backend = theta, backend
        ctx.mark_dirty(k)
        return k

    @staticmethod
    def backward(ctx, grad_k):
        position_ids, cos, sin = ctx.saved_tensors
        return _rotate_one(grad_k, position_ids, cos, sin, ctx.theta, ctx.backend), None, None, None, None, None


# ------------------------------------------------------------------------------------------ reference
def rotary_cos_sin(position_ids: torch.Tensor, theta: float, head_dim: int, *,
                   dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """HF-style tables (cos, sin) of shape position_ids.shape + (head_dim,), halves duplicated, computed in
    fp32 exactly like transformers' LlamaRotaryEmbedding (default rope type), then cast to dtype."""
    if head_dim % 2:
        raise ValueError(f"head_dim must be even, got {head_dim}")
    device = position_ids.device
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim))
    freqs = position_ids[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotary_reference(q: torch.Tensor, k: torch.Tensor, position_ids: torch.Tensor | None = None, *,
                     theta: float = 500_000.0, cos: torch.Tensor | None = None, sin: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain PyTorch RoPE (HF formula) with fp32 math and fp32 tables, differentiable; outputs in q's dtype."""
    q4, k4, pos, cos3, sin3 = _as_batched(q, k, position_ids, cos, sin)
    if cos3 is None:
        if pos is None:
            pos = torch.arange(q4.shape[1], device=q.device).unsqueeze(0)
        cos3, sin3 = rotary_cos_sin(pos, theta, q4.shape[-1])
    cos4, sin4 = cos3.float().unsqueeze(2), sin3.float().unsqueeze(2)  # broadcast over heads
    q_out = (q4.float() * cos4 + _rotate_half(q4.float()) * sin4).to(q.dtype)
    k_out = (k4.float() * cos4 + _rotate_half(k4.float()) * sin4).to(k.dtype)
    if q.dim() == 3:
        q_out, k_out = q_out.squeeze(0), k_out.squeeze(0)
    return q_out, k_out


# ------------------------------------------------------------------------------------------ public
def apply_rotary(q: torch.Tensor, k: torch.Tensor, position_ids: torch.Tensor | None = None, *,
                 theta: float = 500_000.0, cos: torch.Tensor | None = None, sin: torch.Tensor | None = None,
                 inplace: bool = False, backend: str = "triton") -> tuple[torch.Tensor, torch.Tensor]:
    """Apply RoPE (HF rotate_half layout) to q (B, S, Hq, D) / (T, Hq, D) and k (same leading dims, Hkv heads).

    position_ids: int32/int64 (B or 1, S) or (T,) for packed sequences (each document restarts at 0); default
    arange(S) per row. theta: RoPE base; angles are computed in the kernel in fp32 like HF. cos/sin: HF-format
    tables (B or 1, S, D) ((T, D) or (1, T, D) when packed), fp32 or q's dtype, used instead of theta; then
    position_ids must be None. inplace: rotate q and k in place and return them (autograd works for non-leaf
    tensors: they are marked dirty). backend: "triton", "cuda" (CUDA C++ extension) or "torch" (reference).
    Returns (q_out, k_out): new contiguous tensors, or q and k themselves when inplace.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    _check_args(q, k, position_ids, cos, sin)
    tracks_grad = inplace and torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)
    if tracks_grad:
        for name, t in (("q", q), ("k", k)):  # checked before anything is mutated, whatever the backend
            if t.is_leaf and t.requires_grad:
                raise RuntimeError(f"inplace=True: {name} is a leaf tensor that requires grad, which autograd cannot "
                                   "update in place; use inplace=False")
    if backend == "cuda":
        if not q.is_cuda:
            raise ValueError(f"backend='cuda' needs CUDA tensors, q is on {q.device}")
        if not torch.compiler.is_compiling():  # under torch.compile the ops were loaded by an eager call or at import
            load_cuda_ops()
    elif backend == "torch" or not _common.use_triton(q):
        q_out, k_out = rotary_reference(q, k, position_ids, theta=theta, cos=cos, sin=sin)
        if inplace:
            return q.copy_(q_out), k.copy_(k_out)
        return q_out, k_out
    theta = float(theta)
    if not inplace:
        return RotaryFunction.apply(q, k, position_ids, cos, sin, theta, backend)
    if tracks_grad:
        q = RotaryInplaceQFunction.apply(q, k, position_ids, cos, sin, theta, backend)
        k = RotaryInplaceKFunction.apply(k, position_ids, cos, sin, theta, backend)
        return q, k
    _rotate_inplace(q, k, position_ids, cos, sin, theta, False, backend)
    return q, k


def _try_load_cuda_ops() -> None:
    """Load a built extension at import so torch.compile never has to trace the loader."""
    if torch.cuda.is_available() and importlib.util.find_spec("seedcoder._cuda") is not None:
        try:
            load_cuda_ops()
        except Exception:  # a broken build surfaces later, with its message, when backend="cuda" is asked for
            pass


_try_load_cuda_ops()


# ------------------------------------------------------------------------------------------ compile specs
def _register_compile_specs() -> None:
    """Every variant _launch can produce: BLOCK_D (D/2 <= 32, 64, 128) x q dtype x angle source. Launch values of the
    ints (CompileSpec.ints): contiguous (B, S, H, D) q and k from the projections, 2 rows of 8,192 tokens, 32 query
    and 8 key heads of D = 2·BLOCK_D, (B, S) positions and (B, S, D) tables; hot: bf16 at the 1B and 8B head dims."""
    int_args = ["q_stride_b", "q_stride_s", "q_stride_h", "k_stride_b", "k_stride_s", "k_stride_h",
                "q_out_stride_b", "q_out_stride_s", "q_out_stride_h", "k_out_stride_b", "k_out_stride_s",
                "k_out_stride_h", "pos_stride_b", "pos_stride_s", "table_stride_b", "table_stride_s",
                "seqlen", "q_heads", "k_heads", "HALF_D"]
    batch, seqlen, q_heads, k_heads = 2, 8192, 32, 8
    for block_d in (32, 64, 128):
        block_s = TILE_ELEMENTS // block_d
        head_dim = 2 * block_d
        q_strides = (seqlen * q_heads * head_dim, q_heads * head_dim, head_dim)
        k_strides = (seqlen * k_heads * head_dim, k_heads * head_dim, head_dim)
        for dtype in _common.FLOAT_DTYPES:
            x = "*" + _common.TRITON_DTYPE[dtype]
            sources = [("theta", None, None), ("theta-pos-i32", "*i32", None), ("theta-pos-i64", "*i64", None)]
            sources += [(f"table-{_common.TRITON_DTYPE[t]}", None, "*" + _common.TRITON_DTYPE[t])
                        for t in dict.fromkeys((torch.float32, dtype))]
            for source, pos_type, table_type in sources:
                signature = {"q_ptr": x, "k_ptr": x, "q_out_ptr": x, "k_out_ptr": x,
                             "pos_ptr": pos_type or "constexpr", "cos_ptr": table_type or "constexpr",
                             "sin_ptr": table_type or "constexpr"}
                signature.update({a: "i32" for a in int_args})
                signature.update({"theta": "fp32", "num_groups": "i32", "inverse": "i32", "HAS_POS": "constexpr",
                                  "HAS_TABLE": "constexpr", "BLOCK_S": "constexpr", "BLOCK_D": "constexpr"})
                constexprs = {"HAS_POS": pos_type is not None, "HAS_TABLE": table_type is not None,
                              "BLOCK_S": block_s, "BLOCK_D": block_d}
                constexprs.update({name: None for name, t in (("pos_ptr", pos_type), ("cos_ptr", table_type),
                                                              ("sin_ptr", table_type)) if t is None})
                ints = dict(zip(int_args[:12], q_strides + k_strides + q_strides + k_strides))
                ints |= {"pos_stride_b": seqlen if pos_type else 0, "pos_stride_s": 1 if pos_type else 0,
                         "table_stride_b": seqlen * head_dim if table_type else 0,
                         "table_stride_s": head_dim if table_type else 0,
                         "seqlen": seqlen, "q_heads": q_heads, "k_heads": k_heads, "HALF_D": block_d,
                         "num_groups": num_head_groups(batch, seqlen, q_heads + k_heads, block_s, 132),  # H100: 132 SMs
                         "inverse": 0}
                _common.register_compile_spec(_common.CompileSpec(
                    name=f"rotary[{_common.TRITON_DTYPE[dtype]},{source},BLOCK_D={block_d}]", fn=_rotary_kernel,
                    signature=signature, constexprs=constexprs, num_warps=NUM_WARPS, quick=dtype == torch.bfloat16,
                    ints=ints, hot=dtype == torch.bfloat16 and block_d in (32, 64) and source in ("theta", "theta-pos-i64")))

_register_compile_specs()
