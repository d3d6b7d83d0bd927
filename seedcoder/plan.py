"""Memory and throughput planner: per-rank memory, FLOPs and communication of a training step on a mesh, on paper.

    seedcoder plan --config configs/continued_pretrain_8b_32k.toml              # 8, 64, 512 GPUs x 8K, 32K
    seedcoder plan --config seedcoder-8b --gpus 64 --seq 32768 --tp 2 --cp 2 --dp-shard 16 --json plan.json

    plan = plan_step(model_config("seedcoder-8b"), Mesh(dp_shard=8), seq_len=8192, micro_batch=1, rows=512,
                     activation_checkpoint="full")
    plan.memory.total, plan.flops_per_rank, plan.comm_bytes

The mesh has the four dimensions of issue 13: dp_replicate (HSDP replicas), dp_shard (FSDP2), tp (tensor parallel
with sequence parallelism around the norms) and cp (context parallel, ring attention on zig-zag halves). As in
torchtitan, FSDP shards over dp_shard x cp (context-parallel ranks hold the same parameters), so a rank holds
1 / (dp_shard * cp * tp) of the parameters. Without --dp-shard/--tp/--cp the planner picks a mesh per (gpus, seq):
the smallest tp * cp that fits the card and gives every data-parallel rank at least one micro-batch of the step's
rows (cp before tp for sequences of 16K and more: it splits the long activations and attention; tp within a node,
<= 8), then FSDP in groups of at most 64 ranks with HSDP replicas over the rest when that fits, else FSDP over all.

Memory per rank (bytes; `MemoryPlan`). The total is the larger of two phases, backward (parameters, optimizer state,
gradients, activations and the workspaces) and the optimizer step (the same without activations, with the step's
temporaries); each phase sums its components' maxima, so the total is an upper estimate of the allocator's peak
(fragmentation, NCCL and CUDA-context memory not included):
* parameters: the sharded master copy (fp32), plus, under FSDP, the unsharded param-dtype copies in flight: the root
  unit (embedding, final norm, head: kept gathered from forward through backward) and two blocks (current +
  prefetched). With param_dtype fp32 and no sharding the parameters are just the fp32 tensors.
* gradients: the sharded fp32 gradients, plus one block's unsharded gradients in reduce_dtype during its
  reduce-scatter.
* optimizer: AdamW's two fp32 moments per (sharded) parameter, and its fp32 `step` per parameter tensor; the
  "cpu" path adds the foreach implementation's fp32 temporaries during the step (one per parameter), fused AdamW
  on CUDA has none.
* activations: the bytes autograd keeps at the end of one micro-batch's forward, counted tensor by tensor from the
  model's ops (`saved_per_token`): "none" keeps everything the ops save, "selective" the block input and the
  outputs of the ops in parallelize's policy (matmuls and attention), "full" the block input. The same rules
  describe both implementations of the ops: "cuda" (our Triton kernels, flash attention, fused linear CE) and "cpu"
  (the torch references and PyTorch SDPA), which is what the tests measure here.
* recompute: with checkpointing, one block's activations rebuilt in backward, on top of the saved ones.
* attention workspace: flash backward's fp32 dQ accumulator and delta for one layer; with cp > 1 the ring's K/V
  receive buffers (double-buffered) and the fp32 partial output and lse merged by log-sum-exp.
* loss buffers: the fused linear cross-entropy's logits chunk and its param-dtype grad_weight of the head (kept
  from forward to backward); under tp, loss parallel's two fp32 (chunk, V/tp) logits buffers and the head shard's
  grad_weight; the cpu path keeps the fp32 logits (counted as activations) and its backward makes
  four more (N, V) fp32 tensors at once.

FLOPs per step (model FLOPs, what MFU counts): (6 N + 6 L H D S) x tokens, N the parameters without the input
embedding, the attention term halved for causal masks (`Transformer.flops_per_token`). Hardware FLOPs add the
recomputed forward: (2 N_blocks + 2 L H D S) x tokens for "full", the attention forward for "selective" when the
policy does not keep the attention op's outputs. Time = per-rank hardware FLOPs / the stated sustained TFLOP/s.

Communication per rank per step (bytes sent, ring collectives: a rank sends (n-1)/n of the buffer for an
all-gather or reduce-scatter, 2 (n-1)/n for an all-reduce), every micro-batch (FSDP2 syncs each one by default):
* FSDP (n = dp_shard x cp): all-gather of the params (param dtype) in forward and again in backward, reduce-scatter
  of the gradients (reduce dtype): P/tp x ((n-1)/n x (2 b_param + b_reduce)).
* HSDP (r = dp_replicate): all-reduce of the gradient shard: 2 (r-1)/r x P/(tp n) x b_reduce.
* TP with sequence parallelism (t = tp): per block an all-gather before attention and the MLP and a reduce-scatter
  after each, forward and backward (and again in the recomputed forward under "full"):
  (8 or 12) x L x (t-1)/t x T x d x b_act, T = micro-batch tokens / cp (the rank's cp shard).
* TP's vocabulary-parallel embedding and head (loss parallel): the embedding's reduce-scatter into the sequence
  slices and the head's all-gather of them, forward and backward: 4 x (t-1)/t x T x d x b_act, and the all-gather
  of each token's log-sum-exp and label logit (fp32) over the vocabulary shards: (t-1) x T x 2 x 4.
* CP ring (c = cp): per layer, forward passes K and V around the ring (c-1 hops of the local shard), backward passes
  K, V and the fp32 dK, dV: L x (c-1) x T x 2 H_kv D / t x (2 b_act [+ b_act under "full"] + 2 x 4).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from seedcoder.errors import UserError, exit_on_user_error
from seedcoder.fileio import atomic_write_text
from seedcoder.kernels.fused_linear_cross_entropy import default_chunk_size
from seedcoder.model import PRESETS, ModelConfig, Transformer, model_config
from seedcoder.parallelize import _SAVE_OPS, AC_MODES
from seedcoder.train_config import TrainConfig, load_config

BACKENDS = ("cuda", "cpu")  # which implementation of the ops the activations are counted for
DTYPE_BYTES = {"float32": 4, "bfloat16": 2}
DEFAULT_GPUS = (8, 64, 512)
DEFAULT_SEQS = (8192, 32768)
GIB = 1024**3
FSDP_GROUP_MAX = 64  # the default mesh replicates (HSDP) over FSDP groups of at most this many ranks
TP_MAX = 8  # tensor parallelism stays within an 8-GPU node (NVLink)
MEMORY_MARGIN = 0.95  # "fits" leaves 5% of the card to the allocator's fragmentation, NCCL and the CUDA context


class PlanError(UserError, ValueError):
    """Bad planner input; the message names the argument."""


# ------------------------------------------------------------------------------------------ mesh
@dataclass(frozen=True)
class Mesh:
    dp_replicate: int = 1
    dp_shard: int = 1
    tp: int = 1
    cp: int = 1

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PlanError(f"--{f.name.replace('_', '-')}: must be a positive integer, got {value!r}")

    @property
    def world(self) -> int:
        return self.dp_replicate * self.dp_shard * self.tp * self.cp

    @property
    def dp(self) -> int:
        """Ranks that take different rows of the batch."""
        return self.dp_replicate * self.dp_shard

    @property
    def fsdp(self) -> int:
        """Ranks the parameters are sharded over (FSDP over dp_shard x cp, as in torchtitan)."""
        return self.dp_shard * self.cp

    def describe(self) -> str:
        return f"rep{self.dp_replicate} x fsdp{self.dp_shard} x tp{self.tp} x cp{self.cp}"


def check_mesh(cfg: ModelConfig, mesh: Mesh, seq_len: int, gpus: int | None = None) -> None:
    """PlanError naming the argument unless the mesh fits the GPU count, the heads and the sequence."""
    if gpus is not None and mesh.world != gpus:
        raise PlanError(f"--gpus: the mesh {mesh.describe()} has {mesh.world} ranks, not {gpus} "
                        "(dp_replicate * dp_shard * tp * cp must equal the GPU count)")
    if cfg.n_heads % mesh.tp or cfg.n_kv_heads % mesh.tp:
        raise PlanError(f"--tp: {mesh.tp} must divide the query heads ({cfg.n_heads}) and the key/value heads "
                        f"({cfg.n_kv_heads}) of the model")
    if seq_len % (2 * mesh.cp):
        raise PlanError(f"--cp: {mesh.cp} must split the sequence ({seq_len}) into 2 * cp = {2 * mesh.cp} equal chunks "
                        "(zig-zag load balancing for causal masks)")
    if seq_len // mesh.cp % mesh.tp:
        raise PlanError(f"--tp: {mesh.tp} must divide the tokens of a cp shard ({seq_len // mesh.cp}) for sequence "
                        "parallelism")


# ------------------------------------------------------------------------------------------ activations
@dataclass(frozen=True)
class Saved:
    """A tensor autograd keeps: `elements` per token (or per position for `per_position`), of `nbytes` each.
    tp_sharded: split over the tp ranks (head/FFN-sharded, or sequence-parallel); False: the all-gathered
    input of a column-parallel matmul, whole on every tp rank."""

    name: str
    elements: int
    nbytes: int
    tp_sharded: bool = True
    per_position: bool = False  # the cpu path's rotary tables: (1, S, head_dim), shared by the rows of a batch

    def bytes_per_token(self) -> int:
        return self.elements * self.nbytes


def attention_output_kept(backend: str) -> bool:
    """Whether selective checkpointing keeps the attention op's outputs: its op is in parallelize's policy."""
    if backend == "cuda":
        return torch.ops.seedcoder.flash_attn_fwd.default in _SAVE_OPS
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default in _SAVE_OPS


def block_saved(cfg: ModelConfig, mode: str, backend: str, act_bytes: int) -> list[Saved]:
    """What one block keeps for backward, per token, for a checkpointing mode and an implementation of the ops.

    Derived op by op from TransformerBlock.forward (a = act_bytes, fp32 = 4):
      attention_norm  cuda: the rms_norm kernel saves x and rstd;  cpu reference: x, rstd, x * rstd, and its
                      output (saved by the q/k/v matmuls on either path)
      wq, wk, wv      F.linear saves its input (the norm output); the outputs go to rotary / attention
      rotary          cuda: saves position_ids (once per model, not per block); cpu: the fp32 cos/sin tables
                      (the products q * cos save only the tables: cos needs no gradient)
      attention       saves rotated q, k, v, the output and the fp32 lse (flash kernel and CPU SDPA alike)
      wo              saves the attention output (already counted)
      ffn_norm        (fused residual add) like attention_norm, on the new residual h
      w1, w3, silu, * w1 x, silu(w1 x), w3 x and their product (the input of w2)
    """
    if mode not in AC_MODES:
        raise PlanError(f"--activation-checkpoint: expected one of {', '.join(AC_MODES)}, got {mode!r}")
    if backend not in BACKENDS:
        raise PlanError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    d, f, kv = cfg.dim, cfg.ffn_dim, cfg.n_kv_heads * cfg.head_dim
    block_input = Saved("block input h", d, act_bytes)
    if mode == "full":
        return [block_input]
    if mode == "selective":  # the policy's ops: every matmul output (and attention when its op is listed)
        kept = [block_input, Saved("wq out", d, act_bytes), Saved("wk out", kv, act_bytes), Saved("wv out", kv, act_bytes),
                Saved("wo out", d, act_bytes), Saved("w1 out", f, act_bytes), Saved("w3 out", f, act_bytes),
                Saved("w2 out", d, act_bytes)]
        if attention_output_kept(backend):
            kept += [Saved("attention out", d, act_bytes), Saved("attention lse", cfg.n_heads, 4)]
        return kept
    norm_saves = ([] if backend == "cuda" else [Saved("norm x*rstd", d, act_bytes)])
    saved = [block_input, Saved("attention_norm rstd", 1, 4), *norm_saves,
             Saved("attention_norm out (wq/wk/wv input)", d, act_bytes, tp_sharded=False)]
    if backend == "cpu":
        saved += [Saved("rotary cos, sin tables", 2 * cfg.head_dim, 4, per_position=True)]
    saved += [Saved("q rotated", d, act_bytes), Saved("k rotated", kv, act_bytes), Saved("v", kv, act_bytes),
              Saved("attention out (wo input)", d, act_bytes), Saved("attention lse", cfg.n_heads, 4),
              Saved("residual h after attention", d, act_bytes), Saved("ffn_norm rstd", 1, 4), *norm_saves,
              Saved("ffn_norm out (w1/w3 input)", d, act_bytes, tp_sharded=False),
              Saved("w1 out (silu input)", f, act_bytes), Saved("silu out", f, act_bytes), Saved("w3 out", f, act_bytes),
              Saved("silu * w3 (w2 input)", f, act_bytes)]
    return saved


def head_saved(cfg: ModelConfig, backend: str, act_bytes: int) -> list[Saved]:
    """What the embedding, final norm and loss keep per token (outside the blocks, never checkpointed).

    cuda: input ids (embedding), position_ids (rotary, shared by all layers), the final norm's x and rstd, and
    the fused linear CE's grad_hidden (computed in forward; its grad_weight is among the loss buffers); cpu: the
    final norm as in `block_saved`, the fp32 logits (N, V) and the reference CE's lse, lse * z_loss, label indices
    and valid mask.
    """
    d = cfg.dim
    common = [Saved("input ids", 1, 8), Saved("final norm x (last block output)", d, act_bytes),
              Saved("final norm rstd", 1, 4)]
    if backend == "cuda":
        return common + [Saved("position ids", 1, 8), Saved("fused CE grad_hidden", d, act_bytes, tp_sharded=False)]
    return common + [Saved("final norm x*rstd", d, act_bytes), Saved("final norm out (head input)", d, act_bytes),
                     Saved("logits (fp32)", cfg.vocab_size, 4), Saved("CE lse, z_loss * lse", 2, 4),
                     Saved("CE label index", 1, 8), Saved("CE valid mask", 1, 1)]


def _bytes(items: list[Saved], tokens: float, positions: int, tp: int) -> float:
    total = 0.0
    for item in items:
        count = positions if item.per_position else tokens
        total += item.bytes_per_token() * count / (tp if item.tp_sharded else 1)
    return total


def activation_bytes(cfg: ModelConfig, *, batch: int, seq_len: int, mode: str, backend: str = "cuda",
                     act_bytes: int = 2, tp: int = 1, cp: int = 1) -> dict[str, float]:
    """Per-rank activation bytes of one micro-batch (batch rows of seq_len): {"saved": at the end of forward,
    "recompute": one block rebuilt in backward under checkpointing (0 for "none")}."""
    tokens = batch * seq_len / cp
    positions = seq_len // cp
    blocks = cfg.n_layers * _bytes(block_saved(cfg, mode, backend, act_bytes), tokens, positions, tp)
    saved = blocks + _bytes(head_saved(cfg, backend, act_bytes), tokens, positions, tp)
    recompute = 0.0 if mode == "none" else _bytes(block_saved(cfg, "none", backend, act_bytes), tokens, positions, tp)
    return {"saved": saved, "recompute": recompute}


# ------------------------------------------------------------------------------------------ parameters
@dataclass(frozen=True)
class ParamCounts:
    total: int  # every parameter
    non_embedding: int  # without the input embedding (the FLOPs' N)
    block: int  # one transformer block
    root: int  # embedding + final norm + head (the root FSDP unit)
    tensors: int  # parameter tensors (AdamW keeps a `step` per tensor)


def param_counts(cfg: ModelConfig) -> ParamCounts:
    """Counts from the model itself, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = Transformer(cfg)
    block = sum(p.numel() for p in model.layers[0].parameters())
    total = model.num_params()
    return ParamCounts(total=total, non_embedding=model.num_params(exclude_embedding=True), block=block,
                       root=total - cfg.n_layers * block, tensors=len(list(model.parameters())))


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    with torch.device("meta"):
        return Transformer(cfg).flops_per_token(seq_len)


