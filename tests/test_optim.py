"""The update every training stage makes (seedcoder.optim): clipping, skipping a non-finite step without touching
the weights or the optimizer's moments, the lr from the schedule, giving up after max_bad_steps in a row; and
that DPO (a stage other than pretraining, tested in test_train) stops with a checkpoint when it diverges.
"""

import math

import pytest
import torch

from seedcoder.model import Transformer, model_config
from seedcoder.optim import DivergedError, OptimizerStep, build_optimizer, clip_grad_norm_
from seedcoder.posttrain.dpo import dpo_train
from seedcoder.train_config import OptimizerSection

pytestmark = [pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning"),
              pytest.mark.usefixtures("one_torch_thread")]


def small_net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.LayerNorm(7), torch.nn.Linear(7, 3))


def loss_of(net: torch.nn.Module, scale: float = 1.0) -> torch.Tensor:
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    return net(x).pow(2).mean() * scale


def test_weight_decay_only_on_matrices():
    net = small_net()
    optimizer = build_optimizer(net, OptimizerSection(lr=1e-3, weight_decay=0.1), torch.device("cpu"))
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decayed["params"]) and all(p.dim() == 1 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(net.parameters()))
    assert optimizer.defaults["betas"] == (0.9, 0.95)


def test_clip_returns_the_norm_before_clipping():
    net = small_net()
    loss_of(net, 100.0).backward()
    grads = torch.cat([p.grad.flatten() for p in net.parameters()]).double()
    norm = clip_grad_norm_(net.parameters(), 0.5)
    assert float(norm) == pytest.approx(float(grads.norm()), rel=1e-5)
    clipped = torch.cat([p.grad.flatten() for p in net.parameters()]).double()
    assert float(clipped.norm()) == pytest.approx(0.5, rel=1e-4)


def test_finite_step_updates_with_the_schedule_lr_and_zeroes_grads():
    net = small_net()
    optimizer = build_optimizer(net, OptimizerSection(lr=1.0, weight_decay=0.0), torch.device("cpu"))
    update = OptimizerStep(optimizer, net, grad_clip=0.0, schedule=lambda step: 0.01 * step)
    before = [p.detach().clone() for p in net.parameters()]
    loss = loss_of(net)
    loss.backward()
    outcome = update(3, loss)
    assert outcome.applied and outcome.lr == pytest.approx(0.03) and outcome.loss == pytest.approx(float(loss.detach()))
    assert all(group["lr"] == pytest.approx(0.03) for group in optimizer.param_groups)
    assert any(not torch.equal(a, p) for a, p in zip(before, net.parameters()))
    assert all(p.grad is None for p in net.parameters())
    assert update.skipped_steps == 0 and not update.gave_up


def test_non_finite_steps_change_nothing_and_give_up_after_max_bad_steps():
    net = small_net()
    optimizer = build_optimizer(net, OptimizerSection(lr=1e-2, weight_decay=0.1), torch.device("cpu"))
    warnings = []
    update = OptimizerStep(optimizer, net, grad_clip=1.0, max_bad_steps=3, warn=warnings.append)
    loss = loss_of(net)
    loss.backward()
    assert update(1, loss).applied  # a real step first: the moments exist
    weights = [p.detach().clone() for p in net.parameters()]
    moments = {k: v.clone() for k, v in optimizer.state[next(net.parameters())].items()}
    for step, bad in ((2, float("nan")), (3, float("inf"))):
        loss = loss_of(net) * bad
        loss.backward()
        outcome = update(step, loss)
        assert not outcome.applied and not math.isfinite(outcome.loss)
    assert all(torch.equal(a, p) for a, p in zip(weights, net.parameters()))
    for key, value in optimizer.state[next(net.parameters())].items():
        torch.testing.assert_close(value, moments[key], rtol=0, atol=0)
    assert all(p.grad is None for p in net.parameters())
    assert update.state_dict() == {"skipped_steps": 2, "bad_steps_in_a_row": 2} and not update.gave_up
    assert len(warnings) == 2 and "step 2: non-finite loss" in warnings[0] and "2/3 in a row" in warnings[1]
    # a finite step resets the row; three bad ones in a row give up
    loss = loss_of(net)
    loss.backward()
    assert update(4, loss).applied and update.bad_steps_in_a_row == 0
    for step in (5, 6, 7):
        loss = loss_of(net) * float("nan")
        loss.backward()
        update(step, loss)
    assert update.gave_up and update.skipped_steps == 5
    restored = OptimizerStep(optimizer, net, grad_clip=1.0, max_bad_steps=3)
    restored.load_state_dict(update.state_dict())
    assert restored.gave_up


def test_arguments_are_checked():
    net = small_net()
    optimizer = build_optimizer(net, OptimizerSection(), torch.device("cpu"))
    with pytest.raises(ValueError, match="max_bad_steps"):
        OptimizerStep(optimizer, net, grad_clip=1.0, max_bad_steps=0)
    with pytest.raises(ValueError, match="grad_clip"):
        OptimizerStep(optimizer, net, grad_clip=float("nan"))


def test_dpo_skips_non_finite_steps_then_stops_with_a_checkpoint(tmp_path):
    model = Transformer(model_config("debug", vocab_size=64, init_std=0.3))
    model.init_weights(seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pairs = [{"prompt_ids": [1, 2 + i], "chosen_ids": [10 + i, 2], "rejected_ids": [20 + i, 21, 2]} for i in range(3)]
    nan = torch.full((3,), float("nan"))
    with pytest.raises(DivergedError, match="3 non-finite"):
        dpo_train(model, pairs, steps=10, batch_size=2, reference=(nan, nan), max_bad_steps=3,
                  checkpoint_dir=tmp_path / "ckpt", log_path=tmp_path / "log.jsonl")
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0, msg=name)
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["step-00000003"]
    assert (tmp_path / "log.jsonl").read_text().count('"skipped": true') == 3
