"""Flash attention against a float64 per-document math reference (FlashAttention's 2x rule), packed documents,
grouped-query heads, causal and not, the three gradients, determinism, torch.compile, bad input.

On CPU the kernels run in Triton's interpreter on small shapes in fp16/fp32 (bf16 tl.dot is wrong in the
interpreter); on a GPU the documents of the issue (1, 17, 113, 1023, 4097 tokens) run in bf16 and fp16.
"""

import pytest
import torch
from conftest import HAS_CUDA
from numerics import assert_close_rule, max_abs_err

from seedcoder.kernels.flash_attention import flash_attention, flash_attention_reference, flash_attention_reference_backward

DOC_LENGTHS = [1, 17, 113, 1023, 4097] if HAS_CUDA else [1, 17, 0, 50, 33]  # a 0-length document too
DTYPES = [torch.bfloat16, torch.float16] if HAS_CUDA else [torch.float16]


def cu_seqlens_of(lengths, device):
    bounds = [0]
    for n in lengths:
        bounds.append(bounds[-1] + n)
    return torch.tensor(bounds, dtype=torch.int32, device=device)


def random_qkv(total, n_heads, n_kv_heads, head_dim, dtype, device, seed, leading=()):
    g = torch.Generator().manual_seed(seed)
    def make(h):
        return torch.randn(*leading, total, h, head_dim, generator=g).to(device=device, dtype=dtype)
    return make(n_heads), make(n_kv_heads), make(n_kv_heads)


def run(q, k, v, dout, **kwargs):
    """(out, lse, dq, dk, dv) of flash_attention."""
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out, lse = flash_attention(*leaves, return_lse=True, **kwargs)
    grads = torch.autograd.grad(out, leaves, dout)
    return (out, lse, *grads)


def run_reference(q, k, v, dout, compute_dtype, **kwargs):
    leaves = [t.detach().to(compute_dtype).requires_grad_() for t in (q, k, v)]
    out, lse = flash_attention_reference(*leaves, return_lse=True, compute_dtype=compute_dtype, **kwargs)
    grads = torch.autograd.grad(out, leaves, dout.to(compute_dtype))
    return (out, lse, *grads)


