"""cross_entropy: Triton kernels (interpreter on CPU, the GPU when present) vs a float64 reference.

Numerics use the 2x rule of tests/numerics.py: error vs the float64 reference ≤ 2 x the error of plain PyTorch
at the input dtype (F.cross_entropy, plus softcap / z-loss written in torch ops, which is what a user would run).
The gradient is checked in the two steps the kernels take (check_grads): the forward writes the gradient for
grad_output 1 into the logits (2x rule), backward multiplies it by grad_output (bitwise: fp32 product, one rounding).
"""

import importlib
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from numerics import assert_close_rule, seeded

from seedcoder.kernels import _common
from seedcoder.kernels.cross_entropy import cross_entropy, cross_entropy_reference

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
REDUCTIONS = ["mean", "sum", "none"]
OPTIONS = {
    "plain": {},
    "smoothing": {"label_smoothing": 0.1},
    "z_loss": {"z_loss": 1e-3},
    "softcap": {"softcap": 5.0},
    "all": {"label_smoothing": 0.2, "z_loss": 1e-2, "softcap": 8.0, "ignore_index": 7},
}


def make_inputs(n_rows, n_cols, dtype, device, *, seed=0, ignore_index=-100, n_ignored=None, scale=3.0):
    gen = seeded(seed)
    logits = (torch.randn(n_rows, n_cols, generator=gen) * scale).to(dtype)
    labels = torch.randint(0, n_cols, (n_rows,), generator=gen)
    n_ignored = n_rows // 3 if n_ignored is None else n_ignored
    labels[torch.randperm(n_rows, generator=gen)[:n_ignored]] = ignore_index
    return logits.to(device), labels.to(device)


def baseline_loss(logits, labels, *, ignore_index=-100, label_smoothing=0.0, z_loss=0.0, softcap=None, reduction="mean"):
    """Plain PyTorch at the logits' dtype: what a user would write without our kernel."""
    z = softcap * torch.tanh(logits / softcap) if softcap is not None else logits
    loss = F.cross_entropy(z, labels, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction)
    if z_loss:
        valid = labels != ignore_index
        zl = torch.where(valid, z_loss * torch.logsumexp(z, dim=-1) ** 2, torch.zeros((), dtype=z.dtype, device=z.device))
        zl = {"mean": zl.sum() / valid.sum(), "sum": zl.sum(), "none": zl}[reduction]
        loss = loss + zl
    return loss


def grad_output_for(loss, seed=1):
    if loss.dim() == 0:
        return torch.tensor(0.7, dtype=loss.dtype, device=loss.device)
    return (torch.rand(loss.shape, generator=seeded(seed)) + 0.5).to(loss.dtype).to(loss.device)


def loss_atol(ref):
    return 2e-6 * max(1.0, ref.detach().abs().max().item())  # a few fp32 ulps of the loss' magnitude


def row_grad_output(g, n_rows):
    """grad_output as one value per row of the (n_rows, V) gradient."""
    return g.reshape(-1).expand(n_rows) if g.dim() == 0 else g.reshape(-1)


def check_grads(name, written, grad, g, ref_grad, base_grad_one):
    """The gradient in two steps, each checked exactly for what it is.

    written: the logits after forward = the gradient for grad_output == 1, one rounding: 2x rule against the
    float64 reference (rescaled to grad_output 1, exact in float64) and plain PyTorch backpropagating 1.
    grad: after backward = written x grad_output in fp32, rounded once more (bitwise; rows with exactly 1 untouched).
    A grad_output != 1 thus costs a second rounding (up to half an ulp more than plain PyTorch: documented)."""
    n_rows = written.reshape(-1, written.shape[-1]).shape[0]
    rows = row_grad_output(g, n_rows).reshape(*written.shape[:-1], 1)
    assert_close_rule(f"{name} grad (forward-written)", written, ref_grad / rows.double(), base_grad_one, atol=1e-6)
    expected = (written.float() * rows.float()).to(written.dtype)
    assert torch.equal(grad, expected), f"{name}: backward is not written x grad_output rounded once"


