"""The LR schedule across a growth: continue it on the new optimizer, or re-warm it from the growth step."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

SCHEDULES = ("continue", "rewarm")
"""`continue`: the LR schedule goes on as if there had been no growth; `rewarm`: it is multiplied by a
linear warmup from 0 that starts at the growth step."""


def check_rewarm_steps(rewarm_steps: Any, what: str = "rewarm_steps") -> None:
    """Refuse a re-warm length that is not an integer >= 1."""
    if isinstance(rewarm_steps, bool) or not isinstance(rewarm_steps, int) or rewarm_steps < 1:
        raise ValueError(f"{what} needs rewarm_steps >= 1 (an integer), got {rewarm_steps!r}.")


def rewarm_schedule(scheduler: LambdaLR, start_step: int, rewarm_steps: int) -> LambdaLR:
    """Multiply a LambdaLR schedule by a linear warmup from 0 that starts at `start_step`, in place.

    The factor at scheduler step `t` is `min(1, max(0, t - start_step) / rewarm_steps)`. The current
    learning rates are set at once. The scheduler's `state_dict` stays loadable with
    `torch.load(weights_only=True)` (it holds only the two integers). A run resumed from a checkpoint
    taken inside the rewarm window must call this again on its fresh scheduler (before `load_state`).

    Args:
        scheduler (`LambdaLR`): The scheduler, e.g. from transformers' `get_cosine_schedule_with_warmup`.
        start_step (`int`): Scheduler step (`last_epoch`) at which the factor is 0, the growth step.
        rewarm_steps (`int`): Scheduler steps until the factor is back to 1, at least 1.

    Returns:
        `LambdaLR`: The same scheduler.

    Raises:
        ValueError: If `scheduler` is not a `LambdaLR` or `rewarm_steps` < 1.
    """
    if not isinstance(scheduler, LambdaLR):
        raise ValueError(f"rewarm_schedule needs a LambdaLR, got {type(scheduler).__name__}.")
    check_rewarm_steps(rewarm_steps, "rewarm_schedule")
    scheduler.lr_lambdas = [_Rewarmed(fn, start_step, rewarm_steps) for fn in scheduler.lr_lambdas]
    lrs = [base * fn(scheduler.last_epoch) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr
    scheduler._last_lr = [lr.clone() if isinstance(lr, torch.Tensor) else lr for lr in lrs]
    return scheduler


def continue_scheduler(scheduler: Any, old_optimizers: tuple[Any, ...], new_optimizer: torch.optim.Optimizer) -> Any:
    """A copy of `scheduler` driving `new_optimizer`: same class, lambdas and counters, so the LR goes on.

    A deep copy with the old optimizer mapped to the new one works for any torch scheduler, chained
    ones (SequentialLR holds sub-schedulers) included, without knowing its constructor arguments.

    Args:
        scheduler (`LRScheduler`): The scheduler of the optimizer before growth.
        old_optimizers (`tuple`): Every object that stands for the old optimizer (a wrapper and the
            optimizer it wraps).
        new_optimizer (`torch.optim.Optimizer`): The optimizer of the grown model.

    Returns:
        `LRScheduler`: The new scheduler; `scheduler` is unchanged.
    """
    memo = {id(old): new_optimizer for old in old_optimizers}
    return copy.deepcopy(scheduler, memo)


class _Rewarmed:
    """`base(t) * min(1, max(0, t - start) / steps)`; `base` lives in a slot so that LambdaLR's
    `state_dict` (which saves a callable's `__dict__`) holds only two integers."""

    __slots__ = ("base", "__dict__")

    def __init__(self, base: Callable[[int], float], start: int, steps: int) -> None:
        self.base = base
        self.start = start
        self.steps = steps

    def __call__(self, step: int) -> float:
        return self.base(step) * min(1.0, max(0, step - self.start) / self.steps)
