"""Cross-entropy on logits: Triton kernels, the torch reference, and the autograd function.

    loss_i = lse_i - (1-ε)·z_{i,y_i} - ε·mean_v(z_{i,v}) + z_loss·lse_i²      (0 when y_i == ignore_index)
    z = softcap·tanh(x/softcap) (or z = x),   lse_i = log Σ_v exp(z_{i,v})

which is torch.nn.functional.cross_entropy with label smoothing ε (torch's definition:
(1-ε)·CE + ε·mean_v(-log p_v)), plus PaLM's z-loss and Gemma-style logit soft-capping. Reductions: "none"
(per-token, 0 for ignored tokens), "sum", "mean" (sum over non-ignored tokens / their count). All math in
fp32 whatever the logits dtype; the loss is returned in the logits dtype, like torch.

Algorithm. Logits are (N, V) with V up to 262,144 (Seed-Coder: 155,136; at most 1,048,576 is accepted): a row
does not fit in registers or shared memory, so the vocabulary is cut into tiles of BLOCK = 8192 columns (1024
for V < 8192) and every (row, tile) pair is one program of a 1-D grid (full GPU occupancy even for a handful
of rows).
  forward   1. partial kernel: each program reads its tile once and writes the tile's max m_t, Σ exp(z - m_t)
               and Σ z (for label smoothing), 12 bytes per 16-32 KB read;
            2. finalize kernel (16 rows per program): combines each row's tile partials with the online-logsumexp
               rule (d = Σ_t d_t·exp(m_t - m)), reads z_y, writes the per-row loss and lse (fp32).
  backward  3. grad kernel, same (row, tile) grid: reads the tile and lse, writes
               dL/dx = scale_i · (p·(1 + 2·z_loss·lse) - ε/V - (1-ε)·[v == y]) · dz/dx   (p = exp(z - lse),
               dz/dx = 1 - tanh²(x/softcap) or 1) in place into the logits buffer, scale_i = grad_output
               (÷ n_valid for "mean"), all in fp32 and rounded once.
Ignored rows are never read: the partial kernel skips them and the grad kernel only writes their zeros.
Traffic: forward 1 read of the logits, backward 1 read + 1 write: the minimum for a loss whose backward
needs the logits, and it never syncs with the host (n_valid stays on the device).

Why the gradient is written in backward, not in forward (Liger writes loss and gradient in one forward
pass and only rescales in backward): with the gradient in forward, a training step moves the logits 5 times
(forward: read, read, write; backward: rescale = read + write, since grad_output == 1 cannot be known without
a host sync), against 3 times here; grad_output (e.g. an fp16 GradScaler factor) is folded in fp32 before
the one rounding to the logits dtype; and the logits stay valid between forward and backward (e.g. for
an accuracy metric computed after the loss). Memory is the same: either way the logits buffer is kept
alive from forward to backward and becomes the gradient. The fused linear cross-entropy, which must
produce its gradients in forward, calls the three kernels back to back on each chunk.

Contract on the logits buffer (as Liger's): when logits require grad, backward overwrites the logits tensor
IN PLACE with its gradient (no N×V copy) and returns that storage as the gradient; after backward the
logits' values are gone (for a leaf, logits.grad may share its storage). Before backward they are intact.
Misuse is caught, not silent: the write bumps the tensor's version counter, so a second backward through
the same graph (retain_graph=True), or another autograd node that saved these logits and runs after us,
raises PyTorch's "modified by an inplace operation" error. Pass logits.clone() if you need both. Without a
gradient (no requires_grad, or under no_grad) the logits are only read. Under torch.compile the gradient goes
to a fresh buffer (seedcoder::cross_entropy_grad), because a compiled graph may return the logits and
AOTAutograd cannot express a backward that overwrites a graph output; the contract stays: do not read logits
after backward. For large vocabularies under compile, prefer fused_linear_cross_entropy (no N x V logits).

Differences from torch.nn.functional.cross_entropy: "mean" with every token ignored returns 0 (torch: NaN),
and its gradient is 0; labels must be 1-D per row (no class-probability targets, no class weights).

Bad labels (outside [0, V) and not ignore_index): CPU tensors raise ValueError (the check is free there);
CUDA tensors get torch._assert_async (a device-side assert, no host sync); the kernels also mask the
label gather so a bad label can never read out of bounds (it yields a NaN loss).

Dispatch: CUDA tensors (or CPU under TRITON_INTERPRET=1) run the kernels through the torch custom ops
seedcoder::cross_entropy_fwd and seedcoder::cross_entropy_grad_ / _grad (so torch.compile traces callers without
graph breaks); plain CPU tensors run `cross_entropy_reference` (autograd through torch).
"""

