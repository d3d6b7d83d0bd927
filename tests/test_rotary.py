"""Rotary (kernels/rotary.py): forward and backward vs a float64 HF-formula reference under the 2x plain-PyTorch
rule (the baseline is HF's apply_rotary_pos_emb at the input dtype with HF's fp32 tables cast to that dtype), odd
shapes and GQA head counts, both thetas, explicit / default / int32 positions, packed documents, strided
(HF-layout) inputs, caller-given cos/sin tables (incl. scaled and non-duplicated ones), the in-place path with
autograd, fidelity to HF's fp32 angles at long positions, argument errors, torch.compile and the backends."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from numerics import assert_close_rule, seeded

from seedcoder.kernels import _common
from seedcoder.kernels import rotary as rotary_module
from seedcoder.kernels.rotary import apply_rotary, rotary_cos_sin, rotary_reference

HAS_CUDA = torch.cuda.is_available()
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
ATOL = {torch.float32: 1e-6, torch.bfloat16: 1e-6, torch.float16: 1e-6}


# ----------------------------------------------------------------------------------------------- helpers
def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def hf_apply(x, cos, sin):
    """HF's apply_rotary_pos_emb for x (B, S, H, D) / (T, H, D) and tables (B|1, S, D) / (T, D): unsqueeze the
    head dim."""
    return x * cos.unsqueeze(-2) + rotate_half(x) * sin.unsqueeze(-2)


def tables_fp64(position_ids, theta, head_dim):
    """The exact tables: angles pos * theta^(-2i/D) in float64."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angle = position_ids.double()[..., None] * inv_freq.to(position_ids.device)
    emb = torch.cat((angle, angle), dim=-1)
    return emb.cos(), emb.sin()


def default_positions(q):
    seqlen = q.shape[0] if q.dim() == 3 else q.shape[1]
    pos = torch.arange(seqlen, device=q.device)
    return pos if q.dim() == 3 else pos.unsqueeze(0)


def fwd_bwd(fn, q, k, dq_out, dk_out, cast=None):
    """([q_out, k_out], [dq, dk]) of fn(q, k) with leaves cast to `cast` (None: as given)."""
    cast = cast or q.dtype
    q_leaf = q.detach().to(cast).requires_grad_()
    k_leaf = k.detach().to(cast).requires_grad_()
    q_out, k_out = fn(q_leaf, k_leaf)
    torch.autograd.backward((q_out, k_out), (dq_out.to(cast), dk_out.to(cast)))
    return [q_out.detach(), k_out.detach()], [q_leaf.grad, k_leaf.grad]


def check_rule(name, q, k, kernel_fn, ref64_fn, baseline_fn, seed=0, atol=None):
    """Forward outputs and input grads of kernel_fn vs the float64 reference, 2x the plain-PyTorch error."""
    g = seeded(seed)
    dq_out = torch.randn(q.shape, generator=g).to(q.dtype).to(q.device)
    dk_out = torch.randn(k.shape, generator=g).to(k.dtype).to(k.device)
    outs, grads = fwd_bwd(kernel_fn, q, k, dq_out, dk_out)
    ref_outs, ref_grads = fwd_bwd(ref64_fn, q, k, dq_out, dk_out, cast=torch.float64)
    base_outs, base_grads = fwd_bwd(baseline_fn, q, k, dq_out, dk_out)
    atol = ATOL[q.dtype] if atol is None else atol
    for label, out, ref, base in zip(["q_out", "k_out", "dq", "dk"], outs + grads, ref_outs + ref_grads,
                                     base_outs + base_grads):
        assert out.dtype == q.dtype, f"{name} {label}: dtype {out.dtype}"
        assert_close_rule(f"{name} {label}", out, ref, base, atol=atol)


def theta_fns(position_ids, theta, head_dim, **kwargs):
    """(kernel, float64 reference, plain-PyTorch baseline) functions for the theta path."""
    def kernel(q, k):
        return apply_rotary(q, k, position_ids, theta=theta, **kwargs)

    def ref64(q, k):
        pos = default_positions(q) if position_ids is None else position_ids
        cos, sin = tables_fp64(pos, theta, head_dim)
        return hf_apply(q, cos, sin), hf_apply(k, cos, sin)

    def baseline(q, k):
        pos = default_positions(q) if position_ids is None else position_ids
        cos, sin = rotary_cos_sin(pos, theta, head_dim)  # HF's fp32 tables, cast to the input dtype as HF does
        return hf_apply(q, cos.to(q.dtype), sin.to(q.dtype)), hf_apply(k, cos.to(q.dtype), sin.to(q.dtype))

    return kernel, ref64, baseline


