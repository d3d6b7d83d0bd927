"""Context parallelism (seedcoder/context_parallel.py): zig-zag sharding, and ring attention on 2 and 4 gloo ranks
spawned here, against single-process attention over the unsharded sequence.

Every case runs the ring with gradients on every rank and compares this rank's shard of out, lse, dq, dk, dv with
the same shard of a float64 reference (flash_attention_reference in float64, autograd for the gradients). fp32 runs
must err at most 2x what single-process fp32 flash_attention errs against that reference (+1e-6); float64 runs
(every block in torch) at most 1e-12, an exact check of the ring, the masks and the merge. Two dispatch modes:
"reference" (TRITON_INTERPRET=0 in the ranks: flash_attention's CPU torch forward, the torch block backward) and
"kernel" (the Triton kernels in the interpreter: the flash forward and `flash_attn_bwd` with the global out/lse,
which is what runs on a GPU). One spawn per group of cases (reference, kernel, slow) runs them all; each test
reads its case's numbers (printed with -s: the measured max abs errors, and seconds a case).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import traceback
from datetime import timedelta

import interpreter_fixes
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from numerics import max_abs_err, seeded
from torch.distributed.device_mesh import init_device_mesh

from seedcoder import context_parallel as cp
from seedcoder.kernels import flash_attention, flash_attention_reference
from seedcoder.model import document_ids
from seedcoder.processes import exit_process, init_process_group

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    batch: int
    seqlen: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    docs: tuple[tuple[int, ...], ...] | None  # per-row document boundaries [0, ..., S]; None: one causal sequence
    dtype: str = "float32"
    mode: str = "reference"  # "reference": torch paths; "kernel": the Triton kernels in the interpreter
    doc_source: str = "doc_ids"  # or "positions": document_ids_from_positions on sharded position_ids
    use_mesh: bool = False  # pass a 1-D DeviceMesh instead of the ProcessGroup
    causal: bool = True


PACKED = ((0, 5, 9, 17, 24), (0, 2, 3, 14, 24))  # boundaries inside chunks (c = 6 at 2 ranks)
EDGES = ((0, 6, 12, 24), (0, 12, 18, 24))  # exactly at chunk edges: 6 and 18 are rank edges, 12 is not
SPANNING = ((0, 1, 24), (0, 3, 22, 24))  # a document over every chunk of both ranks, cut inside the end chunks

TWO_RANK_CASES = [
    Case("causal_no_documents", 2, 16, 2, 2, 8, None),
    Case("causal_no_documents_kernel", 2, 16, 2, 2, 8, None, mode="kernel"),
    Case("packed_inside_chunks", 2, 24, 4, 2, 16, PACKED, doc_source="positions"),
    Case("packed_inside_chunks_kernel", 2, 24, 4, 2, 16, PACKED, mode="kernel"),
    Case("packed_inside_chunks_float64", 2, 24, 4, 2, 16, PACKED, dtype="float64"),
    Case("boundaries_at_chunk_edges", 2, 24, 2, 1, 8, EDGES, use_mesh=True),
    Case("boundaries_at_chunk_edges_float64", 2, 24, 2, 1, 8, EDGES, dtype="float64"),
    Case("document_spanning_all_ranks", 2, 24, 2, 2, 8, SPANNING),
    Case("one_document_full_blocks", 1, 32, 2, 1, 16, ((0, 32),), mode="kernel"),
    Case("gqa_4to1_head_dim_24", 1, 40, 8, 2, 24, ((0, 7, 13, 29, 40),)),
    Case("gqa_4to1_head_dim_24_float64", 1, 40, 8, 2, 24, ((0, 7, 13, 29, 40),), dtype="float64"),
    Case("not_causal_packed", 2, 24, 4, 2, 16, PACKED, causal=False),
    Case("not_causal_packed_float64", 2, 24, 4, 2, 16, SPANNING, dtype="float64", causal=False),
    Case("packed_bfloat16", 2, 24, 4, 2, 16, PACKED, dtype="bfloat16"),
    Case("head_dim_136_torch_path", 1, 16, 2, 1, 136, ((0, 3, 11, 16),)),  # over the kernel's backward limit
]
TWO_RANK_SLOW_CASES = [  # more of the kernels in the interpreter: a spawn of ~30 s on the 2-core machine
    Case("document_spanning_all_ranks_kernel", 2, 24, 2, 2, 8, SPANNING, mode="kernel"),
    Case("gqa_4to1_head_dim_24_kernel", 1, 40, 8, 2, 24, ((0, 7, 13, 29, 40),), mode="kernel"),
    Case("packed_float16_kernel", 2, 24, 4, 2, 16, PACKED, dtype="float16", mode="kernel"),
]
FOUR_RANK_CASES = [Case("four_ranks_packed_gqa", 2, 32, 4, 1, 8, ((0, 3, 4, 13, 27, 32), (0, 32)))]
FOUR_RANK_SLOW_CASES = [  # a second spawn of 4 ranks: ~30 s on the 2-core machine
    Case("four_ranks_packed_gqa_float64", 2, 32, 4, 1, 8, ((0, 3, 4, 13, 27, 32), (0, 32)), dtype="float64"),
    Case("four_ranks_packed_gqa_kernel", 2, 32, 4, 1, 8, ((0, 3, 4, 13, 27, 32), (0, 32)), mode="kernel"),
]
TENSORS = ("out", "lse", "dq", "dk", "dv")


# ================================================================================================ the ranks
def _global_cu_seqlens(case: Case) -> torch.Tensor:
    """Document boundaries over the flattened B*S tokens (rows are one document each when case.docs is None)."""
    rows = case.docs or tuple((0, case.seqlen) for _ in range(case.batch))
    bounds = [0]
    for row, row_bounds in enumerate(rows):
        bounds += [row * case.seqlen + b for b in row_bounds[1:]]
    return torch.tensor(bounds, dtype=torch.int32)


def _run_case(case: Case, rank: int, world: int) -> dict[str, float]:
    os.environ["TRITON_INTERPRET"] = "1" if case.mode == "kernel" else "0"  # read per call by the dispatch
    dtype = getattr(torch, case.dtype)
    gen = seeded(1234)
    b, s = case.batch, case.seqlen
    # inputs representable in dtype, so the float64 reference sees exactly what the ring and the baseline see
    q64, dout64 = (torch.randn(b, s, case.n_heads, case.head_dim, generator=gen).to(dtype).double() for _ in range(2))
    k64, v64 = (torch.randn(b, s, case.n_kv_heads, case.head_dim, generator=gen).to(dtype).double() for _ in range(2))
    cu = _global_cu_seqlens(case)

    # float64 reference over the unsharded, packed sequence
    ref_in = [t.flatten(0, 1).clone().requires_grad_() for t in (q64, k64, v64)]
    ref_out, ref_lse = flash_attention_reference(*ref_in, causal=case.causal, cu_seqlens=cu, return_lse=True,
                                                 compute_dtype=torch.float64)
    ref_out.backward(dout64.flatten(0, 1))
    reference = {"out": ref_out.detach().view(q64.shape), "lse": ref_lse.view(-1, b, s).transpose(0, 1),
                 "dq": ref_in[0].grad.view(q64.shape), "dk": ref_in[1].grad.view(k64.shape),
                 "dv": ref_in[2].grad.view(v64.shape)}

    # plain single-process attention at the input dtype: the baseline error the ring may double
    if dtype != torch.float64:
        base_in = [t.flatten(0, 1).to(dtype).requires_grad_() for t in (q64, k64, v64)]
        attention = flash_attention if case.head_dim <= 128 else flash_attention_reference  # the op's backward limit
        base_out, base_lse = attention(*base_in, causal=case.causal, cu_seqlens=cu, return_lse=True)
        base_out.backward(dout64.flatten(0, 1).to(dtype))
        baseline = {"out": base_out.detach().view(q64.shape), "lse": base_lse.view(-1, b, s).transpose(0, 1),
                    "dq": base_in[0].grad.view(q64.shape), "dk": base_in[1].grad.view(k64.shape),
                    "dv": base_in[2].grad.view(v64.shape)}

    # the ring, on this rank's shards
    group = dist.group.WORLD
    if case.use_mesh:
        group = init_device_mesh("cpu", (world,), mesh_dim_names=("cp",))["cp"]
    q, k, v = (cp.zigzag_shard(t.to(dtype), world, rank).requires_grad_() for t in (q64, k64, v64))
    doc_ids = None
    if case.docs is not None:
        if case.doc_source == "positions":  # what the loader gives: positions restarting at 0 in every document
            first = cu.to(torch.int64)[document_ids(b, s, cu_seqlens=cu)]  # each token's document start
            position_ids = torch.arange(b * s).view(b, s) - first
            doc_ids = cp.document_ids_from_positions(cp.zigzag_shard(position_ids, world, rank), world, rank)
        else:
            doc_ids = cp.zigzag_shard(document_ids(b, s, cu_seqlens=cu), world, rank)
    out, lse = cp.ring_attention(q, k, v, group=group, doc_ids=doc_ids, causal=case.causal, return_lse=True)
    out.backward(cp.zigzag_shard(dout64.to(dtype), world, rank))
    got = {"out": out.detach(), "lse": lse, "dq": q.grad, "dk": k.grad, "dv": v.grad}

    errors = {}
    for name in TENSORS:
        dim = 2 if name == "lse" else 1
        errors[name] = max_abs_err(got[name], cp.zigzag_shard(reference[name], world, rank, dim=dim))
        if dtype != torch.float64:
            errors[f"{name}_baseline"] = max_abs_err(cp.zigzag_shard(baseline[name], world, rank, dim=dim),
                                                     cp.zigzag_shard(reference[name], world, rank, dim=dim))
    gathered = cp.zigzag_gather(out.detach(), group)
    errors["gather"] = max_abs_err(gathered, reference["out"])
    return errors


def _worker(rank: int, world: int, store: str, cases: list[Case], results_dir: str) -> None:
    torch.set_num_threads(1)
    if os.environ.get("TRITON_INTERPRET") == "1":  # the kernels were defined for the interpreter: patch it
        interpreter_fixes.apply()
    init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world, timeout=timedelta(seconds=120))
    results = {}
    try:
        for case in cases:
            try:
                start = time.perf_counter()
                results[case.name] = _run_case(case, rank, world)
                results[case.name]["seconds"] = time.perf_counter() - start
            except Exception:  # noqa: BLE001 (reported to the test of this case)
                results[case.name] = {"error": traceback.format_exc()}
        with open(os.path.join(results_dir, f"rank{rank}.json"), "w") as f:
            json.dump(results, f)
        dist.barrier()  # no rank tears its connections down while a peer still talks to it
    finally:
        dist.destroy_process_group()
    exit_process(0)  # no interpreter finalization racing gloo's threads (seedcoder.processes)


def _spawn(world: int, cases: list[Case], tmp_path) -> dict[str, dict[str, float]]:
    """Run the cases on `world` gloo ranks; {case: {tensor: max abs error over the ranks}} (or {"error": ...})."""
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"  # the ranks define the kernels for the interpreter ("kernel" mode)
    try:
        mp.spawn(_worker, args=(world, str(tmp_path / "store"), cases, str(tmp_path)), nprocs=world, join=True)
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET")
        else:
            os.environ["TRITON_INTERPRET"] = saved
    merged: dict[str, dict[str, float]] = {}
    for rank in range(world):
        with open(tmp_path / f"rank{rank}.json") as f:
            for name, numbers in json.load(f).items():
                entry = merged.setdefault(name, {})
                for key, value in numbers.items():
                    entry[key] = max(entry.get(key, value), value) if key != "error" else value
    return merged


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    return _spawn(2, [c for c in TWO_RANK_CASES if c.mode == "reference"], tmp_path_factory.mktemp("cp2"))


@pytest.fixture(scope="module")
def two_rank_kernel_results(tmp_path_factory):  # a spawn of its own: the interpreter is slow
    return _spawn(2, [c for c in TWO_RANK_CASES if c.mode == "kernel"], tmp_path_factory.mktemp("cp2kernel"))


@pytest.fixture(scope="module")
def two_rank_slow_results(tmp_path_factory):
    return _spawn(2, TWO_RANK_SLOW_CASES, tmp_path_factory.mktemp("cp2slow"))


@pytest.fixture(scope="module")
def four_rank_results(tmp_path_factory):
    return _spawn(4, FOUR_RANK_CASES, tmp_path_factory.mktemp("cp4"))


@pytest.fixture(scope="module")
def four_rank_slow_results(tmp_path_factory):
    return _spawn(4, FOUR_RANK_SLOW_CASES, tmp_path_factory.mktemp("cp4slow"))


def _check(case: Case, results: dict[str, dict[str, float]]) -> None:
    numbers = results[case.name]
    assert "error" not in numbers, f"{case.name} failed on a rank:\n{numbers.get('error')}"
    print(f"\n{case.name}: " + ", ".join(f"{key} {value:.2e}" for key, value in numbers.items()))
    for name in TENSORS:
        if case.dtype == "float64":
            assert numbers[name] <= 1e-12, f"{case.name}: {name} max |err| {numbers[name]:.3e} > 1e-12 (float64)"
        else:
            bound = 2 * numbers[f"{name}_baseline"] + 1e-6
            assert numbers[name] <= bound, (f"{case.name}: {name} max |err| {numbers[name]:.3e} > 2 x single-process "
                                            f"error {numbers[f'{name}_baseline']:.3e} + 1e-6")
    tolerance = 1e-12 if case.dtype == "float64" else 2 * numbers["out_baseline"] + 1e-6
    assert numbers["gather"] <= tolerance


@pytest.mark.parametrize("case", TWO_RANK_CASES, ids=lambda c: c.name)
def test_ring_attention_two_ranks(case, request):
    _check(case, request.getfixturevalue("two_rank_kernel_results" if case.mode == "kernel" else "two_rank_results"))


@pytest.mark.slow
@pytest.mark.parametrize("case", TWO_RANK_SLOW_CASES, ids=lambda c: c.name)
def test_ring_attention_two_ranks_more_kernels(case, two_rank_slow_results):
    _check(case, two_rank_slow_results)


@pytest.mark.parametrize("case", FOUR_RANK_CASES, ids=lambda c: c.name)
def test_ring_attention_four_ranks(case, four_rank_results):
    _check(case, four_rank_results)


@pytest.mark.slow
@pytest.mark.parametrize("case", FOUR_RANK_SLOW_CASES, ids=lambda c: c.name)
def test_ring_attention_four_ranks_float64_and_kernels(case, four_rank_slow_results):
    _check(case, four_rank_slow_results)


def test_ring_attention_one_rank(tmp_path):
    """A cp group of one rank (no P2P: chunk 1 sees chunk 0 in the same step), in this process, packed documents."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        gen = seeded(7)
        q = torch.randn(2, 12, 4, 8, generator=gen, dtype=torch.float64, requires_grad=True)
        k, v = (torch.randn(2, 12, 2, 8, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(2))
        cu = torch.tensor([0, 4, 9, 12, 13, 24], dtype=torch.int32)
        out, lse = cp.ring_attention(q, k, v, doc_ids=document_ids(2, 12, cu_seqlens=cu), return_lse=True)
        dout = torch.randn(out.shape, generator=gen, dtype=torch.float64)
        grads = torch.autograd.grad(out, (q, k, v), dout)
        ref_out, ref_lse = flash_attention_reference(*(t.flatten(0, 1) for t in (q, k, v)), cu_seqlens=cu,
                                                     return_lse=True, compute_dtype=torch.float64)
        ref_grads = torch.autograd.grad(ref_out, (q, k, v), dout.flatten(0, 1))
    finally:
        dist.destroy_process_group()
    assert max_abs_err(out, ref_out.view(out.shape)) < 1e-12
    assert max_abs_err(lse, ref_lse.view(4, 2, 12).transpose(0, 1)) < 1e-12
    for name, got, want in zip("qkv", grads, ref_grads):
        assert max_abs_err(got, want) < 1e-12, f"d{name}"


# ================================================================================================ sharding
@pytest.mark.parametrize("cp_size", [1, 2, 3, 4])
def test_zigzag_shard_round_trip(cp_size):
    x = torch.randn(2, 8 * cp_size * 3, 3, 5, generator=seeded(0))
    shards = [cp.zigzag_shard(x, cp_size, r) for r in range(cp_size)]
    c = x.shape[1] // (2 * cp_size)
    for r, shard in enumerate(shards):
        index = cp.zigzag_indices(x.shape[1], cp_size, r)
        assert index.tolist() == [*range(r * c, (r + 1) * c), *range((2 * cp_size - 1 - r) * c, (2 * cp_size - r) * c)]
        assert torch.equal(shard, x[:, index])
    assert torch.equal(cp.zigzag_unshard(shards), x)
    assert sorted(torch.cat([cp.zigzag_indices(x.shape[1], cp_size, r) for r in range(cp_size)]).tolist()) == \
        list(range(x.shape[1]))
    # (1, S) position_ids shard along the last dim; every rank gets the same causal work: (r+1) + (2N-r) chunk pairs
    positions = torch.arange(x.shape[1])[None]
    assert torch.equal(cp.zigzag_unshard([cp.zigzag_shard(positions, cp_size, r, dim=-1) for r in range(cp_size)],
                                         dim=-1), positions)
    work = [sum(a + 1 for a in (r, 2 * cp_size - 1 - r)) for r in range(cp_size)]
    assert len(set(work)) == 1


def test_document_ids_from_positions():
    cu = torch.tensor([0, 5, 9, 17, 24, 26, 27, 38, 48], dtype=torch.int32)
    b, s, n = 2, 24, 2
    first = cu.to(torch.int64)[document_ids(b, s, cu_seqlens=cu)]  # each token's document start, flattened
    positions = torch.arange(b * s).view(b, s) - first
    for r in range(n):
        ids = cp.document_ids_from_positions(cp.zigzag_shard(positions, n, r), n, r)
        ids_row = ids + torch.arange(b)[:, None] * s  # the helper's ids are per row (global index within the row)
        assert torch.equal(ids_row, cp.zigzag_shard(first, n, r))


def test_bad_inputs():
    x = torch.zeros(1, 12, 2, 4)
    with pytest.raises(ValueError, match="not divisible by 2 x cp_size = 8"):
        cp.zigzag_shard(x, 4, 0)
    with pytest.raises(ValueError, match="cp_rank"):
        cp.zigzag_shard(x, 2, 2)
    with pytest.raises(ValueError, match="cp_size"):
        cp.zigzag_indices(12, 0, 0)
    with pytest.raises(ValueError, match="shard 1 has shape"):
        cp.zigzag_unshard([torch.zeros(1, 4), torch.zeros(1, 6)])
    q, kv = torch.zeros(1, 6, 4, 8), torch.zeros(1, 6, 2, 8)
    with pytest.raises(ValueError, match="k and v must have the same shape"):
        cp.ring_attention(q, kv, torch.zeros(1, 6, 1, 8))
    with pytest.raises(ValueError, match="must agree on batch"):
        cp.ring_attention(q, torch.zeros(1, 4, 2, 8), torch.zeros(1, 4, 2, 8))
    with pytest.raises(ValueError, match="multiple of the 3 kv heads"):
        cp.ring_attention(q, torch.zeros(1, 6, 3, 8), torch.zeros(1, 6, 3, 8))
    with pytest.raises(ValueError, match="local sequence length 5 is odd"):
        cp.ring_attention(torch.zeros(1, 5, 4, 8), torch.zeros(1, 5, 2, 8), torch.zeros(1, 5, 2, 8))
    with pytest.raises(ValueError, match=r"doc_ids must be \(B, S_local\)"):
        cp.ring_attention(q, kv, kv, doc_ids=torch.zeros(1, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="non-decreasing"):
        cp.ring_attention(q, kv, kv, doc_ids=torch.tensor([[0, 1, 0, 2, 2, 2]]))
    with pytest.raises(TypeError, match="share a dtype"):
        cp.ring_attention(q.double(), kv, kv)
    with pytest.raises(TypeError, match="group"):
        cp.ring_attention(q, kv, kv, group="cp")
