"""Sharding applied after construction: tensor parallelism, activation checkpointing, torch.compile and FSDP2 per
block, then the root.

    mesh = build_mesh("cuda", world_size, dp_replicate=2, dp_shard=-1, tp=8)    # ranks = 2 x (world/16) x 8
    with torch.device("meta"):
        model = Transformer(cfg)
    parallelize(model, mesh, param_dtype=torch.bfloat16, activation_checkpoint="selective", compile=True)
    model.to_empty(device="cuda"); model.init_weights(seed)

The model code stays single-device: everything here wraps or registers hooks on an existing `model.layers`.
Order (torchtitan's): tensor parallelism replaces a block's linear weights by DTensor shards, activation
checkpointing wraps the block, torch.compile compiles the wrapped block, and `fully_shard` makes it an FSDP unit;
the root unit (embedding, final norm, head) comes last.

* The mesh (`build_mesh`): dims ("dp_replicate", "dp_shard", "cp", "tp"), tp innermost (consecutive ranks: one
  node's fast links carry its per-layer collectives), cp next. Data-parallel ranks = dp_replicate x dp_shard read
  different rows; the cp and tp ranks of a group read the same rows (`mesh_coordinates`).
* Context parallel (long sequences, e.g. the 32K stage): each cp rank holds a zig-zag shard of every row (chunks r
  and 2N-1-r of 2N: equal causal work, `context_parallel_batch`) and every block's attention is ring attention
  (`seedcoder.context_parallel`: K/V passed around the cp ring, partial outputs merged by log-sum-exp, documents
  from the shard's position_ids, backward through the ring). Everything else is per token, so it runs on the
  shard as is. The cp ranks hold the same parameters: FSDP shards over dp_shard x cp ("dp_shard_cp"), which
  also sums their gradients.
* Tensor parallel (Megatron, with sequence parallelism): in every block wq, wk, wv and w1, w3 are column-wise
  shards (each rank holds n_heads/tp query heads, n_kv_heads/tp K/V heads, ffn_dim/tp hidden units), wo and w2
  row-wise shards. Between them the activations are sequence-parallel: from the first block's input on, a tp rank
  holds S/tp of the tokens (the residual stream, the norms, the head and its loss work on that slice); attention
  and the MLP all-gather the sequence on entry and reduce-scatter it on exit (the backward swaps the two), the same
  traffic as plain Megatron's all-reduces with 1/tp of the norm and residual activations. The embedding and the
  head are split by vocabulary rows (V/tp each): the embedding's partial outputs are reduce-scattered into the
  sequence slices; the head all-gathers the slices and computes every token's loss on its rows (loss parallel:
  per-token log-sum-exp and label logit combined over tp, no rank holds all logits), so every tp rank returns the
  whole batch's loss. The norms are replicated over tp; each rank's gradient of them covers its tokens only, so
  the trainer sums them over tp after backward (`reduce_replicated_gradients`). FSDP shards every parameter over
  the data-parallel dims.
* HSDP: with dp_replicate > 1 `fully_shard` gets the 2-D (dp_replicate, dp_shard) mesh: parameters sharded over
  dp_shard, gradients reduce-scattered there and all-reduced across replicas.

* FSDP2: parameters are sharded on dim 0 over the mesh (DTensor); a block's parameters are all-gathered
  before its forward and backward and freed after (ZeRO-3). Mixed precision: parameters are gathered and
  computed in `param_dtype` (bf16 on GPU) while the sharded fp32 master copy is what the optimizer updates;
  gradients are reduce-scattered in `reduce_dtype` (fp32). The last block keeps its parameters gathered after
  forward (backward needs them right away).
* Gradient reduction sums over ranks (divide factor 1): the trainer already divides the loss by the global
  number of loss tokens, so the gradient is that of the global mean.
* Activation checkpointing: "full" recomputes a whole block in backward (keeps only its input); "selective"
  keeps the outputs of matmuls and attention and recomputes the cheap elementwise ops and norms.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from functools import partial

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import ColwiseParallel, PrepareModuleInput, RowwiseParallel, parallelize_module
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

from seedcoder import context_parallel
from seedcoder.kernels import flash_attention as _flash_attention  # noqa: F401  (registers torch.ops.seedcoder.flash_attn_fwd)
from seedcoder.kernels.fused_linear_cross_entropy import default_chunk_size

AC_MODES = ("none", "selective", "full")
MESH_DIMS = ("dp_replicate", "dp_shard", "cp", "tp")
IGNORE_INDEX = -100  # labels the loss skips (seedcoder.model)
# Within every block: the sequence slices are all-gathered into attention / the MLP, column-wise shards (output
# features) feed row-wise shards (input features), whose partial outputs are reduce-scattered back to slices.
TP_PLAN = {
    "attention": PrepareModuleInput(input_layouts=(Shard(1), None, None, None),
                                    desired_input_layouts=(Replicate(), None, None, None)),
    "attention.wq": ColwiseParallel(), "attention.wk": ColwiseParallel(), "attention.wv": ColwiseParallel(),
    "attention.wo": RowwiseParallel(output_layouts=Shard(1)),
    "feed_forward": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
    "feed_forward.w1": ColwiseParallel(), "feed_forward.w3": ColwiseParallel(),
    "feed_forward.w2": RowwiseParallel(output_layouts=Shard(1)),
}


def mesh_shape(world_size: int, *, dp_replicate: int = 1, dp_shard: int = -1, cp: int = 1,
               tp: int = 1) -> tuple[int, int, int, int]:
    """(dp_replicate, dp_shard, cp, tp) for `world_size` ranks; dp_shard -1: the ranks the others leave.
    ValueError naming the sizes when they do not multiply to world_size."""
    for name, size in (("dp_replicate", dp_replicate), ("cp", cp), ("tp", tp)):
        if size < 1:
            raise ValueError(f"{name} must be >= 1, got {size}")
    others = dp_replicate * cp * tp
    if dp_shard == -1:
        if world_size % others:
            raise ValueError(f"{world_size} ranks are not a multiple of dp_replicate {dp_replicate} x cp {cp} x tp {tp}")
        dp_shard = world_size // others
    if dp_shard < 1 or dp_shard * others != world_size:
        raise ValueError(f"dp_replicate {dp_replicate} x dp_shard {dp_shard} x cp {cp} x tp {tp} = "
                         f"{dp_shard * others} ranks, but there are {world_size}")
    return dp_replicate, dp_shard, cp, tp


def build_mesh(device_type: str, world_size: int, *, dp_replicate: int = 1, dp_shard: int = -1, cp: int = 1,
               tp: int = 1) -> DeviceMesh:
    """The named device mesh (MESH_DIMS) over every rank; see the module docstring."""
    shape = mesh_shape(world_size, dp_replicate=dp_replicate, dp_shard=dp_shard, cp=cp, tp=tp)
    return init_device_mesh(device_type, shape, mesh_dim_names=MESH_DIMS)


@dataclass(frozen=True)
class MeshCoordinates:
    """Where this process sits: which rows it reads (dp_rank of dp_size readers; the cp and tp ranks of a group read
    the same rows), which zig-zag shard of their sequence (cp_rank of cp_size), its place in its tp group."""

    dp_rank: int = 0
    dp_size: int = 1
    cp_rank: int = 0
    cp_size: int = 1
    tp_rank: int = 0
    tp_size: int = 1


def mesh_coordinates(mesh: DeviceMesh) -> MeshCoordinates:
    """This process's MeshCoordinates in a mesh of `build_mesh`; a 1-D mesh is all data parallel."""
    if mesh.mesh_dim_names is None or "tp" not in mesh.mesh_dim_names:
        return MeshCoordinates(mesh.get_local_rank(), mesh.size())
    replicate, shard, cp, tp = (mesh.get_local_rank(name) for name in MESH_DIMS)
    return MeshCoordinates(replicate * mesh["dp_shard"].size() + shard, mesh["dp_replicate"].size() * mesh["dp_shard"].size(),
                           cp, mesh["cp"].size(), tp, mesh["tp"].size())