# ------------------------------------------------------------------------------------------ the plan
@dataclass
class MemoryPlan:
    """Per-rank bytes (module docstring)."""

    params: float
    grads: float
    optimizer: float
    optimizer_workspace: float
    activations: float
    recompute: float
    attention_workspace: float
    loss_buffers: float

    @property
    def total(self) -> float:
        """The peak over the step's two phases: backward (activations, workspaces, gradients) and the optimizer
        step (its temporaries; the activations are freed by then), over the parameters and optimizer state."""
        backward = self.activations + self.recompute + self.attention_workspace + self.loss_buffers
        return self.params + self.optimizer + self.grads + max(backward, self.optimizer_workspace)


@dataclass
class StepPlan:
    gpus: int
    seq_len: int
    mesh: Mesh
    mesh_reason: str
    activation_checkpoint: str
    rows: int  # rows of seq_len per optimizer step, over all ranks
    micro_batch: int  # rows per data-parallel rank per forward/backward
    accumulation: int  # micro-batches per step per rank
    memory: MemoryPlan
    gpu_memory_bytes: float
    model_flops: float  # per step, all ranks
    hardware_flops: float  # with the recomputed forward
    flops_per_rank: float
    tflops: float  # the stated sustained TFLOP/s per GPU
    comm_bytes: dict[str, float] = field(default_factory=dict)  # per rank per step

    @property
    def fits(self) -> bool:
        return self.memory.total <= MEMORY_MARGIN * self.gpu_memory_bytes

    @property
    def step_seconds(self) -> float:
        return self.flops_per_rank / (self.tflops * 1e12)

    def to_dict(self) -> dict[str, Any]:
        return {"gpus": self.gpus, "seq_len": self.seq_len, "mesh": dataclasses.asdict(self.mesh),
                "mesh_reason": self.mesh_reason, "activation_checkpoint": self.activation_checkpoint, "rows": self.rows,
                "micro_batch": self.micro_batch, "accumulation": self.accumulation,
                "memory_bytes": {**dataclasses.asdict(self.memory), "total": self.memory.total},
                "gpu_memory_bytes": self.gpu_memory_bytes, "fits": self.fits, "model_flops": self.model_flops,
                "hardware_flops": self.hardware_flops, "flops_per_rank": self.flops_per_rank, "tflops": self.tflops,
                "step_seconds": self.step_seconds, "comm_bytes": dict(self.comm_bytes)}


