"""Grow an optimizer's per-parameter state with the model: pure, keyed by parameter name.

Names, not positions or tensor identities, tie a parameter to its state (as torchtitan's flat,
name-keyed optimizer state dict does), so the same function serves an optimizer in memory and a
state dict read from a checkpoint. Nothing here changes an optimizer.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from .plan import GrowthPlan
from .rules import split_layer_name

OPTIMIZER_STATES = ("copy", "reset")
"""`copy`: a new layer starts with a copy of its source layer's optimizer moments; `reset`: with zeros."""


def grow_optimizer_state(
    state_by_name: dict[str, dict[str, Any]],
    plan: GrowthPlan,
    layers_path: str,
    optimizer_state: str = "copy",
) -> dict[str, dict[str, Any]]:
    """Grow per-parameter optimizer state, keyed by parameter name, as `plan` grows the layers.

    A parameter `f"{layers_path}.{j}.{rest}"` of the grown model takes the state of the old parameter
    `f"{layers_path}.{plan.sources[j]}.{rest}"`:

    - kept positions (`plan.kept_positions`) keep their layer's own state, moved to the new index;
    - new positions with init `"copy"` get a copy of the source's state (`optimizer_state="copy"`), or
      zero moments with the source's `step` (`optimizer_state="reset"`);
    - new positions with init `"zero_residual"` (identity inserts) always get zero moments.

    Parameters outside the layer list keep their state. Entries that are moments (tensors with at
    least one dimension) are zeroed; `step` and other 0-dim or non-tensor entries (step counters,
    NAdam's `mu_product`) are copied, so every parameter keeps the optimizer's step count.

    With zero moments and a kept `step`, Adam's bias correction is already about 1, so a zeroed
    layer's first updates are not the unit-size steps of a fresh parameter: for a steady gradient
    they start at (1 - beta1) / sqrt(1 - beta2) of it, 0.45x with betas (0.9, 0.95) (back to 1x
    within about 10 steps), but 2.5x to 5x during the first hundred steps with (0.9, 0.999).

    Args:
        state_by_name (`dict[str, dict[str, Any]]`): Per-parameter optimizer state (for Adam:
            `step`, `exp_avg`, `exp_avg_sq`) keyed by the full parameter name of the model before
            growth, e.g. `"model.layers.3.self_attn.q_proj.weight"`.
        plan (`GrowthPlan`): The growth plan that is (or will be) applied to the model.
        layers_path (`str`): Dotted path of the layer list (`DecoderAnatomy.layers_path`).
        optimizer_state (`str`, *optional*, defaults to `"copy"`): `"copy"` or `"reset"`, see above.

    Returns:
        `dict[str, dict[str, Any]]`: A new dict keyed by the grown model's parameter names. Kept and
        non-layer parameters get new dicts that share the input's tensors (growing a large model's
        optimizer does not double its memory); every new position gets tensors of its own. Neither
        the input nor any optimizer is modified.

    Raises:
        ValueError: If `optimizer_state` is unknown, or a name refers to a layer the plan does not have.

    Example:

    ```python
    >>> plan = GrowthSpec(depth=2).plan_depth(2)
    >>> grown = grow_optimizer_state(state_by_name, plan, "model.layers")
    >>> grown["model.layers.2.mlp.up_proj.weight"]["exp_avg"]  # a copy of layer 0's
    ```
    """
    check_choice("optimizer_state", optimizer_state, OPTIMIZER_STATES)
    grown: dict[str, dict[str, Any]] = {}
    by_source: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for name, state in state_by_name.items():
        layer = split_layer_name(name, layers_path)
        if layer is None:
            grown[name] = dict(state)
            continue
        index, rest = layer
        if index >= plan.source_num_layers:
            raise ValueError(
                f"Optimizer state for {name!r} names layer {index}, but the plan grows a {plan.source_num_layers}-layer "
                f"model: make the plan from the model whose optimizer this is."
            )
        by_source.setdefault(index, []).append((rest, state))
    kept = set(plan.kept_positions)
    for j, (source, rule) in enumerate(zip(plan.sources, plan.inits, strict=True)):
        for rest, state in by_source.get(source, ()):
            name = f"{layers_path}.{j}.{rest}"
            if j in kept:
                grown[name] = dict(state)
            elif rule == "zero_residual" or optimizer_state == "reset":
                # An identity insert has zeroed residual writers, so its other weights get no gradient
                # at first (their output is multiplied by zero). Copied moments would still move every
                # weight of the block along the source's gradient history from the first step, pushing
                # it off identity for reasons unrelated to the loss; zero moments let it leave identity
                # only as fast as its own gradients ask.
                grown[name] = _zeroed_state(state)
            else:
                grown[name] = _cloned_state(state)
    return grown


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    """Refuse a value outside `allowed`, naming the allowed ones."""
    if value not in allowed:
        raise ValueError(f"Unknown {name} {value!r}: allowed values are {list(allowed)}.")


def _zeroed_state(state: dict[str, Any]) -> dict[str, Any]:
    zeroed = _cloned_state(state)
    for key, value in zeroed.items():
        # 0-dim entries are counters or products of per-step coefficients (Adam's `step`), not moments.
        if isinstance(value, torch.Tensor) and value.dim() > 0 and key != "step":
            value.zero_()
    return zeroed


def _cloned_state(state: dict[str, Any]) -> dict[str, Any]:
    # Own tensors: optimizers update their state in place (Adam's `step += 1`, `exp_avg.lerp_`).
    return {k: v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v) for k, v in state.items()}
