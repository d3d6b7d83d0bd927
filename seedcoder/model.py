"""The Llama-3 decoder that every training stage uses (Seed-Coder is a Llama-3 architecture).

    from seedcoder.model import Transformer, model_config
    cfg = model_config("tiny", vocab_size=tokenizer.get_vocab_size())
    with torch.device("meta"):
        model = Transformer(cfg)                 # no memory, no init yet
    ...parallelize (fully_shard per block)...    # sharding is applied after construction, by the trainer
    model.to_empty(device="cuda"); model.init_weights(seed=0)
    loss_sum = model(batch["input_ids"], position_ids=..., cu_seqlens=..., labels=batch["labels"])

Architecture: token embedding -> n_layers x TransformerBlock -> final RMSNorm -> untied output head; no biases.
A block is pre-norm: h = h + Attention(RMSNorm(h)); h = h + SwiGLU(RMSNorm(h)). Attention is grouped-query
(n_kv_heads key/value heads shared by n_heads / n_kv_heads query heads each) with rotary position embeddings
in the Hugging Face `rotate_half` layout, so HF Llama weights load without permuting q/k (hf_convert.py).
Parameter names follow torchtitan: tok_embeddings, layers.{i}.attention.{wq,wk,wv,wo}, attention_norm,
feed_forward.{w1 (gate), w2 (down), w3 (up)}, ffn_norm, norm, output.

Kernels: RMSNorm (the second norm of a block fused with the residual add), rotary and the fused linear
cross-entropy at the head come from `seedcoder.kernels`. CUDA tensors run the Triton kernels; other tensors
run the kernels' torch references (chosen here, not by TRITON_INTERPRET, so CPU training and tests never go
through Triton's interpreter).

Packed rows and document masking. The loader packs several documents into a row and gives `position_ids`
(restarting at 0 in every document) and `cu_seqlens` (document boundaries over the flattened B*S tokens).
A token attends causally within its own document only. The mask comes from cu_seqlens when given, else from
position_ids (a new document starts wherever the position is 0); with neither, a row is one causal sequence.
Rotary uses position_ids (derived from cu_seqlens when only those are given). Documents never cross rows (the
loader cuts them at row ends); `check_cu_seqlens` enforces that on host tensors. Attention is one small function,
`attend`, that gets an `AttentionMask` (the packing information, nothing O(S²)) and decides its path first. On
CUDA with bf16/fp16 activations it is our flash attention (`seedcoder.kernels.flash_attention`): packed documents
straight from cu_seqlens / max_seqlen, or plain causal rows. Elsewhere, and as the fallback (fp32, head dims
over 128, a mask known only from position_ids), it is PyTorch SDPA: is_causal when every row is one document,
else a dense (B, 1, S, S) boolean block-diagonal causal mask, built once per forward and shared by every layer
(SDPA keeps its mask for backward: one per layer would hold L copies). The flash path never builds one: at
S = 32K it would take 1 GiB per row.

Generation (seedcoder/generate.py) runs this same forward pass with a `KVCache` as an optional argument: a
prefill is the packed-row forward above that also stores each token's keys and values; a decode step feeds one
token per sequence and attends over its cached keys and values. Without a cache nothing changes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seedcoder.kernels import (
    apply_rotary,
    flash_attention,
    fused_linear_cross_entropy,
    fused_linear_cross_entropy_reference,
    rms_norm,
)

IGNORE_INDEX = -100
LOSS_REDUCTIONS = ("sum", "mean", "none")


# ------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class ModelConfig:
    """Shape of a Llama-3 model. head_dim = dim // n_heads."""

    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    rope_theta: float = 500_000.0
    norm_eps: float = 1e-6
    max_seq_len: int = 32768  # the longest context the model is meant for (nothing is allocated per position)
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int":
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"model config: {f.name} must be a positive integer, got {value!r}")
            else:  # float fields accept ints (TOML writes 500000 for 500_000.0)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                    raise ValueError(f"model config: {f.name} must be a positive finite number, got {value!r}")
                object.__setattr__(self, f.name, float(value))
        if self.dim % self.n_heads:
            raise ValueError(f"model config: dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"model config: n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads}) "
                             "for grouped-query attention")
        if self.head_dim % 2:
            raise ValueError(f"model config: head_dim = dim / n_heads = {self.head_dim} must be even for rotary embeddings")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        if not isinstance(d, Mapping):
            raise ValueError(f"model config: expected a mapping of fields, got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"model config: unknown key(s) {', '.join(map(repr, unknown))} (known: {', '.join(names)})")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in d]
        if missing:
            raise ValueError(f"model config: missing key(s) {', '.join(map(repr, missing))}")
        return cls(**d)


PRESETS: dict[str, ModelConfig] = {
    # Seed-Coder-8B as released (Llama-3 8B shape, Seed-Coder's 155,136-token vocabulary): ~8.25B parameters.
    "seedcoder-8b": ModelConfig(vocab_size=155_136, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, ffn_dim=14336),
    # ~0.97B parameters in the blocks; 1.61B with the two 155,136 x 2048 vocabulary matrices.
    "1b": ModelConfig(vocab_size=155_136, dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, ffn_dim=8192),
    # The demo model; set vocab_size from the tokenizer the demo trains.
    "tiny": ModelConfig(vocab_size=8192, dim=256, n_layers=4, n_heads=8, n_kv_heads=4, ffn_dim=768, max_seq_len=2048),
    # Unit tests.
    "debug": ModelConfig(vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=192, max_seq_len=512),
}


def model_config(name_or_dict: str | Mapping[str, Any] | ModelConfig, **overrides: Any) -> ModelConfig:
    """A ModelConfig from a preset name, a ModelConfig, or a dict, with field overrides on top.

    A dict either holds every required field, or names a preset under "preset" and overrides some fields
    ({"preset": "tiny", "vocab_size": 4096}). Unknown presets and unknown fields raise ValueError naming them.
    """
    if isinstance(name_or_dict, ModelConfig):
        base = name_or_dict.to_dict()
    elif isinstance(name_or_dict, str):
        if name_or_dict not in PRESETS:
            raise ValueError(f"model config: unknown preset {name_or_dict!r} (presets: {', '.join(PRESETS)})")
        base = PRESETS[name_or_dict].to_dict()
    elif isinstance(name_or_dict, Mapping):
        fields = dict(name_or_dict)
        preset = fields.pop("preset", None)
        base = model_config(preset).to_dict() if preset is not None else {}
        base.update(fields)
    else:
        raise ValueError(f"model config: expected a preset name, a dict or a ModelConfig, got {type(name_or_dict).__name__}")
    base.update(overrides)
    return ModelConfig.from_dict(base)


# ------------------------------------------------------------------------------------------ attention
@dataclass(frozen=True)
class AttentionMask:
    """Who attends to whom in a (B, S) batch: causal, and within a document when rows are packed.

    cu_seqlens / max_seqlen: the loader's document boundaries over the flattened B*S tokens (None: unknown).
    position_ids: (B or 1, S) positions restarting at 0 in every document (the documents when cu_seqlens is None).
    packed: some row may hold several documents; False means every row is one causal sequence.
    dense: the (B, 1, S, S) mask of the SDPA path for packed rows, built once per forward for every layer
    (`with_dense_for`); None: built by `attend` when needed.
    """

    cu_seqlens: torch.Tensor | None = None
    max_seqlen: int | None = None
    position_ids: torch.Tensor | None = None
    packed: bool = False
    dense: torch.Tensor | None = None

    def with_dense_for(self, h: torch.Tensor, head_dim: int) -> AttentionMask:
        """This mask with `dense` built, when packed rows of activations like `h` (B, S, dim) take the SDPA path:
        one mask for all layers (SDPA saves its mask for backward, so one per layer would cost L times the memory)."""
        if not self.packed or self.dense is not None or attention_backend(h, self, head_dim) != "sdpa":
            return self
        batch, seqlen = h.shape[:2]
        return dataclasses.replace(self, dense=dense_attention_mask(self, batch, seqlen, h.device))


def document_ids(batch: int, seqlen: int, *, position_ids: torch.Tensor | None = None,
                 cu_seqlens: torch.Tensor | None = None, device: torch.device | None = None) -> torch.Tensor:
    """(B, S) int64: the index of each token's document (from cu_seqlens, else position_ids restarting at 0)."""
    if cu_seqlens is not None:
        tokens = torch.arange(batch * seqlen, device=cu_seqlens.device)
        ids = torch.searchsorted(cu_seqlens[1:].to(torch.int64), tokens, right=True)
        return ids.view(batch, seqlen).to(device)
    if position_ids is None:
        raise ValueError("document_ids: needs position_ids or cu_seqlens")
    return torch.cumsum(position_ids.expand(batch, seqlen) == 0, dim=-1).to(device)


def positions_from_cu_seqlens(cu_seqlens: torch.Tensor, batch: int, seqlen: int) -> torch.Tensor:
    """(B, S) position ids restarting at 0 at every boundary of cu_seqlens (flattened B*S tokens)."""
    cu = cu_seqlens.to(torch.int64)
    tokens = torch.arange(batch * seqlen, device=cu.device)
    segment = torch.searchsorted(cu[1:], tokens, right=True)
    return (tokens - cu[segment]).view(batch, seqlen)


def _head(t: torch.Tensor) -> str:
    return f"{t[:8].tolist()}{' ...' if t.numel() > 8 else ''}"


def check_cu_seqlens(cu_seqlens: torch.Tensor, batch: int, seqlen: int, *, max_seqlen: int | None = None) -> None:
    """ValueError unless cu_seqlens are document boundaries for a (batch, seqlen) batch: shape and dtype always;
    the values (rising from 0 to B*S, a boundary at every row start, no document longer than max_seqlen) only for
    a host tensor, where they cost no device sync. The training loop calls this on its host batch before the copy
    to the GPU; the model calls it too, which checks the values of CPU batches."""
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"cu_seqlens: expected a 1-D int32/int64 tensor of document boundaries, got shape "
                         f"{tuple(cu_seqlens.shape)} dtype {cu_seqlens.dtype}")
    if cu_seqlens.device.type != "cpu":
        return
    total_tokens = batch * seqlen
    lengths = cu_seqlens.diff()
    if int(cu_seqlens[0]) != 0 or int(cu_seqlens[-1]) != total_tokens or bool((lengths < 0).any()):
        raise ValueError(f"cu_seqlens: must rise from 0 to B*S = {total_tokens}, got {_head(cu_seqlens)} "
                         f"(last {int(cu_seqlens[-1])})")
    row_starts = torch.arange(0, total_tokens + 1, seqlen, dtype=cu_seqlens.dtype) if seqlen else cu_seqlens[:1]
    if not bool(torch.isin(row_starts, cu_seqlens).all()):
        raise ValueError(f"cu_seqlens: a document crosses a row end: every multiple of S = {seqlen} up to B*S must be a "
                         f"boundary, got {_head(cu_seqlens)}")
    if max_seqlen is not None and int(lengths.max()) > max_seqlen:
        raise ValueError(f"max_seqlen: {max_seqlen} is shorter than the longest document in cu_seqlens "
                         f"({int(lengths.max())} tokens)")


