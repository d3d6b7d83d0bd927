"""Context parallelism for long sequences: zig-zag sharding and ring attention over a `cp` process group.

    from seedcoder import context_parallel as cp
    group = mesh["cp"].get_group()                        # or a ProcessGroup, or the 1-D DeviceMesh itself
    n, r = group.size(), group.rank()
    docs = document_ids(B, S, cu_seqlens=cu)              # (B, S) global document ids (seedcoder.model)
    q, k, v = (cp.zigzag_shard(t, n, r) for t in (q, k, v))          # (B, S, H, D) -> (B, S / n, H, D)
    out = cp.ring_attention(q, k, v, group=group, doc_ids=cp.zigzag_shard(docs, n, r))
    full = cp.zigzag_gather(out, group)                   # (B, S, Hq, D) again, e.g. for a check

Sharding. A sequence of S tokens (S divisible by 2N for a group of N ranks) is cut into 2N chunks of c = S / 2N
tokens; rank r holds chunks r and 2N-1-r, concatenated (`zigzag_shard`, its inverse `zigzag_unshard`, the global
token indices `zigzag_indices`). Under a causal mask chunk i attends to i + 1 chunks, so every rank gets the same
work, (r + 1) + (2N - r) = 2N + 1 chunk pairs. Everything per token (inputs, labels, position_ids, document ids)
is sharded the same way along the sequence dim; `document_ids_from_positions` recovers document ids from sharded
position_ids alone (global index - position = the document's first token).

Ring attention (`ring_attention`, an autograd.Function). Each rank keeps its two query chunks and passes its
key/value chunks around the ring with torch.distributed P2P (batch_isend_irecv: send to rank + 1, receive from
rank - 1, the next step's K/V in flight while this step computes), N steps in all. Every (query chunk a, key
chunk b) pair is one block: b > a is skipped (causal), b == a is causal self-attention, b < a sees every key,
and all of it only within a token's own document (causal=False: every pair, the diagonal unmasked). Block
results (out_i, lse_i) are merged exactly by log-sum-exp: lse = logaddexp(lse, lse_i), out = exp(lse_old - lse)
out + exp(lse_i - lse) out_i, accumulated in fp32 (float64 for float64 inputs).

Documents. doc_ids (B, S_local) are per-token document ids, sharded like q, non-decreasing along each row's
global sequence (packed documents are contiguous; rows are independent). The document ids of all ranks are
all-gathered once per call (B * S int64, small), so every rank plans every block without talking. A diagonal
block is self-attention over the packed documents of its chunk: our flash kernel (`flash_attention` with
cu_seqlens cut at the document boundaries inside the chunk). In an off-diagonal block only the one document that
crosses from key chunk b into query chunk a can attend (documents are contiguous): a prefix of Lq query rows
against a suffix of Lk keys, all visible, cropped to those rows and columns (nothing at all when no document
crosses, the common case with short documents). When both crops are the whole chunk (one long document) the
block is flash_attention(causal=False) on equal-length q and k. Otherwise (a document starting or ending inside a
chunk: Lq != Lk, or rows with different crops) flash_attention's self-attention API cannot take it as is (q and k
must be the same tokens), so the block is repacked for it: each row's Lq queries are cut into pieces of Lk rows
(the last padded with zero rows), each piece packed as one document of length Lk with a copy of that row's Lk
keys/values, and run non-causal; a query row lies in exactly one piece, so its (out, lse) are the block's, and in
the backward the copies' dK/dV are index-added back. Cost on a GPU: the gathers of Lq + Lk tokens a row (and
scatters back), and kernel work ceil(Lq / Lk) · Lk² instead of Lq · Lk: at most one extra piece of padding, so
under 2x when Lq >= Lk but up to Lk / Lq times the useful work when the document holds few queries (never more
than two c x c blocks' work). The explicit masked torch computation (fp32 cuBLAS matmuls, one kv head's (B, g, Lq, Lk)
scores at a time, not fused) remains for what the kernel does not take: float64 inputs, head dims over 128, and
the backward on the CPU reference path (below). Planning reads the document ids on the host (a sync per block,
and one per call for the input check); with doc_ids=None (each row one causal sequence) nothing syncs and every
block is a whole chunk pair in the kernel.

Backward (ring-flash-attention style). The forward saves q, k, v, the merged output O and lse. The backward
computes delta = rowsum(dO ∘ O) once, then passes K/V around the ring again; each block recomputes its
probabilities with the GLOBAL lse, P = exp(scale · q kᵀ - lse), and dS = P ∘ (dP - delta), which makes the
block gradients exactly the single-process ones: dQ accumulates locally; dK/dV (fp32) travel around the ring
with their K/V, each rank adding its blocks' share, and reach their owner after one more hop. Blocks in the
kernel run `seedcoder::flash_attn_bwd` with the global out/lse (the pieces' padding rows zero, so they add
nothing) on CUDA and under TRITON_INTERPRET=1; on the CPU reference path that op recomputes its own softmax (it
ignores out/lse), so there every block's backward is the explicit torch computation. GQA (Hq = g · Hkv): K/V
are never repeated; dK/dV sum over each kv head's g query heads. float64 inputs run every block in torch
(float64), which the tests use as an exact check of the ring itself. lse is returned for checks and is not
differentiable. The host syncs and P2P calls are not meant for torch.compile: compile around it (a graph break).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh

from seedcoder.kernels import _common, flash_attention

__all__ = [
    "document_ids_from_positions",
    "ring_attention",
    "zigzag_gather",
    "zigzag_indices",
    "zigzag_shard",
    "zigzag_unshard",
]

_KERNEL_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
_KERNEL_MAX_HEAD_DIM = 128  # the flash backward's limit; wider heads take the torch path in both directions


# ================================================================================================ sharding
def _check_split(seqlen: int, cp_size: int, cp_rank: int) -> int:
    """The chunk length c = S / 2N, after checking the arguments."""
    if not isinstance(cp_size, int) or cp_size < 1:
        raise ValueError(f"cp_size: expected a positive int, got {cp_size!r}")
    if not isinstance(cp_rank, int) or not 0 <= cp_rank < cp_size:
        raise ValueError(f"cp_rank: expected an int in [0, {cp_size}), got {cp_rank!r}")
    if seqlen % (2 * cp_size):
        raise ValueError(f"sequence length {seqlen} is not divisible by 2 x cp_size = {2 * cp_size} "
                         f"(zig-zag sharding cuts it into 2 x cp_size equal chunks)")
    return seqlen // (2 * cp_size)


def zigzag_indices(seqlen: int, cp_size: int, cp_rank: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """(S / N,) int64: the global token indices rank cp_rank holds, chunk r then chunk 2N-1-r, in order."""
    c = _check_split(seqlen, cp_size, cp_rank)
    first = torch.arange(cp_rank * c, (cp_rank + 1) * c, device=device)
    second = torch.arange((2 * cp_size - 1 - cp_rank) * c, (2 * cp_size - cp_rank) * c, device=device)
    return torch.cat([first, second])


def zigzag_shard(x: torch.Tensor, cp_size: int, cp_rank: int, *, dim: int = 1) -> torch.Tensor:
    """This rank's zig-zag shard (a copy) of x along dim, the sequence: 1 for (B, S, ...) activations and for
    (B, S) or (1, S) position_ids, labels and document ids."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"zigzag_shard: x must be a tensor, got {type(x).__name__}")
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"zigzag_shard: dim={dim} is out of range for a {x.dim()}-D tensor")
    c = _check_split(x.shape[dim], cp_size, cp_rank)
    chunks = x.split(c, dim=dim)
    return torch.cat([chunks[cp_rank], chunks[2 * cp_size - 1 - cp_rank]], dim=dim)


