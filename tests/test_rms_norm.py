"""RMSNorm (kernels/rms_norm.py): forward and all gradients vs a float64 reference under the 2x plain-PyTorch
rule, every path of the launch heuristic (single block, wide rows looping over column blocks, the persistent
backward with several rows per program), the fused residual, mixed weight dtypes, strided inputs, argument
errors, torch.compile, and the backends ("torch", "cuda")."""

from __future__ import annotations

import importlib
import os

import pytest
import torch
from numerics import assert_close_rule, seeded

from seedcoder.kernels import _common
from seedcoder.kernels.rms_norm import rms_norm, rms_norm_reference

# the module itself (seedcoder.kernels re-exports the function under the same name)
rms_norm_module = importlib.import_module("seedcoder.kernels.rms_norm")

HAS_CUDA = torch.cuda.is_available()


# ----------------------------------------------------------------------------------------------- helpers
def make_inputs(shape, dtype, weight_dtype, with_residual, device, seed):
    g = seeded(seed)
    n = shape[-1]
    x = torch.randn(shape, generator=g).to(dtype)
    weight = (1.0 + 0.3 * torch.randn(n, generator=g)).to(weight_dtype)
    residual = torch.randn(shape, generator=g).to(dtype) if with_residual else None
    dy = torch.randn(shape, generator=g).to(dtype)
    dres = torch.randn(shape, generator=g).to(dtype) if with_residual else None
    move = lambda t: None if t is None else t.to(device)
    return move(x), move(weight), move(residual), move(dy), move(dres)


def run_op(fn, x, weight, residual, dy, dres, eps, math_dtype=None):
    """Forward + backward of fn(x, weight, eps, residual) -> ([y, new_residual?], [dx, dweight, dresidual?]).
    math_dtype casts the leaves first (float64 reference / plain-PyTorch baseline); grads come back per leaf."""
    cast = (lambda t: t) if math_dtype is None else (lambda t: t.to(math_dtype))
    leaves = [cast(x).detach().requires_grad_(), cast(weight).detach().requires_grad_()]
    if residual is not None:
        leaves.append(cast(residual).detach().requires_grad_())
    out = fn(leaves[0], leaves[1], eps, leaves[2] if residual is not None else None)
    outs = list(out) if isinstance(out, tuple) else [out]
    grads_out = [cast(dy)] + ([cast(dres)] if residual is not None else [])
    grads = torch.autograd.grad(outs, leaves, grads_out)
    return [o.detach() for o in outs], list(grads)


def float64_math(x, weight, eps, residual=None):
    h = x if residual is None else x + residual
    y = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * weight
    return y if residual is None else (y, h)


def plain_torch_math(dtype):
    """The same math in eager PyTorch at the input dtype (weight cast to it): the baseline of the 2x rule."""
    def fn(x, weight, eps, residual=None):
        return float64_math(x, weight.to(dtype), eps, residual)
    return fn


def check_against_float64(x, weight, residual, dy, dres, eps, *, backend="triton", atol=1e-6):
    outs, grads = run_op(lambda *a: rms_norm(*a, backend=backend), x, weight, residual, dy, dres, eps)
    ref_outs, ref_grads = run_op(float64_math, x, weight, residual, dy, dres, eps, math_dtype=torch.float64)
    # baseline: leaves keep their dtypes (weight may be fp32), the math runs at x's dtype
    base_outs, base_grads = run_op(plain_torch_math(x.dtype), x, weight, residual, dy, dres, eps)
    names = ["y", "new_residual"][: len(outs)] + ["dx", "dweight", "dresidual"][: len(grads)]
    for name, out, ref, base in zip(names, outs + grads, ref_outs + ref_grads, base_outs + base_grads):
        want_dtype = weight.dtype if name == "dweight" else x.dtype
        assert out.dtype == want_dtype, f"{name}: dtype {out.dtype}, expected {want_dtype}"
        assert out.device == x.device
        assert_close_rule(name, out, ref, base, atol=atol)
    return outs, grads


# --------------------------------------------------------------------------------------------- numerics
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SHAPES = [(3, 1000), (7, 4097), (2, 3, 515)]


@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_forward_and_grads_match_float64(shape, dtype, with_residual, device):
    x, w, r, dy, dres = make_inputs(shape, dtype, dtype, with_residual, device, seed=sum(shape))
    check_against_float64(x, w, r, dy, dres, eps=1e-6)