def build_attention_mask(input_ids: torch.Tensor, *, position_ids: torch.Tensor | None, cu_seqlens: torch.Tensor | None,
                         max_seqlen: int | None) -> AttentionMask:
    """The AttentionMask for a batch, from shapes only (no host sync, no O(S²) tensor). Rows are one document
    each when cu_seqlens has B + 1 entries (segments never cross rows) or there is no document information."""
    packed = position_ids is not None if cu_seqlens is None else cu_seqlens.numel() != input_ids.shape[0] + 1
    return AttentionMask(cu_seqlens, max_seqlen, position_ids, packed)


def dense_attention_mask(mask: AttentionMask, batch: int, seqlen: int, device: torch.device) -> torch.Tensor:
    """(B, 1, S, S) bool, True where query i may attend key j: causal within each document (the SDPA path)."""
    docs = document_ids(batch, seqlen, position_ids=mask.position_ids, cu_seqlens=mask.cu_seqlens, device=device)
    causal = torch.ones(seqlen, seqlen, dtype=torch.bool, device=device).tril()
    return ((docs[:, :, None] == docs[:, None, :]) & causal).unsqueeze(1)


def attention_backend(x: torch.Tensor, mask: AttentionMask, head_dim: int | None = None) -> str:
    """The path `attend` takes for activations x (queries (B, S, H, D), or (B, S, dim) with head_dim given):
    "flash" (our kernel) on CUDA for 16-bit activations when the documents are known from cu_seqlens or every row is
    one document; "sdpa" otherwise."""
    head_dim = x.shape[-1] if head_dim is None else head_dim
    flash_ok = x.is_cuda and x.dtype in (torch.bfloat16, torch.float16) and head_dim <= 128
    return "flash" if flash_ok and (mask.cu_seqlens is not None or not mask.packed) else "sdpa"


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask, *,
           backend: str | None = None) -> torch.Tensor:
    """Causal (document-masked) attention: q (B, S, Hq, D), k and v (B, S, Hkv, D) -> (B, S, Hq, D).

    backend: "flash" (seedcoder.kernels.flash_attention, packed documents from mask.cu_seqlens without a dense
    mask) or "sdpa" (PyTorch SDPA, GQA without repeating k/v, a dense mask for packed rows); None picks with
    `attention_backend`.
    """
    batch, seqlen, n_heads, head_dim = q.shape
    if (backend or attention_backend(q, mask)) == "flash":
        if mask.cu_seqlens is None:
            if mask.packed:
                raise ValueError("attend: the flash path needs cu_seqlens for packed rows (documents known only from "
                                 "position_ids take the SDPA path)")
            return flash_attention(q, k, v, causal=True)
        out = flash_attention(q.reshape(batch * seqlen, n_heads, head_dim), k.reshape(batch * seqlen, -1, head_dim),
                              v.reshape(batch * seqlen, -1, head_dim), causal=True,
                              cu_seqlens=mask.cu_seqlens.to(torch.int32),
                              max_seqlen=mask.max_seqlen or seqlen)  # documents never cross rows: S bounds them
        return out.view(q.shape)
    dense = None
    if mask.packed:
        dense = mask.dense if mask.dense is not None else dense_attention_mask(mask, batch, seqlen, q.device)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=dense, is_causal=dense is None, enable_gqa=n_heads != k.shape[2])
    return out.transpose(1, 2)


