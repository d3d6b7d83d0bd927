"""Tensor parallelism (seedcoder.parallelize.apply_tp) against one process: the vocabulary-parallel embedding and
head (loss parallel) and the sequence-parallel blocks give the same losses and gradients, on 2 gloo ranks."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

from seedcoder.model import IGNORE_INDEX, Transformer, model_config
from seedcoder.parallelize import apply_tp, reduce_replicated_gradients
from seedcoder.processes import exit_process, init_process_group

TP = 2
SEQ = 12  # a multiple of TP: each rank's slice is 6 tokens


def _batch(vocab: int):
    generator = torch.Generator().manual_seed(vocab)
    ids = torch.randint(0, vocab, (3, SEQ), generator=generator)
    labels = torch.randint(0, vocab, (3, SEQ), generator=generator)
    labels[0, :5] = IGNORE_INDEX  # ignored tokens, on one rank's slice more than the other's
    labels[2, -1] = IGNORE_INDEX
    labels[1, 3] = vocab - 1  # the last row of the vocabulary: on the last rank's shard (uneven when vocab is odd)
    weights = torch.rand(3, SEQ, generator=generator, dtype=torch.float32)  # for the per-token ("none") losses
    # packed documents: 5 + 7 tokens in row 0 (the boundary inside rank 0's slice), 8 + 4 in row 1 (across slices)
    positions = torch.cat([torch.arange(5), torch.arange(7)]), torch.cat([torch.arange(8), torch.arange(4)])
    return ids, labels, weights, torch.stack([*positions, torch.arange(SEQ)])


def _model(vocab: int) -> Transformer:
    model = Transformer(model_config("debug", vocab_size=vocab))
    model.init_weights(seed=5)
    return model


def _run(model: Transformer, vocab: int) -> dict[str, torch.Tensor]:
    """Losses of the three reductions and the gradients of sum + mean + weighted per-token losses."""
    ids, labels, weights, positions = _batch(vocab)
    out = {reduction: model(ids, position_ids=positions, labels=labels, loss_reduction=reduction)
           for reduction in ("sum", "mean", "none")}
    (out["sum"] + 3 * out["mean"] + (out["none"] * weights).sum()).backward()
    reduce_replicated_gradients(model)
    for name, param in model.named_parameters():
        grad = param.grad
        out[f"grad:{name}"] = grad.full_tensor() if isinstance(grad, DTensor) else grad
    return {name: value.detach() for name, value in out.items()}


def _worker(rank: int, store: str, vocab: int, out: str) -> None:
    torch.set_num_threads(1)
    init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=TP)
    try:
        model = _model(vocab)
        apply_tp(model, init_device_mesh("cpu", (TP,), mesh_dim_names=("tp",)))
        result = _run(model, vocab)
        torch.save(result, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()
    exit_process(0)  # no interpreter finalization racing gloo's threads (seedcoder.processes)


@pytest.mark.parametrize("vocab", [250, 251])  # an odd vocabulary splits unevenly over the ranks
def test_tensor_parallel_equals_one_process(tmp_path, vocab):
    saved = os.environ.pop("TRITON_INTERPRET", None)  # CPU ranks run the torch references, not the interpreter
    try:
        mp.spawn(_worker, args=(str(tmp_path / "store"), vocab, str(tmp_path / "out")), nprocs=TP, join=True)
    finally:
        if saved is not None:
            os.environ["TRITON_INTERPRET"] = saved
    expected = _run(_model(vocab), vocab)
    for rank in range(TP):
        got = torch.load(tmp_path / f"out.{rank}")
        assert got.keys() == expected.keys()
        for name, value in expected.items():
            assert not got[name].isnan().any(), name
            # fp32, summed in another order (per shard, per slice): rtol 1e-5 of the values, atol 1e-6 of the largest
            torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6 * value.abs().max().item(),
                                       msg=lambda m, n=name: f"{n}: {m}")


def test_tensor_parallel_head_refuses_logits(tmp_path):
    """A tensor-parallel model returns losses only: labels=None names the way out (an unsharded model)."""
    store = tmp_path / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    try:
        model = _model(250)
        apply_tp(model, init_device_mesh("cpu", (1,), mesh_dim_names=("tp",)))
        with pytest.raises(ValueError, match="returns losses only"):
            model(torch.zeros(1, 4, dtype=torch.long))
    finally:
        dist.destroy_process_group()
