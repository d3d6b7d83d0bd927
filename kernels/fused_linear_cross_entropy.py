"""Fused linear cross-entropy: CE of `hidden @ weight.T` without materializing the N×V logits.

    loss = cross_entropy(hidden @ weight.T, labels, ...)      hidden (N, H), weight (V, H) (the LM head)

with every option of `cross_entropy` (ignore_index, label_smoothing, z_loss, softcap, reduction).

Algorithm (after Liger-Kernel / mgmalek's efficient_cross_entropy). Tokens are processed in chunks of
`chunk_size` rows; one logits buffer (chunk_size, V) in hidden's dtype is allocated once and reused:
    logits_c = hidden_c @ weight.T                        torch.mm into the buffer (tensor cores, fp32 accumulate)
    loss_c, lse_c = CE forward kernels on logits_c         (cross_entropy.py: tile partials + finalize)
    dlogits_c = row_scale · dloss/dlogits, in place        (cross_entropy.py's grad kernel: the buffer now holds dlogits)
    grad_hidden[c] = dlogits_c @ weight                    torch.mm into grad_hidden's rows
    grad_weight += dlogits_c.T @ hidden_c                  torch.mm (first chunk) / addmm_ (later ones)
so the gradients are complete when forward returns (only computed for the inputs that require grad) and
are saved for backward, which only rescales them by grad_output in place (2 passes over grad_weight, V×H:
small next to the 3 GEMMs per chunk). For "mean" row_scale = 1/n_valid with n_valid counted on the device,
for "sum" 1: nothing syncs with the host.

reduction="none" cannot use that scheme: grad_output is then per token and must weight each row of
dlogits before the row sum in grad_weight, so a rescale afterwards cannot be exact. Its forward computes
only the loss (mm + CE forward per chunk, nothing saved but the inputs) and backward reruns the chunk loop
with row_scale = grad_output (one extra logits GEMM per chunk).

Precision and memory. The GEMMs accumulate in fp32 (cuBLAS); each chunk's grad_weight update is rounded
once to the weight's dtype, so the running grad_weight is stored in the weight's dtype (bf16 for bf16
training). An fp32 V×H accumulator would cost 4·V·H bytes = 2.5 GB at H=4096, V=155,136, breaking the
< 1 GB extra-memory target; with the default chunks there are ~10 roundings of a sum, a relative error of
a few bf16 ulps. Extra memory beyond the returned gradients: the logits buffer (chunk_size·V elements, ≤ ~512
MiB by default), the CE partials (12 bytes per 1024-8192 logits) and per-token fp32 loss/lse/scale: O(chunk·V).
The backward rescale rounds the gradients once more (exact when grad_output is a power of two, e.g. 1).
For fp16, dlogits (already scaled by 1/n_valid for "mean") are rounded to fp16 before grad_output is known, so
loss scaling cannot rescue gradients that underflow fp16 there (the same holds for Liger); prefer bf16.

chunk_size default: the largest multiple of 256 (at least 256) whose logits chunk takes ≤ 512 MiB in
hidden's dtype (bf16, V=155,136: 1536 rows), clamped to N.

Dispatch: CUDA tensors (or CPU under TRITON_INTERPRET=1) run the chunk loop inside the torch custom op
seedcoder::fused_linear_cross_entropy (one opaque op, so torch.compile neither unrolls the loop nor
keeps several chunks alive); plain CPU tensors run `fused_linear_cross_entropy_reference` (fp32 matmul,
then the cross-entropy reference, autograd through torch).
"""

from __future__ import annotations

import torch

from . import _common
from .cross_entropy import (
    check_labels,
    check_labels_in_range,
    check_options,
    check_vocab_size,
    cross_entropy_reference,
    launch_forward,
    launch_grad_,
)

__all__ = ["fused_linear_cross_entropy", "fused_linear_cross_entropy_reference", "default_chunk_size"]

CHUNK_LOGITS_BYTES = 512 * 1024 * 1024  # default budget of the logits chunk buffer
CHUNK_MULTIPLE = 256


