"""The sm_90 flash attention (forward: TMA descriptors, persistent grid, warp-specialised KV loop; backward: the
dK/dV kernel with TMA loads) against a float64 per-document reference (FlashAttention's 2x rule), its packed-document
exactness where a TMA box crosses a document end, and the dispatch of flash_attention to it.

On CPU the kernel runs in Triton's interpreter, which executes the tensor descriptors (zero fill past the tensor
included) and ignores warp_specialize (one thread runs the loop), in fp16/fp32 (bf16 tl.dot is wrong there); both
loop forms run: the warp-specialised one (one loop, every block masked) and the two-loop one. Its sm_90a builds
(wgmma, TMA, setmaxnreg) are checked by the compile gate (tests/test_compile_gate.py).
"""

import os

import pytest
import torch
from conftest import HAS_CUDA
from numerics import assert_close_rule, max_abs_err
from test_flash_attention import cu_seqlens_of, random_qkv, run, run_reference

from benchmarks import kernels
from seedcoder.kernels import flash_attention_hopper as hopper
from seedcoder.kernels.flash_attention import flash_attention, flash_attention_reference


def _capability_major() -> int:
    try:
        return torch.cuda.get_device_capability()[0]
    except (AssertionError, RuntimeError):  # gpu_check's plumbing check collects with CUDA faked: as the box (sm_90)
        return 9


ON_HOPPER = HAS_CUDA and _capability_major() == 9
DOC_LENGTHS = [1, 17, 113, 1023, 4097] if HAS_CUDA else [1, 17, 0, 50, 33]
DTYPES = [torch.bfloat16, torch.float16] if HAS_CUDA else [torch.float16]
# With the interpreter's 32x16 tiles: documents of one token, one before / at / after a key-block edge (15, 16,
# 17), one before / after a query-block edge (31, 33), and a last document of 5 whose box runs 11 rows past T.
EDGE_LENGTHS = [1, 15, 16, 17, 1, 31, 33, 1, 5]
CASES = [  # (causal, Hq, Hkv, D): GQA ratios 1, 4 and 8; head dims 64 and 128 (test_flash_attention's cases)
    (True, 4, 4, 64), (True, 8, 1, 128), (False, 4, 1, 64), (False, 8, 8, 128),
] + ([(True, 8, 2, 64), (False, 8, 1, 64), (True, 4, 4, 128), (True, 32, 8, 128)] if HAS_CUDA else [])
# On a GPU the autotuned launch; in the interpreter the fixed tiles, both loop forms.
LAUNCHES = [{}] if ON_HOPPER else [{"warp_specialize": True}, {"warp_specialize": False}]
def launch_id(launch: dict) -> str:
    return f"ws={int(launch['warp_specialize'])}" if launch else "autotuned"


needs_kernel = pytest.mark.skipif(HAS_CUDA and not ON_HOPPER, reason="the sm_90 kernel needs a Hopper GPU")


def hopper_forward(q, k, v, cu, causal, **launch):
    lengths = (cu[1:] - cu[:-1]).tolist()
    scale = q.shape[-1] ** -0.5
    return hopper.forward(q, k, v, cu, max(lengths), causal, scale, **launch)


def check_against_reference(name, q, k, v, cu, causal, got, atol=1e-5):
    ref = flash_attention_reference(q, k, v, causal=causal, cu_seqlens=cu, return_lse=True, compute_dtype=torch.float64)
    plain = flash_attention_reference(q, k, v, causal=causal, cu_seqlens=cu, return_lse=True, compute_dtype=q.dtype)
    errors = {}
    for part, g, r, p in zip(("out", "lse"), got, ref, plain):
        assert_close_rule(f"{name} {part}", g, r, p, atol=atol)
        errors[part] = max_abs_err(g, r)
    print(f"{name}: max |err| vs float64 out {errors['out']:.2e} lse {errors['lse']:.2e}")  # the report's figures