# ------------------------------------------------------------------------------------------ KV cache
class KVCache:
    """Keys and values of the tokens generated so far, paged: a pool of fixed-size blocks per layer and a block
    table per sequence slot, so a sequence holds ceil(length / block_size) blocks and not a slot of the longest
    length. keys[layer] and values[layer] are (num_blocks, block_size, n_kv_heads, head_dim) (vLLM's layout);
    slot s's position p lives in block tables[s][p // block_size] at offset p % block_size. Blocks are taken from
    a free list as positions are written and returned by `free(slot)`; `fork` lets a slot share another's full
    blocks (reference counts: the n samples of a prompt hold its K/V once). The pool starts at `initial_blocks`
    and grows by doubling up to max_blocks (default enough for every slot at `capacity`; a growth briefly holds
    the old and the new pool); when it is exhausted a write raises RuntimeError, so a caller with a budget (the
    generation engine) checks `blocks_needed` against `free_blocks` first and preempts. `capacity` bounds one
    slot's positions (its block table's width).

    A forward pass with a cache (`Transformer.forward(..., kv_cache=cache.prefill(...) or cache.decode(...))`)
    writes its tokens' keys and values into the cache and attends in one of two ways, chosen by the call that
    set the cache up for the pass:

    * `prefill(slots, positions)`: the pass holds whole new sequences (one packed row, documents from
      cu_seqlens). Token t of the flattened B*S tokens goes to slot slots[t] at position positions[t]; attention
      is the model's own (`attend`) over the pass, so prefill is exactly the forward pass without a cache.
    * `decode(positions, max_position)`: one new token per row, row b being the sequence in slot b. Its keys
      and values go to position positions[b] and it attends over positions 0..positions[b] of its slot: each
      layer gathers the rows' blocks through the block table into a contiguous (B, n_kv_heads, span, head_dim)
      view and runs torch SDPA with a padding mask for the shorter sequences (max_position = max(positions),
      known on the host). A GPU kernel would not gather: a paged-attention kernel (vLLM's, FlashAttention's
      block_table argument) reads each row's blocks in place through the table inside the attention loop.
    """

    def __init__(self, cfg: ModelConfig, slots: int, capacity: int, device: torch.device, dtype: torch.dtype, *,
                 block_size: int = 256, max_blocks: int | None = None, initial_blocks: int = 0):
        for name, value in (("slots", slots), ("capacity", capacity), ("block_size", block_size),
                            ("max_blocks", 1 if max_blocks is None else max_blocks)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"KVCache: {name} must be a positive integer, got {value!r}")
        if isinstance(initial_blocks, bool) or not isinstance(initial_blocks, int) or initial_blocks < 0:
            raise ValueError(f"KVCache: initial_blocks must be an integer >= 0, got {initial_blocks!r}")
        self.block_size, self.capacity = block_size, capacity
        self.max_blocks = slots * -(-capacity // block_size) if max_blocks is None else max_blocks
        self.tables: list[list[int]] = [[] for _ in range(slots)]  # slot -> its blocks, in position order
        self._refs: list[int] = []  # block -> how many slots hold it
        self._free: list[int] = []  # unused blocks, popped from the end, where the lowest ids of a growth are
        self._block_shape = (block_size, cfg.n_kv_heads, cfg.head_dim)
        self.keys = [torch.zeros((0, *self._block_shape), device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.values = [torch.zeros((0, *self._block_shape), device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self._write = self._gather = self._keep = None  # where the current pass writes, what decode reads
        if initial_blocks:
            self._grow(min(initial_blocks, self.max_blocks))

    # ---------------------------------------------------------------- blocks
    @property
    def num_blocks(self) -> int:
        """Blocks allocated in the pool (used or free)."""
        return self.keys[0].shape[0] if self.keys else 0

    @property
    def used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def free_blocks(self) -> int:
        """Blocks that can still be handed out: free ones in the pool plus those the pool may still grow by."""
        return self.max_blocks - self.used_blocks

    def blocks_needed(self, slot: int, length: int) -> int:
        """New blocks slot `slot` needs to hold positions 0..length-1."""
        return max(0, -(-length // self.block_size) - len(self.tables[slot]))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def bytes_per_block(self) -> int:
        return 2 * len(self.keys) * math.prod(self._block_shape) * self.keys[0].element_size() if self.keys else 0

    def _grow(self, new: int) -> None:
        old = self.num_blocks
        for tensors in (self.keys, self.values):
            for layer, pool in enumerate(tensors):
                tensors[layer] = torch.cat([pool, pool.new_zeros((new - old, *self._block_shape))])
        self._refs += [0] * (new - old)
        self._free = list(range(new - 1, old - 1, -1)) + self._free  # the new blocks are handed out last

    def _take(self) -> int:
        if not self._free:
            if self.num_blocks >= self.max_blocks:
                raise RuntimeError(f"KVCache: all {self.max_blocks} blocks of {self.block_size} positions are in use")
            self._grow(min(self.max_blocks, max(2 * self.num_blocks, 4)))
        block = self._free.pop()
        self._refs[block] = 1
        return block

    def _ensure(self, slot: int, length: int) -> None:
        if length > self.capacity:
            raise ValueError(f"KVCache: slot {slot} needs {length} positions, over the capacity {self.capacity}")
        table = self.tables[slot]
        while len(table) * self.block_size < length:
            table.append(self._take())

    def free(self, slot: int) -> None:
        """Return slot `slot`'s blocks (those no other slot shares) to the free list."""
        for block in reversed(self.tables[slot]):
            self._refs[block] -= 1
            if self._refs[block] == 0:
                self._free.append(block)
        self.tables[slot] = []

    def reset(self) -> None:
        """Free every slot."""
        for slot in range(len(self.tables)):
            self.free(slot)

    def move(self, source: int, target: int) -> None:
        """Slot `source`'s blocks become slot `target`'s (target must hold none): no K/V is copied."""
        if self.tables[target]:
            raise ValueError(f"KVCache.move: target slot {target} still holds blocks")
        self.tables[target], self.tables[source] = self.tables[source], []

    def fork(self, source: int, target: int, length: int) -> None:
        """Give slot `target` (holding no blocks) positions 0..length-1 of slot `source`: full blocks are shared,
        a last partial block is copied (both slots write after `length` into it)."""
        if self.tables[target]:
            raise ValueError(f"KVCache.fork: target slot {target} still holds blocks")
        full, partial = divmod(length, self.block_size)
        shared = self.tables[source][:full]
        for block in shared:
            self._refs[block] += 1
        self.tables[target] = list(shared)
        if partial:
            block, own = self.tables[source][full], self._take()
            for tensors in (self.keys, self.values):
                for pool in tensors:
                    pool[own, :partial] = pool[block, :partial]
            self.tables[target].append(own)

    # ---------------------------------------------------------------- a forward pass
    def _locate(self, slots: list[int], positions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        blocks = [self.tables[s][p // self.block_size] for s, p in zip(slots, positions)]
        offsets = [p % self.block_size for p in positions]
        device = self.keys[0].device
        return torch.tensor(blocks, device=device), torch.tensor(offsets, device=device)

    def prefill(self, slots: torch.Tensor, positions: torch.Tensor) -> KVCache:
        """Set up the next pass to write token t at (slots[t], positions[t]) and attend over the pass only;
        blocks are taken for the positions written."""
        slot_list, position_list = slots.tolist(), positions.tolist()
        ends: dict[int, int] = {}
        for s, p in zip(slot_list, position_list):
            ends[s] = max(ends.get(s, 0), p + 1)
        for s, end in ends.items():
            self._ensure(s, end)
        self._write, self._gather, self._keep = self._locate(slot_list, position_list), None, None
        return self

    def decode(self, positions: torch.Tensor, max_position: int) -> KVCache:
        """Set up the next pass (B, 1) to write row b at (b, positions[b]) and attend over its slot's 0..positions[b]."""
        batch, span = positions.shape[0], max_position + 1
        position_list = positions.tolist()
        for slot, p in enumerate(position_list):
            self._ensure(slot, p + 1)
        self._write = self._locate(list(range(batch)), position_list)
        width = -(-span // self.block_size)
        # rows with fewer blocks read block 0 past their end: finite K/V that the mask drops
        table = [self.tables[slot][:width] + [0] * (width - min(width, len(self.tables[slot]))) for slot in range(batch)]
        self._gather = (torch.tensor(table, device=positions.device), span)
        self._keep = (torch.arange(span, device=positions.device)[None, :] <= positions[:, None]).view(batch, 1, 1, span)
        return self

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
        """Attention's step with a cache: q (B, S, Hq, D), k and v (B, S, Hkv, D) -> (B, S, Hq, D)."""
        batch, seqlen, n_heads, head_dim = q.shape
        keys, values = self.keys[layer], self.values[layer]
        blocks, offsets = self._write
        keys[blocks, offsets] = k.reshape(batch * seqlen, -1, head_dim)
        values[blocks, offsets] = v.reshape(batch * seqlen, -1, head_dim)
        if self._keep is None:
            return attend(q, k, v, mask)
        table, span = self._gather
        n_kv_heads = k.shape[2]
        gathered_keys = keys[table].flatten(1, 2)[:, :span].transpose(1, 2)  # (B, Hkv, span, D)
        gathered_values = values[table].flatten(1, 2)[:, :span].transpose(1, 2)
        # GQA without repeating K/V: the `group` query heads of a K/V head become `group` query rows of it
        # (query head j reads K/V head j // group, as in `attend`'s SDPA with enable_gqa).
        out = F.scaled_dot_product_attention(q.reshape(batch, n_kv_heads, n_heads // n_kv_heads, head_dim),
                                             gathered_keys, gathered_values, attn_mask=self._keep)
        return out.reshape(batch, seqlen, n_heads, head_dim)


# ------------------------------------------------------------------------------------------ modules
KERNELS = ("triton", "cuda")  # the GPU kernels of RMSNorm and rotary: Triton, or the CUDA C++ extension (seedcoder._cuda)


def _backend(t: torch.Tensor, kernels: str) -> str:
    """Kernel backend: `kernels` on CUDA, the torch reference elsewhere."""
    return kernels if t.is_cuda else "torch"


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, kernels: str = "triton"):
        super().__init__()
        self.eps, self.kernels = eps, kernels
        self.weight = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        """norm(x), or with a residual (norm(x + residual), x + residual): the add fused into the kernel."""
        return rms_norm(x, self.weight, self.eps, residual, backend=_backend(x, self.kernels))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_id: int, kernels: str = "triton"):
        super().__init__()
        self.layer_id = layer_id  # which layer's buffers of a KVCache it uses
        self.kernels = kernels
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.rope_theta = cfg.rope_theta
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        self.attend = attend  # the attention of whole sequences; context parallelism swaps in ring attention

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor | None, mask: AttentionMask,
                kv_cache: KVCache | None = None) -> torch.Tensor:
        batch, seqlen, _ = x.shape
        # -1 heads: all of them, or this rank's share when tensor parallelism shards the projections
        q = self.wq(x).view(batch, seqlen, -1, self.head_dim)
        k = self.wk(x).view(batch, seqlen, -1, self.head_dim)
        v = self.wv(x).view(batch, seqlen, -1, self.head_dim)
        q, k = apply_rotary(q, k, position_ids, theta=self.rope_theta, backend=_backend(q, self.kernels))
        out = self.attend(q, k, v, mask) if kv_cache is None else kv_cache.attend(self.layer_id, q, k, v, mask)
        return self.wo(out.reshape(batch, seqlen, -1))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    """h -> h + attention(norm(h)) -> (that) + feed_forward(norm(that)); the unit of sharding and checkpointing."""

    def __init__(self, cfg: ModelConfig, layer_id: int, kernels: str = "triton"):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps, kernels)
        self.attention = Attention(cfg, layer_id, kernels)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps, kernels)
        self.feed_forward = FeedForward(cfg)

    def forward(self, h: torch.Tensor, position_ids: torch.Tensor | None, mask: AttentionMask,
                kv_cache: KVCache | None = None) -> torch.Tensor:
        attention_out = self.attention(self.attention_norm(h), position_ids, mask, kv_cache)
        x, h = self.ffn_norm(attention_out.to(h.dtype), residual=h)  # h = h + attention_out, x = norm(h)
        return h + self.feed_forward(x)


class OutputHead(nn.Module):
    """The untied LM head. It owns the loss so that a sharded head (FSDP) unshards for the loss path too:
    the loss reads `weight` directly (fused linear cross-entropy, no logits), inside this module's forward."""

    def __init__(self, dim: int, vocab_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, dim))

    def forward(self, hidden: torch.Tensor, labels: torch.Tensor | None = None, reduction: str = "sum") -> torch.Tensor:
        if labels is None:
            return F.linear(hidden, self.weight)
        weight = self.weight
        device_type = hidden.device.type
        if torch.is_autocast_enabled(device_type):  # custom ops skip autocast: cast like a matmul would be
            dtype = torch.get_autocast_dtype(device_type)
            hidden, weight = hidden.to(dtype), weight.to(dtype)
        elif weight.dtype != hidden.dtype:
            hidden = hidden.to(weight.dtype)
        # CPU: the kernel's torch reference, called directly so TRITON_INTERPRET never routes it to the interpreter
        loss_fn = fused_linear_cross_entropy if hidden.is_cuda else fused_linear_cross_entropy_reference
        return loss_fn(hidden, weight, labels, ignore_index=IGNORE_INDEX, reduction=reduction)


class Transformer(nn.Module):
    """The model. kernels: which GPU kernels RMSNorm and rotary run, "triton" or "cuda" (the CUDA C++ extension,
    when built); on CPU both run the torch reference. Attention and the loss are Triton on the GPU either way."""

    def __init__(self, cfg: ModelConfig, kernels: str = "triton"):
        super().__init__()
        if not isinstance(cfg, ModelConfig):
            raise TypeError(f"Transformer: expected a ModelConfig (see model_config()), got {type(cfg).__name__}")
        if kernels not in KERNELS:
            raise ValueError(f"kernels: expected one of {', '.join(map(repr, KERNELS))}, got {kernels!r}")
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(TransformerBlock(cfg, layer_id, kernels) for layer_id in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps, kernels)
        self.output = OutputHead(cfg.dim, cfg.vocab_size)
        if not any(p.is_meta for p in self.parameters()):
            self.init_weights()

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """(Re)initialize every parameter in place; after `to_empty` for a meta-built (and sharded) model.

        Linear weights and the embedding ~ N(0, init_std²); the projections that write into the residual stream
        (attention.wo, feed_forward.w2) ~ N(0, init_std² / (2 n_layers)) (GPT-2 / Megatron); norms 1.
        Deterministic for a seed and independent of sharding: every parameter is drawn whole, in order, from one
        generator on its device, and a sharded (DTensor) parameter keeps its own shard of that draw. seed=None
        draws the seed from torch's global RNG (so torch.manual_seed governs it). A parameter still on the meta
        device is skipped.
        """
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        generators: dict[torch.device, torch.Generator] = {}
        residual_std = self.cfg.init_std / math.sqrt(2 * self.cfg.n_layers)
        for name, param in self.named_parameters():
            if param.is_meta:
                continue
            if name.endswith("norm.weight"):
                _fill_(param, None, None)
                continue
            std = residual_std if name.endswith(("attention.wo.weight", "feed_forward.w2.weight")) else self.cfg.init_std
            device = _local(param).device
            if device not in generators:
                generators[device] = torch.Generator(device=device).manual_seed(seed)
            _fill_(param, std, generators[device])

    def forward(self, input_ids: torch.Tensor, *, position_ids: torch.Tensor | None = None,
                cu_seqlens: torch.Tensor | None = None, max_seqlen: int | None = None, labels: torch.Tensor | None = None,
                loss_reduction: str = "sum", kv_cache: KVCache | None = None,
                logits_at: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, S) -> logits (B, S, V), or with labels (B, S) (the next token, -100 = ignored) the loss.

        position_ids (B, S) / cu_seqlens (int32, document boundaries over the flattened B*S tokens) / max_seqlen:
        the loader's packing information (see the module docstring). The loss is computed from the final hidden
        states and the head's weight without materializing logits; loss_reduction "sum" (default: the trainer
        divides by the global count of labels != -100), "mean" (over non-ignored tokens) or "none" ((B, S)).

        Generation: kv_cache (a KVCache set up with `prefill` or `decode`) stores this pass's keys and values and,
        when decoding, lets it attend over the cached ones; logits_at (N,) picks the flattened B*S positions whose
        logits are returned, (N, V) (a prefill needs only each prompt's last token: the head is the costly part).
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids: expected shape (B, S), got {tuple(input_ids.shape)}")
        if loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"loss_reduction: expected one of {LOSS_REDUCTIONS}, got {loss_reduction!r}")
        batch, seqlen = input_ids.shape
        if labels is not None and logits_at is not None:
            raise ValueError("logits_at: picks logits; a loss (labels) covers every position")
        if labels is not None and tuple(labels.shape) != (batch, seqlen):
            raise ValueError(f"labels: shape {tuple(labels.shape)} != input_ids' {(batch, seqlen)}")
        if position_ids is not None:
            if position_ids.dim() == 1:
                position_ids = position_ids.unsqueeze(0)
            if position_ids.dim() != 2 or position_ids.shape[1] != seqlen or position_ids.shape[0] not in (1, batch):
                raise ValueError(f"position_ids: expected shape ({batch}, {seqlen}) or (1, {seqlen}), "
                                 f"got {tuple(position_ids.shape)}")
            position_ids = position_ids.to(input_ids.device)
        if cu_seqlens is not None:
            check_cu_seqlens(cu_seqlens, batch, seqlen, max_seqlen=max_seqlen)  # values: host tensors only
            cu_seqlens = cu_seqlens.to(input_ids.device, non_blocking=True)
        mask = build_attention_mask(input_ids, position_ids=position_ids, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)
        if position_ids is None and cu_seqlens is not None:
            position_ids = positions_from_cu_seqlens(cu_seqlens, batch, seqlen)

        h = self.tok_embeddings(input_ids)
        mask = mask.with_dense_for(h, self.cfg.head_dim)
        for block in self.layers:
            h = block(h, position_ids, mask, kv_cache)
        if logits_at is not None:
            h = h.reshape(batch * seqlen, -1)[logits_at]
        return self.output(self.norm(h), labels, loss_reduction)

    def num_params(self, exclude_embedding: bool = False) -> int:
        """Parameter count (global, also when sharded); exclude_embedding leaves out the input embedding table
        (a lookup, not a matmul); the untied output head is always counted."""
        total = sum(p.numel() for p in self.parameters())
        return total - self.tok_embeddings.weight.numel() if exclude_embedding else total

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs (forward + backward) per token at context seq_len, for MFU:

            6 * N  +  6 * L * H * D * S
        N = parameters without the input embedding (every weight is in one matmul: 2 FLOPs per parameter
        forward, 4 backward); attention scores and the weighted sum of values cost 4 * S * H * D FLOPs per token
        and layer forward without masking, 12 * L * H * D * S for the whole training step (torchtitan's / PaLM's
        term), halved here because causal attention computes only half the score matrix (what flash attention
        does). Document masking within a packed row skips more; that is not credited (S is the row length).
        """
        cfg = self.cfg
        return 6.0 * self.num_params(exclude_embedding=True) + 6.0 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (FSDP2), or the tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t


def _fill_(param: torch.Tensor, std: float | None, generator: torch.Generator | None) -> None:
    """param <- ones (std None) or N(0, std²) drawn for the whole (unsharded) shape, then sliced to the local shard."""
    local = _local(param)
    if std is None:
        local.fill_(1.0)
        return
    full = torch.empty(param.shape, dtype=torch.float32, device=local.device).normal_(0.0, std, generator=generator)
    if local is not param:  # DTensor: keep this rank's shard of the full draw (no communication)
        from torch.distributed.tensor import distribute_tensor

        full = distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None).to_local()
    local.copy_(full)