def default_chunk_size(n_rows: int, n_cols: int, dtype: torch.dtype) -> int:
    """Rows per chunk so that the (chunk, V) logits buffer takes ≤ 512 MiB: a multiple of 256, clamped to N."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    rows = CHUNK_LOGITS_BYTES // (itemsize * max(1, n_cols))
    rows = max(CHUNK_MULTIPLE, rows // CHUNK_MULTIPLE * CHUNK_MULTIPLE)
    return max(1, min(rows, n_rows))


# ============================================================================================= chunk loop
def _chunked_loss_and_grads(hidden, weight, labels, row_scale, ignore_index, label_smoothing, z_loss, softcap,
                            chunk_size, want_grad_hidden, want_grad_weight):
    n_rows, n_hidden = hidden.shape
    n_cols = weight.shape[0]
    device = hidden.device
    loss = _common.new_empty((n_rows,), dtype=torch.float32, device=device)
    grad_hidden = _common.new_empty((n_rows if want_grad_hidden else 0, n_hidden), dtype=hidden.dtype, device=device)
    grad_weight = _common.new_empty((n_cols, n_hidden) if want_grad_weight else (0, n_hidden), dtype=weight.dtype,
                                    device=device)
    if n_rows == 0:
        grad_weight.zero_()
        return loss, grad_hidden, grad_weight
    check_labels_in_range(labels, n_cols, ignore_index)
    want_grad = want_grad_hidden or want_grad_weight
    chunk = min(chunk_size, n_rows)
    logits_buffer = _common.new_empty((chunk, n_cols), dtype=hidden.dtype, device=device)
    weight_t = weight.t()
    for start in range(0, n_rows, chunk):
        end = min(start + chunk, n_rows)
        hidden_c, labels_c = hidden[start:end], labels[start:end]
        logits_c = logits_buffer[: end - start]
        torch.mm(hidden_c, weight_t, out=logits_c)
        loss_c, lse_c = launch_forward(logits_c, labels_c, ignore_index, label_smoothing, z_loss, softcap)
        loss[start:end] = loss_c
        if not want_grad:
            continue
        launch_grad_(logits_c, labels_c, lse_c, row_scale[start:end], ignore_index, label_smoothing, z_loss, softcap)
        if want_grad_hidden:
            torch.mm(logits_c, weight, out=grad_hidden[start:end])
        if want_grad_weight:
            if start == 0:
                torch.mm(logits_c.t(), hidden_c, out=grad_weight)
            else:
                grad_weight.addmm_(logits_c.t(), hidden_c)
    return loss, grad_hidden, grad_weight


@torch.library.custom_op("seedcoder::fused_linear_cross_entropy", mutates_args=())
def _flce_op(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, row_scale: torch.Tensor,
             ignore_index: int, label_smoothing: float, z_loss: float, softcap: float, chunk_size: int,
             want_grad_hidden: bool, want_grad_weight: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row loss (fp32), grad_hidden (N, H) and grad_weight (V, H) of Σ_i row_scale[i]·loss_i.

    A gradient that is not wanted comes back with 0 rows. softcap <= 0 means no soft-capping."""
    return _chunked_loss_and_grads(hidden, weight, labels, row_scale, ignore_index, label_smoothing, z_loss, softcap,
                                   chunk_size, want_grad_hidden, want_grad_weight)


@_flce_op.register_fake
def _(hidden, weight, labels, row_scale, ignore_index, label_smoothing, z_loss, softcap, chunk_size,
      want_grad_hidden, want_grad_weight):
    n_rows, n_hidden = hidden.shape
    return (hidden.new_empty((n_rows,), dtype=torch.float32),
            hidden.new_empty((n_rows if want_grad_hidden else 0, n_hidden)),
            weight.new_empty((weight.shape[0] if want_grad_weight else 0, n_hidden)))