@needs_kernel
@pytest.mark.parametrize("launch", LAUNCHES, ids=launch_id)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal,n_heads,n_kv_heads,head_dim", CASES)
def test_packed_documents_match_reference(device, dtype, causal, n_heads, n_kv_heads, head_dim, launch):
    cu = cu_seqlens_of(DOC_LENGTHS, device)
    q, k, v = random_qkv(int(cu[-1]), n_heads, n_kv_heads, head_dim, dtype, device, seed=head_dim + n_heads)
    got = hopper_forward(q, k, v, cu, causal, **launch)
    assert got[0].dtype == dtype and got[1].dtype == torch.float32
    check_against_reference(f"causal={int(causal)} Hq={n_heads} Hkv={n_kv_heads} D={head_dim} {launch}", q, k, v, cu,
                            causal, got)


@needs_kernel
@pytest.mark.parametrize("launch", LAUNCHES, ids=launch_id)
@pytest.mark.parametrize("causal", [True, False])
def test_boxes_crossing_document_ends_stay_exact(device, causal, launch):
    """Each document computes bitwise what it computes alone, although its last key box reads the next document's
    rows (here 30x larger keys, which would dominate any score they leaked into) or, for the last document, rows
    past T that TMA fills with zeros; and the whole matches the float64 reference."""
    dtype = DTYPES[-1]
    lengths = EDGE_LENGTHS if not HAS_CUDA else [1, 63, 64, 65, 1, 127, 129, 1, 5]  # around the GPU's 128x64 edges
    cu = cu_seqlens_of(lengths, device)
    q, k, v = random_qkv(int(cu[-1]), 4, 2, 64, dtype, device, seed=40)
    for i in range(1, len(lengths), 2):  # every other document's keys loud
        k[int(cu[i]):int(cu[i + 1])] *= 30
    packed = hopper_forward(q, k, v, cu, causal, **launch)
    check_against_reference(f"edges causal={int(causal)} {launch}", q, k, v, cu, causal, packed, atol=1e-4)
    for i, n in enumerate(lengths):
        lo, hi = int(cu[i]), int(cu[i + 1])
        alone = hopper_forward(q[lo:hi].clone(), k[lo:hi].clone(), v[lo:hi].clone(), cu_seqlens_of([n], device), causal,
                               **launch)
        assert torch.equal(packed[0][lo:hi], alone[0]), f"document {i} ({n} tokens): out differs when packed"
        assert torch.equal(packed[1][:, lo:hi], alone[1]), f"document {i} ({n} tokens): lse differs when packed"


@pytest.mark.skipif(HAS_CUDA, reason="fp32 takes the sm_80 kernels on a GPU (test_flash_attention.py checks them)")
@pytest.mark.parametrize("causal", [True, False])
def test_fp32_inputs_are_exact(device, causal):
    cu = cu_seqlens_of([7, 40, 1, 29], device)
    q, k, v = random_qkv(int(cu[-1]), 4, 2, 64, torch.float32, device, seed=3)
    for launch in LAUNCHES:
        out, lse = hopper_forward(q, k, v, cu, causal, **launch)
        ref_out, ref_lse = flash_attention_reference(q, k, v, causal=causal, cu_seqlens=cu, return_lse=True,
                                                     compute_dtype=torch.float64)
        print(f"fp32 causal={int(causal)} {launch}: max |err| out {max_abs_err(out, ref_out):.2e} "
              f"lse {max_abs_err(lse, ref_lse):.2e}")
        assert max_abs_err(out, ref_out) < 2e-5 and max_abs_err(lse, ref_lse) < 2e-5


@pytest.mark.skipif(HAS_CUDA, reason="the grid size is the interpreter's choice here; a GPU runs one program per SM")
@pytest.mark.parametrize("causal", [True, False])
def test_persistent_grid_size_does_not_change_the_result(device, causal):
    """One program walking every tile, or several taking turns, compute each tile the same way: equal bitwise."""
    cu = cu_seqlens_of([20, 45, 3], device)
    q, k, v = random_qkv(68, 4, 1, 64, torch.float16, device, seed=6)
    one = hopper_forward(q, k, v, cu, causal, programs=1)
    for programs in (2, 5, 1000):  # 1000: more programs than tiles, the grid is cut to the tile count
        other = hopper_forward(q, k, v, cu, causal, programs=programs)
        assert torch.equal(one[0], other[0]) and torch.equal(one[1], other[1]), programs