CASES = [  # (causal, Hq, Hkv, D): GQA ratios 1, 4 and 8; head dims 64 and 128
    (True, 4, 4, 64), (True, 8, 1, 128), (False, 4, 1, 64), (False, 8, 8, 128),
] + ([(True, 8, 2, 64), (False, 8, 1, 64), (True, 4, 4, 128), (True, 32, 8, 128)] if HAS_CUDA else [])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal,n_heads,n_kv_heads,head_dim", CASES)
def test_packed_documents_match_reference(device, dtype, causal, n_heads, n_kv_heads, head_dim):
    cu = cu_seqlens_of(DOC_LENGTHS, device)
    total = int(cu[-1])
    q, k, v = random_qkv(total, n_heads, n_kv_heads, head_dim, dtype, device, seed=head_dim + n_heads)
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(device=device, dtype=dtype)
    kw = dict(causal=causal, cu_seqlens=cu)
    got = run(q, k, v, dout, max_seqlen=max(DOC_LENGTHS), **kw)
    ref = run_reference(q, k, v, dout, torch.float64, **kw)
    plain = run_reference(q, k, v, dout, dtype, **kw)  # the same math in plain PyTorch at the input dtype
    for name, g, r, p in zip(("out", "lse", "dq", "dk", "dv"), got, ref, plain):
        assert g.dtype == (torch.float32 if name == "lse" else dtype)
        assert_close_rule(name, g, r, p, atol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_fp32_inputs_are_exact(device, causal):
    """fp32 inputs take exact-fp32 dots: the kernel agrees with the float64 reference to fp32 round-off."""
    lengths = [7, 40, 1, 29]
    cu = cu_seqlens_of(lengths, device)
    q, k, v = random_qkv(int(cu[-1]), 4, 2, 32, torch.float32, device, seed=3)
    dout = torch.randn_like(q)
    got = run(q, k, v, dout, causal=causal, cu_seqlens=cu)  # max_seqlen computed from cu_seqlens
    ref = run_reference(q, k, v, dout, torch.float64, causal=causal, cu_seqlens=cu)
    for name, g, r in zip(("out", "lse", "dq", "dk", "dv"), got, ref):
        assert max_abs_err(g, r) < 2e-5, name


@pytest.mark.parametrize("head_dim", [96] + ([256] if HAS_CUDA else []))
def test_head_dims_that_are_not_a_power_of_two_or_wide(device, head_dim):
    """D = 96 pads its tile to 128 (forward and backward); D = 256 runs forward only."""
    dtype = DTYPES[0]
    cu = cu_seqlens_of([5, 38], device)
    q, k, v = random_qkv(43, 2, 1, head_dim, dtype, device, seed=head_dim)
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
    kw = dict(causal=True, cu_seqlens=cu)
    if head_dim <= 128:
        got, ref, plain = (run(q, k, v, dout, **kw), run_reference(q, k, v, dout, torch.float64, **kw),
                           run_reference(q, k, v, dout, dtype, **kw))
    else:
        got = flash_attention(q, k, v, return_lse=True, **kw)
        ref = flash_attention_reference(q, k, v, return_lse=True, compute_dtype=torch.float64, **kw)
        plain = flash_attention_reference(q, k, v, return_lse=True, compute_dtype=dtype, **kw)
        with pytest.raises(ValueError, match="backward supports head dims up to 128"):
            flash_attention(q.requires_grad_(), k, v, **kw)
    for name, g, r, p in zip(("out", "lse", "dq", "dk", "dv"), got, ref, plain):
        assert_close_rule(f"{name} D={head_dim}", g, r, p, atol=1e-5)


def test_packed_result_equals_each_document_alone(device):
    """Blocks start at each document's first token, so a packed document computes exactly what it computes
    alone: forward, lse and the (deterministic) gradients are bitwise equal."""
    dtype = DTYPES[-1]
    lengths = [3, 45, 1, 20] if not HAS_CUDA else [3, 450, 1, 2000, 129]
    cu = cu_seqlens_of(lengths, device)
    q, k, v = random_qkv(int(cu[-1]), 4, 2, 64, dtype, device, seed=11)
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(2)).to(device=device, dtype=dtype)
    packed = run(q, k, v, dout, cu_seqlens=cu, max_seqlen=max(lengths), deterministic=True)
    for i, n in enumerate(lengths):
        lo, hi = int(cu[i]), int(cu[i + 1])
        alone = run(q[lo:hi], k[lo:hi], v[lo:hi], dout[lo:hi], cu_seqlens=cu_seqlens_of([n], device), max_seqlen=n,
                    deterministic=True)
        for name, p, a in zip(("out", "lse", "dq", "dk", "dv"), packed, alone):
            part = p[:, lo:hi] if name == "lse" else p[lo:hi]
            assert torch.equal(part, a), f"document {i} ({n} tokens): {name} differs when packed"


def test_batched_layout_equals_packed(device):
    dtype = DTYPES[-1]
    batch, seqlen = 3, 37
    q, k, v = random_qkv(seqlen, 4, 2, 64, dtype, device, seed=5, leading=(batch,))
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(3)).to(device=device, dtype=dtype)
    out, lse, dq, dk, dv = run(q, k, v, dout, deterministic=True)
    assert out.shape == q.shape and lse.shape == (batch, 4, seqlen)
    flat = [t.reshape(batch * seqlen, *t.shape[2:]) for t in (q, k, v, dout)]
    p_out, p_lse, p_dq, p_dk, p_dv = run(*flat, cu_seqlens=cu_seqlens_of([seqlen] * batch, device), max_seqlen=seqlen,
                                         deterministic=True)
    assert torch.equal(out.reshape(p_out.shape), p_out)
    assert torch.equal(lse, p_lse.view(4, batch, seqlen).transpose(0, 1))
    for a, b in ((dq, p_dq), (dk, p_dk), (dv, p_dv)):
        assert torch.equal(a.reshape(b.shape), b)