def zigzag_unshard(shards: Sequence[torch.Tensor], *, dim: int = 1) -> torch.Tensor:
    """The full tensor from every rank's zig-zag shard (shards[r] from rank r), the inverse of zigzag_shard."""
    if not shards:
        raise ValueError("zigzag_unshard: shards is empty (expected one tensor per cp rank)")
    n = len(shards)
    shape = shards[0].shape
    for r, s in enumerate(shards):
        if s.shape != shape:
            raise ValueError(f"zigzag_unshard: shard {r} has shape {tuple(s.shape)}, shard 0 {tuple(shape)}")
    if shape[dim] % 2:
        raise ValueError(f"zigzag_unshard: shard length {shape[dim]} along dim {dim} is odd (a shard is 2 chunks)")
    c = shape[dim] // 2
    halves = [s.split(c, dim=dim) for s in shards]
    ordered = [halves[i][0] for i in range(n)] + [halves[n - 1 - i][1] for i in range(n)]
    return torch.cat(ordered, dim=dim)


def zigzag_gather(x: torch.Tensor, group: dist.ProcessGroup | DeviceMesh | None = None, *, dim: int = 1) -> torch.Tensor:
    """All-gather every rank's zig-zag shard of x and return the full tensor on every rank (not differentiable)."""
    group = _as_group(group)
    shards = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(shards, x.contiguous(), group=group)
    return zigzag_unshard(shards, dim=dim)


