"""The optimizer and the update every training stage makes: pretraining, SFT, DPO, GRPO and the scorer.

    optimizer = build_optimizer(model, OptimizerSection(lr=3e-4), device)
    update = OptimizerStep(optimizer, model, grad_clip=1.0, schedule=LRSchedule(...), max_bad_steps=5)
    loss.backward()
    outcome = update(step, loss)      # clip, one host sync, step (or skip a non-finite one), zero the gradients
    if update.gave_up: ...            # max_bad_steps non-finite steps in a row: save and stop

A step whose loss or global gradient norm is not finite changes nothing (the gradients are dropped, the optimizer's
moments are untouched) and is counted; `max_bad_steps` of them in a row mean the run has diverged, and the stage
stops with a checkpoint rather than train on. Distributed stages (pretraining) reduce the loss themselves and call
`clip` and `apply` so that the loss, the norm and their own flags cross to the host in one sync.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.distributed.tensor import DTensor

from seedcoder.train_config import OptimizerSection


def build_optimizer(model: torch.nn.Module, section: OptimizerSection, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices (linear weights, embeddings), none on norms; fused on CUDA by default."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    fused = section.fused if section.fused is not None else device.type == "cuda"
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": section.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=section.lr,
        betas=tuple(section.betas),
        eps=section.eps,
        fused=fused,
        foreach=None if fused else True,
    )


def clip_grad_norm_(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """The global gradient norm over all ranks (DTensor shards), and clipping to max_norm (0: no clipping).
    Gradients on different meshes (tensor-parallel weights on (dp, tp), replicated ones on dp alone) are normed per
    mesh, each norm made whole over its mesh, then combined."""
    parameters = list(parameters)
    by_mesh: dict[Any, list[torch.nn.Parameter]] = {}
    for p in parameters:
        if p.grad is not None:
            by_mesh.setdefault(p.grad.device_mesh if isinstance(p.grad, DTensor) else None, []).append(p)
    norms = []
    for group in by_mesh.values():
        norm = torch.nn.utils.get_total_norm([p.grad for p in group], 2.0, error_if_nonfinite=False)
        norms.append(norm.full_tensor() if isinstance(norm, DTensor) else norm)  # full_tensor: all-reduces partials
    if not norms:
        total = torch.zeros(())
    elif len(norms) == 1:
        total = norms[0]
    else:
        total = torch.linalg.vector_norm(torch.stack(norms))
    if max_norm > 0:
        for group in by_mesh.values():
            torch.nn.utils.clip_grads_with_norm_(group, max_norm, total)
    return total


@dataclass(frozen=True)
class StepOutcome:
    loss: float
    grad_norm: float
    lr: float
    applied: bool  # False: a non-finite loss or gradient norm, the update was skipped


class OptimizerStep:
    """Clip, step or skip, zero the gradients; counts skipped steps (module docstring)."""

    def __init__(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module, *, grad_clip: float,
                 schedule: Callable[[int], float] | None = None, max_bad_steps: int = 5,
                 warn: Callable[[str], None] = print):
        if isinstance(max_bad_steps, bool) or not isinstance(max_bad_steps, int) or max_bad_steps < 1:
            raise ValueError(f"max_bad_steps: must be an integer >= 1, got {max_bad_steps!r}")
        if not (isinstance(grad_clip, (int, float)) and math.isfinite(grad_clip) and grad_clip >= 0):
            raise ValueError(f"grad_clip: must be a finite number >= 0 (0: no clipping), got {grad_clip!r}")
        self.optimizer = optimizer
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.grad_clip = grad_clip
        self.schedule = schedule
        self.max_bad_steps = max_bad_steps
        self.warn = warn
        self.skipped_steps = 0
        self.bad_steps_in_a_row = 0

    @property
    def gave_up(self) -> bool:
        """max_bad_steps non-finite steps in a row: the run diverged."""
        return self.bad_steps_in_a_row >= self.max_bad_steps

    def clip(self) -> torch.Tensor:
        """The global gradient norm (a tensor: no host sync), gradients clipped to grad_clip."""
        return clip_grad_norm_(self.parameters, self.grad_clip)

    def apply(self, step: int, loss: float, grad_norm: float) -> StepOutcome:
        """Step `step` (1-based; the schedule's lr) with the host values of the loss and the clipped-to norm."""
        lr = self.schedule(step) if self.schedule is not None else self.optimizer.param_groups[0]["lr"]
        applied = math.isfinite(loss) and math.isfinite(grad_norm)
        if applied:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.step()
            self.bad_steps_in_a_row = 0
        else:
            self.skipped_steps += 1
            self.bad_steps_in_a_row += 1
            what = "loss" if not math.isfinite(loss) else "grad norm"
            self.warn(f"WARNING step {step}: non-finite {what} (loss {loss}, grad norm {grad_norm}): update skipped "
                      f"({self.bad_steps_in_a_row}/{self.max_bad_steps} in a row)")
        self.optimizer.zero_grad(set_to_none=True)
        return StepOutcome(loss=loss, grad_norm=grad_norm, lr=lr, applied=applied)

    def __call__(self, step: int, loss: torch.Tensor) -> StepOutcome:
        """After `loss.backward()`: clip, one host sync for the loss and the norm, then `apply`."""
        grad_norm = self.clip()
        loss_value, norm_value = torch.stack([loss.detach().float().reshape(()).to(grad_norm.device),
                                              grad_norm.float()]).tolist()
        return self.apply(step, loss_value, norm_value)

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": self.skipped_steps, "bad_steps_in_a_row": self.bad_steps_in_a_row}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.bad_steps_in_a_row = int(state.get("bad_steps_in_a_row", 0))


class DivergedError(RuntimeError):
    """max_bad_steps non-finite steps in a row (the stage saved a checkpoint before raising)."""


__all__ = ["DivergedError", "OptimizerStep", "StepOutcome", "build_optimizer", "clip_grad_norm_"]