class _GatherSequence(torch.autograd.Function):
    """(B, S/n, ...) slices -> (B, S, ...) on every rank of the group; backward: the ranks' gradients, each a partial
    sum (its vocabulary shard's), summed and scattered back to the slices (reduce-scatter)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group, ctx.size = group, dist.get_world_size(group)
        parts = [torch.empty_like(x) for _ in range(ctx.size)]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        parts = torch.stack(grad.chunk(ctx.size, dim=1))  # (n, B, S/n, ...): rank r's slice is parts[r]
        out = torch.empty_like(parts[0])
        dist.reduce_scatter_single(out, parts.flatten(0, 1), group=ctx.group)
        return out, None


def _vocab_logits(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    # fp32 logits (float64 for float64): from the param-dtype matmul, as a plain bf16 linear + cross-entropy has them
    return (hidden @ weight.t()).to(torch.promote_types(hidden.dtype, torch.float32))


class _VocabParallelCrossEntropy(torch.autograd.Function):
    """Per-token cross-entropy of `hidden @ weight.T` (N tokens) where `weight` is this rank's rows [start, start +
    V_r) of the vocabulary, split over `group` (loss parallel): each rank's log-sum-exp of its shard and the label's
    logit (0 unless the label falls in the shard) are all-gathered and combined. 0 at ignore_index. Logits exist a
    chunk of rows at a time and are recomputed in backward: O(chunk x V_r) memory. The gradient of `hidden` is this
    shard's part only; the sequence gather's backward sums the parts."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, start, ignore_index, group, chunk):
        local, valid = labels - start, labels != ignore_index
        in_shard = (local >= 0) & (local < weight.shape[0]) & valid
        stats = hidden.new_zeros((2, hidden.shape[0]), dtype=torch.promote_types(hidden.dtype, torch.float32))
        for lo in range(0, hidden.shape[0], chunk):
            logits = _vocab_logits(hidden[lo:lo + chunk], weight)
            stats[0, lo:lo + chunk] = torch.logsumexp(logits, dim=1)
            picked = logits.gather(1, local[lo:lo + chunk].clamp(0, weight.shape[0] - 1).unsqueeze(1)).squeeze(1)
            stats[1, lo:lo + chunk] = torch.where(in_shard[lo:lo + chunk], picked, 0.0)
        gathered = [torch.empty_like(stats) for _ in range(dist.get_world_size(group))]
        dist.all_gather(gathered, stats, group=group)
        gathered = torch.stack(gathered)
        lse, target = torch.logsumexp(gathered[:, 0], dim=0), gathered[:, 1].sum(0)
        ctx.save_for_backward(hidden, weight, local, in_shard, lse, valid)
        ctx.chunk = chunk
        return torch.where(valid, lse - target, 0.0)

    @staticmethod
    def backward(ctx, grad_loss):
        hidden, weight, local, in_shard, lse, valid = ctx.saved_tensors
        grad_loss = torch.where(valid, grad_loss, 0.0)
        grad_hidden = torch.empty_like(hidden)
        # summed over the chunks in fp32 (a bf16 sum would round at every chunk), cast once at the end
        grad_weight = torch.zeros(weight.shape, dtype=torch.promote_types(weight.dtype, torch.float32),
                                  device=weight.device)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        for lo in range(0, hidden.shape[0], ctx.chunk):
            hi = min(lo + ctx.chunk, hidden.shape[0])
            grad_logits = _vocab_logits(hidden[lo:hi], weight).sub_(lse[lo:hi, None]).exp_()  # softmax, in place
            hit = in_shard[lo:hi]
            grad_logits[rows[: hi - lo][hit], local[lo:hi][hit]] -= 1.0  # minus the one-hot label
            grad_logits = grad_logits.mul_(grad_loss[lo:hi, None]).to(hidden.dtype)
            grad_hidden[lo:hi] = grad_logits @ weight
            grad_weight += (grad_logits.t() @ hidden[lo:hi]).to(grad_weight.dtype)
        return grad_hidden, grad_weight.to(weight.dtype), None, None, None, None, None