from __future__ import annotations

import itertools

import torch
import triton
import triton.language as tl

from . import _common
from ._common import CompileSpec, cdiv, register_compile_spec

__all__ = ["cross_entropy", "cross_entropy_reference"]

REDUCTIONS = ("mean", "sum", "none")
LABEL_DTYPES = (torch.int64, torch.int32)

# Heuristic limits (checked by the compile gate: no spills on sm_80 / sm_90a).
LARGE_BLOCK = 8192  # V >= 8192: 8 warps x 32 elements per thread, a 16 KB (bf16) contiguous read per program
SMALL_BLOCK = 1024  # smaller vocabularies: 1 warp per 1024-wide tile (masked lanes move no bytes)
FINALIZE_BLOCK_TILES = (32, 128)  # the finalize kernel loads all tile partials of a row at once (V=262,144: 32 tiles)
MAX_VOCAB = FINALIZE_BLOCK_TILES[-1] * LARGE_BLOCK  # 1,048,576
FINALIZE_BLOCK_ROWS = 16  # rows per finalize program (its work is tiny: 12 bytes per tile and one logit per row)
FINALIZE_NUM_WARPS = 4

LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x·log2(e)): the hardware ex2 instruction


# ================================================================================================ kernels
@triton.jit
def _tanh_and_sech2(u):
    """tanh(u) and its derivative 1 - tanh²(u) = sech²(u), both to fp32 accuracy.

    libdevice's tanh is unavailable in the interpreter, so this one implementation runs everywhere:
    a Taylor polynomial below |u| = 0.25 (truncation 2e-9 relative), else (1 - e)/(1 + e) with e = exp(-2|u|)
    (no cancellation: 1 - e ≥ 0.39). sech² = 4e/(1 + e)² avoids 1 - tanh² cancelling to 0 for large |u|.
    """
    a = tl.abs(u)
    e = tl.exp2(a * (-2.0 * LOG2E))
    a2 = a * a
    poly = a * (1.0 + a2 * (-0.3333333333333333 + a2 * (0.13333333333333333 + a2 * (
        -0.05396825396825397 + a2 * (0.021869488536155203 + a2 * -0.008863235529902197)))))
    small = a < 0.25
    one_plus_e = 1.0 + e
    t = tl.where(small, poly, (1.0 - e) / one_plus_e)
    t = tl.where(u < 0, -t, t)
    sech2 = tl.where(small, 1.0 - t * t, 4.0 * e / (one_plus_e * one_plus_e))
    return t, sech2