def check_against_reference(logits, labels, reduction, opts, name):
    """Forward and backward of cross_entropy vs the float64 reference, 2x rule against the plain-PyTorch baseline."""
    x_ref = logits.detach().double().requires_grad_()
    x_base = logits.detach().clone().requires_grad_()
    x = logits.detach().clone().requires_grad_()

    ref = cross_entropy_reference(x_ref, labels, reduction=reduction, **opts)
    base = baseline_loss(x_base, labels, reduction=reduction, **opts)
    out = cross_entropy(x, labels, reduction=reduction, **opts)
    written = x.detach().clone()  # the forward overwrote the logits with the gradient for grad_output == 1
    assert out.dtype == logits.dtype and out.shape == ref.shape
    assert_close_rule(f"{name} loss", out, ref, base, atol=loss_atol(ref))

    g = grad_output_for(out)
    ref.backward(g.double())
    base.backward(torch.ones_like(base))
    out.backward(g)
    assert x.grad.dtype == logits.dtype
    check_grads(name, written, x.grad, g, x_ref.grad, x_base.grad)


def test_suite_runs_poisoned():
    assert _common._POISON, "tests must run with SEEDCODER_POISON_OUTPUTS=1 (kernel outputs start as NaN)"


DTYPE_IDS = {"ids": lambda d: str(d).removeprefix("torch.")}