def _vocab_parallel_head(head: nn.Module, tp_mesh: DeviceMesh) -> None:
    """The head's weight split by vocabulary rows over tp (Shard(0)); its forward all-gathers the sequence slices
    of the hidden states and computes the loss of every token on this rank's rows (`_VocabParallelCrossEntropy`),
    so each tp rank returns the whole batch's loss without any rank holding all logits. Logits are not gathered:
    generation runs on an unsharded model."""
    group, size, rank = tp_mesh.get_group(), tp_mesh.size(), tp_mesh.get_local_rank()
    start = rank * -(-head.weight.shape[0] // size)  # this rank's first row: DTensor's Shard(0) splits as torch.chunk
    head.weight = nn.Parameter(distribute_tensor(head.weight.data, tp_mesh, [Shard(0)]))

    def vocab_parallel_forward(hidden, labels=None, reduction="sum"):
        if labels is None:
            raise ValueError("a tensor-parallel model returns losses only (labels=None asks for logits): generate with "
                             "an unsharded model")
        weight = head.weight.to_local()
        device_type = hidden.device.type
        if torch.is_autocast_enabled(device_type):  # as OutputHead: cast like a matmul would be
            dtype = torch.get_autocast_dtype(device_type)
            hidden, weight = hidden.to(dtype), weight.to(dtype)
        elif weight.dtype != hidden.dtype:
            hidden = hidden.to(weight.dtype)
        whole = _GatherSequence.apply(hidden, group)
        flat = whole.reshape(-1, whole.shape[-1])
        chunk = default_chunk_size(flat.shape[0], weight.shape[0], torch.float32)
        losses = _VocabParallelCrossEntropy.apply(flat, weight, labels.reshape(-1), start, IGNORE_INDEX,
                                                  group, chunk).view(labels.shape)
        if reduction == "none":
            return losses
        total = losses.sum()
        return total if reduction == "sum" else total / (labels != IGNORE_INDEX).sum().clamp(min=1)

    head.forward = vocab_parallel_forward


def _sequence_slice(size: int):
    """The first block's forward pre-hook: this rank's slice of the sequence, from the embedding's output (a
    DTensor of the whole sequence, Shard(1) over tp, so that the model sizes its attention mask for the whole)."""

    def hook(module, args):
        h = args[0]
        if h.shape[1] % size:
            raise ValueError(f"tensor parallelism: the sequence length {h.shape[1]} is not a multiple of tp {size}")
        return (h.to_local(), *args[1:])
    return hook


def apply_tp(model: nn.Module, tp_mesh: DeviceMesh) -> None:
    """Tensor and sequence parallelism over `tp_mesh` (TP_PLAN, module docstring); the model's heads must divide."""
    size = tp_mesh.size()
    cfg = getattr(model, "cfg", None)
    if cfg is not None:
        for name in ("n_heads", "n_kv_heads", "ffn_dim"):
            if getattr(cfg, name) % size:
                raise ValueError(f"tp {size} does not divide the model's {name} ({getattr(cfg, name)})")
    blocks = _blocks(model)
    for _, block in blocks:
        parallelize_module(block, tp_mesh, TP_PLAN)
    if blocks:
        parallelize_module(model.tok_embeddings, tp_mesh, RowwiseParallel(input_layouts=Replicate(),
                                                                           output_layouts=Shard(1), use_local_output=False))
        blocks[0][1].register_forward_pre_hook(_sequence_slice(size))
        _vocab_parallel_head(model.output, tp_mesh)
    model.tp_mesh = tp_mesh  # for reduce_replicated_gradients


def reduce_replicated_gradients(model: nn.Module) -> None:
    """Sum over tp the gradients of the parameters tensor parallelism replicates (the norms: each tp rank's covers
    its sequence slice only); after backward, before clipping. A no-op without tensor parallelism."""
    tp_mesh = getattr(model, "tp_mesh", None)
    if tp_mesh is None:
        return
    group = tp_mesh.get_group()
    for param in model.parameters():
        grad = param.grad
        if grad is None:
            continue
        names = grad.device_mesh.mesh_dim_names or () if isinstance(grad, DTensor) else ()
        if "tp" not in names:
            dist.all_reduce(grad.to_local() if isinstance(grad, DTensor) else grad, group=group)


def _fsdp_mesh(mesh: DeviceMesh) -> DeviceMesh:
    """The part of the mesh FSDP shards over: (dp_replicate, dp_shard x cp) for HSDP, dp_shard x cp alone, or a
    1-D mesh as is."""
    if mesh.mesh_dim_names is None or "dp_shard" not in mesh.mesh_dim_names:
        return mesh
    replicated = mesh["dp_replicate"].size() > 1
    if mesh["cp"].size() == 1:
        return mesh["dp_replicate", "dp_shard"] if replicated else mesh["dp_shard"]
    shard_cp = mesh["dp_shard", "cp"]._flatten("dp_shard_cp")  # the cp ranks hold the same parameters
    if not replicated:
        return shard_cp
    with warnings.catch_warnings():  # torch >= 2.11 warns that this slicing will change; it is what HSDP x cp needs
        warnings.filterwarnings("ignore", message="Slicing a flattened dim", category=UserWarning)
        return mesh["dp_replicate", "dp_shard_cp"]


def apply_cp(model: nn.Module, cp_mesh: DeviceMesh) -> None:
    """Context parallelism over `cp_mesh`: every block's attention becomes ring attention over the zig-zag shards
    the trainer feeds (`context_parallel_batch`); documents from the shard's position_ids."""
    size, rank, group = cp_mesh.size(), cp_mesh.get_local_rank(), cp_mesh.get_group()

    def ring_attend(q, k, v, mask):
        doc_ids = None
        if mask.packed and mask.position_ids is not None:
            doc_ids = context_parallel.document_ids_from_positions(mask.position_ids.expand(q.shape[0], -1), size, rank)
        return context_parallel.ring_attention(q, k, v, group=group, doc_ids=doc_ids)

    for _, block in _blocks(model):
        block.attention.attend = ring_attend


def context_parallel_batch(batch: dict, mesh: DeviceMesh) -> dict:
    """A micro-batch of whole rows -> this cp rank's zig-zag shard of every row (input_ids, labels, position_ids;
    document boundaries travel in position_ids, so cu_seqlens / max_seqlen are dropped). As is without cp."""
    where = mesh_coordinates(mesh)
    if where.cp_size == 1:
        return batch
    shard = {key: context_parallel.zigzag_shard(batch[key], where.cp_size, where.cp_rank, dim=1)
             for key in ("input_ids", "labels", "position_ids")}
    return {**batch, **shard, "cu_seqlens": None, "max_seqlen": None}

# Ops whose outputs selective checkpointing keeps (expensive to recompute); everything else is recomputed.
_SAVE_OPS = {
    torch.ops.aten.mm.default,
    torch.ops.aten.addmm.default,
    torch.ops.aten.bmm.default,
    torch.ops.aten._scaled_dot_product_efficient_attention.default,
    torch.ops.aten._scaled_dot_product_flash_attention.default,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default,
    torch.ops.aten._scaled_dot_product_cudnn_attention.default,
    torch.ops.seedcoder.flash_attn_fwd.default,  # our flash attention (GPU): its output and lse, not a recompute
}


def _selective_policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _SAVE_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def _selective_context():
    return create_selective_checkpoint_contexts(_selective_policy)


def _blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    layers = getattr(model, "layers", None)
    if not isinstance(layers, (nn.ModuleList, nn.ModuleDict)):
        raise TypeError(f"parallelize: expected model.layers to be a ModuleList/ModuleDict of blocks, got {type(layers)}")
    return list(layers.named_children())


def apply_activation_checkpointing(model: nn.Module, mode: str) -> None:
    """Wrap every block of model.layers for activation checkpointing ("none", "selective" or "full")."""
    if mode not in AC_MODES:
        raise ValueError(f"activation_checkpoint must be one of {', '.join(AC_MODES)}, got {mode!r}")
    if mode == "none":
        return
    for name, block in _blocks(model):
        if mode == "full":
            wrapped = checkpoint_wrapper(block, preserve_rng_state=False)
        else:
            wrapped = checkpoint_wrapper(block, context_fn=_selective_context, preserve_rng_state=False)
        model.layers.register_module(name, wrapped)


def apply_compile(model: nn.Module) -> None:
    """torch.compile each block (the repeated structure compiles once and is reused)."""
    for name, block in _blocks(model):
        model.layers.register_module(name, torch.compile(block, fullgraph=False))


def apply_fsdp(
    model: nn.Module,
    mesh: DeviceMesh,
    *,
    param_dtype: torch.dtype,
    reduce_dtype: torch.dtype,
) -> None:
    """fully_shard each block, then the root; gradients are summed over ranks (see the module docstring)."""
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    shard = partial(fully_shard, mesh=mesh, mp_policy=policy)
    blocks = _blocks(model)
    for index, (_, block) in enumerate(blocks):
        shard(block, reshard_after_forward=index < len(blocks) - 1)
    shard(model)
    for module in model.modules():
        if isinstance(module, FSDPModule):  # a plain SUM reduce-scatter (gloo has no PREMUL_SUM; NCCL likes SUM best)
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)