def test_atomic_and_deterministic_backward_agree(device):
    dtype = DTYPES[-1]
    lengths = [31, 64, 9] if not HAS_CUDA else [310, 1024, 97, 3000]
    cu = cu_seqlens_of(lengths, device)
    q, k, v = random_qkv(int(cu[-1]), 8, 2, 64, dtype, device, seed=8)
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(4)).to(device=device, dtype=dtype)
    atomic = run(q, k, v, dout, cu_seqlens=cu, max_seqlen=max(lengths))
    deterministic = run(q, k, v, dout, cu_seqlens=cu, max_seqlen=max(lengths), deterministic=True)
    assert torch.equal(atomic[0], deterministic[0]) and torch.equal(atomic[3], deterministic[3])  # out, dk: same code
    ref = run_reference(q, k, v, dout, torch.float64, cu_seqlens=cu)
    scale = ref[2].abs().max().item()
    assert max_abs_err(atomic[2], deterministic[2]) <= 4e-3 * scale  # dq: fp32 sums in another order, one rounding


@pytest.mark.gpu
def test_deterministic_backward_is_bitwise_reproducible(device):
    lengths = [1, 17, 113, 1023, 4097, 512]
    cu = cu_seqlens_of(lengths, device)
    q, k, v = random_qkv(int(cu[-1]), 32, 8, 128, torch.bfloat16, device, seed=9)
    dout = torch.randn_like(q)
    first = run(q, k, v, dout, cu_seqlens=cu, max_seqlen=max(lengths), deterministic=True)
    for _ in range(3):
        again = run(q, k, v, dout, cu_seqlens=cu, max_seqlen=max(lengths), deterministic=True)
        for name, a, b in zip(("out", "lse", "dq", "dk", "dv"), first, again):
            assert torch.equal(a, b), f"{name} changed between identical deterministic runs"


def test_torch_compile_fullgraph_traces_the_custom_ops(device):
    dtype = DTYPES[-1]
    lengths = [5, 20]
    cu = cu_seqlens_of(lengths, device)
    q, k, v = random_qkv(25, 2, 1, 64, dtype, device, seed=12)

    def f(q, k, v):
        return (flash_attention(q, k, v, cu_seqlens=cu, max_seqlen=20).float() ** 2).sum()

    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager" if not HAS_CUDA else "inductor")
    loss = compiled(*leaves)
    loss.backward()
    eager = [t.clone().requires_grad_() for t in (q, k, v)]
    f(*eager).backward()
    assert torch.equal(loss, f(q, k, v))
    for a, b in zip(leaves, eager):
        assert torch.allclose(a.grad, b.grad, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("packed", [True, False])
def test_closed_form_reference_backward_equals_autograd(causal, packed):
    """The CPU backward (closed form: it runs inside the backward custom op, where autograd records nothing)
    equals autograd through the reference, in float64: GQA, an empty document, a custom softmax scale."""
    if packed:
        cu = cu_seqlens_of([6, 0, 1, 13], "cpu")
        q, k, v = random_qkv(20, 6, 2, 8, torch.float64, "cpu", seed=30)
    else:
        cu = None
        q, k, v = random_qkv(9, 6, 2, 8, torch.float64, "cpu", seed=31, leading=(2,))
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(32), dtype=torch.float64)
    kw = dict(causal=causal, softmax_scale=0.4, cu_seqlens=cu, compute_dtype=torch.float64)
    _, _, *expected = run_reference(q, k, v, dout, torch.float64, **{n: a for n, a in kw.items() if n != "compute_dtype"})
    got = flash_attention_reference_backward(dout, q, k, v, **kw)
    for name, g, e in zip(("dq", "dk", "dv"), got, expected):
        assert g.shape == e.shape and g.dtype == torch.float64, name
        assert max_abs_err(g, e) < 1e-12 * max(1.0, e.abs().max().item()), name