def table_fns(cos, sin, **kwargs):
    """(kernel, float64 reference, baseline) for caller-given tables."""
    def kernel(q, k):
        return apply_rotary(q, k, cos=cos, sin=sin, **kwargs)

    def ref64(q, k):
        return hf_apply(q, cos.double(), sin.double()), hf_apply(k, cos.double(), sin.double())

    def baseline(q, k):
        return hf_apply(q, cos.to(q.dtype), sin.to(q.dtype)), hf_apply(k, cos.to(q.dtype), sin.to(q.dtype))

    return kernel, ref64, baseline


def close_tolerance(dtype):
    """Two computations of the same fp32 math may differ by an ulp of the result (FMA contraction, sin/cos)."""
    return {"atol": 2e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-5, "rtol": 1.6e-2}


def make_qk(lead, q_heads, k_heads, head_dim, dtype, device, seed=0):
    g = seeded(seed)
    q = torch.randn(*lead, q_heads, head_dim, generator=g).to(dtype).to(device)
    k = torch.randn(*lead, k_heads, head_dim, generator=g).to(dtype).to(device)
    return q, k


# ----------------------------------------------------------------------------------------------- numerics
SHAPES = [  # (B, S, Hq, Hkv, D)
    (2, 17, 4, 1, 64),
    (1, 113, 8, 4, 128),
    (3, 17, 1, 1, 96),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}_S{}_Hq{}_Hkv{}_D{}".format(*s))
@pytest.mark.parametrize("theta", [1e4, 5e5])
def test_forward_backward_vs_fp64(shape, dtype, theta, device):
    batch, seqlen, q_heads, k_heads, head_dim = shape
    q, k = make_qk((batch, seqlen), q_heads, k_heads, head_dim, dtype, device, seed=seqlen + head_dim)
    # rows start at different offsets (as in a chunk of a long document), up to ~5000
    g = seeded(7)
    offsets = torch.randint(0, 5000, (batch, 1), generator=g)
    position_ids = (offsets + torch.arange(seqlen)).to(device)
    check_rule(f"rotary {shape} {dtype} theta={theta}", q, k, *theta_fns(position_ids, theta, head_dim))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_default_positions(dtype, device):
    q, k = make_qk((2, 113), 4, 2, 64, dtype, device, seed=1)
    check_rule("default positions", q, k, *theta_fns(None, 5e5, 64))


def test_position_id_forms_agree(device):
    """None, int64, int32 and a batch-broadcast (stride 0) position tensor give identical results."""
    q, k = make_qk((3, 17), 4, 2, 96, torch.bfloat16, device, seed=2)
    expected = apply_rotary(q, k)
    arange = torch.arange(17, device=device)
    for pos in (arange.repeat(3, 1), arange.int().repeat(3, 1), arange.unsqueeze(0), arange.expand(3, 17)):
        got = apply_rotary(q, k, pos)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1]), f"positions {pos.dtype} {pos.stride()}"


def test_theta_path_matches_hf_fp32_angles_at_long_positions(device):
    """The in-kernel angles are HF's fp32 ones: at positions ~32K a differently rounded inv_freq or angle would be
    off by ~1e-3 rad (the fp32 ulp of the angle) against HF, far above the few-ulp cos/sin differences allowed."""
    q, k = make_qk((2, 64), 4, 4, 128, torch.float32, device, seed=3)
    position_ids = (torch.arange(64) + torch.tensor([[32_000], [131_000]])).to(device)
    out = apply_rotary(q, k, position_ids, theta=5e5)
    hf = rotary_reference(q, k, position_ids, theta=5e5)  # HF's fp32 tables, fp32 math
    exact_q = hf_apply(q.double(), *tables_fp64(position_ids, 5e5, 128))
    for got, ref in zip(out, hf):
        assert (got - ref).abs().max().item() < 2e-5
    assert (hf[0].double() - exact_q).abs().max().item() > 1e-4  # the test can tell HF's fp32 angles from exact ones