def document_ids_from_positions(position_ids: torch.Tensor, cp_size: int, cp_rank: int) -> torch.Tensor:
    """(B, S / N) int64 document ids from this rank's shard of position_ids (restarting at 0 in every document).

    A token's document id is its document's first global index (global index - position): equal within a
    document, different across documents, non-decreasing along a row, as ring_attention needs."""
    if position_ids.dim() != 2:
        raise ValueError(f"position_ids: expected a (B, S_local) shard, got shape {tuple(position_ids.shape)}")
    index = zigzag_indices(position_ids.shape[1] * cp_size, cp_size, cp_rank, device=position_ids.device)
    return index[None, :] - position_ids.to(torch.int64)


def _as_group(group: dist.ProcessGroup | DeviceMesh | None) -> dist.ProcessGroup:
    if isinstance(group, DeviceMesh):
        if group.ndim != 1:
            raise ValueError(f"group: expected a 1-D DeviceMesh (e.g. mesh['cp']), got {group.ndim} dims")
        return group.get_group()
    if group is None:
        return dist.group.WORLD
    if not isinstance(group, dist.ProcessGroup):
        raise TypeError(f"group: expected a ProcessGroup, a 1-D DeviceMesh or None, got {type(group).__name__}")
    return group


# ================================================================================================ blocks
@dataclass(frozen=True)
class _Block:
    """One (query chunk, key chunk) pair to compute, in chunk-local token offsets.

    kind: "diag" (same tokens: causal or not, within documents; cu_seqlens is its document boundaries over the
    flattened B*c tokens, None when each row is one document), "full" (q[q_lo:q_hi] sees every key of k[k_lo:k_hi],
    equal lengths) or "masked" (key_docs: the cropped keys' document ids, for the (B, Lq, Lk) same-document mask
    of the torch path, built when needed: the plans live until the backward; pieces: its layout for the kernel)."""

    kind: str
    q_lo: int
    q_hi: int
    k_lo: int
    k_hi: int
    cu_seqlens: torch.Tensor | None = None
    key_docs: torch.Tensor | None = None
    pieces: _Pieces | None = None


@dataclass(frozen=True)
class _Pieces:
    """A masked block as self-attention the kernel runs: row i's Lq_i queries see all its Lk_i keys, so its queries
    are cut into pieces of Lk_i rows (the last padded with zero rows), each packed as one document of length Lk_i
    with a copy of the keys. Indices are into the block's flattened (B * Lq) queries and (B * Lk) keys; a query
    row lies in exactly one piece, so the piece's (out, lse) is the block's. At most Lq_i + Lk_i tokens a row."""

    q_index: torch.Tensor  # (T,) int64, 0 where padding
    q_valid: torch.Tensor  # (T,) bool
    k_index: torch.Tensor  # (T,) int64
    cu_seqlens: torch.Tensor  # int32, one document per piece
    max_seqlen: int