@pytest.fixture
def counted_dkdv_calls(monkeypatch):
    calls = []
    original = hopper.backward_dkdv

    def counting(*args, **kwargs):
        calls.append(args[-1])  # atomic_dq
        return original(*args, **kwargs)

    monkeypatch.setattr(hopper, "backward_dkdv", counting)
    monkeypatch.setenv(hopper.SWITCH_ENV, "1")
    return calls


@needs_kernel
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("causal,n_heads,n_kv_heads,head_dim", CASES)
def test_backward_matches_reference(device, causal, n_heads, n_kv_heads, head_dim, deterministic, counted_dkdv_calls):
    """The sm_90 dK/dV kernel (TMA boxes of Q and dO that may cross document ends), with dQ by its atomics or by
    the deterministic dQ kernel, under flash_attention's backward op: the three gradients against float64."""
    dtype = DTYPES[-1]
    cu = cu_seqlens_of(DOC_LENGTHS, device)
    q, k, v = random_qkv(int(cu[-1]), n_heads, n_kv_heads, head_dim, dtype, device, seed=head_dim + n_heads)
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(device=device, dtype=dtype)
    kw = dict(causal=causal, cu_seqlens=cu)
    got = run(q, k, v, dout, max_seqlen=max(DOC_LENGTHS), deterministic=deterministic, **kw)
    assert counted_dkdv_calls == [not deterministic]
    ref = run_reference(q, k, v, dout, torch.float64, **kw)
    plain = run_reference(q, k, v, dout, dtype, **kw)
    errors = []
    for name, g, r, p in zip(("out", "lse", "dq", "dk", "dv"), got, ref, plain):
        assert_close_rule(name, g, r, p, atol=1e-5)
        errors.append(f"{name} {max_abs_err(g, r):.2e}")
    print(f"bwd causal={int(causal)} Hq={n_heads} Hkv={n_kv_heads} D={head_dim} det={int(deterministic)}: "
          + ", ".join(errors))


@needs_kernel
@pytest.mark.filterwarnings("ignore:overflow encountered in exp2")  # the loud rows' P, masked to 0 right after
@pytest.mark.parametrize("causal", [True, False])
def test_backward_boxes_crossing_document_ends_stay_exact(device, causal, counted_dkdv_calls):
    """The (deterministic) gradients of each packed document equal, bitwise, those of the document alone, with
    every other document's keys, queries and output gradients 30x louder, and match float64."""
    dtype = DTYPES[-1]
    lengths = EDGE_LENGTHS if not HAS_CUDA else [1, 63, 64, 65, 1, 127, 129, 1, 5]
    cu = cu_seqlens_of(lengths, device)
    q, k, v = random_qkv(int(cu[-1]), 4, 2, 64, dtype, device, seed=41)
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(7)).to(device=device, dtype=dtype)
    for i in range(1, len(lengths), 2):
        for t in (q, k, dout):
            t[int(cu[i]):int(cu[i + 1])] *= 30
    packed = run(q, k, v, dout, causal=causal, cu_seqlens=cu, max_seqlen=max(lengths), deterministic=True)
    ref = run_reference(q, k, v, dout, torch.float64, causal=causal, cu_seqlens=cu)
    plain = run_reference(q, k, v, dout, dtype, causal=causal, cu_seqlens=cu)
    for name, g, r, p in zip(("out", "lse", "dq", "dk", "dv"), packed, ref, plain):
        assert_close_rule(f"edges {name}", g, r, p, atol=1e-4)
    for i, n in enumerate(lengths):
        lo, hi = int(cu[i]), int(cu[i + 1])
        alone = run(q[lo:hi], k[lo:hi], v[lo:hi], dout[lo:hi], causal=causal, cu_seqlens=cu_seqlens_of([n], device),
                    max_seqlen=n, deterministic=True)
        for name, p, a in zip(("out", "lse", "dq", "dk", "dv"), packed, alone):
            part = p[:, lo:hi] if name == "lse" else p[lo:hi]
            assert torch.equal(part, a), f"document {i} ({n} tokens): {name} differs when packed"
    assert len(counted_dkdv_calls) == 1 + len(lengths)