# ======================================================================================== autograd + API
class _FusedLinearCrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, ignore_index, label_smoothing, z_loss, softcap, reduction, chunk_size,
                want_grad_hidden, want_grad_weight):
        n_rows = hidden.shape[0]
        n_valid = (labels != ignore_index).sum()
        grads_in_forward = reduction != "none" and (want_grad_hidden or want_grad_weight)
        if grads_in_forward and reduction == "mean":
            row_scale = (1.0 / n_valid.clamp(min=1).to(torch.float32)).expand(n_rows).contiguous()
        elif grads_in_forward:
            row_scale = torch.ones((n_rows,), dtype=torch.float32, device=hidden.device)
        else:
            row_scale = torch.empty((0,), dtype=torch.float32, device=hidden.device)
        loss_rows, grad_hidden, grad_weight = torch.ops.seedcoder.fused_linear_cross_entropy(
            hidden, weight, labels, row_scale, ignore_index, label_smoothing, z_loss, softcap, chunk_size,
            want_grad_hidden and grads_in_forward, want_grad_weight and grads_in_forward)
        if reduction == "mean":
            loss = loss_rows.sum() / n_valid.clamp(min=1)
        elif reduction == "sum":
            loss = loss_rows.sum()
        else:
            loss = loss_rows
        ctx.reduction = reduction
        ctx.want = (want_grad_hidden, want_grad_weight)
        ctx.options = (ignore_index, label_smoothing, z_loss, softcap, chunk_size)
        if grads_in_forward:
            ctx.save_for_backward(grad_hidden, grad_weight)
        elif reduction == "none":
            ctx.save_for_backward(hidden, weight, labels)
        return loss  # fp32: a summed bf16 loss would keep ~3 significant digits

    @staticmethod
    def backward(ctx, grad_loss):
        want_grad_hidden, want_grad_weight = ctx.want
        if ctx.reduction == "none":
            hidden, weight, labels = ctx.saved_tensors
            ignore_index, label_smoothing, z_loss, softcap, chunk_size = ctx.options
            _, grad_hidden, grad_weight = torch.ops.seedcoder.fused_linear_cross_entropy(
                hidden, weight, labels, grad_loss.to(torch.float32).contiguous(), ignore_index, label_smoothing, z_loss,
                softcap, chunk_size, want_grad_hidden, want_grad_weight)
        else:
            # In place: these buffers are ours, and an out-of-place product would add a V×H copy. The version
            # bump makes a second backward through the graph (retain_graph) raise instead of rescaling twice.
            grad_hidden, grad_weight = ctx.saved_tensors
            grad_hidden.mul_(grad_loss)
            grad_weight.mul_(grad_loss)
        return (grad_hidden if want_grad_hidden else None, grad_weight if want_grad_weight else None,
                None, None, None, None, None, None, None, None, None)


def fused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """cross_entropy(hidden @ weight.T, labels, ...) without materializing the (N, V) logits.

    hidden (..., H), weight (V, H) of the same dtype (fp32/bf16/fp16) and device, labels (...) int64/int32.
    Options and return value as `cross_entropy`, but the loss is float32 (float64 for float64 inputs) whatever
    hidden's dtype ("mean" over non-ignored tokens, 0 when there are none). chunk_size: tokens per chunk
    (default: logits chunk ≤ 512 MiB, see the module docstring). Gradients for mean/sum are computed during
    forward; see the module docstring for memory.
    """
    check_options(ignore_index, label_smoothing, z_loss, softcap, reduction)
    _common.check_tensor("hidden", hidden)
    if hidden.dim() == 0:
        raise ValueError("hidden: expected shape (..., H), got a 0-d tensor")
    _common.check_tensor("weight", weight, ndim=2, device=hidden.device)
    _common.check_same_dtype(hidden=hidden, weight=weight)
    if weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight: shape {tuple(weight.shape)} does not match hidden {tuple(hidden.shape)} "
                         f"(expected (V, {hidden.shape[-1]}))")
    check_vocab_size("weight", weight.shape[0])
    check_labels(labels, hidden.shape[:-1], hidden.device, f"hidden {tuple(hidden.shape)} without its last (hidden) dim")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size: expected None or a positive int, got {chunk_size!r}")

    if not _common.use_triton(hidden):
        if not torch.compiler.is_compiling():
            check_labels_in_range(labels, weight.shape[0], ignore_index)
        return fused_linear_cross_entropy_reference(hidden, weight, labels, ignore_index=ignore_index,
                                                    label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
                                                    reduction=reduction)

    out_shape = labels.shape
    hidden_2d = hidden.reshape(-1, hidden.shape[-1])
    labels_1d = labels.reshape(-1).to(torch.int64)
    n_rows, n_cols = hidden_2d.shape[0], weight.shape[0]
    if chunk_size is None:
        chunk_size = default_chunk_size(n_rows, n_cols, hidden.dtype)
    grad_enabled = torch.is_grad_enabled()
    loss = _FusedLinearCrossEntropyFunction.apply(
        hidden_2d, weight, labels_1d, int(ignore_index), float(label_smoothing), float(z_loss),
        float(softcap) if softcap is not None else 0.0, reduction, max(1, min(int(chunk_size), max(n_rows, 1))),
        grad_enabled and hidden.requires_grad, grad_enabled and weight.requires_grad)
    return loss.reshape(out_shape) if reduction == "none" else loss


def fused_linear_cross_entropy_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Plain torch, differentiable: fp32 (float64 for float64 inputs) `hidden @ weight.T`, then the CE reference."""
    compute_dtype = torch.promote_types(hidden.dtype, torch.float32)
    logits = hidden.to(compute_dtype) @ weight.to(compute_dtype).t()
    loss = cross_entropy_reference(logits, labels, ignore_index=ignore_index, label_smoothing=label_smoothing,
                                   z_loss=z_loss, softcap=softcap, reduction=reduction)
    return loss.to(compute_dtype)