def test_reference_tables_match_transformers():
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = transformers.LlamaConfig(hidden_size=256, num_attention_heads=2, rope_theta=5e5, max_position_embeddings=4096)
    if getattr(config, "rope_parameters", None) is not None:
        config.rope_parameters["rope_theta"] = 5e5
    rope = LlamaRotaryEmbedding(config)
    position_ids = torch.tensor([[0, 1, 2, 3000, 4095], [7, 9, 11, 13, 2000]])
    cos_hf, sin_hf = rope(torch.zeros(1, dtype=torch.float32), position_ids)
    cos, sin = rotary_cos_sin(position_ids, 5e5, 128)
    assert torch.equal(cos, cos_hf) and torch.equal(sin, sin_hf)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_packed_documents_restart_at_zero(dtype, device):
    """Packed (T, H, D) with positions restarting per document equals running each document on its own."""
    lengths = [5, 17, 1, 30]
    q, k = make_qk((sum(lengths),), 4, 2, 64, dtype, device, seed=4)
    position_ids = torch.cat([torch.arange(n) for n in lengths]).to(device)
    q_out, k_out = apply_rotary(q, k, position_ids, theta=1e4)
    start = 0
    for n in lengths:
        doc_q, doc_k = apply_rotary(q[start:start + n].unsqueeze(0), k[start:start + n].unsqueeze(0), theta=1e4)
        assert torch.equal(q_out[start:start + n], doc_q[0]) and torch.equal(k_out[start:start + n], doc_k[0])
        start += n
    check_rule("packed", q, k, *theta_fns(position_ids, 1e4, 64))


def test_strided_hf_layout_inputs(device):
    """q as the transposed view of an HF (B, H, S, D) tensor and k as a head slice of a fused qkv projection: no
    copy, same results (and grads) as contiguous inputs; non-contiguous incoming grads work too."""
    batch, seqlen, q_heads, k_heads, head_dim = 2, 17, 4, 2, 128
    g = seeded(5)
    q_hf = torch.randn(batch, q_heads, seqlen, head_dim, generator=g).to(torch.bfloat16).to(device)
    qkv = torch.randn(batch, seqlen, q_heads + 2 * k_heads, head_dim, generator=g).to(torch.bfloat16).to(device)
    q, k = q_hf.transpose(1, 2), qkv[:, :, q_heads:q_heads + k_heads]
    assert not q.is_contiguous() and not k.is_contiguous()
    pos = torch.arange(seqlen, device=device).repeat(batch, 1) * 3
    dq_out = torch.randn(batch, q_heads, seqlen, head_dim, generator=g).to(torch.bfloat16).to(device).transpose(1, 2)
    dk_out = torch.randn(batch, seqlen, k_heads, head_dim, generator=g).to(torch.bfloat16).to(device)
    fn = lambda a, b: apply_rotary(a, b, pos, theta=1e4)
    strided = fwd_bwd(fn, q, k, dq_out, dk_out)
    dense = fwd_bwd(fn, q.contiguous(), k.contiguous(), dq_out.contiguous(), dk_out)
    for a, b in zip(strided[0] + strided[1], dense[0] + dense[1]):
        assert torch.equal(a, b)
    check_rule("strided", q, k, *theta_fns(pos, 1e4, head_dim))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cos_sin_tables(dtype, device):
    """HF's tables (fp32 and cast to the input dtype, per row and batch-broadcast) give HF's results."""
    batch, seqlen, head_dim = 2, 41, 96
    q, k = make_qk((batch, seqlen), 4, 1, head_dim, dtype, device, seed=6)
    position_ids = (torch.arange(seqlen) + torch.tensor([[0], [1000]])).to(device)
    cos, sin = rotary_cos_sin(position_ids, 5e5, head_dim)
    check_rule("tables fp32", q, k, *table_fns(cos, sin))
    if dtype != torch.float32:
        check_rule("tables in dtype", q, k, *table_fns(cos.to(dtype), sin.to(dtype)))
    cos1, sin1 = rotary_cos_sin(position_ids[:1], 5e5, head_dim)
    check_rule("tables batch-broadcast", q, k, *table_fns(cos1, sin1))
    # the table path and the theta path agree (up to cos/sin rounding: at most an ulp of the output)
    from_theta = apply_rotary(q, k, position_ids, theta=5e5)
    from_tables = apply_rotary(q, k, cos=cos, sin=sin)
    for a, b in zip(from_theta, from_tables):
        torch.testing.assert_close(a, b, **close_tolerance(dtype))