def _pieces(extents: list[list[int]], lq: int, lk: int, device: torch.device) -> _Pieces:
    """The layout of a masked block from each row's [q_first, q_end, k_first, k_end) within the crop."""
    q_index, q_valid, k_index, lengths = [], [], [], []
    for row, (q_first, q_end, k_first, k_end) in enumerate(extents):
        n_q, n_k = q_end - q_first, k_end - k_first
        if n_q <= 0:
            continue
        n_pieces = -(-n_q // n_k)
        slots = torch.arange(n_pieces * n_k, device=device)
        q_valid.append(slots < n_q)
        q_index.append(torch.where(slots < n_q, row * lq + q_first + slots, 0))
        k_index.append(row * lk + k_first + slots % n_k)
        lengths += [n_k] * n_pieces
    cu = torch.tensor([0, *lengths], dtype=torch.int64).cumsum(0).to(device=device, dtype=torch.int32)
    return _Pieces(torch.cat(q_index), torch.cat(q_valid), torch.cat(k_index), cu, max(lengths))


def _chunk_cu_seqlens(docs: torch.Tensor) -> torch.Tensor:
    """int32 boundaries over the flattened (B, c) tokens: a new document at every row start and id change."""
    b, c = docs.shape
    starts = torch.ones_like(docs, dtype=torch.bool)
    starts[:, 1:] = docs[:, 1:] != docs[:, :-1]
    offsets = starts.flatten().nonzero().flatten()
    return torch.cat([offsets, offsets.new_tensor([b * c])]).to(torch.int32)


def _plan_block(a: int, b: int, doc_q: torch.Tensor | None, doc_k: torch.Tensor | None, c: int,
                causal: bool) -> _Block | None:
    """The block of query chunk a against key chunk b (global chunk indices), or None when nothing attends."""
    if causal and b > a:
        return None
    if a == b:
        return _Block("diag", 0, c, 0, c, cu_seqlens=None if doc_q is None else _chunk_cu_seqlens(doc_q))
    if doc_q is None:
        return _Block("full", 0, c, 0, c)
    # Documents are contiguous, so only the document crossing the gap between the chunks can attend: when the key
    # chunk comes first, the one holding its last token and the query chunk's first token (mirrored otherwise).
    shared = doc_k[:, -1] if b < a else doc_k[:, 0]
    crossing = shared == (doc_q[:, 0] if b < a else doc_q[:, -1])
    q_in = (doc_q == shared[:, None]) & crossing[:, None]
    k_in = (doc_k == shared[:, None]) & crossing[:, None]
    q_cols, k_cols = q_in.any(0).nonzero().flatten(), k_in.any(0).nonzero().flatten()
    if q_cols.numel() == 0:
        return None
    q_lo, q_hi, k_lo, k_hi = torch.stack([q_cols[0], q_cols[-1] + 1, k_cols[0], k_cols[-1] + 1]).tolist()
    if q_hi - q_lo == k_hi - k_lo and bool(q_in[:, q_lo:q_hi].all()) and bool(k_in[:, k_lo:k_hi].all()):
        return _Block("full", q_lo, q_hi, k_lo, k_hi)
    # Rows whose crossing document is shorter than the bounding crop (B > 1) are masked; other pairs never match.
    q_first, k_first = q_in.int().argmax(1), k_in.int().argmax(1)  # each row's crossing tokens are contiguous
    extents = torch.stack([q_first - q_lo, q_first + q_in.sum(1) - q_lo, k_first - k_lo, k_first + k_in.sum(1) - k_lo], 1)
    pieces = _pieces(extents.tolist(), q_hi - q_lo, k_hi - k_lo, doc_q.device)
    return _Block("masked", q_lo, q_hi, k_lo, k_hi, key_docs=doc_k[:, k_lo:k_hi], pieces=pieces)


def _block_mask(block: _Block, doc_q: torch.Tensor | None, causal: bool, device: torch.device) -> torch.Tensor | None:
    """(B or 1, Lq, Lk) bool visibility of a block for the torch path (None: everything visible)."""
    if block.kind == "full":
        return None
    if block.kind == "masked":
        return doc_q[:, block.q_lo:block.q_hi, None] == block.key_docs[:, None, :]
    mask = None if doc_q is None else doc_q[:, :, None] == doc_q[:, None, :]
    if causal:
        tril = torch.ones(block.q_hi, block.q_hi, dtype=torch.bool, device=device).tril()
        mask = tril[None] if mask is None else mask & tril
    return mask


def _uses_kernel(q: torch.Tensor) -> bool:
    return q.dtype in _KERNEL_DTYPES and q.shape[-1] <= _KERNEL_MAX_HEAD_DIM


def _scores(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, scale: float, dtype: torch.dtype):
    """(B, Hkv, g, Lq, Lk) scaled scores in dtype, masked entries -inf; q (B, Lq, Hq, D), k (B, Lk, Hkv, D)."""
    b, lq, hq, d = q.shape
    qg = q.to(dtype).view(b, lq, k.shape[2], hq // k.shape[2], d)
    scores = torch.einsum("bqhgd,bkhd->bhgqk", qg, k.to(dtype)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None], float("-inf"))
    return scores


def _per_kv_head(fn, q, k, v, *per_query_head):
    """fn over one kv head and its g query heads at a time, a list of its results: the torch path holds one kv
    head's (B, g, Lq, Lk) scores at a time. per_query_head: (tensor, head dim) pairs, sliced to those g heads."""
    g = q.shape[2] // k.shape[2]
    parts = []
    for h in range(k.shape[2]):
        heads = slice(h * g, (h + 1) * g)
        extra = [t.narrow(dim, h * g, g) for t, dim in per_query_head]
        parts.append(fn(q[:, :, heads], k[:, :, h:h + 1], v[:, :, h:h + 1], *extra))
    return parts


def _torch_block_forward(q, k, v, mask, scale, dtype):
    """(out (B, Lq, Hq, D), lse (B, Hq, Lq)) in dtype; a row that sees no key has lse -inf and out 0."""
    parts = _per_kv_head(lambda *args: _torch_heads_forward(*args, mask, scale, dtype), q, k, v)
    return torch.cat([p[0] for p in parts], dim=2), torch.cat([p[1] for p in parts], dim=1)


def _torch_block_backward(q, k, v, dout, lse, delta, mask, scale, dtype):
    """(dq, dk, dv) of one block in dtype, from the GLOBAL lse and delta (B, Hq, Lq): the single-process gradient."""
    parts = _per_kv_head(lambda *args: _torch_heads_backward(*args, mask, scale, dtype), q, k, v, (dout, 2), (lse, 1), (delta, 1))
    return tuple(torch.cat([p[i] for p in parts], dim=2) for i in range(3))


def _torch_heads_forward(q, k, v, mask, scale, dtype):
    """_torch_block_forward on any heads (the caller passes one kv head's)."""
    b, lq, hq, _ = q.shape
    scores = _scores(q, k, mask, scale, dtype)
    lse = torch.logsumexp(scores, -1)
    probs = torch.exp(scores - torch.where(torch.isinf(lse), 0.0, lse)[..., None])
    out = torch.einsum("bhgqk,bkhd->bqhgd", probs, v.to(dtype)).reshape(b, lq, hq, -1)
    return out, lse.reshape(b, hq, lq)


def _torch_heads_backward(q, k, v, dout, lse, delta, mask, scale, dtype):
    """_torch_block_backward on any heads: P = exp(scale q kᵀ - lse), dS = P ∘ (dO vᵀ - delta)."""
    b, lq, hq, d = q.shape
    hkv = k.shape[2]
    scores = _scores(q, k, mask, scale, dtype)
    probs = torch.exp(scores - lse.to(dtype).view(b, hkv, hq // hkv, lq)[..., None])
    dog = dout.to(dtype).view(b, lq, hkv, hq // hkv, -1)
    qg = q.to(dtype).view(b, lq, hkv, hq // hkv, d)
    dv = torch.einsum("bhgqk,bqhgd->bkhd", probs, dog)
    dprobs = torch.einsum("bqhgd,bkhd->bhgqk", dog, v.to(dtype))
    dscores = probs * (dprobs - delta.to(dtype).view(b, hkv, hq // hkv, lq)[..., None])
    dq = torch.einsum("bhgqk,bkhd->bqhgd", dscores, k.to(dtype)).reshape(b, lq, hq, d) * scale
    dk = torch.einsum("bhgqk,bqhgd->bkhd", dscores, qg) * scale
    return dq, dk, dv


def _block_forward(q, k, v, block: _Block, doc_q, causal: bool, scale: float, dtype: torch.dtype):
    """(out, lse) of one block, q/k/v already cropped to it: the flash kernel where it applies, else torch."""
    if _uses_kernel(q) and block.kind == "masked":
        pieces, (b, lq, hq) = block.pieces, q.shape[:3]
        valid = pieces.q_valid[:, None, None]
        q_packed = q.flatten(0, 1)[pieces.q_index] * valid  # padding rows are zero queries, dropped below
        k_packed, v_packed = (t.flatten(0, 1)[pieces.k_index] for t in (k, v))
        out_packed, lse_packed = flash_attention(q_packed, k_packed, v_packed, causal=False, softmax_scale=scale,
                                                 cu_seqlens=pieces.cu_seqlens, max_seqlen=pieces.max_seqlen,
                                                 return_lse=True)
        rows = pieces.q_index[pieces.q_valid]
        out = torch.zeros(b * lq, hq, v.shape[-1], dtype=dtype, device=q.device)
        lse = torch.full((hq, b * lq), float("-inf"), dtype=dtype, device=q.device)  # rows outside every piece
        out[rows] = out_packed[pieces.q_valid].to(dtype)
        lse[:, rows] = lse_packed[:, pieces.q_valid].to(dtype)
        return out.view(b, lq, hq, -1), lse.view(hq, b, lq).transpose(0, 1)
    if _uses_kernel(q) and block.kind != "masked":
        block_causal = causal and block.kind == "diag"
        if block.cu_seqlens is not None:
            b, lq = q.shape[:2]
            out, lse = flash_attention(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), causal=block_causal,
                                       softmax_scale=scale, cu_seqlens=block.cu_seqlens, max_seqlen=lq,
                                       return_lse=True)
            return out.view(q.shape).to(dtype), lse.view(-1, b, lq).transpose(0, 1).to(dtype)
        out, lse = flash_attention(q, k, v, causal=block_causal, softmax_scale=scale, return_lse=True)
        return out.to(dtype), lse.to(dtype)
    return _torch_block_forward(q, k, v, _block_mask(block, doc_q, causal, q.device), scale, dtype)


def _block_backward(q, k, v, out, dout, lse, delta, block: _Block, doc_q, causal: bool, scale: float, dtype):
    """(dq, dk, dv) of one block from the global out/lse; the kernel's backward where it runs (see module doc)."""
    if _uses_kernel(q) and _common.use_triton(q) and block.kind == "masked":
        pieces, (b, lq, hq, d) = block.pieces, q.shape
        valid = pieces.q_valid[:, None, None]
        q_packed, out_packed, dout_packed = (t.flatten(0, 1)[pieces.q_index] * valid for t in (q, out, dout))
        k_packed, v_packed = (t.flatten(0, 1)[pieces.k_index] for t in (k, v))
        # padding rows: zero q, out and dO with lse 0 give P = 1 but dS = 0 and no dV: they add nothing
        lse_packed = lse.transpose(0, 1).reshape(hq, b * lq)[:, pieces.q_index].float() * pieces.q_valid
        dq_packed, dk_packed, dv_packed = torch.ops.seedcoder.flash_attn_bwd(
            dout_packed, q_packed, k_packed, v_packed, out_packed, lse_packed.contiguous(), pieces.cu_seqlens,
            pieces.max_seqlen, False, scale, False)
        dq = torch.zeros(b * lq, hq, d, dtype=dtype, device=q.device)
        dq[pieces.q_index[pieces.q_valid]] = dq_packed[pieces.q_valid].to(dtype)
        dk, dv = (torch.zeros(t.flatten(0, 1).shape, dtype=dtype, device=q.device).index_add_(
            0, pieces.k_index, g.to(dtype)).view(t.shape) for t, g in ((k, dk_packed), (v, dv_packed)))
        return dq.view(q.shape), dk, dv
    if _uses_kernel(q) and _common.use_triton(q):
        b, lq = q.shape[:2]
        cu = block.cu_seqlens
        if cu is None:
            cu = torch.arange(0, (b + 1) * lq, lq, dtype=torch.int32, device=q.device)
        grads = torch.ops.seedcoder.flash_attn_bwd(
            dout.flatten(0, 1).contiguous(), q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), out.flatten(0, 1),
            lse.transpose(0, 1).reshape(lse.shape[1], -1).float().contiguous(), cu, lq,
            causal and block.kind == "diag", scale, False)
        return tuple(g.view(t.shape).to(dtype) for g, t in zip(grads, (q, k, v)))
    return _torch_block_backward(q, k, v, dout, lse, delta, _block_mask(block, doc_q, causal, q.device), scale, dtype)


def _merge(acc_out, acc_lse, out, lse, q_lo: int, q_hi: int) -> None:
    """Fold a block's (out, lse) into the accumulators' rows q_lo:q_hi, exactly, by log-sum-exp (in place)."""
    old_out, old_lse = acc_out[:, q_lo:q_hi], acc_lse[:, :, q_lo:q_hi]
    new_lse = torch.logaddexp(old_lse, lse)
    safe = torch.where(torch.isinf(new_lse), 0.0, new_lse)  # rows nothing has reached yet stay (0, -inf)
    w_old = torch.exp(old_lse - safe).transpose(1, 2)[..., None]
    w_new = torch.exp(lse - safe).transpose(1, 2)[..., None]
    acc_out[:, q_lo:q_hi] = old_out * w_old + out * w_new
    acc_lse[:, :, q_lo:q_hi] = new_lse


# ================================================================================================ ring
def _ring_exchange(tensors: Sequence[torch.Tensor], group: dist.ProcessGroup,
                   first_tag: int = 0) -> tuple[list[torch.Tensor], list]:
    """Start sending tensors to the next rank and receiving the previous rank's; (receive buffers, pending).

    pending holds the requests and the ops (whose tensors must live until the requests complete). Exchanges in
    flight together take different tags (first_tag), so no receive can be matched with another exchange's send."""
    rank, size = dist.get_rank(group), dist.get_world_size(group)
    received = [torch.empty_like(t) for t in tensors]
    ops = []
    for tag, (send, recv) in enumerate(zip(tensors, received), start=first_tag):
        ops.append(dist.P2POp(dist.isend, send.contiguous(), group=group, tag=tag, group_peer=(rank + 1) % size))
        ops.append(dist.P2POp(dist.irecv, recv, group=group, tag=tag, group_peer=(rank - 1) % size))
    return received, [dist.batch_isend_irecv(ops), ops]


def _wait(pending: list) -> None:
    if pending:
        for request in pending[0]:
            request.wait()


def _chunk(t: torch.Tensor, index: int, c: int, dim: int = 1) -> torch.Tensor:
    return t.narrow(dim, index * c, c)


class _RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, doc_ids, group, causal, scale):
        rank, size = dist.get_rank(group), dist.get_world_size(group)
        b, s_local, hq, d = q.shape
        c = s_local // 2
        dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        all_docs = None
        if doc_ids is not None:
            all_docs = [torch.empty_like(doc_ids) for _ in range(size)]
            dist.all_gather(all_docs, doc_ids.contiguous(), group=group)
        acc_out = torch.zeros(b, s_local, hq, v.shape[-1], dtype=dtype, device=q.device)
        acc_lse = torch.full((b, hq, s_local), float("-inf"), dtype=dtype, device=q.device)
        plans = []  # (step, query half, key half, block): replayed by the backward
        k_cur, v_cur = k, v
        for step in range(size):
            src = (rank - step) % size
            if step < size - 1:
                (k_next, v_next), requests = _ring_exchange((k_cur, v_cur), group)
            for qi, a in enumerate((rank, 2 * size - 1 - rank)):
                doc_q = None if all_docs is None else _chunk(doc_ids, qi, c)
                for ki, kb in enumerate((src, 2 * size - 1 - src)):
                    doc_k = None if all_docs is None else _chunk(all_docs[src], ki, c)
                    block = _plan_block(a, kb, doc_q, doc_k, c, causal)
                    if block is None:
                        continue
                    plans.append((step, qi, ki, block))
                    q_blk = _chunk(q, qi, c)[:, block.q_lo:block.q_hi]
                    k_blk, v_blk = (_chunk(t, ki, c)[:, block.k_lo:block.k_hi] for t in (k_cur, v_cur))
                    out, lse = _block_forward(q_blk, k_blk, v_blk, block, doc_q, causal, scale, dtype)
                    _merge(acc_out, acc_lse, out, lse, qi * c + block.q_lo, qi * c + block.q_hi)
            if step < size - 1:
                _wait(requests)
                k_cur, v_cur = k_next, v_next
        out = acc_out.to(q.dtype)
        lse = acc_lse.to(torch.float64 if dtype == torch.float64 else torch.float32)
        ctx.save_for_backward(q, k, v, out, lse, doc_ids)
        ctx.group, ctx.causal, ctx.scale, ctx.plans, ctx.dtype = group, causal, scale, plans, dtype
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse, doc_ids = ctx.saved_tensors
        group, causal, scale, dtype = ctx.group, ctx.causal, ctx.scale, ctx.dtype
        size = dist.get_world_size(group)
        c = q.shape[1] // 2
        dout = dout.contiguous()
        delta = torch.einsum("bshd,bshd->bhs", dout.to(dtype), out.to(dtype))
        dq = torch.zeros(q.shape, dtype=dtype, device=q.device)
        by_step: dict[int, list] = {}
        for step, qi, ki, block in ctx.plans:
            by_step.setdefault(step, []).append((qi, ki, block))
        k_cur, v_cur = k, v
        dkv, dkv_requests = None, []
        for step in range(size):
            if step < size - 1:
                (k_next, v_next), kv_requests = _ring_exchange((k_cur, v_cur), group)
            dk_step = torch.zeros(k.shape, dtype=dtype, device=k.device)
            dv_step = torch.zeros(v.shape, dtype=dtype, device=v.device)
            for qi, ki, block in by_step.get(step, []):
                rows = slice(qi * c + block.q_lo, qi * c + block.q_hi)
                cols = slice(ki * c + block.k_lo, ki * c + block.k_hi)
                doc_q = None if doc_ids is None else _chunk(doc_ids, qi, c)
                dq_blk, dk_blk, dv_blk = _block_backward(
                    q[:, rows], k_cur[:, cols], v_cur[:, cols], out[:, rows], dout[:, rows], lse[:, :, rows],
                    delta[:, :, rows], block, doc_q, causal, scale, dtype)
                dq[:, rows] += dq_blk
                dk_step[:, cols] += dk_blk
                dv_step[:, cols] += dv_blk
            # The K/V gradients held so far arrive from the previous rank while this step computed.
            _wait(dkv_requests)
            if dkv is not None:
                dk_step += dkv[0]
                dv_step += dkv[1]
            # Pass them on with their K/V: after the last step they go one hop more, to the owner.
            if size > 1:
                dkv, dkv_requests = _ring_exchange((dk_step, dv_step), group, first_tag=2)  # beside K/V's 0, 1
            else:
                dkv = (dk_step, dv_step)
            if step < size - 1:
                _wait(kv_requests)
                k_cur, v_cur = k_next, v_next
        _wait(dkv_requests)
        dk, dv = dkv
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None


def _check_ring_inputs(q, k, v, doc_ids) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"ring_attention: {name} must be a tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"ring_attention: {name} must be (B, S_local, H, D), got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"ring_attention: {name} must be a floating-point tensor, got {t.dtype}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"ring_attention: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.shape != v.shape:
        raise ValueError(f"ring_attention: k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"ring_attention: q {tuple(q.shape)} and k {tuple(k.shape)} must agree on batch, local "
                         f"sequence length and head dim (self-attention over the same tokens)")
    n_heads, n_kv_heads = q.shape[2], k.shape[2]
    if n_kv_heads == 0 or n_heads % n_kv_heads:
        raise ValueError(f"ring_attention: the {n_heads} query heads must be a multiple of the {n_kv_heads} kv heads")
    if q.shape[1] % 2:
        raise ValueError(f"ring_attention: the local sequence length {q.shape[1]} is odd; a zig-zag shard is 2 equal "
                         f"chunks (shard with zigzag_shard a sequence divisible by 2 x cp_size)")
    if doc_ids is not None:
        if not isinstance(doc_ids, torch.Tensor) or doc_ids.dtype.is_floating_point or doc_ids.dtype == torch.bool:
            raise TypeError(f"ring_attention: doc_ids must be an integer tensor, got "
                            f"{getattr(doc_ids, 'dtype', type(doc_ids).__name__)}")
        if tuple(doc_ids.shape) != tuple(q.shape[:2]):
            raise ValueError(f"ring_attention: doc_ids must be (B, S_local) = {tuple(q.shape[:2])}, got "
                             f"{tuple(doc_ids.shape)}")
        if doc_ids.device != q.device:
            raise ValueError(f"ring_attention: doc_ids is on {doc_ids.device}, q on {q.device}")
        c = q.shape[1] // 2
        halves = doc_ids.split(c, dim=1)
        if any(bool((h[:, 1:] < h[:, :-1]).any()) for h in halves) or bool((halves[0][:, -1] > halves[1][:, 0]).any()):
            raise ValueError("ring_attention: doc_ids must be non-decreasing along each row's global sequence "
                             "(packed documents are contiguous)")


def ring_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                   group: dist.ProcessGroup | DeviceMesh | None = None, doc_ids: torch.Tensor | None = None,
                   causal: bool = True, softmax_scale: float | None = None, return_lse: bool = False):
    """Attention over a zig-zag sharded sequence, the ring over `group` (see the module docstring).

    q (B, S_local, Hq, D), k and v (B, S_local, Hkv, D): this rank's zig-zag shards (zigzag_shard), S_local =
    S / N. doc_ids (B, S_local) integer: per-token document ids sharded the same way, non-decreasing along the
    global row (None: each row is one sequence). group: the cp ProcessGroup, a 1-D DeviceMesh, or None (world).
    Returns out (B, S_local, Hq, D) in q's dtype, and with return_lse the lse (B, Hq, S_local) (fp32; float64 for
    float64 inputs), equal to single-process attention over the unsharded sequence, sharded. Differentiable in
    q, k, v; every rank of the group must call it with the same shapes."""
    _check_ring_inputs(q, k, v, doc_ids)
    process_group = _as_group(group)
    scale = float(softmax_scale) if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    out, lse = _RingAttention.apply(q, k, v, doc_ids, process_group, bool(causal), scale)
    return (out, lse) if return_lse else out