@pytest.mark.parametrize("dtype", DTYPES, **DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", list(OPTIONS))
def test_matches_reference(device, dtype, reduction, option):
    """Every option x reduction x dtype at 7 x 4097 (one masked tile per row)."""
    opts = OPTIONS[option]
    logits, labels = make_inputs(7, 4097, dtype, device, seed=list(OPTIONS).index(option) * 10 + REDUCTIONS.index(reduction),
                                 ignore_index=opts.get("ignore_index", -100))
    check_against_reference(logits, labels, reduction, opts, f"{option}/{reduction}/{dtype}")


@pytest.mark.parametrize("dtype", DTYPES, **DTYPE_IDS)
@pytest.mark.parametrize("option", list(OPTIONS))
def test_matches_reference_vocab_32003(device, dtype, option):
    """Every option x dtype at V=32,003 (4 tiles per row, the online-logsumexp combine); reductions rotate."""
    opts = OPTIONS[option]
    i = list(OPTIONS).index(option)
    reduction = REDUCTIONS[(i + DTYPES.index(dtype)) % 3]
    logits, labels = make_inputs(5, 32003, dtype, device, seed=100 + i, ignore_index=opts.get("ignore_index", -100))
    check_against_reference(logits, labels, reduction, opts, f"V=32003 {option}/{reduction}/{dtype}")


@pytest.mark.parametrize("dtype", DTYPES, **DTYPE_IDS)
@pytest.mark.parametrize("reduction,option", [("mean", "plain"), ("none", "all")])
def test_matches_reference_vocab_155136(device, dtype, reduction, option):
    opts = OPTIONS[option]
    logits, labels = make_inputs(3, 155136, dtype, device, seed=3, ignore_index=opts.get("ignore_index", -100))
    check_against_reference(logits, labels, reduction, opts, f"V=155136 {option}/{reduction}/{dtype}")


@pytest.mark.parametrize("n_rows,n_cols", [(37, 1000), (3, 1), (1, 5), (5, 8191), (5, 8193), (2, 262144), (1, 300007)])
def test_odd_shapes(device, n_rows, n_cols):
    logits, labels = make_inputs(n_rows, n_cols, torch.float32, device, seed=n_rows, n_ignored=n_rows // 4)
    check_against_reference(logits, labels, "mean", {"label_smoothing": 0.05, "z_loss": 1e-4}, f"{n_rows}x{n_cols}")


def test_leading_dims_and_int32_labels(device):
    logits, labels = make_inputs(2 * 5, 300, torch.bfloat16, device, seed=4)
    logits, labels = logits.reshape(2, 5, 300), labels.reshape(2, 5)
    x = logits.clone().requires_grad_()
    out = cross_entropy(x, labels.to(torch.int32), reduction="none", z_loss=1e-3)
    written = x.detach().clone()
    assert out.shape == (2, 5)
    x_ref = logits.double().requires_grad_()
    ref = cross_entropy_reference(x_ref, labels, reduction="none", z_loss=1e-3)
    g = grad_output_for(out)
    out.backward(g)
    ref.backward(g.double())
    x_base = logits.clone().requires_grad_()
    base = baseline_loss(x_base.reshape(-1, 300), labels.reshape(-1), reduction="none", z_loss=1e-3).reshape(2, 5)
    base.backward(torch.ones_like(base))
    assert_close_rule("3-d loss", out, ref, base, atol=loss_atol(ref))
    check_grads("3-d", written, x.grad, g, x_ref.grad, x_base.grad)


def test_single_token_1d_logits(device):
    logits, labels = make_inputs(1, 777, torch.float32, device, seed=18, n_ignored=0)
    for reduction in REDUCTIONS:
        out = cross_entropy(logits[0], labels[0], reduction=reduction, softcap=3.0)
        ref = cross_entropy_reference(logits[0].double(), labels[0], reduction=reduction, softcap=3.0)
        assert out.shape == ()
        torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-6)


def test_row_strided_logits_write_only_their_columns(device):
    """(N, V) logits that are a column slice of a wider buffer: the in-place gradient stays inside the slice."""
    logits, labels = make_inputs(5, 1000, torch.float32, device, seed=5)
    wide = torch.full((5, 1100), 123.0, device=device)
    wide[:, :1000] = logits
    view = wide[:, :1000].requires_grad_()  # a leaf view (requires_grad set on the view itself)
    out = cross_entropy(view, labels, reduction="sum")
    out.backward()
    x_ref = logits.double().requires_grad_()
    cross_entropy_reference(x_ref, labels, reduction="sum").backward()
    torch.testing.assert_close(view.grad.double(), x_ref.grad, atol=1e-6, rtol=1e-5)
    assert (wide[:, 1000:] == 123.0).all(), "the gradient write went past the slice"


def test_ignored_rows_are_not_read_and_get_zero_grad(device):
    logits, labels = make_inputs(6, 5000, torch.bfloat16, device, seed=6, n_ignored=0)
    labels[[1, 4]] = -100
    logits[[1, 4]] = float("nan")  # an ignored row's logits must not matter
    for reduction in REDUCTIONS:
        x = logits.clone().requires_grad_()
        out = cross_entropy(x, labels, reduction=reduction, label_smoothing=0.1, z_loss=1e-3)
        assert torch.isfinite(out).all()
        out.backward(grad_output_for(out))
        assert (x.grad[[1, 4]] == 0).all()
        assert torch.isfinite(x.grad).all()
        if reduction == "none":
            assert (out[[1, 4]] == 0).all()


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_all_ignored(device, reduction):
    """Every token ignored: loss 0 and zero grads. torch's "mean" gives NaN here; we give 0 (documented)."""
    logits, labels = make_inputs(4, 3000, torch.float32, device, seed=7, n_ignored=4)
    x = logits.clone().requires_grad_()
    out = cross_entropy(x, labels, reduction=reduction, label_smoothing=0.1, z_loss=1e-3)
    assert (out == 0).all()
    out.backward(grad_output_for(out))
    assert (x.grad == 0).all()
    if reduction == "mean":
        assert torch.isnan(F.cross_entropy(logits, labels)), "torch changed: all-ignored mean is no longer NaN"


def test_masked_vocab_with_minus_inf(device):
    """-inf logits (a masked part of the vocabulary, here whole tiles) give finite loss and zero grad there."""
    logits, labels = make_inputs(3, 20000, torch.float32, device, seed=8, n_ignored=0)
    logits[:, 8192:17000] = float("-inf")
    labels = labels % 8192
    x = logits.clone().requires_grad_()
    out = cross_entropy(x, labels, reduction="sum", z_loss=1e-3)
    out.backward()
    x_ref = logits.double().requires_grad_()
    ref = cross_entropy_reference(x_ref, labels, reduction="sum", z_loss=1e-3)
    ref.backward()
    torch.testing.assert_close(out.double(), ref, atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(x.grad.double(), x_ref.grad, atol=1e-6, rtol=1e-5)
    assert (x.grad[:, 8192:17000] == 0).all()


# ----------------------------------------------------------------------------------- in-place contract
def test_without_grad_logits_are_untouched(device):
    logits, labels = make_inputs(4, 10000, torch.bfloat16, device, seed=9)
    before = logits.clone()
    cross_entropy(logits, labels)
    x = logits.clone().requires_grad_()
    version = x._version
    with torch.no_grad():
        cross_entropy(x, labels)
    assert torch.equal(logits, before) and torch.equal(x.detach(), before) and x._version == version


def test_forward_writes_the_gradient_and_grad_output_one_leaves_it_untouched(device):
    """The forward overwrites the logits with the gradient (bumping their version); backward with grad_output 1
    (loss.backward() of a mean loss) returns that storage bitwise as written."""
    logits, labels = make_inputs(4, 10000, torch.bfloat16, device, seed=10)
    base = logits.clone().requires_grad_()
    x = base * 1  # non-leaf logits, like the output of the LM head
    version = x._version
    out = cross_entropy(x, labels, z_loss=1e-3)
    assert x._version > version, "the in-place write must bump the version counter (misuse then raises)"
    written = x.detach().clone()
    x_ref = logits.double().requires_grad_()
    cross_entropy_reference(x_ref, labels, z_loss=1e-3).backward()
    torch.testing.assert_close(written.double(), x_ref.grad, atol=1e-6, rtol=1e-2)  # the forward wrote dL/dlogits
    out.backward()
    assert torch.equal(base.grad, written), "grad_output == 1: backward must leave the gradient as the forward wrote it"
    assert torch.equal(x.detach(), written)


@pytest.mark.parametrize("dtype", DTYPES, **DTYPE_IDS)
def test_backward_rescales_scalar_grad_output(device, dtype):
    """grad_output 0.7 (e.g. a loss weight): backward multiplies the forward's gradient in fp32, one rounding."""
    logits, labels = make_inputs(5, 3000, dtype, device, seed=19)
    for reduction in ("mean", "sum"):
        x = logits.clone().requires_grad_()
        out = cross_entropy(x, labels, reduction=reduction, label_smoothing=0.1)
        written = x.detach().clone()
        (out * 0.7).backward()
        g = torch.tensor(0.7, dtype=dtype)
        assert torch.equal(x.grad, (written.float() * g.float()).to(dtype))


def test_backward_rescales_per_row_grad_output(device):
    """reduction="none": row i is multiplied by grad_output[i]; rows with exactly 1 (and expanded grads) untouched."""
    logits, labels = make_inputs(6, 9000, torch.bfloat16, device, seed=20)
    x = logits.clone().requires_grad_()
    out = cross_entropy(x, labels, reduction="none", softcap=6.0)
    written = x.detach().clone()
    g = torch.tensor([0.7, 1.0, 2.0, -0.3, 1.0, 0.0], dtype=torch.bfloat16, device=device)
    out.backward(g)
    assert torch.equal(x.grad, (written.float() * g.float()[:, None]).to(torch.bfloat16))
    assert torch.equal(x.grad[[1, 4]], written[[1, 4]]) and (x.grad[5] == 0).all()
    # loss.sum().backward(): grad_output is an expanded 1 (stride 0), every row keeps what the forward wrote
    x = logits.clone().requires_grad_()
    cross_entropy(x, labels, reduction="none", softcap=6.0).sum().backward()
    assert torch.equal(x.grad, written)


def test_several_row_groups(device, monkeypatch):
    """The loss-and-grad kernel's ticket order over several row groups, the last one partial (3 + 3 + 1 rows)."""
    ce_module = importlib.import_module("seedcoder.kernels.cross_entropy")
    logits, labels = make_inputs(7, 9000, torch.float32, device, seed=21)
    monkeypatch.setattr(ce_module, "GROUP_BYTES", 3 * 9000 * 4)
    assert ce_module._rows_per_group(7, 9000, 4) == 3
    for reduction in REDUCTIONS:
        check_against_reference(logits, labels, reduction, {"label_smoothing": 0.1, "softcap": 9.0}, f"groups/{reduction}")


def test_clone_keeps_logits(device):
    logits, labels = make_inputs(4, 10000, torch.float32, device, seed=11)
    x = logits.clone().requires_grad_()
    cross_entropy(x.clone(), labels).backward()
    assert torch.equal(x.detach(), logits)


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_second_backward_raises_instead_of_wrong_grads(device, scale):
    """A second backward would rescale the gradient again: the rescale bumps the version, so it raises."""
    logits, labels = make_inputs(4, 3000, torch.float32, device, seed=12)
    x = logits.clone().requires_grad_()
    out = cross_entropy(x, labels) * scale
    out.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward()


def test_clobbering_logits_saved_by_another_op_raises(device):
    """exp saves its output for backward; our forward's in-place gradient must make that fail loudly, not silently."""
    logits, labels = make_inputs(4, 3000, torch.float32, device, seed=13)
    raw = logits.clone().requires_grad_()
    x = torch.exp(raw * 0.1)
    out = cross_entropy(x, labels)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward()


# ----------------------------------------------------------------------------------------- bad inputs
def test_bad_labels_raise(device):
    if device.type == "cuda":
        pytest.skip("device-side assert: covered by test_bad_labels_cuda_assert in a subprocess")
    logits, labels = make_inputs(4, 100, torch.float32, device, seed=14)
    for bad in (100, -1, 10**6):
        bad_labels = labels.clone()
        bad_labels[2] = bad
        with pytest.raises(ValueError, match=r"labels: values must be in \[0, 100\)"):
            cross_entropy(logits, bad_labels)
        with pytest.raises(ValueError, match="labels"):
            cross_entropy(logits.clone().requires_grad_(), bad_labels, ignore_index=-1 if bad != -1 else 7)


@pytest.mark.gpu
def test_bad_labels_cuda_assert():
    code = ("import torch; from seedcoder.kernels.cross_entropy import cross_entropy\n"
            "x = torch.randn(4, 100, device='cuda'); y = torch.tensor([1, 2, 100, 3], device='cuda')\n"
            "cross_entropy(x, y); torch.cuda.synchronize()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and ("labels" in r.stderr or "device-side assert" in r.stderr), r.stderr[-2000:]


def test_bad_arguments_raise(device):
    logits, labels = make_inputs(4, 100, torch.float32, device, seed=15)
    with pytest.raises(TypeError, match="logits: dtype int64"):
        cross_entropy(labels.unsqueeze(-1).expand(4, 100), labels)
    with pytest.raises(TypeError, match="labels: dtype float32"):
        cross_entropy(logits, labels.float())
    with pytest.raises(ValueError, match=r"labels: shape \(5,\) does not match"):
        cross_entropy(logits, torch.zeros(5, dtype=torch.int64, device=device))
    with pytest.raises(ValueError, match="logits: the last dimension must be contiguous"):
        cross_entropy(logits.t().contiguous().t(), labels)
    with pytest.raises(ValueError, match="labels: is on meta"):
        cross_entropy(logits, labels.to("meta"))
    with pytest.raises(ValueError, match="logits: vocabulary size 0"):
        cross_entropy(logits[:, :0], labels)
    with pytest.raises(ValueError, match="logits: expected shape"):
        cross_entropy(logits[0, 0], labels[0])
    with pytest.raises(ValueError, match="reduction"):
        cross_entropy(logits, labels, reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        cross_entropy(logits, labels, label_smoothing=1.5)
    with pytest.raises(ValueError, match="z_loss"):
        cross_entropy(logits, labels, z_loss=-1.0)
    with pytest.raises(ValueError, match="softcap"):
        cross_entropy(logits, labels, softcap=0.0)


# ---------------------------------------------------------------------------------- dispatch + compile
def test_plain_cpu_runs_the_reference(monkeypatch):
    """Without the interpreter, CPU tensors take the torch reference (same semantics, same errors)."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    logits, labels = make_inputs(5, 700, torch.float32, torch.device("cpu"), seed=16)
    x = logits.clone().requires_grad_()
    out = cross_entropy(x, labels, label_smoothing=0.1, z_loss=1e-3, softcap=4.0)
    out.backward()
    assert torch.equal(x.detach(), logits), "the reference path does not write in place"
    x_ref = logits.double().requires_grad_()
    cross_entropy_reference(x_ref, labels, label_smoothing=0.1, z_loss=1e-3, softcap=4.0).backward()
    torch.testing.assert_close(x.grad.double(), x_ref.grad, atol=1e-7, rtol=1e-5)
    labels[0] = 700
    with pytest.raises(ValueError, match="labels"):
        cross_entropy(logits, labels)


@pytest.mark.parametrize("backend,reductions", [("aot_eager", ("mean", "sum", "none")), ("inductor", ("mean",))])
def test_torch_compile_fullgraph(device, backend, reductions):
    torch._dynamo.reset()
    gen = seeded(17)
    hidden = torch.randn(6, 32, generator=gen).to(device)
    weight = torch.randn(3000, 32, generator=gen).to(device).requires_grad_()
    labels = torch.randint(0, 3000, (6,), generator=gen).to(device)
    labels[2] = -100

    def step(h, w, y, reduction):
        logits = h @ w.t()
        loss = cross_entropy(logits, y, label_smoothing=0.1, z_loss=1e-3, softcap=10.0, reduction=reduction)
        return loss if reduction != "none" else (loss * torch.arange(6, device=loss.device)).sum()

    compiled = torch.compile(step, backend=backend, fullgraph=True)
    for reduction in reductions:
        w_eager = weight.detach().clone().requires_grad_()
        loss_eager = step(hidden, w_eager, labels, reduction)
        loss_eager.backward()
        w_c = weight.detach().clone().requires_grad_()
        loss_c = compiled(hidden, w_c, labels, reduction)
        loss_c.backward()
        torch.testing.assert_close(loss_c, loss_eager)
        torch.testing.assert_close(w_c.grad, w_eager.grad)


def test_torch_compile_keeps_returned_logits(device):
    """Under torch.compile the forward writes the gradient to a fresh buffer: logits the graph returns stay intact,
    and backward rescales that buffer (grad_output 0.5 here)."""
    torch._dynamo.reset()
    gen = seeded(22)
    hidden = torch.randn(5, 16, generator=gen).to(device)
    weight = torch.randn(2000, 16, generator=gen).to(device)
    labels = torch.randint(0, 2000, (5,), generator=gen).to(device)

    def step(h, w, y):
        logits = h @ w.t()
        return cross_entropy(logits, y, z_loss=1e-3), logits

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    w_c = weight.clone().requires_grad_()
    loss_c, logits_c = compiled(hidden, w_c, labels)
    torch.testing.assert_close(logits_c, hidden @ weight.t())
    (loss_c * 0.5).backward()
    w_eager = weight.clone().requires_grad_()
    loss_eager, _ = step(hidden, w_eager, labels)
    (loss_eager * 0.5).backward()
    torch.testing.assert_close(loss_c, loss_eager)
    torch.testing.assert_close(w_c.grad, w_eager.grad)