@triton.jit
def _ce_partial_kernel(
    LOGITS, LABELS, PART_MAX, PART_SUMEXP, PART_ZSUM,
    stride_row, n_cols, n_tiles, ignore_index, softcap,
    BLOCK: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
):
    """Program (row, tile): max, Σ exp(z - max) and Σ z over one tile of one row."""
    pid = tl.program_id(0)
    row = pid // n_tiles
    tile = pid - row * n_tiles
    label = tl.load(LABELS + row)
    if label == ignore_index:  # ignored rows are never read (their partials are never used)
        return
    cols = tile * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(LOGITS + row.to(tl.int64) * stride_row + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_SOFTCAP:
        t, _ = _tanh_and_sech2(x * (1.0 / softcap))
        z = softcap * t
    else:
        z = x
    z_or_ninf = tl.where(mask, z, float("-inf"))
    m = tl.max(z_or_ninf, axis=0)
    # A tile of -inf logits (masked vocabulary) has m = -inf: shift by 0 so it sums exp(-inf) = 0, not NaN.
    m_shift = tl.where(m == float("-inf"), 0.0, m)
    sumexp = tl.sum(tl.exp2((z_or_ninf - m_shift) * LOG2E), axis=0)
    zsum = tl.sum(tl.where(mask, z, 0.0), axis=0)
    tl.store(PART_MAX + pid, m)
    tl.store(PART_SUMEXP + pid, sumexp)
    tl.store(PART_ZSUM + pid, zsum)


@triton.jit
def _ce_finalize_kernel(
    LOGITS, LABELS, PART_MAX, PART_SUMEXP, PART_ZSUM, LOSS, LSE,
    stride_row, n_rows, n_cols, n_tiles, ignore_index, label_smoothing, z_loss, softcap,
    BLOCK_ROWS: tl.constexpr, BLOCK_TILES: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
):
    """Program per BLOCK_ROWS rows: lse from the tile partials (online-logsumexp combine), then the loss."""
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    row_mask = rows < n_rows
    labels = tl.load(LABELS + rows, mask=row_mask, other=ignore_index)
    valid = row_mask & (labels != ignore_index)  # ignored rows: partials never written, loss 0
    # All tile partials of a row in one masked load (no loop: BLOCK_TILES >= n_tiles).
    tiles = tl.arange(0, BLOCK_TILES)
    part = rows.to(tl.int64)[:, None] * n_tiles + tiles[None, :]
    part_mask = valid[:, None] & (tiles[None, :] < n_tiles)
    m_t = tl.load(PART_MAX + part, mask=part_mask, other=float("-inf"))
    d_t = tl.load(PART_SUMEXP + part, mask=part_mask, other=0.0)
    zsum = tl.sum(tl.load(PART_ZSUM + part, mask=part_mask, other=0.0), axis=1)
    m = tl.max(m_t, axis=1)
    m_shift = tl.where(m == float("-inf"), 0.0, m)  # every logit -inf: lse = -inf, not NaN from inf - inf
    d = tl.sum(d_t * tl.exp2((m_t - m_shift[:, None]) * LOG2E), axis=1)
    lse = tl.where(valid, m + tl.log(tl.where(valid, d, 1.0)), 0.0)  # 0, not -inf, for masked rows
    # Masked gather: a label outside [0, V) (already reported by the caller's check) gives NaN, never an OOB read.
    label_ok = valid & (labels >= 0) & (labels < n_cols)
    x_y = tl.load(LOGITS + rows.to(tl.int64) * stride_row + labels, mask=label_ok, other=float("nan")).to(tl.float32)
    if HAS_SOFTCAP:
        t_y, _ = _tanh_and_sech2(x_y * (1.0 / softcap))
        z_y = softcap * t_y
    else:
        z_y = x_y
    # Without smoothing the Σz term is skipped, not multiplied by 0: Σz = -inf for a vocab masked with -inf.
    smooth = label_smoothing * (tl.where(label_smoothing > 0.0, zsum, 0.0) / n_cols)
    loss = lse - (1.0 - label_smoothing) * z_y - smooth + z_loss * lse * lse
    tl.store(LOSS + rows, tl.where(valid, loss, 0.0), mask=row_mask)
    tl.store(LSE + rows, lse, mask=row_mask)


@triton.jit
def _ce_grad_kernel(
    LOGITS, GRAD, LABELS, LSE, SCALE,
    stride_row, stride_grad_row, n_cols, n_tiles, ignore_index, label_smoothing, z_loss, softcap,
    BLOCK: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
):
    """Program (row, tile): dL/dx for one tile of one row, scaled by SCALE[row]. GRAD may alias LOGITS."""
    pid = tl.program_id(0)
    row = pid // n_tiles
    tile = pid - row * n_tiles
    label = tl.load(LABELS + row)
    cols = tile * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    grad_ptrs = GRAD + row.to(tl.int64) * stride_grad_row + cols
    if label == ignore_index:  # zero gradient, written without reading the row
        tl.store(grad_ptrs, tl.zeros([BLOCK], dtype=GRAD.dtype.element_ty), mask=mask)
        return
    lse = tl.load(LSE + row)
    scale = tl.load(SCALE + row)
    x = tl.load(LOGITS + row.to(tl.int64) * stride_row + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_SOFTCAP:
        t, sech2 = _tanh_and_sech2(x * (1.0 / softcap))
        z = softcap * t
    else:
        z = x
    p = tl.exp2((z - lse) * LOG2E)
    g = p * (1.0 + 2.0 * z_loss * lse) - label_smoothing / n_cols
    # The -(1-ε) at the label is added in fp32 before the one rounding: p_y - 1 cancels as p_y -> 1.
    g = tl.where(cols == label, g - (1.0 - label_smoothing), g)
    if HAS_SOFTCAP:
        g = g * sech2
    tl.store(grad_ptrs, (g * scale).to(GRAD.dtype.element_ty), mask=mask)


# ============================================================================================ heuristics
def _tile_config(n_cols: int) -> tuple[int, int]:
    """(BLOCK, num_warps) for the (row, tile) kernels: 32 elements per thread at the 8192-wide tile."""
    block = LARGE_BLOCK if n_cols >= LARGE_BLOCK else SMALL_BLOCK
    return block, block // 1024


def _finalize_block_tiles(n_tiles: int) -> int:
    return next(b for b in FINALIZE_BLOCK_TILES if n_tiles <= b)


def _register_compile_specs() -> None:
    blocks = (SMALL_BLOCK, LARGE_BLOCK)
    for dt, block, has_softcap in itertools.product(_common.FLOAT_DTYPES, blocks, (False, True)):
        xt = _common.TRITON_DTYPE[dt]
        num_warps = block // 1024
        cx = {"BLOCK": block, "HAS_SOFTCAP": has_softcap}
        tag = f"[{xt},BLOCK={block},softcap={int(has_softcap)}]"
        sig = {"LOGITS": f"*{xt}", "LABELS": "*i64", "PART_MAX": "*fp32", "PART_SUMEXP": "*fp32", "PART_ZSUM": "*fp32",
               "stride_row": "i32", "n_cols": "i32", "n_tiles": "i32", "ignore_index": "i32", "softcap": "fp32",
               "BLOCK": "constexpr", "HAS_SOFTCAP": "constexpr"}
        register_compile_spec(CompileSpec(f"cross_entropy_partial{tag}", _ce_partial_kernel, sig, cx, num_warps=num_warps))
        sig = {"LOGITS": f"*{xt}", "GRAD": f"*{xt}", "LABELS": "*i64", "LSE": "*fp32", "SCALE": "*fp32",
               "stride_row": "i32", "stride_grad_row": "i32", "n_cols": "i32", "n_tiles": "i32", "ignore_index": "i32",
               "label_smoothing": "fp32", "z_loss": "fp32", "softcap": "fp32", "BLOCK": "constexpr", "HAS_SOFTCAP": "constexpr"}
        register_compile_spec(CompileSpec(f"cross_entropy_grad{tag}", _ce_grad_kernel, sig, cx, num_warps=num_warps))
    # Finalize: V up to 262,144 uses 32 tiles; 128 covers vocabularies up to MAX_VOCAB = 1,048,576.
    for dt, has_softcap, block_tiles in itertools.product(_common.FLOAT_DTYPES, (False, True), FINALIZE_BLOCK_TILES):
        xt = _common.TRITON_DTYPE[dt]
        sig = {"LOGITS": f"*{xt}", "LABELS": "*i64", "PART_MAX": "*fp32", "PART_SUMEXP": "*fp32", "PART_ZSUM": "*fp32",
               "LOSS": "*fp32", "LSE": "*fp32", "stride_row": "i32", "n_rows": "i32", "n_cols": "i32", "n_tiles": "i32",
               "ignore_index": "i32", "label_smoothing": "fp32", "z_loss": "fp32", "softcap": "fp32",
               "BLOCK_ROWS": "constexpr", "BLOCK_TILES": "constexpr", "HAS_SOFTCAP": "constexpr"}
        register_compile_spec(CompileSpec(
            f"cross_entropy_finalize[{xt},BLOCK_TILES={block_tiles},softcap={int(has_softcap)}]", _ce_finalize_kernel, sig,
            {"BLOCK_ROWS": FINALIZE_BLOCK_ROWS, "BLOCK_TILES": block_tiles, "HAS_SOFTCAP": has_softcap},
            num_warps=FINALIZE_NUM_WARPS))


_register_compile_specs()


# ============================================================================================= launchers
# Plain functions on (N, V) logits with a unit-stride vocab dim and int64 labels; the custom ops below and the
# fused linear cross-entropy (which runs them on each chunk inside its own custom op) call these.
def check_labels_in_range(labels: torch.Tensor, n_cols: int, ignore_index: int) -> None:
    """ValueError on CPU (free to check), torch._assert_async on CUDA (no host sync)."""
    bad = ((labels < 0) | (labels >= n_cols)) & (labels != ignore_index)
    msg = f"labels: values must be in [0, {n_cols}) (the vocabulary size) or equal ignore_index={ignore_index}"
    if labels.is_cuda:
        torch._assert_async(~bad.any(), msg)
    elif labels.numel() and bool(bad.any()):
        first = labels[bad][0].item()
        raise ValueError(f"{msg}; got {first}")


def launch_forward(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, label_smoothing: float,
                   z_loss: float, softcap: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row loss and lse (fp32, 0 for ignored rows). softcap <= 0 means no soft-capping."""
    n_rows, n_cols = logits.shape
    loss = _common.new_empty((n_rows,), dtype=torch.float32, device=logits.device)
    lse = _common.new_empty((n_rows,), dtype=torch.float32, device=logits.device)
    if n_rows == 0:
        return loss, lse
    block, num_warps = _tile_config(n_cols)
    n_tiles = cdiv(n_cols, block)
    parts = _common.new_empty((3, n_rows, n_tiles), dtype=torch.float32, device=logits.device)
    has_softcap = softcap > 0
    softcap = float(softcap) if has_softcap else 1.0
    _ce_partial_kernel[(n_rows * n_tiles,)](
        logits, labels, parts[0], parts[1], parts[2],
        logits.stride(0), n_cols, n_tiles, ignore_index, softcap,
        BLOCK=block, HAS_SOFTCAP=has_softcap, num_warps=num_warps,
    )
    _ce_finalize_kernel[(cdiv(n_rows, FINALIZE_BLOCK_ROWS),)](
        logits, labels, parts[0], parts[1], parts[2], loss, lse,
        logits.stride(0), n_rows, n_cols, n_tiles, ignore_index, float(label_smoothing), float(z_loss), softcap,
        BLOCK_ROWS=FINALIZE_BLOCK_ROWS, BLOCK_TILES=_finalize_block_tiles(n_tiles),
        HAS_SOFTCAP=has_softcap, num_warps=FINALIZE_NUM_WARPS,
    )
    return loss, lse


def launch_grad_(logits: torch.Tensor, labels: torch.Tensor, lse: torch.Tensor, row_scale: torch.Tensor,
                 ignore_index: int, label_smoothing: float, z_loss: float, softcap: float,
                 out: torch.Tensor | None = None) -> None:
    """Write row_scale[i] · dloss_i/dlogits into `out` (default: over logits, in place); fp32 math, one rounding.
    row_scale: (N,) fp32; out: (N, V) of logits' dtype, last dim contiguous."""
    out = logits if out is None else out
    n_rows, n_cols = logits.shape
    if n_rows == 0:
        return
    block, num_warps = _tile_config(n_cols)
    n_tiles = cdiv(n_cols, block)
    has_softcap = softcap > 0
    _ce_grad_kernel[(n_rows * n_tiles,)](
        logits, out, labels, lse, row_scale,
        logits.stride(0), out.stride(0), n_cols, n_tiles, ignore_index,
        float(label_smoothing), float(z_loss), float(softcap) if has_softcap else 1.0,
        BLOCK=block, HAS_SOFTCAP=has_softcap, num_warps=num_warps,
    )


# ============================================================================================ custom ops
@torch.library.custom_op("seedcoder::cross_entropy_fwd", mutates_args=())
def _cross_entropy_fwd_op(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, label_smoothing: float,
                          z_loss: float, softcap: float) -> tuple[torch.Tensor, torch.Tensor]:
    check_labels_in_range(labels, logits.shape[1], ignore_index)
    return launch_forward(logits, labels, ignore_index, label_smoothing, z_loss, softcap)


@_cross_entropy_fwd_op.register_fake
def _(logits, labels, ignore_index, label_smoothing, z_loss, softcap):
    n_rows = logits.shape[0]
    return logits.new_empty((n_rows,), dtype=torch.float32), logits.new_empty((n_rows,), dtype=torch.float32)


@torch.library.custom_op("seedcoder::cross_entropy_grad_", mutates_args=("logits",))
def _cross_entropy_grad_op(logits: torch.Tensor, labels: torch.Tensor, lse: torch.Tensor, row_scale: torch.Tensor,
                           ignore_index: int, label_smoothing: float, z_loss: float, softcap: float) -> None:
    launch_grad_(logits, labels, lse, row_scale, ignore_index, label_smoothing, z_loss, softcap)


@_cross_entropy_grad_op.register_fake
def _(logits, labels, lse, row_scale, ignore_index, label_smoothing, z_loss, softcap):
    return None


@torch.library.custom_op("seedcoder::cross_entropy_grad", mutates_args=())
def _cross_entropy_grad_out_of_place_op(logits: torch.Tensor, labels: torch.Tensor, lse: torch.Tensor,
                                        row_scale: torch.Tensor, ignore_index: int, label_smoothing: float,
                                        z_loss: float, softcap: float) -> torch.Tensor:
    grad = _common.new_empty(logits.shape, dtype=logits.dtype, device=logits.device)
    launch_grad_(logits, labels, lse, row_scale, ignore_index, label_smoothing, z_loss, softcap, out=grad)
    return grad


@_cross_entropy_grad_out_of_place_op.register_fake
def _(logits, labels, lse, row_scale, ignore_index, label_smoothing, z_loss, softcap):
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


# ======================================================================================== autograd + API
class _CrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, ignore_index, label_smoothing, z_loss, softcap, reduction):
        loss_rows, lse = torch.ops.seedcoder.cross_entropy_fwd(logits, labels, ignore_index, label_smoothing, z_loss, softcap)
        n_valid = (labels != ignore_index).sum()
        if reduction == "mean":
            loss = loss_rows.sum() / n_valid.clamp(min=1)
        elif reduction == "sum":
            loss = loss_rows.sum()
        else:
            loss = loss_rows
        ctx.save_for_backward(logits, labels, lse, n_valid)
        ctx.options = (ignore_index, label_smoothing, z_loss, softcap, reduction)
        return loss.to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_loss):
        logits, labels, lse, n_valid = ctx.saved_tensors
        ignore_index, label_smoothing, z_loss, softcap, reduction = ctx.options
        scale = grad_loss.float()
        if reduction == "mean":
            scale = scale / n_valid.clamp(min=1)
        row_scale = scale.expand(logits.shape[0]).contiguous()
        options = (ignore_index, label_smoothing, z_loss, softcap)
        if torch.compiler.is_compiling():
            # A compiled graph may return the logits (HF's CausalLMOutput.logits): AOTAutograd cannot express a
            # backward that overwrites a graph output, so compiled code gets a fresh buffer (N x V more memory).
            return torch.ops.seedcoder.cross_entropy_grad(logits, labels, lse, row_scale, *options), *([None] * 6)
        torch.ops.seedcoder.cross_entropy_grad_(logits, labels, lse, row_scale, *options)
        return logits.detach(), None, None, None, None, None, None


def check_options(ignore_index, label_smoothing, z_loss, softcap, reduction) -> None:
    """ValueError/TypeError for option values the kernels do not define (shared with fused_linear_cross_entropy)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index: expected an int, got {type(ignore_index).__name__}")
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"label_smoothing: expected a value in [0, 1], got {label_smoothing}")
    if not float(z_loss) >= 0.0:
        raise ValueError(f"z_loss: expected a finite value >= 0, got {z_loss}")
    if softcap is not None and not float(softcap) > 0.0:
        raise ValueError(f"softcap: expected None or a value > 0, got {softcap}")


def check_vocab_size(name: str, n_cols: int) -> None:
    if not 1 <= n_cols <= MAX_VOCAB:
        raise ValueError(f"{name}: vocabulary size {n_cols} is outside the supported range [1, {MAX_VOCAB}]")


def check_labels(labels, expected_shape: tuple[int, ...], device: torch.device, other: str) -> None:
    _common.check_tensor("labels", labels, dtypes=LABEL_DTYPES, device=device)
    if tuple(labels.shape) != tuple(expected_shape):
        raise ValueError(f"labels: shape {tuple(labels.shape)} does not match {other} (expected {tuple(expected_shape)})")


def cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy of `logits` (..., V) against integer `labels` (...), fp32 math, loss in logits' dtype.

    Options as torch.nn.functional.cross_entropy (ignore_index, label_smoothing, reduction), plus z_loss
    (adds z_loss·lse² per non-ignored token) and softcap (logits -> softcap·tanh(logits/softcap) first).
    Returns a scalar for "mean"/"sum", a tensor of labels' shape for "none". "mean" divides by the number of
    non-ignored tokens and gives 0 (not torch's NaN) when there are none.

    When logits require grad, backward writes the gradient IN PLACE into the logits tensor (see the module
    docstring for the contract): do not read logits after backward; pass logits.clone() if you must.
    """
    check_options(ignore_index, label_smoothing, z_loss, softcap, reduction)
    _common.check_tensor("logits", logits, ndim=None, last_dim_contiguous=True)
    if logits.dim() == 0:
        raise ValueError("logits: expected shape (..., V), got a 0-d tensor")
    check_labels(labels, logits.shape[:-1], logits.device, f"logits {tuple(logits.shape)} without its last (vocab) dim")
    n_cols = logits.shape[-1]
    check_vocab_size("logits", n_cols)

    if not _common.use_triton(logits):
        if not torch.compiler.is_compiling():
            check_labels_in_range(labels, n_cols, ignore_index)
        return cross_entropy_reference(logits, labels, ignore_index=ignore_index, label_smoothing=label_smoothing,
                                       z_loss=z_loss, softcap=softcap, reduction=reduction)

    out_shape = labels.shape
    logits_2d = logits.reshape(-1, n_cols)  # a view when possible, so the in-place gradient lands in `logits`
    if logits_2d.shape[0] > 1 and logits_2d.stride(0) < n_cols:  # overlapping rows (e.g. expanded): no in-place write
        logits_2d = logits_2d.contiguous()
    labels_1d = labels.reshape(-1).to(torch.int64)
    loss = _CrossEntropyFunction.apply(logits_2d, labels_1d, int(ignore_index), float(label_smoothing), float(z_loss),
                                       float(softcap) if softcap is not None else 0.0, reduction)
    return loss.reshape(out_shape) if reduction == "none" else loss


# ============================================================================================= reference
def cross_entropy_reference(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Plain torch, differentiable. Math in fp32 (float64 if logits are float64); loss in logits' dtype."""
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    valid = labels != ignore_index
    safe_labels = torch.where(valid, labels, torch.zeros_like(labels)).to(torch.int64)
    lse = torch.logsumexp(z, dim=-1)
    z_y = torch.gather(z, -1, safe_labels.unsqueeze(-1)).squeeze(-1)
    loss = lse - (1.0 - label_smoothing) * z_y + z_loss * lse * lse
    if label_smoothing:  # skipped, not multiplied by 0: mean(z) = -inf for a vocab masked with -inf
        loss = loss - label_smoothing * z.mean(dim=-1)
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    if reduction == "mean":
        loss = loss.sum() / valid.sum().clamp(min=1)
    elif reduction == "sum":
        loss = loss.sum()
    return loss.to(logits.dtype)
