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

* The mesh (`build_mesh`): dims ("dp_replicate", "dp_shard", "tp"), tp innermost (consecutive ranks: one node's
  fast links carry its per-layer all-reduces). Data-parallel ranks = dp_replicate x dp_shard read different rows;
  the tp ranks of a group read the same rows (`data_parallel_coordinates`).
* Tensor parallel (Megatron): in every block wq, wk, wv and w1, w3 are column-wise shards (each rank holds
  n_heads/tp query heads, n_kv_heads/tp K/V heads, ffn_dim/tp hidden units), wo and w2 row-wise shards whose
  outputs are all-reduced: two all-reduces per block forward, two backward. Norms, the embedding and the head
  are replicated over tp (computed identically on its ranks), sharded by FSDP over the data-parallel dims.
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

from collections import Counter
from functools import partial

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

AC_MODES = ("none", "selective", "full")
MESH_DIMS = ("dp_replicate", "dp_shard", "tp")
# Within every block: column-wise (output features sharded) feeds row-wise (input features sharded, output
# all-reduced), so each block's attention and MLP need one all-reduce each.
TP_PLAN = {
    "attention.wq": ColwiseParallel(), "attention.wk": ColwiseParallel(), "attention.wv": ColwiseParallel(),
    "attention.wo": RowwiseParallel(),
    "feed_forward.w1": ColwiseParallel(), "feed_forward.w3": ColwiseParallel(), "feed_forward.w2": RowwiseParallel(),
}


def mesh_shape(world_size: int, *, dp_replicate: int = 1, dp_shard: int = -1, tp: int = 1) -> tuple[int, int, int]:
    """(dp_replicate, dp_shard, tp) for `world_size` ranks; dp_shard -1: the ranks the others leave. ValueError
    naming the sizes when they do not multiply to world_size."""
    for name, size in (("dp_replicate", dp_replicate), ("tp", tp)):
        if size < 1:
            raise ValueError(f"{name} must be >= 1, got {size}")
    if dp_shard == -1:
        if world_size % (dp_replicate * tp):
            raise ValueError(f"{world_size} ranks are not a multiple of dp_replicate {dp_replicate} x tp {tp}")
        dp_shard = world_size // (dp_replicate * tp)
    if dp_shard < 1 or dp_replicate * dp_shard * tp != world_size:
        raise ValueError(f"dp_replicate {dp_replicate} x dp_shard {dp_shard} x tp {tp} = "
                         f"{dp_replicate * dp_shard * tp} ranks, but there are {world_size}")
    return dp_replicate, dp_shard, tp


def build_mesh(device_type: str, world_size: int, *, dp_replicate: int = 1, dp_shard: int = -1, tp: int = 1) -> DeviceMesh:
    """The named device mesh (MESH_DIMS) over every rank; see the module docstring."""
    return init_device_mesh(device_type, mesh_shape(world_size, dp_replicate=dp_replicate, dp_shard=dp_shard, tp=tp),
                            mesh_dim_names=MESH_DIMS)


def data_parallel_coordinates(mesh: DeviceMesh) -> tuple[int, int, int]:
    """(data-parallel rank, data-parallel size, tp rank) of this process: which rows it reads, of how many
    readers, and its place in its tp group. A 1-D mesh is all data parallel."""
    if mesh.mesh_dim_names is None or "tp" not in mesh.mesh_dim_names:
        return mesh.get_local_rank(), mesh.size(), 0
    replicate, shard, tp = (mesh.get_local_rank(name) for name in MESH_DIMS)
    return replicate * mesh["dp_shard"].size() + shard, mesh["dp_replicate"].size() * mesh["dp_shard"].size(), tp


def apply_tp(model: nn.Module, tp_mesh: DeviceMesh) -> None:
    """Shard every block's attention and MLP over `tp_mesh` (TP_PLAN); the model's heads must divide evenly."""
    size = tp_mesh.size()
    cfg = getattr(model, "cfg", None)
    if cfg is not None:
        for name in ("n_heads", "n_kv_heads", "ffn_dim"):
            if getattr(cfg, name) % size:
                raise ValueError(f"tp {size} does not divide the model's {name} ({getattr(cfg, name)})")
    for _, block in _blocks(model):
        parallelize_module(block, tp_mesh, TP_PLAN)


def _fsdp_mesh(mesh: DeviceMesh) -> DeviceMesh:
    """The data-parallel part of the mesh: (dp_replicate, dp_shard) for HSDP, dp_shard alone, or a 1-D mesh as is."""
    if mesh.mesh_dim_names is None or "dp_shard" not in mesh.mesh_dim_names:
        return mesh
    return mesh["dp_replicate", "dp_shard"] if mesh["dp_replicate"].size() > 1 else mesh["dp_shard"]

# Ops whose outputs selective checkpointing keeps (expensive to recompute); everything else is recomputed.
_SAVE_OPS = {
    torch.ops.aten.mm.default,
    torch.ops.aten.addmm.default,
    torch.ops.aten.bmm.default,
    torch.ops.aten._scaled_dot_product_efficient_attention.default,
    torch.ops.aten._scaled_dot_product_flash_attention.default,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default,
    torch.ops.aten._scaled_dot_product_cudnn_attention.default,
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
           "build_mesh", "data_parallel_coordinates", "describe", "mesh_shape", "parallelize"]
