"""Cross-entropy on logits: Triton kernels, the torch reference, and the autograd function.

    loss_i = lse_i - (1-ε)·z_{i,y_i} - ε·mean_v(z_{i,v}) + z_loss·lse_i²      (0 when y_i == ignore_index)
    z = softcap·tanh(x/softcap) (or z = x),   lse_i = log Σ_v exp(z_{i,v})

which is torch.nn.functional.cross_entropy with label smoothing ε (torch's definition:
(1-ε)·CE + ε·mean_v(-log p_v)), plus PaLM's z-loss and Gemma-style logit soft-capping. Reductions: "none"
(per-token, 0 for ignored tokens), "sum", "mean" (sum over non-ignored tokens / their count). All math in
fp32 whatever the logits dtype; the loss is returned in the logits dtype, like torch.

Tiles. Logits are (N, V) with V up to 262,144 (Seed-Coder: 155,136; at most 1,048,576 is accepted): a row does
not fit in registers or shared memory, so the vocabulary is cut into tiles of BLOCK = 8192 columns (1024 for
V < 8192) and every (row, tile) pair is one program (full GPU occupancy even for a handful of rows). A tile's
statistics are its max m_t, Σ exp(z - m_t), Σ z (label smoothing) and z at the label when the tile holds it;
a row's lse combines them with the online-logsumexp rule (d = Σ_t d_t·exp(m_t - m), lse = m + log d).

Without a gradient (logits do not require grad, or grad mode is off): 1 read of the logits.
    partial kernel: each (row, tile) program reads its tile once and writes the tile's statistics;
    finalize kernel (16 rows per program): combines them, gathers z_y, writes the per-row loss and lse.

With a gradient (logits.requires_grad and grad mode on), the FORWARD writes loss and gradient, as Liger does,
in one launch of the loss-and-grad kernel, whose programs do two kinds of work item:
    stats item (row, tile): reads the tile, stores its statistics (16 bytes), then counts itself done for the
        row (atomic add, release);
    grad item (row, tile): waits until all stats items of the row are done (atomic read, acquire), combines the
        row's statistics into lse, reads the tile again and writes
            dL/dx = s · (p·(1 + 2·z_loss·lse) - ε/V - (1-ε)·[v == y]) · dz/dx
        (p = exp(z - lse), dz/dx = 1 - tanh²(x/softcap) or 1, fp32, rounded once) into the gradient buffer:
        the logits themselves (eager) or a fresh buffer (torch.compile, below). The tile-0 item writes the loss.
    s = 1/n_valid for "mean" (n_valid counted on the device: no host sync), 1 for "sum" and "none": the gradient
    for grad_output == 1. Ignored rows are never read: their stats items do nothing, their grad items write zeros.
  Order. A program takes its work item from an atomic ticket counter, not from its program id, and the tickets
  list the items by groups of rows (about GROUP_BYTES of logits each): stats(0), stats(1), grad(0), stats(2),
  grad(1), ..., stats(last), grad(last - 1), grad(last). Hence:
    - No deadlock, whatever the hardware scheduler does: a grad item waits only for stats items with smaller
      tickets, which programs already running hold, and a stats item never waits (the argument of CUB's
      decoupled look-back). The CPU interpreter runs programs one by one, so there a grad item never waits.
    - The second read is meant to be served by L2: between the stats read of a tile and its grad re-read the
      kernel reads about one other group of new logits (the grad writes go, in place, to lines already
      cached), so about three groups (24 MiB) must stay cached, within the H100's 50 MB L2. The lag of a grad
      item behind its row's stats items (3 groups of tickets) is also several times the tiles in flight (at
      most 2 programs per SM fit: 264 tiles, 4.2 MB in bf16 on an H100), so grad items should rarely spin.
      GROUP_BYTES = 8 MiB is a first guess from these numbers, not yet measured: the knob to tune on the GPU.
backward: the rescale kernel multiplies the gradient in place by grad_output (the scalar, or row i's value for
  "none"), loaded on the device. Its loads and stores are masked with `scale != 1`: when grad_output is 1
  (loss.backward() of a mean or sum loss) it moves no bytes, with no host sync and no python branch on values.

Passes over the N×V logits (DRAM traffic when N×V is much larger than L2):
    no gradient                                   forward 1 read                        = 1 pass
    gradient, grad_output == 1 (mean/sum loss)    forward 1 read + 1 write, backward 0  = 2 passes
    gradient, grad_output != 1 (loss scaling,     forward 1 read + 1 write,
      loss / accumulation steps, "none" rows)     backward 1 read + 1 write per row ≠ 1  = 4 passes
  plus the forward's second read of each tile, from L2 (from DRAM, one more pass, only if L2 evicted it).
  2 passes is the minimum for a loss whose gradient is materialized. Fewer DRAM reads than "read twice, once
  from L2" would need each row kept on chip until its lse is known: a row (310 KB in bf16 at V = 155,136) fits
  neither an SM's registers nor its shared memory, and holding tiles in registers across the programs of a row
  needs all of them resident at once (a grid barrier: it deadlocks when fewer programs fit than a row has
  tiles, and cannot run in the sequential interpreter). The previous design (gradient written in backward)
  moved N×V 3 times: the two reads are in different launches, so L2 cannot serve the second.

Contract on the logits buffer (as Liger's): when a gradient is needed, the FORWARD overwrites the logits tensor
IN PLACE with the gradient (no N×V copy) and backward returns that storage as the gradient (rescaled in place
when grad_output != 1; for a leaf, logits.grad may share it). After the call the logits' values are gone:
compute an accuracy metric (argmax) BEFORE calling the loss, or pass logits.clone(). Misuse that autograd can see
is loud: the write bumps the tensor's version counter, so an autograd node that saved these logits (exp, tanh,
softmax save their outputs) raises PyTorch's "modified by an inplace operation" in backward, and so does a second
backward through the same graph (retain_graph=True; the rescale bumps the version again). A plain read after the
call (a metric) cannot be detected. Without a gradient the logits are only read. Under torch.compile the forward
writes the gradient to a fresh buffer instead (seedcoder::cross_entropy_loss_and_grad, N×V more memory), because
a compiled graph may return the logits (HF's CausalLMOutput.logits) and AOTAutograd cannot let a graph output be
overwritten; the logits stay intact there. For large vocabularies under compile, prefer
fused_linear_cross_entropy (no N×V logits).

Precision. The gradient is rounded to the logits dtype once in forward, with s folded in first; a grad_output
!= 1 is applied in backward in fp32 and rounded a second time (exact when it is a power of two). For fp16 this
means the gradient (already divided by n_valid for "mean") is rounded before a loss scale is known: entries
below fp16's subnormal range (~6e-8) flush to zero and loss scaling cannot rescue them (Liger has the same
limit, and so does fused_linear_cross_entropy). Prefer bf16 (fp32's exponent range).

Differences from torch.nn.functional.cross_entropy: "mean" with every token ignored returns 0 (torch: NaN),
and its gradient is 0; labels must be 1-D per row (no class-probability targets, no class weights).

Bad labels (outside [0, V) and not ignore_index): CPU tensors raise ValueError (the check is free there);
CUDA tensors get torch._assert_async (a device-side assert, no host sync); the kernels also mask the
label gather so a bad label can never read out of bounds (it yields a NaN loss).

Dispatch: CUDA tensors (or CPU under TRITON_INTERPRET=1) run the kernels through the torch custom ops
seedcoder::cross_entropy_fwd, seedcoder::cross_entropy_loss_and_grad_ / _loss_and_grad and
seedcoder::cross_entropy_rescale_grad_ (so torch.compile traces callers without graph breaks); plain CPU tensors
run `cross_entropy_reference` (autograd through torch). The fused linear cross-entropy calls the launchers
`launch_forward` and `launch_grad_` (separate statistics and gradient launches) on each chunk.
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
FINALIZE_BLOCK_TILES = (32, 128)  # a row's tile statistics are loaded at once (V=262,144: 32 tiles)
MAX_VOCAB = FINALIZE_BLOCK_TILES[-1] * LARGE_BLOCK  # 1,048,576
FINALIZE_BLOCK_ROWS = 16  # rows per finalize program (its work is tiny: 12 bytes per tile and one logit per row)
FINALIZE_NUM_WARPS = 4
GROUP_BYTES = 8 * 1024 * 1024  # logits per group of rows in the loss-and-grad kernel's ticket order (L2 reuse)
RESCALE_ROWS = 8  # rows per rescale program: with grad_output == 1 a program only loads 8 scalars

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
def _load_z(ptrs, mask, softcap, HAS_SOFTCAP: tl.constexpr):
    """z (soft-capped logits, fp32; 0 in masked lanes) and dz/dx (1 without soft-capping)."""
    x = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
    if HAS_SOFTCAP:
        t, dz_dx = _tanh_and_sech2(x * (1.0 / softcap))
        z = softcap * t
    else:
        z = x
        dz_dx = tl.full(x.shape, 1.0, tl.float32)
    return z, dz_dx


@triton.jit
def _tile_stats(z, mask):
    """max, Σ exp(z - max) and Σ z over the unmasked lanes of a tile."""
    z_or_ninf = tl.where(mask, z, float("-inf"))
    m = tl.max(z_or_ninf, axis=0)
    # A tile of -inf logits (masked vocabulary) has m = -inf: shift by 0 so it sums exp(-inf) = 0, not NaN.
    m_shift = tl.where(m == float("-inf"), 0.0, m)
    sumexp = tl.sum(tl.exp2((z_or_ninf - m_shift) * LOG2E), axis=0)
    zsum = tl.sum(tl.where(mask, z, 0.0), axis=0)
    return m, sumexp, zsum


@triton.jit
def _combine_lse(m_t, d_t, axis: tl.constexpr):
    """lse from tile maxima and sums (masked tiles: m_t = -inf, d_t = 0), the online-logsumexp rule."""
    m = tl.max(m_t, axis=axis)
    m_shift = tl.where(m == float("-inf"), 0.0, m)  # every logit -inf: lse = -inf, not NaN from inf - inf
    d = tl.sum(d_t * tl.exp2((m_t - tl.expand_dims(m_shift, axis)) * LOG2E), axis=axis)
    return m, d


@triton.jit
def _row_loss(lse, z_y, zsum, n_cols, label_smoothing, z_loss):
    # Without smoothing the Σz term is skipped, not multiplied by 0: Σz = -inf for a vocab masked with -inf.
    smooth = label_smoothing * (tl.where(label_smoothing > 0.0, zsum, 0.0) / n_cols)
    return lse - (1.0 - label_smoothing) * z_y - smooth + z_loss * lse * lse


@triton.jit
def _dlogits(z, dz_dx, cols, label, lse, n_cols, label_smoothing, z_loss, HAS_SOFTCAP: tl.constexpr):
    """dloss/dx of one row's tile in fp32 (unscaled)."""
    p = tl.exp2((z - lse) * LOG2E)
    g = p * (1.0 + 2.0 * z_loss * lse) - label_smoothing / n_cols
    # The -(1-ε) at the label is added in fp32 before the one rounding: p_y - 1 cancels as p_y -> 1.
    g = tl.where(cols == label, g - (1.0 - label_smoothing), g)
    if HAS_SOFTCAP:
        g = g * dz_dx
    return g


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
    z, _ = _load_z(LOGITS + row.to(tl.int64) * stride_row + cols, mask, softcap, HAS_SOFTCAP)
    m, sumexp, zsum = _tile_stats(z, mask)
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
    m, d = _combine_lse(m_t, d_t, 1)
    lse = tl.where(valid, m + tl.log(tl.where(valid, d, 1.0)), 0.0)  # 0, not -inf, for masked rows
    # Masked gather: a label outside [0, V) (already reported by the caller's check) gives NaN, never an OOB read.
    label_ok = valid & (labels >= 0) & (labels < n_cols)
    x_y = tl.load(LOGITS + rows.to(tl.int64) * stride_row + labels, mask=label_ok, other=float("nan")).to(tl.float32)
    if HAS_SOFTCAP:
        t_y, _ = _tanh_and_sech2(x_y * (1.0 / softcap))
        z_y = softcap * t_y
    else:
        z_y = x_y
    loss = _row_loss(lse, z_y, zsum, n_cols, label_smoothing, z_loss)
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
    z, dz_dx = _load_z(LOGITS + row.to(tl.int64) * stride_row + cols, mask, softcap, HAS_SOFTCAP)
    g = _dlogits(z, dz_dx, cols, label, lse, n_cols, label_smoothing, z_loss, HAS_SOFTCAP)
    tl.store(grad_ptrs, (g * scale).to(GRAD.dtype.element_ty), mask=mask)