def test_scaled_and_non_duplicated_tables(device):
    """Any table works as in HF's formula: Llama-3.1-style rescaled frequencies with an attention factor, and
    tables whose halves differ (the backward then is the transpose, not just sin negated)."""
    seqlen, head_dim = 17, 64
    q, k = make_qk((2, seqlen), 4, 2, head_dim, torch.float32, device, seed=8)
    inv_freq = 1.0 / (5e5 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    inv_freq = torch.where(torch.arange(head_dim // 2) > 20, inv_freq / 8, inv_freq)  # low frequencies scaled
    angle = torch.arange(seqlen).float()[None, :, None] * inv_freq
    emb = torch.cat((angle, angle), dim=-1)
    cos, sin = (emb.cos() * 1.1).to(device), (emb.sin() * 1.1).to(device)
    check_rule("scaled tables", q, k, *table_fns(cos, sin))
    g = seeded(9)
    cos_r = torch.randn(2, seqlen, head_dim, generator=g).to(device)
    sin_r = torch.randn(2, seqlen, head_dim, generator=g).to(device)
    check_rule("non-duplicated tables", q, k, *table_fns(cos_r, sin_r), atol=1e-5)
    q16, k16 = q.to(torch.bfloat16), k.to(torch.bfloat16)
    check_rule("non-duplicated tables bf16", q16, k16, *table_fns(cos_r, sin_r))


def test_table_with_packed_layout(device):
    lengths = [9, 4]
    q, k = make_qk((sum(lengths),), 2, 2, 64, torch.bfloat16, device, seed=10)
    position_ids = torch.cat([torch.arange(n) for n in lengths]).to(device)
    cos, sin = rotary_cos_sin(position_ids, 1e4, 64)  # (T, D)
    expected = apply_rotary(q, k, position_ids, theta=1e4)
    for c, s in ((cos, sin), (cos.unsqueeze(0), sin.unsqueeze(0))):
        got = apply_rotary(q, k, cos=c, sin=s)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, **close_tolerance(torch.bfloat16))
    check_rule("packed tables", q, k, *table_fns(cos, sin))


# ----------------------------------------------------------------------------------------------- in place
def test_inplace_without_grad(device):
    q, k = make_qk((2, 17), 4, 2, 96, torch.bfloat16, device, seed=11)
    pos = torch.arange(17, device=device).repeat(2, 1) + 100
    expected = apply_rotary(q, k, pos)
    q_hf = q.transpose(1, 2).contiguous().transpose(1, 2)  # strided, as HF's layout
    for q_in in (q.clone(), q_hf):
        k_in = k.clone()
        q_ret, k_ret = apply_rotary(q_in, k_in, pos, inplace=True)
        assert q_ret is q_in and k_ret is k_in
        assert torch.equal(q_in, expected[0]) and torch.equal(k_in, expected[1])


@pytest.mark.parametrize("use_tables", [False, True])
def test_inplace_autograd_on_projection_views(use_tables, device):
    """q and k as views of a projection output, rotated in place: same values and grads as out of place."""
    batch, seqlen, q_heads, k_heads, head_dim, hidden = 2, 17, 4, 2, 64, 32
    g = seeded(12)
    x = torch.randn(batch, seqlen, hidden, generator=g).to(device)
    w = (torch.randn((q_heads + k_heads) * head_dim, hidden, generator=g) / hidden ** 0.5).to(device)
    dq_out = torch.randn(batch, seqlen, q_heads, head_dim, generator=g).to(device)
    dk_out = torch.randn(batch, seqlen, k_heads, head_dim, generator=g).to(device)
    pos = (torch.arange(seqlen) + torch.tensor([[3], [50]])).to(device)
    kwargs = dict(zip(("cos", "sin"), rotary_cos_sin(pos, 1e4, head_dim))) if use_tables else {"position_ids": pos}

    def run(inplace):
        x_leaf, w_leaf = x.clone().requires_grad_(), w.clone().requires_grad_()
        qk = (x_leaf @ w_leaf.t()).view(batch, seqlen, q_heads + k_heads, head_dim)
        q, k = qk[:, :, :q_heads], qk[:, :, q_heads:]
        q_out, k_out = apply_rotary(q, k, theta=1e4, inplace=inplace, **kwargs)
        if inplace:
            assert q_out is q and k_out is k
        torch.autograd.backward((q_out, k_out), (dq_out, dk_out))
        return [q_out.detach(), k_out.detach(), x_leaf.grad, w_leaf.grad]

    for a, b in zip(run(True), run(False)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("leaf", ["q", "k"])
def test_inplace_on_leaf_requiring_grad_raises_before_mutating(leaf, device):
    q, k = make_qk((1, 5), 2, 2, 64, torch.float32, device, seed=13)
    (q if leaf == "q" else k).requires_grad_()
    q_before, k_before = q.detach().clone(), k.detach().clone()
    with pytest.raises(RuntimeError, match=f"{leaf} is a leaf tensor that requires grad"):
        apply_rotary(q, k, inplace=True)
    assert torch.equal(q.detach(), q_before) and torch.equal(k.detach(), k_before)


# ----------------------------------------------------------------------------------------------- errors
def _bad_cases():
    f32, bf16 = torch.float32, torch.bfloat16
    q = lambda *s, dtype=f32: torch.randn(*s).to(dtype)
    ok_q, ok_k = q(2, 5, 4, 64), q(2, 5, 1, 64)
    pos = torch.arange(5).repeat(2, 1)
    cos, sin = rotary_cos_sin(pos, 1e4, 64)
    return [
        ("odd D", lambda: apply_rotary(q(2, 5, 4, 63), q(2, 5, 1, 63)), ValueError, "head dim must be even"),
        ("D > 256", lambda: apply_rotary(q(1, 2, 1, 258), q(1, 2, 1, 258)), ValueError, "exceeds the supported maximum"),
        ("k head dim", lambda: apply_rotary(ok_q, q(2, 5, 1, 32)), ValueError, "k: head dim"),
        ("B,S mismatch", lambda: apply_rotary(ok_q, q(2, 6, 1, 64)), ValueError, "must agree on the leading dims"),
        ("packed vs batched", lambda: apply_rotary(ok_q, q(10, 1, 64)), ValueError, "must agree on the leading dims"),
        ("2-D q", lambda: apply_rotary(q(5, 64), q(5, 64)), ValueError, "q: expected 3 or 4 dimensions"),
        ("not a tensor", lambda: apply_rotary(ok_q.tolist(), ok_k), TypeError, "q: expected a torch.Tensor"),
        ("int q", lambda: apply_rotary(ok_q.int(), ok_k.int()), TypeError, "q: dtype int32 is not supported"),
        ("q/k dtype", lambda: apply_rotary(ok_q.to(bf16), ok_k), TypeError, "dtype mismatch"),
        ("last dim strided", lambda: apply_rotary(q(2, 5, 4, 128)[..., ::2], ok_k), ValueError,
         "q: the last dimension must be contiguous"),
        ("float position_ids", lambda: apply_rotary(ok_q, ok_k, pos.float()), TypeError, "position_ids: dtype float32"),
        ("position_ids seq", lambda: apply_rotary(ok_q, ok_k, torch.arange(6).repeat(2, 1)), ValueError,
         r"position_ids: shape \(2, 6\) does not match"),
        ("position_ids batch", lambda: apply_rotary(ok_q, ok_k, torch.arange(5).repeat(3, 1)), ValueError,
         "position_ids: shape"),
        ("packed position_ids 2-D", lambda: apply_rotary(q(5, 4, 64), q(5, 1, 64), torch.arange(5)[None]), ValueError,
         "position_ids: shape"),
        ("cos and position_ids", lambda: apply_rotary(ok_q, ok_k, pos, cos=cos, sin=sin), ValueError,
         "either position_ids .* or cos/sin tables, not both"),
        ("cos without sin", lambda: apply_rotary(ok_q, ok_k, cos=cos), ValueError, "cos and sin tables must be given together"),
        ("cos shape", lambda: apply_rotary(ok_q, ok_k, cos=cos[..., :32], sin=sin[..., :32]), ValueError, "cos: shape"),
        ("cos/sin shapes differ", lambda: apply_rotary(ok_q, ok_k, cos=cos[:1], sin=sin), ValueError,
         "cos and sin must have the same shape"),
        ("cos dtype", lambda: apply_rotary(ok_q.to(bf16), ok_k.to(bf16), cos=cos.half(), sin=sin.half()), TypeError,
         "cos: dtype float16 is not supported"),
        ("backend name", lambda: apply_rotary(ok_q, ok_k, backend="numpy"), ValueError, "backend must be one of"),
        ("cuda backend, cpu tensors", lambda: apply_rotary(ok_q, ok_k, backend="cuda"), ValueError,
         "backend='cuda' needs CUDA tensors"),
    ]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_bad_arguments_raise_clear_errors(case):
    _, call, exc, match = case
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.skipif(importlib.util.find_spec("seedcoder._cuda") is not None, reason="the CUDA extension is built here")
def test_cuda_backend_without_extension_says_so():
    with pytest.raises(RuntimeError, match="not built"):
        rotary_module.load_cuda_ops()


def test_outputs_are_poisoned_under_tests():
    """conftest turns poisoning on, so every comparison above would see NaN in an element the kernel skipped."""
    assert _common._POISON
    out = _common.new_empty((3,), dtype=torch.bfloat16, device=torch.device("cpu"))
    assert torch.isnan(out).all()


# ----------------------------------------------------------------------------------------------- dispatch
def test_torch_backend_and_cpu_dispatch(monkeypatch):
    """backend='torch' is the reference; plain CPU (no interpreter) uses it too, without launching a kernel."""
    q, k = make_qk((2, 17), 4, 2, 64, torch.bfloat16, torch.device("cpu"), seed=14)
    pos = torch.arange(17).repeat(2, 1)
    expected = rotary_reference(q, k, pos, theta=1e4)
    got = apply_rotary(q, k, pos, theta=1e4, backend="torch")
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])

    def no_launch(*args, **kwargs):
        raise AssertionError("the kernel must not run on plain CPU tensors")

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(rotary_module, "_launch", no_launch)
    got = apply_rotary(q, k, pos, theta=1e4)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    q2, k2 = q.clone(), k.clone()
    assert apply_rotary(q2, k2, pos, theta=1e4, inplace=True)[0] is q2
    assert torch.equal(q2, expected[0]) and torch.equal(k2, expected[1])


def test_reference_vs_fp64():
    q, k = make_qk((2, 17), 4, 2, 64, torch.bfloat16, torch.device("cpu"), seed=15)
    pos = torch.arange(17).repeat(2, 1) + 7
    fns = theta_fns(pos, 5e5, 64)
    check_rule("reference", q, k, lambda a, b: rotary_reference(a, b, pos, theta=5e5), fns[1], fns[2])


# ----------------------------------------------------------------------------------------------- compile
def _qk_block(x, w, pos, inplace, backend="triton"):
    """A slice of an attention block: projection, q/k views, RoPE, a loss."""
    qk = (x @ w.t()).view(x.shape[0], x.shape[1], 6, 64)
    q, k = qk[:, :, :4], qk[:, :, 4:]
    q_out, k_out = apply_rotary(q, k, pos, theta=5e5, inplace=inplace, backend=backend)
    return (q_out.float().square().sum() + (k_out.float() * 3).sum()) / 1000


@pytest.mark.parametrize("inplace", [False, True])
def test_torch_compile_fullgraph_aot_eager(inplace, device):
    torch._dynamo.reset()
    g = seeded(16)
    x = torch.randn(2, 17, 32, generator=g).to(device).requires_grad_()
    w = (torch.randn(6 * 64, 32, generator=g) / 6).to(device).requires_grad_()
    pos = (torch.arange(17) + torch.tensor([[0], [9]])).to(device)
    expected = _qk_block(x, w, pos, inplace)
    expected_grads = torch.autograd.grad(expected, (x, w))
    compiled = torch.compile(_qk_block, fullgraph=True, backend="aot_eager")
    got = compiled(x, w, pos, inplace)
    got_grads = torch.autograd.grad(got, (x, w))
    torch.testing.assert_close(got, expected)
    for a, b in zip(got_grads, expected_grads):
        torch.testing.assert_close(a, b)


def test_torch_compile_fullgraph_inductor(device):
    torch._dynamo.reset()
    g = seeded(17)
    x = torch.randn(2, 17, 32, generator=g).to(device).requires_grad_()
    w = (torch.randn(6 * 64, 32, generator=g) / 6).to(device).requires_grad_()
    pos = torch.arange(17, device=device).repeat(2, 1)
    expected = _qk_block(x, w, pos, False)
    expected_grads = torch.autograd.grad(expected, (x, w))
    compiled = torch.compile(_qk_block, fullgraph=True, backend="inductor")
    got = compiled(x, w, pos, False)
    got_grads = torch.autograd.grad(got, (x, w))
    torch.testing.assert_close(got, expected)
    for a, b in zip(got_grads, expected_grads):
        torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------------------------- CUDA C++
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_backend_matches_rule_and_triton(dtype):
    device = torch.device("cuda")
    for batch, seqlen, q_heads, k_heads, head_dim in [(2, 113, 8, 4, 128), (3, 17, 1, 1, 96), (1, 300, 32, 8, 128)]:
        q, k = make_qk((batch, seqlen), q_heads, k_heads, head_dim, dtype, device, seed=18)
        pos = (torch.arange(seqlen) + torch.randint(0, 30_000, (batch, 1), generator=seeded(19))).to(device)
        for pos_form in (pos, pos.int(), None):
            fns = theta_fns(pos_form, 5e5, head_dim, backend="cuda")
            check_rule(f"cuda {dtype} D={head_dim}", q, k, *fns)
            cuda_out = apply_rotary(q, k, pos_form, backend="cuda")
            triton_out = apply_rotary(q, k, pos_form)
            for a, b in zip(cuda_out, triton_out):  # same fp32 math; only FMA contraction and sin/cos ulps differ
                torch.testing.assert_close(a, b, **close_tolerance(dtype))
        cos, sin = rotary_cos_sin(pos, 5e5, head_dim)
        check_rule(f"cuda tables {dtype}", q, k, *table_fns(cos, sin, backend="cuda"))
        check_rule(f"cuda tables in dtype {dtype}", q, k, *table_fns(cos.to(dtype), sin.to(dtype), backend="cuda"))


@pytest.mark.gpu
def test_cuda_backend_layouts_inplace_and_compile():
    device = torch.device("cuda")
    # packed documents
    lengths = [5, 17, 1, 30]
    q, k = make_qk((sum(lengths),), 4, 2, 64, torch.bfloat16, device, seed=20)
    position_ids = torch.cat([torch.arange(n) for n in lengths]).to(device)
    check_rule("cuda packed", q, k, *theta_fns(position_ids, 1e4, 64, backend="cuda"))
    # strided HF layout (unaligned for vector loads too: a head dim slice offset)
    g = seeded(21)
    q_hf = torch.randn(2, 4, 17, 128, generator=g).to(torch.bfloat16).to(device)
    k_wide = torch.randn(2, 17, 3, 130, generator=g).to(torch.bfloat16).to(device)
    for q_s, k_s in ((q_hf.transpose(1, 2), k_wide[..., :128]), (q_hf.transpose(1, 2), k_wide[..., 1:129])):
        got = apply_rotary(q_s, k_s, backend="cuda")  # scalar loads (misaligned strides) vs 16-byte vectors
        want = apply_rotary(q_s.contiguous(), k_s.contiguous(), backend="cuda")
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, **close_tolerance(torch.bfloat16))
    # in place, with autograd on projection views
    x = torch.randn(2, 17, 32, generator=g).to(device).requires_grad_()
    w = (torch.randn(6 * 64, 32, generator=g) / 6).to(device).requires_grad_()
    pos = torch.arange(17, device=device).repeat(2, 1)
    outs = []
    for inplace in (False, True):
        loss = _qk_block(x, w, pos, inplace, backend="cuda")
        outs.append([loss, *torch.autograd.grad(loss, (x, w))])
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b)
    # torch.compile traces the CUDA ops (fake impls registered when the extension loads)
    torch._dynamo.reset()
    compiled = torch.compile(_qk_block, fullgraph=True, backend="aot_eager")
    loss = compiled(x, w, pos, True, backend="cuda")
    for a, b in zip([loss, *torch.autograd.grad(loss, (x, w))], outs[0]):
        torch.testing.assert_close(a, b)