@pytest.fixture
def counted_hopper_calls(monkeypatch):
    calls = []
    original = hopper.forward

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(hopper, "forward", counting)
    return calls


@needs_kernel
def test_flash_attention_dispatches_to_the_hopper_forward(device, monkeypatch, counted_hopper_calls):
    """SEEDCODER_FLASH_HOPPER=1 (the default on sm_90) sends flash_attention's forward here: same outputs as the
    kernel called directly; the gradients (from this forward's out and lse) match the reference; =0 sends it to the
    sm_80 kernel, which agrees within rounding."""
    monkeypatch.setenv(hopper.SWITCH_ENV, "1")
    dtype = DTYPES[-1]
    lengths = [9, 30, 1]
    cu = cu_seqlens_of(lengths, device)
    q, k, v = random_qkv(40, 4, 2, 64, dtype, device, seed=13)
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(5)).to(device=device, dtype=dtype)
    got = run(q, k, v, dout, cu_seqlens=cu, max_seqlen=30)
    assert len(counted_hopper_calls) == 1
    direct = hopper.forward(q, k, v, cu, 30, True, 64 ** -0.5)
    assert torch.equal(got[0], direct[0]) and torch.equal(got[1], direct[1])
    ref = run_reference(q, k, v, dout, torch.float64, cu_seqlens=cu)
    plain = run_reference(q, k, v, dout, dtype, cu_seqlens=cu)
    for name, g, r, p in zip(("out", "lse", "dq", "dk", "dv"), got, ref, plain):
        assert_close_rule(f"dispatched {name}", g, r, p, atol=1e-5)

    batched = run(q[:36].view(2, 18, 4, 64), k[:36].view(2, 18, 2, 64), v[:36].view(2, 18, 2, 64),
                  dout[:36].view(2, 18, 4, 64))  # the (B, S, H, D) layout is the packed case
    assert len(counted_hopper_calls) == 3  # the direct call above counts too
    packed = hopper.forward(q[:36], k[:36], v[:36], cu_seqlens_of([18, 18], device), 18, True, 64 ** -0.5)
    assert torch.equal(batched[0].reshape(36, 4, 64), packed[0])

    monkeypatch.setenv(hopper.SWITCH_ENV, "0")
    sm80 = run(q, k, v, dout, cu_seqlens=cu, max_seqlen=30)
    assert len(counted_hopper_calls) == 4
    for name, a, b in zip(("out", "lse"), got, sm80):
        assert max_abs_err(a, b) <= 2e-3 * max(1.0, b.abs().max().item()), name


@pytest.mark.gpu
@pytest.mark.skipif(not ON_HOPPER, reason="needs an sm_90 GPU (H100/H200)")
@pytest.mark.parametrize("causal", [True, False])
def test_default_dispatch_on_hopper_at_a_training_shape(device, causal, counted_hopper_calls, counted_dkdv_calls):
    """On the card (the switch at its sm_90 default, on): flash_attention takes the Hopper forward and dK/dV kernels
    at a Seed-Coder training shape (8K tokens of packed documents, GQA 4:1, d128, bf16) and meets the 2x rule in every output."""
    lengths = [3000, 1, 2047, 3144]
    cu = cu_seqlens_of(lengths, device)
    q, k, v = random_qkv(int(cu[-1]), 32, 8, 128, torch.bfloat16, device, seed=21)
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(8)).to(device=device, dtype=torch.bfloat16)
    got = run(q, k, v, dout, causal=causal, cu_seqlens=cu, max_seqlen=max(lengths))
    assert len(counted_hopper_calls) == 1 and len(counted_dkdv_calls) == 1
    ref = run_reference(q, k, v, dout, torch.float64, causal=causal, cu_seqlens=cu)
    plain = run_reference(q, k, v, dout, torch.bfloat16, causal=causal, cu_seqlens=cu)
    for name, g, r, p in zip(("out", "lse", "dq", "dk", "dv"), got, ref, plain):
        assert_close_rule(f"sm_90 {name}", g, r, p, atol=1e-5)