def test_bad_inputs_get_clear_errors(device):
    q, k, v = random_qkv(10, 4, 2, 64, DTYPES[-1], device, seed=0)
    cu = cu_seqlens_of([4, 6], device)
    with pytest.raises(ValueError, match="multiple of the 3 kv heads"):
        flash_attention(q, k[:, :1].expand(10, 3, 64).contiguous(), v[:, :1].expand(10, 3, 64).contiguous(),
                        cu_seqlens=cu)
    with pytest.raises(TypeError, match="cu_seqlens: dtype int64"):
        flash_attention(q, k, v, cu_seqlens=cu.long())
    with pytest.raises(ValueError, match="expected 4 dimensions"):
        flash_attention(q, k, v)  # 3-D without cu_seqlens
    with pytest.raises(TypeError, match="share a dtype"):
        flash_attention(q, k.float(), v, cu_seqlens=cu)
    with pytest.raises(ValueError, match="head dim 512"):
        z = torch.zeros(10, 2, 512, dtype=q.dtype, device=device)
        flash_attention(z, z, z, cu_seqlens=cu)
    if not cu.is_cuda:  # value checks happen on the host only
        with pytest.raises(ValueError, match="must rise from 0 to the 10 tokens"):
            flash_attention(q, k, v, cu_seqlens=cu_seqlens_of([4, 5], device))
        with pytest.raises(ValueError, match="max_seqlen=3 is smaller"):
            flash_attention(q, k, v, cu_seqlens=cu, max_seqlen=3)


def test_model_attend_flash_equals_sdpa_on_packed_rows(device):
    """The model's attention with our kernel (what CUDA runs) equals its SDPA path on rows packed by the loader."""
    from seedcoder.model import attend, build_attention_mask

    batch, seqlen = 2, 40
    cu = cu_seqlens_of([7, 20, 13, 1, 39], device)  # documents never cross rows (the loader's rows of 40)
    q, k, v = random_qkv(seqlen, 4, 2, 32, torch.float32, device, seed=21, leading=(batch,))
    input_ids = torch.zeros(batch, seqlen, dtype=torch.long, device=device)
    mask = build_attention_mask(input_ids, position_ids=None, cu_seqlens=cu, max_seqlen=39)
    flash = attend(q, k, v, mask, backend="flash")
    sdpa = attend(q, k, v, mask, backend="sdpa")
    assert max_abs_err(flash, sdpa) < 1e-5
    plain = build_attention_mask(input_ids, position_ids=None, cu_seqlens=None, max_seqlen=None)
    assert max_abs_err(attend(q, k, v, plain, backend="flash"), attend(q, k, v, plain, backend="sdpa")) < 1e-5


@pytest.mark.gpu
def test_bf16_model_on_cuda_trains_through_flash_attention(monkeypatch):
    """A bf16 model on the GPU picks our kernel for packed rows; its loss and gradients agree with the same model
    forced onto SDPA (within bf16 noise)."""
    import seedcoder.model as model_module
    from seedcoder.model import Transformer, model_config

    model = Transformer(model_config("debug")).cuda().to(torch.bfloat16)
    model.init_weights(0)
    ids = torch.randint(0, model.cfg.vocab_size, (2, 64), device="cuda")
    cu = cu_seqlens_of([10, 30, 24, 64], "cuda")
    labels = torch.roll(ids, -1, dims=1)
    q = torch.zeros(1, 1, 1, model.cfg.head_dim, device="cuda", dtype=torch.bfloat16)
    assert model_module.attention_backend(q, model_module.AttentionMask(cu_seqlens=cu, max_seqlen=64, packed=True)) == "flash"

    def loss_and_grads():
        model.zero_grad()
        loss = model(ids, labels=labels, cu_seqlens=cu, max_seqlen=64)
        loss.backward()
        return loss.float(), [p.grad.float().clone() for p in model.parameters()]

    flash_loss, flash_grads = loss_and_grads()
    monkeypatch.setattr(model_module, "attention_backend", lambda *args, **kwargs: "sdpa")
    sdpa_loss, sdpa_grads = loss_and_grads()
    assert abs(flash_loss.item() - sdpa_loss.item()) < 2e-2
    for a, b in zip(flash_grads, sdpa_grads):
        assert (a - b).norm() <= 5e-2 * b.norm() + 1e-6