def parallelize(
    model: nn.Module,
    mesh: DeviceMesh,
    *,
    param_dtype: torch.dtype = torch.float32,
    reduce_dtype: torch.dtype = torch.float32,
    activation_checkpoint: str = "none",
    compile: bool = False,
) -> nn.Module:
    """Apply tensor parallelism, activation checkpointing, compile and FSDP2 to `model` in place (module docstring).
    `mesh`: a named mesh of `build_mesh`, or a 1-D mesh (FSDP2 over all of it)."""
    if mesh.mesh_dim_names is not None and "tp" in mesh.mesh_dim_names and mesh["tp"].size() > 1:
        apply_tp(model, mesh["tp"])
    if mesh.mesh_dim_names is not None and "cp" in mesh.mesh_dim_names and mesh["cp"].size() > 1:
        apply_cp(model, mesh["cp"])
    apply_activation_checkpointing(model, activation_checkpoint)
    if compile:
        apply_compile(model)
    apply_fsdp(model, _fsdp_mesh(mesh), param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    return model


def describe(model: nn.Module) -> str:
    """One line on how the model is wrapped, for the run log."""
    kinds = Counter(type(module).__name__ for _, module in _blocks(model))
    return ", ".join(f"{count} x {kind}" for kind, count in kinds.items())


__all__ = ["AC_MODES", "MESH_DIMS", "TP_PLAN", "apply_activation_checkpointing", "apply_compile", "apply_fsdp", "apply_tp",
           "apply_cp", "build_mesh", "context_parallel_batch", "describe", "mesh_coordinates", "mesh_shape", "parallelize",
           "reduce_replicated_gradients", "MeshCoordinates"]