@triton.jit
def _ce_loss_and_grad_kernel(
    LOGITS, GRAD, LABELS, SCALE, LOSS, PART_MAX, PART_SUMEXP, PART_ZSUM, PART_ZLABEL, ROW_DONE, TICKET,
    stride_row, stride_grad_row, stride_scale, n_rows, n_cols, n_tiles, rows_per_group, n_groups,
    ignore_index, label_smoothing, z_loss, softcap,
    BLOCK: tl.constexpr, BLOCK_TILES: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
):
    """One work item per program, taken from the TICKET counter: the stats or the grad item of a (row, tile).

    Ticket order (module docstring): blocks of rows_per_group·n_tiles tickets, stats(0), stats(1), grad(0),
    stats(2), grad(1), ..., grad(n_groups - 1). GRAD may alias LOGITS (a grad item reads its tile before writing
    it, and all reads of the row by stats items are done before any grad item of the row starts)."""
    ticket = tl.atomic_add(TICKET, 1, sem="relaxed")
    items_per_group = rows_per_group * n_tiles
    block = ticket // items_per_group
    item = ticket - block * items_per_group
    last_block = 2 * n_groups - 1
    is_grad = ((block % 2 == 0) & (block > 0)) | (block == last_block)
    group = tl.where(block % 2 == 1, (block + 1) // 2, block // 2 - 1)
    group = tl.where(block == last_block, n_groups - 1, tl.where(block == 0, 0, group))
    row = group * rows_per_group + item // n_tiles
    tile = item % n_tiles
    if row < n_rows:  # the last group may be partial
        label = tl.load(LABELS + row)
        valid = label != ignore_index
        label_ok = (label >= 0) & (label < n_cols)  # else (reported by the caller's check): no column, NaN loss
        # The column compares in int32 (an int64 compare widens every column index: +50 registers, half the occupancy).
        label_col = tl.where(label_ok, label, -1).to(tl.int32)
        cols = tile * BLOCK + tl.arange(0, BLOCK)
        mask = cols < n_cols
        logits_ptrs = LOGITS + row.to(tl.int64) * stride_row + cols
        if is_grad:
            grad_ptrs = GRAD + row.to(tl.int64) * stride_grad_row + cols
            if valid:
                # Stats items of this row hold smaller tickets: they are running or done, and never wait.
                while tl.atomic_add(ROW_DONE + row, 0, sem="acquire") < n_tiles:
                    pass
                tiles = tl.arange(0, BLOCK_TILES)
                tile_mask = tiles < n_tiles
                row_parts = row * n_tiles + tiles
                # .cg: read from L2, never from a stale L1 line (another row's load may have cached this one)
                m_t = tl.load(PART_MAX + row_parts, mask=tile_mask, other=float("-inf"), cache_modifier=".cg")
                d_t = tl.load(PART_SUMEXP + row_parts, mask=tile_mask, other=0.0, cache_modifier=".cg")
                m, d = _combine_lse(m_t, d_t, 0)
                lse = m + tl.log(d)
                z, dz_dx = _load_z(logits_ptrs, mask, softcap, HAS_SOFTCAP)
                g = _dlogits(z, dz_dx, cols, label_col, lse, n_cols, label_smoothing, z_loss, HAS_SOFTCAP)
                scale = tl.load(SCALE + row * stride_scale)
                tl.store(grad_ptrs, (g * scale).to(GRAD.dtype.element_ty), mask=mask)
                if tile == 0:
                    zsum = tl.sum(tl.load(PART_ZSUM + row_parts, mask=tile_mask, other=0.0, cache_modifier=".cg"))
                    z_y = tl.sum(tl.load(PART_ZLABEL + row_parts, mask=tile_mask, other=0.0, cache_modifier=".cg"))
                    loss = _row_loss(lse, z_y, zsum, n_cols, label_smoothing, z_loss)
                    tl.store(LOSS + row, tl.where(label_ok, loss, float("nan")))
            else:  # zero gradient, written without reading the row
                tl.store(grad_ptrs, tl.zeros([BLOCK], dtype=GRAD.dtype.element_ty), mask=mask)
                if tile == 0:
                    tl.store(LOSS + row, 0.0)
        else:
            if valid:  # ignored rows are never read
                z, _ = _load_z(logits_ptrs, mask, softcap, HAS_SOFTCAP)
                m, sumexp, zsum = _tile_stats(z, mask)
                z_label = tl.sum(tl.where(cols == label_col, z, 0.0), axis=0)  # 0 unless this tile holds the label
                part = row * n_tiles + tile
                tl.store(PART_MAX + part, m)
                tl.store(PART_SUMEXP + part, sumexp)
                tl.store(PART_ZSUM + part, zsum)
                tl.store(PART_ZLABEL + part, z_label)
                tl.debug_barrier()  # every thread's stores precede the release below
                tl.atomic_add(ROW_DONE + row, 1, sem="release")


@triton.jit
def _ce_rescale_kernel(
    GRAD, SCALE, stride_grad_row, stride_scale, n_rows, n_cols, n_tiles,
    BLOCK: tl.constexpr, ROWS: tl.constexpr,
):
    """Program (block of ROWS rows, tile): GRAD[row] *= SCALE[row·stride_scale] in place, in fp32.

    Loads and stores are masked with scale != 1, so grad_output == 1 moves no bytes (and never rounds)."""
    pid = tl.program_id(0)
    row_block = pid // n_tiles
    tile = pid - row_block * n_tiles
    cols = tile * BLOCK + tl.arange(0, BLOCK)
    col_mask = cols < n_cols
    for i in range(ROWS):
        row = row_block * ROWS + i
        row_ok = row < n_rows
        scale = tl.load(SCALE + row * stride_scale, mask=row_ok, other=1.0).to(tl.float32)
        # Scalars combined first: Triton 3.6's interpreter gives (block & scalar) int32 data, which & bool rejects.
        mask = col_mask & (row_ok & (scale != 1.0))
        ptrs = GRAD + row.to(tl.int64) * stride_grad_row + cols
        g = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
        tl.store(ptrs, (g * scale).to(GRAD.dtype.element_ty), mask=mask)


# ============================================================================================ heuristics
def _tile_config(n_cols: int) -> tuple[int, int]:
    """(BLOCK, num_warps) for the (row, tile) kernels: 32 elements per thread at the 8192-wide tile."""
    block = LARGE_BLOCK if n_cols >= LARGE_BLOCK else SMALL_BLOCK
    return block, block // 1024


def _finalize_block_tiles(n_tiles: int) -> int:
    return next(b for b in FINALIZE_BLOCK_TILES if n_tiles <= b)


def _rows_per_group(n_rows: int, n_cols: int, itemsize: int) -> int:
    """Rows per group of the loss-and-grad kernel's ticket order: about GROUP_BYTES of logits."""
    return max(1, min(n_rows, GROUP_BYTES // (n_cols * itemsize)))


# Launch values of the int arguments (CompileSpec.ints): contiguous (N, V) logits of 8,192 rows at Seed-Coder's
# 155,136-token vocabulary (LARGE_BLOCK, 19 tiles), 4,096 columns for SMALL_BLOCK, 1,048,576 (128 tiles) for the
# widest finalize; ignore_index -100; a 0-d grad_output (stride_scale 0). Hot: bf16 partial / grad / loss-and-grad.
_ROWS, _IGNORE_INDEX = 8192, -100
_VOCAB = {SMALL_BLOCK: 4096, LARGE_BLOCK: 155_136}


def _launch_ints(block: int, block_tiles: int | None = None) -> dict[str, int]:
    n_cols = _VOCAB[block] if block_tiles is None or block_tiles == FINALIZE_BLOCK_TILES[0] else block_tiles * block
    rows_per_group = _rows_per_group(_ROWS, n_cols, 2)
    return {"stride_row": n_cols, "stride_grad_row": n_cols, "stride_scale": 0, "n_rows": _ROWS, "n_cols": n_cols,
            "n_tiles": cdiv(n_cols, block), "rows_per_group": rows_per_group, "n_groups": cdiv(_ROWS, rows_per_group),
            "ignore_index": _IGNORE_INDEX}


def _register_compile_specs() -> None:
    blocks = (SMALL_BLOCK, LARGE_BLOCK)

    def spec(name, kernel, sig, cx, num_warps, ints, hot=False):
        register_compile_spec(CompileSpec(name, kernel, sig, cx, num_warps=num_warps, quick="[bf16," in name,
                                          ints={k: v for k, v in ints.items() if k in sig}, hot=hot))

    for dt, block, has_softcap in itertools.product(_common.FLOAT_DTYPES, blocks, (False, True)):
        xt = _common.TRITON_DTYPE[dt]
        num_warps = block // 1024
        cx = {"BLOCK": block, "HAS_SOFTCAP": has_softcap}
        tag = f"[{xt},BLOCK={block},softcap={int(has_softcap)}]"
        hot = xt == "bf16" and block == LARGE_BLOCK and not has_softcap
        sig = {"LOGITS": f"*{xt}", "LABELS": "*i64", "PART_MAX": "*fp32", "PART_SUMEXP": "*fp32", "PART_ZSUM": "*fp32",
               "stride_row": "i32", "n_cols": "i32", "n_tiles": "i32", "ignore_index": "i32", "softcap": "fp32",
               "BLOCK": "constexpr", "HAS_SOFTCAP": "constexpr"}
        spec(f"cross_entropy_partial{tag}", _ce_partial_kernel, sig, cx, num_warps, _launch_ints(block), hot)
        sig = {"LOGITS": f"*{xt}", "GRAD": f"*{xt}", "LABELS": "*i64", "LSE": "*fp32", "SCALE": "*fp32",
               "stride_row": "i32", "stride_grad_row": "i32", "n_cols": "i32", "n_tiles": "i32", "ignore_index": "i32",
               "label_smoothing": "fp32", "z_loss": "fp32", "softcap": "fp32", "BLOCK": "constexpr", "HAS_SOFTCAP": "constexpr"}
        spec(f"cross_entropy_grad{tag}", _ce_grad_kernel, sig, cx, num_warps, _launch_ints(block), hot)
        # Loss and gradient in one launch: BLOCK_TILES covers the row's tiles (SMALL_BLOCK: V < 8192, one or 8 tiles).
        for block_tiles in FINALIZE_BLOCK_TILES if block == LARGE_BLOCK else FINALIZE_BLOCK_TILES[:1]:
            sig = {"LOGITS": f"*{xt}", "GRAD": f"*{xt}", "LABELS": "*i64", "SCALE": "*fp32", "LOSS": "*fp32",
                   "PART_MAX": "*fp32", "PART_SUMEXP": "*fp32", "PART_ZSUM": "*fp32", "PART_ZLABEL": "*fp32",
                   "ROW_DONE": "*i32", "TICKET": "*i32", "stride_row": "i32", "stride_grad_row": "i32",
                   "stride_scale": "i32", "n_rows": "i32", "n_cols": "i32", "n_tiles": "i32", "rows_per_group": "i32",
                   "n_groups": "i32", "ignore_index": "i32", "label_smoothing": "fp32", "z_loss": "fp32",
                   "softcap": "fp32", "BLOCK": "constexpr", "BLOCK_TILES": "constexpr", "HAS_SOFTCAP": "constexpr"}
            spec(f"cross_entropy_loss_and_grad[{xt},BLOCK={block},BLOCK_TILES={block_tiles},softcap={int(has_softcap)}]",
                 _ce_loss_and_grad_kernel, sig, {**cx, "BLOCK_TILES": block_tiles}, num_warps,
                 _launch_ints(block, block_tiles), hot and block_tiles == FINALIZE_BLOCK_TILES[0])
    # Rescale: SCALE is grad_output, in the loss's dtype = the logits' dtype.
    for dt, block in itertools.product(_common.FLOAT_DTYPES, blocks):
        xt = _common.TRITON_DTYPE[dt]
        sig = {"GRAD": f"*{xt}", "SCALE": f"*{xt}", "stride_grad_row": "i32", "stride_scale": "i32", "n_rows": "i32",
               "n_cols": "i32", "n_tiles": "i32", "BLOCK": "constexpr", "ROWS": "constexpr"}
        spec(f"cross_entropy_rescale[{xt},BLOCK={block}]", _ce_rescale_kernel, sig, {"BLOCK": block, "ROWS": RESCALE_ROWS},
             block // 1024, _launch_ints(block))
    # Finalize: V up to 262,144 uses 32 tiles; 128 covers vocabularies up to MAX_VOCAB = 1,048,576.
    for dt, has_softcap, block_tiles in itertools.product(_common.FLOAT_DTYPES, (False, True), FINALIZE_BLOCK_TILES):
        xt = _common.TRITON_DTYPE[dt]
        sig = {"LOGITS": f"*{xt}", "LABELS": "*i64", "PART_MAX": "*fp32", "PART_SUMEXP": "*fp32", "PART_ZSUM": "*fp32",
               "LOSS": "*fp32", "LSE": "*fp32", "stride_row": "i32", "n_rows": "i32", "n_cols": "i32", "n_tiles": "i32",
               "ignore_index": "i32", "label_smoothing": "fp32", "z_loss": "fp32", "softcap": "fp32",
               "BLOCK_ROWS": "constexpr", "BLOCK_TILES": "constexpr", "HAS_SOFTCAP": "constexpr"}
        spec(f"cross_entropy_finalize[{xt},BLOCK_TILES={block_tiles},softcap={int(has_softcap)}]", _ce_finalize_kernel, sig,
             {"BLOCK_ROWS": FINALIZE_BLOCK_ROWS, "BLOCK_TILES": block_tiles, "HAS_SOFTCAP": has_softcap},
             FINALIZE_NUM_WARPS, _launch_ints(LARGE_BLOCK, block_tiles))

_register_compile_specs()


# ============================================================================================= launchers
# Plain functions on (N, V) logits with a unit-stride vocab dim and int64 labels; the custom ops below and the
# fused linear cross-entropy (which runs launch_forward + launch_grad_ on each chunk inside its own custom op)
# call these.
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
    """Per-row loss and lse (fp32, 0 for ignored rows), reading the logits once. softcap <= 0: no soft-capping."""
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


def launch_loss_and_grad(logits: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor, ignore_index: int,
                         label_smoothing: float, z_loss: float, softcap: float,
                         out: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row loss (fp32, 0 for ignored rows), and scale[i] · dloss_i/dlogits written into `out` (default: over
    logits, in place), in one launch. scale: fp32, (1,) (one value for all rows) or (N,)."""
    out = logits if out is None else out
    n_rows, n_cols = logits.shape
    device = logits.device
    loss = _common.new_empty((n_rows,), dtype=torch.float32, device=device)
    if n_rows == 0:
        return loss
    block, num_warps = _tile_config(n_cols)
    n_tiles = cdiv(n_cols, block)
    rows_per_group = _rows_per_group(n_rows, n_cols, logits.element_size())
    n_groups = cdiv(n_rows, rows_per_group)
    parts = _common.new_empty((4, n_rows, n_tiles), dtype=torch.float32, device=device)
    counters = torch.zeros((n_rows + 1,), dtype=torch.int32, device=device)  # per-row stats done, then the ticket
    has_softcap = softcap > 0
    _ce_loss_and_grad_kernel[(2 * n_groups * rows_per_group * n_tiles,)](
        logits, out, labels, scale, loss, parts[0], parts[1], parts[2], parts[3], counters, counters[n_rows:],
        logits.stride(0), out.stride(0), scale.stride(0) if scale.shape[0] > 1 else 0, n_rows, n_cols, n_tiles,
        rows_per_group, n_groups, ignore_index, float(label_smoothing), float(z_loss),
        float(softcap) if has_softcap else 1.0,
        BLOCK=block, BLOCK_TILES=_finalize_block_tiles(n_tiles), HAS_SOFTCAP=has_softcap, num_warps=num_warps,
    )
    return loss


def launch_rescale_(grad: torch.Tensor, scale: torch.Tensor) -> None:
    """grad[i] *= scale (0-d) or scale[i] ((N,)), in place, fp32 math; rows whose scale is exactly 1 move no bytes."""
    n_rows, n_cols = grad.shape
    if n_rows == 0:
        return
    scale = scale.to(grad.dtype)  # autograd hands grad_output in the loss' dtype = grad's: a no-op
    block, num_warps = _tile_config(n_cols)
    n_tiles = cdiv(n_cols, block)
    _ce_rescale_kernel[(cdiv(n_rows, RESCALE_ROWS) * n_tiles,)](
        grad, scale, grad.stride(0), scale.stride(0) if scale.dim() == 1 else 0, n_rows, n_cols, n_tiles,
        BLOCK=block, ROWS=RESCALE_ROWS, num_warps=num_warps,
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


@torch.library.custom_op("seedcoder::cross_entropy_loss_and_grad_", mutates_args=("logits",))
def _cross_entropy_loss_and_grad_inplace_op(logits: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor,
                                            ignore_index: int, label_smoothing: float, z_loss: float,
                                            softcap: float) -> torch.Tensor:
    """Per-row loss; the logits are overwritten with scale · dloss/dlogits."""
    check_labels_in_range(labels, logits.shape[1], ignore_index)
    return launch_loss_and_grad(logits, labels, scale, ignore_index, label_smoothing, z_loss, softcap)


@_cross_entropy_loss_and_grad_inplace_op.register_fake
def _(logits, labels, scale, ignore_index, label_smoothing, z_loss, softcap):
    return logits.new_empty((logits.shape[0],), dtype=torch.float32)


@torch.library.custom_op("seedcoder::cross_entropy_loss_and_grad", mutates_args=())
def _cross_entropy_loss_and_grad_op(logits: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor,
                                    ignore_index: int, label_smoothing: float, z_loss: float,
                                    softcap: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row loss and scale · dloss/dlogits in a fresh buffer (the logits are only read)."""
    check_labels_in_range(labels, logits.shape[1], ignore_index)
    grad = _common.new_empty(logits.shape, dtype=logits.dtype, device=logits.device)
    return launch_loss_and_grad(logits, labels, scale, ignore_index, label_smoothing, z_loss, softcap, out=grad), grad


@_cross_entropy_loss_and_grad_op.register_fake
def _(logits, labels, scale, ignore_index, label_smoothing, z_loss, softcap):
    return (logits.new_empty((logits.shape[0],), dtype=torch.float32),
            torch.empty_like(logits, memory_format=torch.contiguous_format))


@torch.library.custom_op("seedcoder::cross_entropy_rescale_grad_", mutates_args=("grad",))
def _cross_entropy_rescale_grad_op(grad: torch.Tensor, grad_output: torch.Tensor) -> None:
    launch_rescale_(grad, grad_output)


@_cross_entropy_rescale_grad_op.register_fake
def _(grad, grad_output):
    return None


# ======================================================================================== autograd + API
def _n_valid(labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Non-ignored tokens, at least 1 ("mean" of nothing is 0), counted on the device: no host sync."""
    return (labels != ignore_index).sum().clamp(min=1)


def _reduce(loss_rows: torch.Tensor, n_valid: torch.Tensor | None, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss_rows.sum() / n_valid
    return loss_rows.sum() if reduction == "sum" else loss_rows


class _CrossEntropyFunction(torch.autograd.Function):
    """Only used when the logits need a gradient: forward computes loss and gradient, backward rescales."""

    @staticmethod
    def forward(ctx, logits, labels, ignore_index, label_smoothing, z_loss, softcap, reduction):
        # The gradient for grad_output == 1: 1/n_valid for "mean" (on the device, no host sync), 1 otherwise.
        n_valid = _n_valid(labels, ignore_index) if reduction == "mean" else None
        if n_valid is not None:
            scale = (1.0 / n_valid.to(torch.float32)).reshape(1)
        else:
            scale = torch.ones((1,), dtype=torch.float32, device=logits.device)
        options = (ignore_index, label_smoothing, z_loss, softcap)
        if torch.compiler.is_compiling():
            # A compiled graph may return the logits (HF's CausalLMOutput.logits): AOTAutograd cannot let a graph
            # output be overwritten, so compiled code gets the gradient in a fresh buffer (N x V more memory).
            loss_rows, grad = torch.ops.seedcoder.cross_entropy_loss_and_grad(logits, labels, scale, *options)
            ctx.save_for_backward(grad)
        else:
            loss_rows = torch.ops.seedcoder.cross_entropy_loss_and_grad_(logits, labels, scale, *options)
            ctx.save_for_backward(logits)  # now the gradient; saved after the write, so later writes are caught
        return _reduce(loss_rows, n_valid, reduction).to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_loss):
        (grad,) = ctx.saved_tensors
        grad = grad.detach()  # same storage and version counter: the rescale's version bump makes a 2nd backward raise
        torch.ops.seedcoder.cross_entropy_rescale_grad_(grad, grad_loss)
        return grad, None, None, None, None, None, None


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

    When logits require grad (and grad mode is on), this call OVERWRITES the logits tensor IN PLACE with
    the gradient (see the module docstring for the contract): read the logits (e.g. for an accuracy metric)
    before calling it, or pass logits.clone().
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
    options = (int(ignore_index), float(label_smoothing), float(z_loss), float(softcap) if softcap is not None else 0.0)
    if torch.is_grad_enabled() and logits.requires_grad:
        loss = _CrossEntropyFunction.apply(logits_2d, labels_1d, *options, reduction)
    else:  # the loss alone: the logits are read once and left intact
        loss_rows, _ = torch.ops.seedcoder.cross_entropy_fwd(logits_2d, labels_1d, *options)
        n_valid = _n_valid(labels_1d, options[0]) if reduction == "mean" else None
        loss = _reduce(loss_rows, n_valid, reduction).to(logits.dtype)
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
