"""RMSNorm with an optional fused residual add: Triton kernels, a CUDA C++ backend, and the torch reference.

    y = h * rsqrt(mean(h², -1) + eps) * weight,   h = x   or   h = x + residual (then also returns h)

Semantics (shared by every backend):
- With a residual, h = x + residual is added in fp32 and rounded once to x's dtype; that rounded h is the
  returned `new_residual` (what the next block adds to) and also what gets normalized, exactly as an unfused
  `h = x + residual; y = rms_norm(h)` at x's dtype would do, so the fused op is a drop-in replacement.
- Statistics in fp32: rstd = rsqrt(mean(h²) + eps) per row, saved (fp32, one per row) for the backward.
  y = h * rstd * weight is computed in fp32 and rounded once to x's dtype; weight may be fp32/bf16/fp16
  independently of x (fp32 weight with bf16 activations is common).

Forward (one row per program): rows up to FWD_MAX_SINGLE_BLOCK wide are held in registers (one read of x,
one write of y). Wider rows loop over column blocks twice: pass 1 accumulates Σh² (and writes h when a
residual is fused), pass 2 re-reads h (an L2 hit for rows this size) and writes y.

Backward, with xhat = h * rstd and g = dy * weight:
    dh = rstd * (g - xhat * mean(g * xhat)),  dx = d_residual = dh + (incoming grad of new_residual)
    dweight = Σ_rows dy * xhat
dweight is accumulated in fp32 without atomics: a persistent grid of P ≈ (a few per SM) programs, each
looping over its contiguous range of rows and keeping its dweight partial in registers, writes a (P, N) fp32
buffer that a second kernel sums over P (and casts to weight's dtype). Rows up to BWD_MAX_SINGLE_BLOCK are
handled whole by one program (dx and the dweight partial from one read of dy and h). Wider rows first get
their per-row coefficient rstd³·mean(g·h) from a small looping kernel, then a 2-D grid (row range × column
block) computes dx and the dweight partials one column block at a time.

Dispatch: backend="triton" runs the kernels on CUDA tensors (or in the interpreter under TRITON_INTERPRET=1)
and the torch reference on plain CPU; backend="cuda" runs csrc/cuda/rms_norm.cu through the extension
seedcoder._cuda; backend="torch" is the reference. Kernel launches are torch custom ops (seedcoder::rms_norm_fwd /
rms_norm_bwd, and seedcoder_cuda::rms_norm_fwd / rms_norm_bwd with the same schemas) so torch.compile traces
callers without graph breaks.
"""

from __future__ import annotations

import functools
import itertools
import numbers

import torch
import triton
import triton.language as tl

from . import _common, _cuda_ext
from ._common import CompileSpec, cdiv, next_power_of_2, register_compile_spec

__all__ = ["rms_norm", "rms_norm_reference"]

BACKENDS = ("triton", "cuda", "torch")

# Heuristic limits, checked by the compile gate (no spills on sm_80 / sm_90a).
MIN_BLOCK = 1024  # narrower rows use a masked 1024-wide block (memory-bound: masked lanes move no bytes)
FWD_MAX_SINGLE_BLOCK = 16384  # rows up to this width stay in registers in the forward
BWD_MAX_SINGLE_BLOCK = 8192  # backward holds dy, h, weight and the dweight partial: half the forward's width
FWD_WIDE_BLOCK = 4096  # column block of the looping forward
BWD_WIDE_BLOCK = 2048  # column block of the 2-D backward (and 2x that for the row-coefficient kernel)
DW_REDUCE_BLOCK_P, DW_REDUCE_BLOCK_N = 32, 128
DW_REDUCE_BLOCK_N_INTERPRETER = 1024  # the interpreter pays per program: fewer, wider ones (same code)
INTERPRETER_PROGRAMS = 3  # backward programs under the interpreter: small, so each program loops over rows


