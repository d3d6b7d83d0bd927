"""Sharding applied after construction: activation checkpointing, torch.compile and FSDP2 per block, then the root.

    with torch.device("meta"):
        model = Transformer(cfg)
    parallelize(model, mesh, param_dtype=torch.bfloat16, activation_checkpoint="selective", compile=True)
    model.to_empty(device="cuda"); model.init_weights(seed)

The model code stays single-device: everything here wraps or registers hooks on an existing `model.layers`.
Order (torchtitan's): activation checkpointing wraps a block, torch.compile compiles the wrapped block, and
`fully_shard` makes it an FSDP unit; the root unit (embedding, final norm, head) comes last.

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
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

AC_MODES = ("none", "selective", "full")

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
    """Apply activation checkpointing, compile and FSDP2 to `model` in place (see the module docstring)."""
    apply_activation_checkpointing(model, activation_checkpoint)
    if compile:
        apply_compile(model)
    apply_fsdp(model, mesh, param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    return model


def describe(model: nn.Module) -> str:
    """One line on how the model is wrapped, for the run log."""
    kinds = Counter(type(module).__name__ for _, module in _blocks(model))
    return ", ".join(f"{count} x {kind}" for kind, count in kinds.items())


__all__ = ["AC_MODES", "apply_activation_checkpointing", "apply_compile", "apply_fsdp", "describe", "parallelize"]
