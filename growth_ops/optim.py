"""Grow an optimizer's per-parameter state with the model: pure, keyed by parameter name.

Depth growth (`grow_optimizer_state`) moves and copies each layer's state; width growth
(`grow_width_optimizer_state`) maps the moments of widened tensors by the width rule, derived there.

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
from .width_rules import TensorRule, grow_moment

OPTIMIZER_STATES = ("copy", "reset")
"""`copy`: a new layer starts with a copy of its source layer's optimizer moments; `reset`: with zeros."""

MOMENT_ORDERS = {
    "exp_avg": 1,  # Adam, AdamW, NAdam, RAdam, Adamax
    "momentum_buffer": 1,  # SGD, RMSprop
    "grad_avg": 1,  # RMSprop(centered=True)
    "exp_inf": 1,  # Adamax: a running max of |gradient|
    "exp_avg_sq": 2,  # Adam and its kin
    "max_exp_avg_sq": 2,  # Adam(amsgrad=True)
    "square_avg": 2,  # RMSprop
    "sum": 2,  # Adagrad
}
"""Per-parameter optimizer state entries, by key, with their order in the gradient (see
`grow_width_optimizer_state`). Other entries shaped like a parameter (Rprop's step sizes, ASGD's averaged
weights, factored moments) are not mapped by width growth: they are refused by name."""


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


def grow_width_optimizer_state(
    state_by_name: dict[str, dict[str, Any]], rules: dict[str, TensorRule]
) -> dict[str, dict[str, Any]]:
    """Grow per-parameter optimizer state, keyed by parameter name, as width growth grows the tensors.

    The rule, derived. Width growth maps the small model's parameters `θ` to `T(θ)`: every tensor tiled
    (`C` copies of each entry, `TensorRule.copies`) and multiplied by its rule's `scale` `s` (`1 / k_in` for
    a weight contracted with a widened input, the embedding-scale ratio, a tied head's factor on the final
    norm). The grown model computes the small one's function at every `T(θ)`, so by the chain rule the sum
    of a source entry's copies' gradients, times `s`, is the source entry's gradient. At `T(θ)` the copies
    are interchangeable (permuting them maps the grown model to itself), so their gradients are equal:
    each is the source gradient times `g = 1 / (s * C)` (`TensorRule.gradient_scale`). For a linear map
    `W' = tile(W) / k_in` that is `1 / k_out`, whatever `k_in`: an output read back by `k_out` copies of
    the next layer (the residual stream, a duplicated head or intermediate unit, each divided by `k_out`)
    passes back `1 / k_out` of the gradient. The untied head's vocabulary is not duplicated and the
    router's outputs are experts: `g = 1`; norms and biases of the hidden size: `1 / width`.

    On the same gradient history a grown model would thus have accumulated `m' = g * tile(m)` and
    `v' = g**2 * tile(v)`, which is what this returns (statistics linear in the gradient by `g`, squares by
    `g**2`, see `MOMENT_ORDERS`; `step` and other 0-dim entries are copied). Adam's next update
    `m' / sqrt(v')` is then the small model's update, tiled (up to `eps`, which acts as `eps / g`). It is
    not scaled like the weights: relative to `W' = tile(W) / k_in` the step is `k_in` times larger than
    the small model's, so the grown model leaves the small model's trajectory from its first step, as a
    freshly built wide model with the same learning rate would take larger steps relative to its weights
    (staged training, Shen et al. 2022, maps Adam's moments the same way: `exp_avg / 2`, `exp_avg_sq / 4`
    for a doubled width). Following the trajectory exactly would need each tensor's learning rate
    multiplied by its `s` (and decoupled weight decay divided by it); growth_ops keeps the learning rates
    as they are. SGD's update is linear in the gradient: it is `g * tile(step)`, the small step scaled
    like the weight only where `g = s` (square linear maps).

    With `width_noise` the copies are no longer interchangeable: their gradients differ, and only their
    mean over the copies is `g` times the source gradient. The moments are mapped the same way (the mean).

    Args:
        state_by_name (`dict[str, dict[str, Any]]`): Per-parameter optimizer state keyed by the full names of
            the model before width growth.
        rules (`dict[str, TensorRule]`): `WidthPlan.rules`: the rule of every tensor that grows.

    Returns:
        `dict[str, dict[str, Any]]`: A new dict with the same names. The state of a parameter that does not grow
        is a new dict sharing the input's tensors; a grown parameter's state has tensors of its own.

    Raises:
        ValueError: If the state of a growing parameter holds a tensor entry that `MOMENT_ORDERS` does not know,
            or one not shaped like the parameter; nothing is changed.
    """
    grown = {}
    for name, state in state_by_name.items():
        rule = rules.get(name)
        if rule is None:
            grown[name] = dict(state)
            continue
        source_shape = tuple(sum(size for size, _ in parts) for parts in rule.axes)
        unknown = [
            key
            for key, value in state.items()
            if _is_moment(value) and (key not in MOMENT_ORDERS or tuple(value.shape) != source_shape)
        ]
        if unknown:
            raise ValueError(
                f"The optimizer state of {name!r} holds {unknown}, which width growth does not know how to map (it maps "
                f"{sorted(MOMENT_ORDERS)}): use an optimizer of the Adam or SGD kind, or grow the checkpoint on disk "
                "(growth_ops.grow_checkpoint) and start a fresh optimizer on the grown model."
            )
        counters = _cloned_state({key: value for key, value in state.items() if not _is_moment(value)})
        grown[name] = {
            key: counters[key] if key in counters else grow_moment(value, rule, MOMENT_ORDERS[key])
            for key, value in state.items()
        }
    return grown


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    """Refuse a value outside `allowed`, naming the allowed ones."""
    if value not in allowed:
        raise ValueError(f"Unknown {name} {value!r}: allowed values are {list(allowed)}.")


def _is_moment(value: Any) -> bool:
    # 0-dim entries are counters or products of per-step coefficients (Adam's `step`), not moments.
    return isinstance(value, torch.Tensor) and value.dim() > 0


def _zeroed_state(state: dict[str, Any]) -> dict[str, Any]:
    zeroed = _cloned_state(state)
    for key, value in zeroed.items():
        if _is_moment(value) and key != "step":
            value.zero_()
    return zeroed


def _cloned_state(state: dict[str, Any]) -> dict[str, Any]:
    # Own tensors: optimizers update their state in place (Adam's `step += 1`, `exp_avg.lerp_`).
    return {k: v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v) for k, v in state.items()}