# ================================================================================================ kernels
@triton.jit
def _rms_norm_fwd_kernel(
    X, R, W, Y, H_OUT, RSTD,
    stride_x, stride_r, stride_y, stride_h,
    n_cols, eps,
    BLOCK_N: tl.constexpr, SINGLE_BLOCK: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    X += row * stride_x
    Y += row * stride_y
    if HAS_RESIDUAL:
        R += row * stride_r
        H_OUT += row * stride_h
    cols = tl.arange(0, BLOCK_N)
    if SINGLE_BLOCK:  # the whole row lives in registers: one read of x (and residual), one write of y
        mask = cols < n_cols
        h = tl.load(X + cols, mask=mask, other=0.0)
        if HAS_RESIDUAL:
            h = (h.to(tl.float32) + tl.load(R + cols, mask=mask, other=0.0).to(tl.float32)).to(X.dtype.element_ty)
            tl.store(H_OUT + cols, h, mask=mask)
        hf = h.to(tl.float32)
        rstd = tl.rsqrt(tl.sum(hf * hf, axis=0) / n_cols + eps)
        w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(Y + cols, (hf * rstd * w).to(Y.dtype.element_ty), mask=mask)
    else:  # two passes over column blocks
        sum_sq = tl.zeros([BLOCK_N], dtype=tl.float32)
        for start in range(0, n_cols, BLOCK_N):
            c = start + cols
            mask = c < n_cols
            h = tl.load(X + c, mask=mask, other=0.0)
            if HAS_RESIDUAL:
                h = (h.to(tl.float32) + tl.load(R + c, mask=mask, other=0.0).to(tl.float32)).to(X.dtype.element_ty)
                tl.store(H_OUT + c, h, mask=mask)
            hf = h.to(tl.float32)
            sum_sq += hf * hf
        rstd = tl.rsqrt(tl.sum(sum_sq, axis=0) / n_cols + eps)
        if HAS_RESIDUAL:
            tl.debug_barrier()  # pass 2 reads the h this program just stored
        for start in range(0, n_cols, BLOCK_N):
            c = start + cols
            mask = c < n_cols
            if HAS_RESIDUAL:
                hf = tl.load(H_OUT + c, mask=mask, other=0.0).to(tl.float32)
            else:
                hf = tl.load(X + c, mask=mask, other=0.0).to(tl.float32)
            w = tl.load(W + c, mask=mask, other=0.0).to(tl.float32)
            tl.store(Y + c, (hf * rstd * w).to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + row, rstd)


@triton.jit
def _rms_norm_bwd_kernel(
    DY, H, W, RSTD, DRES, DX, DW_PARTIAL,
    stride_dy, stride_h, stride_dres, stride_dx,
    n_rows, n_cols, rows_per_program,
    BLOCK_N: tl.constexpr, HAS_DRES: tl.constexpr,
):
    """Rows up to BLOCK_N wide: each program handles rows [pid*rows_per_program, ...) whole and keeps its
    dweight partial in registers; writes row `pid` of DW_PARTIAL (n_programs, n_cols), fp32."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < n_cols
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    row_start = pid.to(tl.int64) * rows_per_program
    for i in range(0, tl.minimum(rows_per_program, n_rows - row_start)):
        row64 = row_start + i
        dy = tl.load(DY + row64 * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
        h = tl.load(H + row64 * stride_h + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row64)
        xhat = h * rstd
        g = dy * w
        mean_gx = tl.sum(g * xhat, axis=0) / n_cols
        dx = (g - xhat * mean_gx) * rstd
        if HAS_DRES:
            dx += tl.load(DRES + row64 * stride_dres + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(DX + row64 * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=mask)
        dw_acc += dy * xhat
    tl.store(DW_PARTIAL + pid.to(tl.int64) * n_cols + cols, dw_acc, mask=mask)


@triton.jit
def _rms_norm_bwd_row_coef_kernel(
    DY, H, W, RSTD, COEF,
    stride_dy, stride_h,
    n_cols,
    BLOCK_N: tl.constexpr,
):
    """Wide rows, step 1: COEF[row] = rstd³ · mean(dy·w·h), so that dh = rstd·dy·w - COEF·h."""
    row = tl.program_id(0).to(tl.int64)
    DY += row * stride_dy
    H += row * stride_h
    cols = tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        c = start + cols
        mask = c < n_cols
        dy = tl.load(DY + c, mask=mask, other=0.0).to(tl.float32)
        h = tl.load(H + c, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(W + c, mask=mask, other=0.0).to(tl.float32)
        acc += dy * w * h
    rstd = tl.load(RSTD + row)
    tl.store(COEF + row, rstd * rstd * rstd * (tl.sum(acc, axis=0) / n_cols))


@triton.jit
def _rms_norm_bwd_blocked_kernel(
    DY, H, W, RSTD, COEF, DRES, DX, DW_PARTIAL,
    stride_dy, stride_h, stride_dres, stride_dx,
    n_rows, n_cols, rows_per_program,
    BLOCK_N: tl.constexpr, HAS_DRES: tl.constexpr,
):
    """Wide rows, step 2: program (p, j) handles column block j of rows [p*rows_per_program, ...)."""
    pid = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = cols < n_cols
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    row_start = pid.to(tl.int64) * rows_per_program
    for i in range(0, tl.minimum(rows_per_program, n_rows - row_start)):
        row64 = row_start + i
        dy = tl.load(DY + row64 * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
        h = tl.load(H + row64 * stride_h + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row64)
        coef = tl.load(COEF + row64)
        dx = dy * w * rstd - h * coef
        if HAS_DRES:
            dx += tl.load(DRES + row64 * stride_dres + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(DX + row64 * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=mask)
        dw_acc += dy * h * rstd
    tl.store(DW_PARTIAL + pid.to(tl.int64) * n_cols + cols, dw_acc, mask=mask)


@triton.jit
def _rms_norm_dw_reduce_kernel(
    DW_PARTIAL, DW,
    n_partials, n_cols,
    BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """DW[cols] = Σ_p DW_PARTIAL[p, cols] in fp32, cast to weight's dtype."""
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < n_cols
    parts = tl.arange(0, BLOCK_P)
    acc = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
    for start in range(0, n_partials, BLOCK_P):
        p = start + parts
        m = (p < n_partials)[:, None] & col_mask[None, :]
        acc += tl.load(DW_PARTIAL + p.to(tl.int64)[:, None] * n_cols + cols[None, :], mask=m, other=0.0)
    tl.store(DW + cols, tl.sum(acc, axis=0).to(DW.dtype.element_ty), mask=col_mask)


# ============================================================================================ heuristics
def _num_warps(block: int) -> int:
    return 4 if block < 2048 else 8 if block < 8192 else 16


def _fwd_config(n_cols: int) -> tuple[int, bool, int]:
    """(BLOCK_N, SINGLE_BLOCK, num_warps) of the forward for rows n_cols wide."""
    block = max(next_power_of_2(n_cols), MIN_BLOCK)
    if block <= FWD_MAX_SINGLE_BLOCK:
        return block, True, _num_warps(block)
    return FWD_WIDE_BLOCK, False, _num_warps(FWD_WIDE_BLOCK)


def _bwd_config(n_cols: int) -> tuple[int, bool, int]:
    """(BLOCK_N, SINGLE_BLOCK, num_warps) of the backward; not SINGLE_BLOCK means the coef + blocked kernels."""
    block = max(next_power_of_2(n_cols), MIN_BLOCK)
    if block <= BWD_MAX_SINGLE_BLOCK:
        # 4 row-sized fp32 arrays live in registers (weight, dweight partial, dy, h): 16 warps from 4096 on
        # keeps them at <= 128 registers per thread without spilling
        return block, True, 4 if block < 2048 else 8 if block < 4096 else 16
    return BWD_WIDE_BLOCK, False, _num_warps(BWD_WIDE_BLOCK)


ROW_COEF_BLOCK = 2 * BWD_WIDE_BLOCK
ROW_COEF_WARPS = _num_warps(ROW_COEF_BLOCK)
DW_REDUCE_WARPS = 4


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _num_row_programs(device: torch.device, n_rows: int, n_col_blocks: int, num_warps: int) -> int:
    """Backward programs along rows: about 16 warps per SM in all (persistent grid), at most one per row."""
    if device.type == "cuda":
        target = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
        target *= max(1, 16 // num_warps)
        target = max(1, target // n_col_blocks)
    else:
        target = INTERPRETER_PROGRAMS
    return max(1, min(n_rows, target))


# ========================================================================================= compile specs
# (x dtype, weight dtype): every activation dtype with a weight of the same dtype or fp32 (the mixed case).
_DTYPE_PAIRS = [("fp32", "fp32"), ("bf16", "bf16"), ("fp16", "fp16"), ("bf16", "fp32"), ("fp16", "fp32")]


# Launch values of the int arguments (CompileSpec.ints): rows as wide as the config's widest width, contiguous;
# 16,384 rows (two 8K-token rows of a batch) whose backward grid is _num_row_programs's on an H100 (132 SMs).
_ROWS, _H100_SMS = 16384, 132
HOT_WIDTHS = (2048, 4096)  # the 1B and 8B presets' hidden sizes, in bf16


def _bwd_rows_per_program(n_col_blocks: int, warps: int) -> int:
    return cdiv(_ROWS, max(1, min(_ROWS, _H100_SMS * max(1, 16 // warps) // n_col_blocks)))


def _register_compile_specs() -> None:
    widths = [1 << k for k in range(0, 17)]  # every width class up to 65,536 (and the wide path beyond)
    fwd_configs = {_fwd_config(n): n for n in widths}  # config -> the widest width that picks it
    bwd_configs = {_bwd_config(n): n for n in widths}
    for (xt, wt), has_res in itertools.product(_DTYPE_PAIRS, (False, True)):
        for (block, single, warps), width in sorted(fwd_configs.items()):
            sig = {"X": f"*{xt}", "R": f"*{xt}", "W": f"*{wt}", "Y": f"*{xt}", "H_OUT": f"*{xt}", "RSTD": "*fp32",
                   "stride_x": "i32", "stride_r": "i32", "stride_y": "i32", "stride_h": "i32", "n_cols": "i32",
                   "eps": "fp32", "BLOCK_N": "constexpr", "SINGLE_BLOCK": "constexpr", "HAS_RESIDUAL": "constexpr"}
            ints = dict.fromkeys(("stride_x", "stride_r", "stride_y", "stride_h", "n_cols"), width)
            register_compile_spec(CompileSpec(
                f"rms_norm_fwd[{xt},w={wt},res={int(has_res)}]", _rms_norm_fwd_kernel, sig,
                {"BLOCK_N": block, "SINGLE_BLOCK": single, "HAS_RESIDUAL": has_res}, num_warps=warps,
                quick=xt == "bf16", ints=ints, hot=(xt, wt) == ("bf16", "bf16") and width in HOT_WIDTHS))
        for (block, single, warps), width in sorted(bwd_configs.items()):
            sig = {"DY": f"*{xt}", "H": f"*{xt}", "W": f"*{wt}", "RSTD": "*fp32"}
            if not single:
                sig["COEF"] = "*fp32"
            sig |= {"DRES": f"*{xt}", "DX": f"*{xt}", "DW_PARTIAL": "*fp32", "stride_dy": "i32", "stride_h": "i32",
                    "stride_dres": "i32", "stride_dx": "i32", "n_rows": "i32", "n_cols": "i32", "rows_per_program": "i32",
                    "BLOCK_N": "constexpr", "HAS_DRES": "constexpr"}
            ints = dict.fromkeys(("stride_dy", "stride_h", "stride_dres", "stride_dx", "n_cols"), width)
            ints |= {"n_rows": _ROWS, "rows_per_program": _bwd_rows_per_program(1 if single else cdiv(width, block), warps)}
            kernel = _rms_norm_bwd_kernel if single else _rms_norm_bwd_blocked_kernel
            name = "rms_norm_bwd" if single else "rms_norm_bwd_blocked"
            register_compile_spec(CompileSpec(f"{name}[{xt},w={wt},dres={int(has_res)}]", kernel, sig,
                                              {"BLOCK_N": block, "HAS_DRES": has_res}, num_warps=warps, quick=xt == "bf16",
                                              ints=ints, hot=(xt, wt) == ("bf16", "bf16") and width in HOT_WIDTHS))
    wide = max(widths)
    for xt, wt in _DTYPE_PAIRS:
        sig = {"DY": f"*{xt}", "H": f"*{xt}", "W": f"*{wt}", "RSTD": "*fp32", "COEF": "*fp32", "stride_dy": "i32",
               "stride_h": "i32", "n_cols": "i32", "BLOCK_N": "constexpr"}
        register_compile_spec(CompileSpec(f"rms_norm_bwd_row_coef[{xt},w={wt}]", _rms_norm_bwd_row_coef_kernel, sig,
                                          {"BLOCK_N": ROW_COEF_BLOCK}, num_warps=ROW_COEF_WARPS, quick=xt == "bf16",
                                          ints=dict.fromkeys(("stride_dy", "stride_h", "n_cols"), wide)))
    for wt in ("fp32", "bf16", "fp16"):
        sig = {"DW_PARTIAL": "*fp32", "DW": f"*{wt}", "n_partials": "i32", "n_cols": "i32", "BLOCK_P": "constexpr",
               "BLOCK_N": "constexpr"}
        n_partials = cdiv(_ROWS, _bwd_rows_per_program(1, _bwd_config(4096)[2]))
        register_compile_spec(CompileSpec(f"rms_norm_dw_reduce[w={wt}]", _rms_norm_dw_reduce_kernel, sig,
                                          {"BLOCK_P": DW_REDUCE_BLOCK_P, "BLOCK_N": DW_REDUCE_BLOCK_N},
                                          num_warps=DW_REDUCE_WARPS, quick=wt != "fp16",
                                          ints={"n_partials": n_partials, "n_cols": 4096}))


_register_compile_specs()


# ======================================================================================== the custom ops
def _rows(t: torch.Tensor, n_cols: int) -> torch.Tensor:
    """(..., N) → (rows, N) with a unit column stride (a view when the leading dims allow it, else a copy)."""
    t2 = t.reshape(-1, n_cols)
    return t2 if t2.stride(-1) == 1 or n_cols == 1 else t2.contiguous()


def _fwd_fake(x, weight, residual, eps):
    res_out = torch.empty_like(x, memory_format=torch.contiguous_format) if residual is not None else x.new_empty((0,))
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    return y, res_out, x.new_empty(x.shape[:-1], dtype=torch.float32)


def _bwd_fake(dy, h, weight, rstd, dresidual_out):
    return torch.empty_like(h, memory_format=torch.contiguous_format), torch.empty_like(weight)


@torch.library.custom_op("seedcoder::rms_norm_fwd", mutates_args=())
def _rms_norm_fwd_op(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None,
                     eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (y, new_residual or an empty tensor when residual is None, rstd fp32 of shape x.shape[:-1])."""
    n_cols = x.shape[-1]
    x2 = _rows(x, n_cols)
    n_rows = x2.shape[0]
    weight = weight.contiguous()
    y = _common.new_empty(x.shape, dtype=x.dtype, device=x.device)
    rstd = _common.new_empty(x.shape[:-1], dtype=torch.float32, device=x.device)
    if residual is not None:
        r2 = _rows(residual, n_cols)
        res_out = _common.new_empty(x.shape, dtype=x.dtype, device=x.device)
        res_out2 = res_out.view(-1, n_cols)
    else:
        r2 = res_out2 = x2  # not read: HAS_RESIDUAL=False
        res_out = x.new_empty((0,))
    if n_rows == 0:
        return y, res_out, rstd
    block, single, warps = _fwd_config(n_cols)
    y2 = y.view(-1, n_cols)
    _rms_norm_fwd_kernel[(n_rows,)](
        x2, r2, weight, y2, res_out2, rstd,
        x2.stride(0), r2.stride(0), y2.stride(0), res_out2.stride(0),
        n_cols, eps,
        BLOCK_N=block, SINGLE_BLOCK=single, HAS_RESIDUAL=residual is not None, num_warps=warps,
    )
    return y, res_out, rstd


_rms_norm_fwd_op.register_fake(_fwd_fake)


@torch.library.custom_op("seedcoder::rms_norm_bwd", mutates_args=())
def _rms_norm_bwd_op(dy: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor,
                     dresidual_out: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (dx = dh + dresidual_out, dweight in weight's dtype); h is the normalized input (x or x + residual)."""
    n_cols = h.shape[-1]
    dy2, h2 = _rows(dy, n_cols), _rows(h, n_cols)
    n_rows = h2.shape[0]
    weight = weight.contiguous()
    rstd = rstd.reshape(-1).contiguous()
    dx = _common.new_empty(h.shape, dtype=h.dtype, device=h.device)
    dx2 = dx.view(-1, n_cols)
    dres2 = _rows(dresidual_out, n_cols) if dresidual_out is not None else dy2
    if n_rows == 0:
        return dx, torch.zeros_like(weight)
    block, single, warps = _bwd_config(n_cols)
    n_col_blocks = 1 if single else cdiv(n_cols, block)
    n_programs = _num_row_programs(h.device, n_rows, n_col_blocks, warps)
    rows_per_program = cdiv(n_rows, n_programs)
    n_programs = cdiv(n_rows, rows_per_program)  # every program gets at least one row
    dw_partial = _common.new_empty((n_programs, n_cols), dtype=torch.float32, device=h.device)
    strides = (dy2.stride(0), h2.stride(0), dres2.stride(0), dx2.stride(0))
    if single:
        _rms_norm_bwd_kernel[(n_programs,)](
            dy2, h2, weight, rstd, dres2, dx2, dw_partial, *strides, n_rows, n_cols, rows_per_program,
            BLOCK_N=block, HAS_DRES=dresidual_out is not None, num_warps=warps,
        )
    else:
        coef = _common.new_empty((n_rows,), dtype=torch.float32, device=h.device)
        _rms_norm_bwd_row_coef_kernel[(n_rows,)](
            dy2, h2, weight, rstd, coef, dy2.stride(0), h2.stride(0), n_cols,
            BLOCK_N=ROW_COEF_BLOCK, num_warps=ROW_COEF_WARPS,
        )
        _rms_norm_bwd_blocked_kernel[(n_programs, n_col_blocks)](
            dy2, h2, weight, rstd, coef, dres2, dx2, dw_partial, *strides, n_rows, n_cols, rows_per_program,
            BLOCK_N=block, HAS_DRES=dresidual_out is not None, num_warps=warps,
        )
    dweight = _common.new_empty(weight.shape, dtype=weight.dtype, device=weight.device)
    reduce_block = DW_REDUCE_BLOCK_N if h.is_cuda else DW_REDUCE_BLOCK_N_INTERPRETER
    _rms_norm_dw_reduce_kernel[(cdiv(n_cols, reduce_block),)](
        dw_partial, dweight, n_programs, n_cols,
        BLOCK_P=DW_REDUCE_BLOCK_P, BLOCK_N=reduce_block, num_warps=DW_REDUCE_WARPS,
    )
    return dx, dweight


_rms_norm_bwd_op.register_fake(_bwd_fake)

# The CUDA C++ ops (csrc/cuda/rms_norm_ops.cpp) have the same schemas; their fake impls can only be
# registered once the extension has defined them, i.e. after the first eager call with backend="cuda".
_cuda_fakes_registered = False


def _load_cuda_ops() -> None:
    """Load seedcoder._cuda (clear RuntimeError when not built) and register fakes of its RMSNorm ops once."""
    global _cuda_fakes_registered
    ops = _cuda_ext.cuda_ops()
    if not _cuda_fakes_registered:
        if not hasattr(ops, "rms_norm_fwd"):
            raise RuntimeError("the CUDA extension seedcoder._cuda has no rms_norm ops (csrc/cuda/rms_norm_ops.cpp): rebuild it")
        torch.library.register_fake("seedcoder_cuda::rms_norm_fwd")(_fwd_fake)
        torch.library.register_fake("seedcoder_cuda::rms_norm_bwd")(_bwd_fake)
        _cuda_fakes_registered = True


# ======================================================================================= autograd + API
class _RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, residual, eps, use_cuda_ext):
        fwd = torch.ops.seedcoder_cuda.rms_norm_fwd if use_cuda_ext else torch.ops.seedcoder.rms_norm_fwd
        y, res_out, rstd = fwd(x, weight, residual, eps)
        has_residual = residual is not None
        if not has_residual:
            ctx.mark_non_differentiable(res_out)
        ctx.save_for_backward(res_out if has_residual else x, weight, rstd)
        ctx.has_residual, ctx.use_cuda_ext = has_residual, use_cuda_ext
        ctx.set_materialize_grads(False)
        return y, res_out

    @staticmethod
    def backward(ctx, dy, dres_out):
        h, weight, rstd = ctx.saved_tensors
        if not ctx.has_residual:
            dres_out = None
        if dy is None and dres_out is None:
            return None, None, None, None, None
        if dy is None:  # only new_residual was used: y contributes nothing
            dy = torch.zeros_like(h)
        bwd = torch.ops.seedcoder_cuda.rms_norm_bwd if ctx.use_cuda_ext else torch.ops.seedcoder.rms_norm_bwd
        dx, dweight = bwd(dy, h, weight, rstd, dres_out)
        # h = x + residual: both receive dh + d(new_residual)
        return dx, dweight, (dx if ctx.has_residual else None), None, None


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, residual: torch.Tensor | None = None):
    """Plain torch, fp32 math, differentiable; same semantics (and return convention) as `rms_norm`."""
    h = x if residual is None else (x.float() + residual.float()).to(x.dtype)
    hf = h.float()
    rstd = torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + eps)
    y = (hf * rstd * weight.float()).to(x.dtype)
    return y if residual is None else (y, h)


def _check_inputs(x, weight, residual, eps) -> None:
    _common.check_tensor("x", x, last_dim_contiguous=True)
    if x.dim() == 0:
        raise ValueError("x: expected at least 1 dimension (..., N), got a scalar")
    if x.shape[-1] == 0:
        raise ValueError(f"x: the normalized (last) dimension is empty, shape {tuple(x.shape)}")
    _common.check_tensor("weight", weight, ndim=1, device=x.device)
    if weight.shape[0] != x.shape[-1]:
        raise ValueError(f"weight: shape {tuple(weight.shape)} does not match x's last dimension {x.shape[-1]}")
    if residual is not None:
        _common.check_tensor("residual", residual, device=x.device, last_dim_contiguous=True)
        if residual.shape != x.shape:
            raise ValueError(f"residual: shape {tuple(residual.shape)} != x's shape {tuple(x.shape)}")
        if residual.dtype != x.dtype:
            raise TypeError(f"residual: dtype {residual.dtype} != x's dtype {x.dtype} (new_residual is returned in x's dtype)")
    if not isinstance(eps, numbers.Real) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(f"eps: expected a non-negative float, got {eps!r}")


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, residual: torch.Tensor | None = None, *,
             backend: str = "triton"):
    """RMSNorm over the last dimension: y = h * rsqrt(mean(h², -1) + eps) * weight with h = x or x + residual.

    x: (..., N) fp32/bf16/fp16 with a contiguous last dimension; weight: (N,) fp32/bf16/fp16 (may differ from
    x's dtype); residual: optional, same shape and dtype as x. Returns y (x's dtype), or (y, new_residual) when
    residual is given, new_residual = x + residual in x's dtype. backend: "triton" (default; the torch
    reference on CPU without TRITON_INTERPRET), "cuda" (the CUDA C++ extension), or "torch" (the reference).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    _check_inputs(x, weight, residual, eps)
    eps = float(eps)
    if backend == "torch" or (backend == "triton" and not _common.use_triton(x)):
        return rms_norm_reference(x, weight, eps, residual)
    use_cuda_ext = backend == "cuda"
    if use_cuda_ext:
        if not torch.compiler.is_compiling():
            _load_cuda_ops()
        if not x.is_cuda:
            raise ValueError(f"backend='cuda' needs CUDA tensors, x is on {x.device}")
    y, res_out = _RMSNormFunction.apply(x, weight, residual, eps, use_cuda_ext)
    return y if residual is None else (y, res_out)