def plan_memory(cfg: ModelConfig, mesh: Mesh, *, seq_len: int, micro_batch: int, activation_checkpoint: str,
                backend: str = "cuda", param_dtype: str = "bfloat16", reduce_dtype: str = "float32",
                counts: ParamCounts | None = None) -> MemoryPlan:
    """Per-rank memory of one training step (module docstring). backend "cpu" with param_dtype "float32" on a
    1-rank mesh describes a single-process CPU run (what the tests measure)."""
    for name, value in (("param_dtype", param_dtype), ("reduce_dtype", reduce_dtype)):
        if value not in DTYPE_BYTES:
            raise PlanError(f"{name}: expected one of {', '.join(DTYPE_BYTES)}, got {value!r}")
    counts = counts or param_counts(cfg)
    b_param, b_reduce = DTYPE_BYTES[param_dtype], DTYPE_BYTES[reduce_dtype]
    shards = mesh.fsdp * mesh.tp
    local = counts.total / shards
    gathered = 0.0
    if mesh.fsdp > 1 or b_param != 4:  # unsharded param-dtype copies: root unit + two blocks in flight
        gathered = (counts.root + 2 * counts.block) * b_param / mesh.tp
        if mesh.fsdp == 1:  # no FSDP: the cast copies of the whole model (fp32 master kept beside them)
            gathered = counts.total * b_param / mesh.tp
    params = 4 * local + gathered
    grads = 4 * local + (counts.block * b_reduce / mesh.tp if mesh.fsdp > 1 else 0.0)
    optimizer = 8 * local + 4 * counts.tensors
    optimizer_workspace = 0.0 if backend == "cuda" else 4 * local  # foreach AdamW's fp32 sqrt(v) temporaries; fused: none
    acts = activation_bytes(cfg, batch=micro_batch, seq_len=seq_len, mode=activation_checkpoint, backend=backend,
                            act_bytes=b_param, tp=mesh.tp, cp=mesh.cp)
    tokens = micro_batch * seq_len / mesh.cp
    heads, kv = cfg.n_heads / mesh.tp, cfg.n_kv_heads * cfg.head_dim / mesh.tp
    workspace = 0.0
    loss = 0.0
    if backend == "cuda":
        workspace = tokens * (heads * cfg.head_dim * 4 + heads * 4)  # flash backward: fp32 dQ accumulator, delta
        if mesh.cp > 1:  # ring: K/V receive buffers (x2, double-buffered), fp32 partial out + lse to merge
            workspace += tokens * (2 * 2 * kv * b_param + heads * cfg.head_dim * 4 + heads * 4)
        rows, vocab = max(1, micro_batch * seq_len // mesh.cp), cfg.vocab_size // mesh.tp
        if mesh.tp == 1:  # the fused linear CE: its logits chunk + the head's grad_weight
            chunk = min(rows, default_chunk_size(rows, vocab, torch.bfloat16 if b_param == 2 else torch.float32))
            loss = chunk * vocab * b_param + vocab * cfg.dim * b_param
        else:  # loss parallel (every token of the cp shard on V/tp rows): two fp32 logits chunks + grad_weight
            chunk = default_chunk_size(rows, vocab, torch.float32)
            loss = 2 * chunk * vocab * 4 + vocab * cfg.dim * b_param
    else:  # the reference CE's backward: the gather's scatter gradient, z - lse, its exp, and their product (N x V fp32)
        loss = 4 * tokens * cfg.vocab_size * 4
    return MemoryPlan(params=params, grads=grads, optimizer=optimizer, optimizer_workspace=optimizer_workspace,
                      activations=acts["saved"], recompute=acts["recompute"], attention_workspace=workspace,
                      loss_buffers=loss)


def comm_bytes(cfg: ModelConfig, mesh: Mesh, counts: ParamCounts, *, seq_len: int, micro_batch: int,
               accumulation: int, activation_checkpoint: str, param_dtype: str = "bfloat16",
               reduce_dtype: str = "float32") -> dict[str, float]:
    """Bytes each rank sends per optimizer step, by collective (module docstring)."""
    b_param, b_reduce = DTYPE_BYTES[param_dtype], DTYPE_BYTES[reduce_dtype]
    params_tp = counts.total / mesh.tp
    n, r, t, c = mesh.fsdp, mesh.dp_replicate, mesh.tp, mesh.cp
    tokens = micro_batch * seq_len / c
    full = activation_checkpoint == "full"
    out = {
        "fsdp_all_gather": accumulation * 2 * (n - 1) / n * params_tp * b_param,
        "fsdp_reduce_scatter": accumulation * (n - 1) / n * params_tp * b_reduce,
        "hsdp_all_reduce": accumulation * 2 * (r - 1) / r * params_tp / n * b_reduce,
        "tp_sequence_parallel": accumulation * (12 if full else 8) * cfg.n_layers * (t - 1) / t * tokens * cfg.dim * b_param,
        "tp_vocab_parallel": accumulation * ((t - 1) / t * 4 * tokens * cfg.dim * b_param + (t - 1) * tokens * 2 * 4),
        "cp_ring_kv": accumulation * cfg.n_layers * (c - 1) * tokens * 2 * cfg.n_kv_heads * cfg.head_dim / t
        * ((3 if full else 2) * b_param + 2 * 4),
    }
    return out


def plan_step(cfg: ModelConfig, mesh: Mesh, *, seq_len: int, micro_batch: int, rows: int, activation_checkpoint: str,
              gpus: int | None = None, mesh_reason: str = "given", param_dtype: str = "bfloat16",
              reduce_dtype: str = "float32", gpu_memory_gib: float = 80.0, tflops: float = 400.0,
              counts: ParamCounts | None = None) -> StepPlan:
    """The plan of one optimizer step of `rows` rows of seq_len on `mesh` (module docstring)."""
    gpus = mesh.world if gpus is None else gpus
    check_mesh(cfg, mesh, seq_len, gpus)
    if rows < mesh.dp * micro_batch:
        raise PlanError(f"--gpus: {rows} rows per step cannot give each of the {mesh.dp} data-parallel ranks a "
                        f"micro-batch of {micro_batch} (use more tp/cp or fewer GPUs)")
    counts = counts or param_counts(cfg)
    accumulation = math.ceil(rows / (mesh.dp * micro_batch))
    memory = plan_memory(cfg, mesh, seq_len=seq_len, micro_batch=micro_batch, activation_checkpoint=activation_checkpoint,
                         param_dtype=param_dtype, reduce_dtype=reduce_dtype, counts=counts)
    tokens = rows * seq_len
    model_flops = flops_per_token(cfg, seq_len) * tokens
    attention_fwd = 2.0 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len  # per token, causal (halved)
    if activation_checkpoint == "full":
        recompute = (2.0 * cfg.n_layers * counts.block + attention_fwd) * tokens
    elif activation_checkpoint == "selective" and not attention_output_kept("cuda"):
        recompute = attention_fwd * tokens
    else:
        recompute = 0.0
    hardware = model_flops + recompute
    return StepPlan(gpus=gpus, seq_len=seq_len, mesh=mesh, mesh_reason=mesh_reason,
                    activation_checkpoint=activation_checkpoint, rows=rows, micro_batch=micro_batch,
                    accumulation=accumulation, memory=memory, gpu_memory_bytes=gpu_memory_gib * GIB,
                    model_flops=model_flops, hardware_flops=hardware, flops_per_rank=hardware / gpus, tflops=tflops,
                    comm_bytes=comm_bytes(cfg, mesh, counts, seq_len=seq_len, micro_batch=micro_batch,
                                          accumulation=accumulation, activation_checkpoint=activation_checkpoint,
                                          param_dtype=param_dtype, reduce_dtype=reduce_dtype))


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def choose_mesh(cfg: ModelConfig, gpus: int, *, seq_len: int, micro_batch: int, rows: int, activation_checkpoint: str,
                param_dtype: str = "bfloat16", reduce_dtype: str = "float32", gpu_memory_gib: float = 80.0,
                counts: ParamCounts | None = None) -> tuple[Mesh, str]:
    """The default mesh for `gpus` (module docstring): (mesh, the reason in words). PlanError when none fits."""
    counts = counts or param_counts(cfg)
    prefer_cp = seq_len >= 16384
    options = []
    for tp in _divisors(min(gpus, TP_MAX)):
        for cp in _divisors(gpus // tp):
            if gpus % (tp * cp) or cfg.n_heads % tp or cfg.n_kv_heads % tp or seq_len % (2 * cp) or seq_len // cp % tp:
                continue
            options.append((tp * cp, -cp if prefer_cp else -tp, tp, cp))
    for _, _, tp, cp in sorted(options):
        dp = gpus // (tp * cp)
        if rows < dp * micro_batch:
            continue
        shard_choices = ([max(k for k in _divisors(dp) if k <= FSDP_GROUP_MAX)] if dp > FSDP_GROUP_MAX else []) + [dp]
        for dp_shard in shard_choices:
            mesh = Mesh(dp_replicate=dp // dp_shard, dp_shard=dp_shard, tp=tp, cp=cp)
            memory = plan_memory(cfg, mesh, seq_len=seq_len, micro_batch=micro_batch,
                                 activation_checkpoint=activation_checkpoint, param_dtype=param_dtype,
                                 reduce_dtype=reduce_dtype, counts=counts)
            if memory.total <= MEMORY_MARGIN * gpu_memory_gib * GIB:
                why = [f"smallest tp*cp ({tp * cp}) that fits {gpu_memory_gib:g} GiB"]
                if rows < dp * micro_batch * 2 and tp * cp > 1:
                    why.append(f"and covers {dp} dp ranks with {rows} rows")
                if tp * cp > 1:
                    why.append("cp first (long sequence)" if prefer_cp else "tp first")
                why.append(f"HSDP over FSDP groups of {dp_shard}" if dp_shard < dp else "FSDP over all dp ranks")
                return mesh, "; ".join(why)
    raise PlanError(f"--gpus: no mesh of {gpus} GPUs (tp <= {TP_MAX}) fits {gpu_memory_gib:g} GiB per GPU at "
                    f"seq {seq_len} with activation_checkpoint={activation_checkpoint!r}")


# ------------------------------------------------------------------------------------------ config and CLI
def load_model_and_batch(config: str) -> tuple[ModelConfig, TrainConfig | None]:
    """(ModelConfig, TrainConfig or None) from a training TOML path or a preset name."""
    if not os.path.isfile(config):
        if config in PRESETS:
            return model_config(config), None
        raise PlanError(f"--config: {config!r} is neither a config file nor a preset (presets: {', '.join(PRESETS)})")
    train = load_config(config)
    fields: dict[str, Any] = {"preset": train.model.preset, **train.model.overrides}
    for key in ("vocab_size", "rope_theta", "max_seq_len"):
        if getattr(train.model, key) is not None:
            fields[key] = getattr(train.model, key)
    return model_config(fields), train


def rows_for(train: TrainConfig | None, seq_len: int) -> tuple[int, int, str]:
    """(rows per step, micro-batch rows, where they came from) for seq_len: the config stage of that length, else
    the tokens per step of the first stage at this length (4M tokens without a config)."""
    if train is None:
        return max(1, (1 << 22) // seq_len), 1, "4M tokens per step (no config)"
    stages = train.resolved_stages()
    for stage in stages:
        if stage.seq_len == seq_len:
            return stage.batch_size, stage.micro_batch_size, f"stage {stage.name!r}"
    first = stages[0]
    return (max(1, first.batch_size * first.seq_len // seq_len), first.micro_batch_size,
            f"tokens per step of stage {first.name!r}")


def _gib(n: float) -> str:
    return f"{n / GIB:.1f}"


def format_table(plans: Sequence[StepPlan]) -> str:
    head = ("gpus", "seq", "mesh", "rows/mb/acc", "params", "grads", "optim", "acts", "recomp", "attn ws", "loss",
            "total GiB", "fits", "PFLOP/step", "s/step", "comm GB/rank")
    lines = [head]
    for p in plans:
        m = p.memory
        lines.append((str(p.gpus), str(p.seq_len), p.mesh.describe(), f"{p.rows}/{p.micro_batch}/{p.accumulation}",
                      _gib(m.params), _gib(m.grads), _gib(m.optimizer), _gib(m.activations), _gib(m.recompute),
                      _gib(m.attention_workspace), _gib(m.loss_buffers),
                      f"{_gib(m.total)}/{p.gpu_memory_bytes / GIB:g}", "yes" if p.fits else "NO",
                      f"{p.model_flops / 1e15:.1f}", f"{p.step_seconds:.2f}", f"{sum(p.comm_bytes.values()) / 1e9:.1f}"))
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in lines)


FORMULAS = """\
memory per rank (GiB): params = 4 P/(fsdp tp) fp32 master + param-dtype root unit and 2 blocks in flight;
  grads = 4 P/(fsdp tp) + one block in reduce dtype; optim = 8 P/(fsdp tp) (AdamW moments); acts = bytes autograd
  keeps after a micro-batch's forward (per-op count, see `seedcoder.plan.block_saved`); recomp = one block rebuilt
  in backward; attn ws = flash dQ fp32 accumulator + delta (+ cp ring K/V buffers, fp32 partial out/lse);
  loss = fused CE logits chunk (tp: 2 fp32 loss-parallel chunks) + head grad_weight; fsdp = dp_shard * cp.
  fits: total <= {margin:.0%} of the card.
FLOPs/step (model) = (6 N + 6 L H D S) * tokens (attention halved for causal); s/step = per-rank hardware FLOPs
  (+ recomputed forward) / {tflops:g} TFLOP/s sustained.
comm per rank per step (ring): FSDP all-gather 2 (n-1)/n P/tp b_param + reduce-scatter (n-1)/n P/tp b_reduce per
  micro-batch; HSDP all-reduce 2 (r-1)/r P/(tp n) b_reduce; TP-SP 8 L (t-1)/t T d b_act (12 with full AC);
  TP vocabulary-parallel embedding + head 4 (t-1)/t T d b_act + (t-1) T 8;
  CP ring L (c-1) T 2 Hkv D/t (2 b_act [+1 full AC] + 8); T = micro-batch tokens / cp."""


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="seedcoder plan", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="a training TOML config or a model preset name")
    parser.add_argument("--gpus", type=int, nargs="+", default=list(DEFAULT_GPUS), help="GPU counts (default 8 64 512)")
    parser.add_argument("--seq", type=int, nargs="+", default=list(DEFAULT_SEQS), help="sequence lengths (default 8192 32768)")
    for name in ("dp-replicate", "dp-shard", "tp", "cp"):
        parser.add_argument(f"--{name}", type=int, help="mesh dimension (give the mesh to skip the automatic choice)")
    parser.add_argument("--activation-checkpoint", choices=AC_MODES, help="default: the config's parallel section")
    parser.add_argument("--gpu-memory-gib", type=float, default=80.0, help="memory per GPU (default 80, H100)")
    parser.add_argument("--tflops", type=float, default=400.0, help="sustained bf16 TFLOP/s per GPU for the time "
                                                                     "estimate (default 400: ~40%% of H100 dense peak)")
    parser.add_argument("--json", metavar="OUT", help="also write the plans as JSON")
    return parser


def _given_mesh(dims: dict[str, int], gpus: int) -> Mesh:
    tp, cp, rep = dims.get("tp", 1), dims.get("cp", 1), dims.get("dp_replicate", 1)
    shard = dims.get("dp_shard", gpus // (tp * cp * rep) if gpus % (tp * cp * rep) == 0 else 0)
    if shard < 1:
        raise PlanError(f"--gpus: {gpus} is not a multiple of dp_replicate * tp * cp = {rep * tp * cp}")
    return Mesh(rep, shard, tp, cp)


def run(args: argparse.Namespace) -> int:
    cfg, train = load_model_and_batch(args.config)
    mode = args.activation_checkpoint or (train.parallel.activation_checkpoint if train else "full")
    param_dtype = "bfloat16" if train is None or train.parallel.param_dtype == "auto" else train.parallel.param_dtype
    reduce_dtype = train.parallel.reduce_dtype if train else "float32"
    for name, values in (("--gpus", args.gpus), ("--seq", args.seq)):
        if any(v < 1 for v in values):
            raise PlanError(f"{name}: values must be positive integers, got {values}")
    if args.gpu_memory_gib <= 0 or args.tflops <= 0:
        raise PlanError("--gpu-memory-gib and --tflops: must be positive")
    configured = {}  # the mesh the config's [parallel] section sets: planned where it fits the GPU count
    if train is not None:
        parallel = train.parallel
        configured = {k: v for k, v in (("dp_replicate", parallel.dp_replicate), ("tp", parallel.tp),
                                        ("cp", parallel.cp)) if v != 1}
        if parallel.dp_shard != -1:
            configured["dp_shard"] = parallel.dp_shard
    given = {k: getattr(args, k) for k in ("dp_replicate", "dp_shard", "tp", "cp") if getattr(args, k) is not None}
    counts = param_counts(cfg)
    plans = []
    for seq_len in args.seq:
        rows, micro, source = rows_for(train, seq_len)
        for gpus in args.gpus:
            planned = functools.partial(plan_step, cfg, seq_len=seq_len, micro_batch=micro, rows=rows,
                                        activation_checkpoint=mode, gpus=gpus, param_dtype=param_dtype,
                                        reduce_dtype=reduce_dtype, gpu_memory_gib=args.gpu_memory_gib,
                                        tflops=args.tflops, counts=counts)
            if given:
                plans.append(planned(_given_mesh(given, gpus), mesh_reason=f"given; rows from {source}"))
                continue
            note = ""
            if configured:
                try:
                    plans.append(planned(_given_mesh(configured, gpus),
                                         mesh_reason=f"the config's [parallel] mesh; rows from {source}"))
                    continue
                except PlanError as error:
                    note = f"the config's [parallel] mesh does not fit ({error}); "
            mesh, reason = choose_mesh(cfg, gpus, seq_len=seq_len, micro_batch=micro, rows=rows,
                                       activation_checkpoint=mode, param_dtype=param_dtype, reduce_dtype=reduce_dtype,
                                       gpu_memory_gib=args.gpu_memory_gib, counts=counts)
            plans.append(planned(mesh, mesh_reason=f"{note}{reason}; rows from {source}"))
    print(f"model: {counts.total / 1e9:.2f}B parameters (L {cfg.n_layers}, d {cfg.dim}, H {cfg.n_heads}/{cfg.n_kv_heads}, "
          f"ffn {cfg.ffn_dim}, vocab {cfg.vocab_size}); activation_checkpoint={mode}, param {param_dtype}, "
          f"reduce {reduce_dtype}")
    print(format_table(plans))
    print("mesh choice:")
    for p in plans:
        print(f"  {p.gpus} GPUs x {p.seq_len}: {p.mesh.describe()}: {p.mesh_reason}")
    print(FORMULAS.format(margin=MEMORY_MARGIN, tflops=args.tflops))
    if args.json:
        atomic_write_text(args.json, json.dumps([p.to_dict() for p in plans], indent=2) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exit_on_user_error("seedcoder plan", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