def test_layouts_tma_cannot_read_fall_back_to_the_sm80_kernel(device, monkeypatch, counted_hopper_calls):
    """A head dim that is not 64/128 or heads that are not contiguous in a token row take the sm_80 kernel even
    with the switch on, and still compute the right thing."""
    monkeypatch.setenv(hopper.SWITCH_ENV, "1")
    dtype = DTYPES[-1]
    cu = cu_seqlens_of([5, 12], device)
    q, k, v = random_qkv(17, 2, 1, 32, dtype, device, seed=1)
    assert not hopper.supports(q, k, v)
    out = flash_attention(q, k, v, cu_seqlens=cu)
    assert not counted_hopper_calls
    ref = flash_attention_reference(q, k, v, cu_seqlens=cu, compute_dtype=torch.float64)
    assert max_abs_err(out, ref) < 1e-2
    qt = random_qkv(17, 64, 1, 2, dtype, device, seed=2)[0].transpose(1, 2)  # (T, 2, 64) with head stride 1
    kt, vt = qt[:, :1].contiguous(), qt[:, 1:].contiguous()
    assert qt.stride(1) == 1 and not hopper.supports(qt, kt, vt)
    with pytest.raises(ValueError, match="is not a TMA layout"):
        hopper.forward(qt, kt, vt, cu, 12, True, 0.125)


def test_the_switch_and_the_capability_choose_the_path(monkeypatch):
    monkeypatch.delenv(hopper.SWITCH_ENV, raising=False)
    capability = {"value": (9, 0)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability["value"])
    cuda = torch.device("cuda", 0)
    assert hopper.enabled(cuda)
    capability["value"] = (8, 0)
    assert not hopper.enabled(cuda)
    capability["value"] = (10, 0)  # Blackwell: wgmma and this kernel's tuning are Hopper's
    assert not hopper.enabled(cuda)
    capability["value"] = (9, 0)
    monkeypatch.setenv(hopper.SWITCH_ENV, "0")
    assert not hopper.enabled(cuda)
    assert not hopper.enabled(torch.device("cpu"))  # the CPU keeps the sm_80 kernel unless forced
    monkeypatch.setenv(hopper.SWITCH_ENV, "1")
    assert hopper.enabled(torch.device("cpu")) == (not HAS_CUDA)  # forced: the interpreter runs it


def test_the_benchmarks_sm80_peer_switches_forward_and_backward(device, counted_dkdv_calls, counted_hopper_calls):
    """benchmarks.kernels' 'seedcoder-sm80' row turns the Hopper path off in its forward and in its backward (which
    the bwd mode times alone, outside the forward's call), and back on after: 'seedcoder' keeps the Hopper path."""
    dtype = DTYPES[-1]
    cu = cu_seqlens_of([9, 23], device)
    q, k, v = (t.requires_grad_() for t in random_qkv(32, 4, 2, 64, dtype, device, seed=17))

    def attention(q, k, v):
        return flash_attention(q, k, v, cu_seqlens=cu, max_seqlen=23)

    sm80 = kernels.switched(attention, kernels.EnvSwitch(hopper.SWITCH_ENV, "0"))
    out = sm80(q, k, v)
    torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    assert counted_hopper_calls == [] and counted_dkdv_calls == []
    assert os.environ[hopper.SWITCH_ENV] == "1"  # restored after the backward
    out = attention(q, k, v)
    torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    assert len(counted_hopper_calls) == 1 and counted_dkdv_calls == [True]