@pytest.mark.parametrize("dtype,weight_dtype", [(torch.bfloat16, torch.float32), (torch.float16, torch.float32),
                                                (torch.bfloat16, torch.float16), (torch.float32, torch.bfloat16)], ids=str)
@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
def test_weight_dtype_may_differ_from_x(dtype, weight_dtype, with_residual, device):
    x, w, r, dy, dres = make_inputs((5, 777), dtype, weight_dtype, with_residual, device, seed=11)
    check_against_float64(x, w, r, dy, dres, eps=1e-5)


@pytest.mark.parametrize("eps", [0.0, 1e-6, 1e-2, 1.0])
def test_eps_values(eps, device):
    g = seeded(3)
    x = (0.01 * torch.randn(4, 300, generator=g)).to(torch.bfloat16).to(device)  # small rows: eps matters
    _, w, r, dy, dres = make_inputs((4, 300), torch.bfloat16, torch.bfloat16, True, device, seed=4)
    check_against_float64(x, w, r, dy, dres, eps=eps)


# Widths chosen to hit every path of the heuristic: forward single block up to 16,384 then column loop;
# backward single block up to 8,192 then row-coefficient + 2-D blocked kernels.
@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("shape", [(2, 12000), (3, 20000)], ids=lambda s: "x".join(map(str, s)))
def test_wide_rows_paths(shape, with_residual, device):
    assert rms_norm_module._fwd_config(12000)[1] and not rms_norm_module._bwd_config(12000)[1]
    assert not rms_norm_module._fwd_config(20000)[1]
    x, w, r, dy, dres = make_inputs(shape, torch.bfloat16, torch.float32, with_residual, device, seed=shape[1])
    check_against_float64(x, w, r, dy, dres, eps=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_one_row_of_65536(dtype, device):
    x, w, r, dy, dres = make_inputs((1, 65536), dtype, dtype, True, device, seed=65536)
    check_against_float64(x, w, r, dy, dres, eps=1e-6)


def test_many_rows_per_backward_program(device):
    """More rows than backward programs: each program loops over rows and accumulates its dweight partial."""
    n_rows = 37
    programs = rms_norm_module._num_row_programs(torch.device(device), n_rows, 1, 4)
    if device.type == "cpu":
        assert programs < n_rows
    x, w, r, dy, dres = make_inputs((n_rows, 130), torch.float16, torch.float32, True, device, seed=37)
    check_against_float64(x, w, r, dy, dres, eps=1e-6)


def test_strided_inputs(device):
    """Rows with a stride (a column slice) and leading dims that cannot be flattened without a copy."""
    g = seeded(5)
    big = torch.randn(6, 1200, generator=g).to(torch.bfloat16).to(device)
    x = big[:, 100:1100]  # row stride 1200
    assert not x.is_contiguous()
    _, w, r, dy, dres = make_inputs((6, 1000), torch.bfloat16, torch.float32, True, device, seed=6)
    r = torch.randn(1000, 6, generator=g).to(torch.bfloat16).to(device).t()  # last dim strided: not allowed
    with pytest.raises(ValueError, match="residual: the last dimension must be contiguous"):
        rms_norm(x, w, residual=r)
    r = torch.randn(6, 2000, generator=g).to(torch.bfloat16).to(device)[:, ::2].contiguous()
    check_against_float64(x, w, r, dy, dres, eps=1e-6)
    x3 = torch.randn(3, 4, 256, generator=g).to(torch.float16).to(device).transpose(0, 1)  # (4, 3, 256), not viewable as rows
    _, w3, r3, dy3, dres3 = make_inputs((4, 3, 256), torch.float16, torch.float16, True, device, seed=7)
    check_against_float64(x3, w3, r3, dy3, dres3, eps=1e-6)


def test_empty_rows(device):
    x = torch.empty(0, 64, device=device)
    w = torch.ones(64, device=device, requires_grad=True)
    y, new_res = rms_norm(x, w, residual=torch.empty(0, 64, device=device))
    assert y.shape == (0, 64) and new_res.shape == (0, 64)


def test_outputs_are_poisoned_under_tests():
    """Every kernel output starts as NaN here, so an element a kernel forgets to write fails the tests above."""
    assert os.environ.get("SEEDCODER_POISON_OUTPUTS") == "1" and _common._POISON
    assert torch.isnan(_common.new_empty((3,), dtype=torch.float32, device=torch.device("cpu"))).all()


# ------------------------------------------------------------------------------------------- autograd
def test_grads_of_x_and_residual_are_distinct_tensors_and_partial_use(device):
    x, w, r, dy, dres = make_inputs((4, 200), torch.float32, torch.float32, True, device, seed=9)
    x.requires_grad_()
    r.requires_grad_()
    w.requires_grad_()
    y, new_res = rms_norm(x, w, residual=r)
    (y * dy).sum().backward()  # new_residual unused: dx = dresidual = dh only
    ref_x, ref_w, ref_r = (t.detach().double().requires_grad_() for t in (x, w, r))
    ref_y, _ = float64_math(ref_x, ref_w, 1e-6, ref_r)
    (ref_y * dy.double()).sum().backward()
    torch.testing.assert_close(x.grad.double(), ref_x.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(r.grad, x.grad)
    x.grad.add_(1.0)  # the two leaves must not share one gradient tensor
    assert not torch.equal(r.grad, x.grad)
    torch.testing.assert_close(w.grad.double(), ref_w.grad, rtol=1e-5, atol=1e-5)

    x.grad = r.grad = w.grad = None
    y, new_res = rms_norm(x, w, residual=r)
    (new_res * dres).sum().backward()  # only new_residual used: y contributes nothing
    torch.testing.assert_close(x.grad, dres)
    torch.testing.assert_close(r.grad, dres)
    torch.testing.assert_close(w.grad, torch.zeros_like(w))


def test_weight_without_grad(device):
    x, w, _, dy, _ = make_inputs((3, 100), torch.bfloat16, torch.float32, False, device, seed=10)
    x.requires_grad_()
    rms_norm(x, w).backward(dy)
    assert x.grad is not None and w.grad is None


# ------------------------------------------------------------------------------------------ torch.compile
@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(compile_backend, device):
    x, w, r, dy, dres = make_inputs((3, 300), torch.bfloat16, torch.float32, True, device, seed=12)

    def block(x, w, r):
        y, new_res = rms_norm(x, w, 1e-6, r)
        y2 = rms_norm(y, w)  # without residual too
        return y2, new_res

    compiled = torch.compile(block, fullgraph=True, backend=compile_backend)
    eager_out, eager_grads = run_op(lambda x, w, eps, r: block(x, w, r), x, w, r, dy, dres, 1e-6)
    out, grads = run_op(lambda x, w, eps, r: compiled(x, w, r), x, w, r, dy, dres, 1e-6)
    for a, b in zip(out + grads, eager_out + eager_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0) if compile_backend == "aot_eager" else torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------------------------- backends
def test_backend_torch_is_the_reference(device):
    x, w, r, _, _ = make_inputs((3, 100), torch.bfloat16, torch.float32, True, device, seed=13)
    y, new_res = rms_norm(x, w, 1e-5, r, backend="torch")
    ref_y, ref_res = rms_norm_reference(x, w, 1e-5, r)
    assert torch.equal(y, ref_y) and torch.equal(new_res, ref_res)
    check_against_float64(x, w, r, *make_inputs((3, 100), torch.bfloat16, torch.float32, True, device, seed=13)[3:],
                          eps=1e-5, backend="torch")


@pytest.mark.skipif(HAS_CUDA, reason="CPU dispatch rule")
def test_plain_cpu_uses_the_reference(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # use_triton() reads it per call
    x, w, r, _, _ = make_inputs((3, 100), torch.float16, torch.float16, True, torch.device("cpu"), seed=14)
    assert not _common.use_triton(x)
    y, new_res = rms_norm(x, w, residual=r)
    ref_y, ref_res = rms_norm_reference(x, w, residual=r)
    assert torch.equal(y, ref_y) and torch.equal(new_res, ref_res)


def _cuda_extension_built() -> bool:
    try:
        import seedcoder._cuda  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(_cuda_extension_built(), reason="the CUDA extension is built here")
def test_backend_cuda_without_extension_raises_clear_error():
    x = torch.randn(2, 8)
    with pytest.raises(RuntimeError, match=r"backend='cuda' needs the CUDA extension seedcoder\._cuda"):
        rms_norm(x, torch.ones(8), backend="cuda")


# ------------------------------------------------------------------------------------------ bad inputs
def test_bad_inputs_raise_clear_errors(device):
    x = torch.randn(4, 16, device=device)
    w = torch.ones(16, device=device)
    with pytest.raises(ValueError, match=r"weight: shape \(15,\) does not match x's last dimension 16"):
        rms_norm(x, torch.ones(15, device=device))
    with pytest.raises(ValueError, match="weight: expected 1 dimensions"):
        rms_norm(x, torch.ones(1, 16, device=device))
    with pytest.raises(TypeError, match="x: dtype int32 is not supported"):
        rms_norm(x.to(torch.int32), w)
    with pytest.raises(TypeError, match="weight: dtype int64 is not supported"):
        rms_norm(x, w.long())
    with pytest.raises(ValueError, match="x: the last dimension must be contiguous"):
        rms_norm(torch.randn(16, 4, device=device).t(), w)
    with pytest.raises(ValueError, match="weight: is on meta"):
        rms_norm(x, torch.ones(16, device="meta"))
    with pytest.raises(ValueError, match="residual: is on meta"):
        rms_norm(x, w, residual=torch.ones(4, 16, device="meta"))
    with pytest.raises(ValueError, match=r"residual: shape \(4, 15\) != x's shape \(4, 16\)"):
        rms_norm(x, w, residual=torch.randn(4, 15, device=device))
    with pytest.raises(TypeError, match="residual: dtype"):
        rms_norm(x, w, residual=torch.randn(4, 16, device=device, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="backend: expected one of"):
        rms_norm(x, w, backend="apex")
    with pytest.raises(ValueError, match="eps: expected a non-negative float"):
        rms_norm(x, w, eps=-1.0)
    with pytest.raises(ValueError, match="x: the normalized .* dimension is empty"):
        rms_norm(torch.randn(4, 0, device=device), torch.ones(0, device=device))
    with pytest.raises(ValueError, match="x: expected at least 1 dimension"):
        rms_norm(torch.tensor(1.0, device=device), torch.ones(1, device=device))
    with pytest.raises(TypeError, match="x: expected a torch.Tensor"):
        rms_norm([1.0, 2.0], w)


# ------------------------------------------------------------------------------------- CUDA C++ backend
def _cuda_cases():
    cases = []
    for dtype, weight_dtype in [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                (torch.float16, torch.float16), (torch.bfloat16, torch.float32)]:
        for shape in [(3, 1000), (7, 4097), (2, 3, 515), (5, 4096), (3, 20000), (1, 65536), (300, 2048)]:
            cases.append((shape, dtype, weight_dtype))
    return cases


@pytest.mark.gpu
@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("shape,dtype,weight_dtype", _cuda_cases(), ids=str)
def test_cuda_backend_matches_float64(shape, dtype, weight_dtype, with_residual):
    x, w, r, dy, dres = make_inputs(shape, dtype, weight_dtype, with_residual, torch.device("cuda"), seed=shape[-1])
    check_against_float64(x, w, r, dy, dres, eps=1e-6, backend="cuda")


@pytest.mark.gpu
def test_cuda_backend_strided_and_unaligned():
    g = seeded(21)
    big = torch.randn(6, 1203, generator=g).to(torch.bfloat16).cuda()
    x = big[:, 1:1002]  # misaligned rows: the scalar (non-vectorized) path
    _, w, r, dy, dres = make_inputs((6, 1001), torch.bfloat16, torch.float32, True, torch.device("cuda"), seed=22)
    check_against_float64(x, w, r, dy, dres, eps=1e-6, backend="cuda")


@pytest.mark.gpu
def test_cuda_backend_torch_compile():
    x, w, r, dy, dres = make_inputs((3, 300), torch.bfloat16, torch.float32, True, torch.device("cuda"), seed=23)
    fn = lambda x, w, eps, r: rms_norm(x, w, eps, r, backend="cuda")
    eager = run_op(fn, x, w, r, dy, dres, 1e-6)  # the eager call loads the extension and registers the fakes
    compiled = run_op(torch.compile(fn, fullgraph=True, backend="aot_eager"), x, w, r, dy, dres, 1e-6)
    for a, b in zip(eager[0] + eager[1], compiled[0] + compiled[1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
