"""Per-tensor and per-config rules of depth growth, shared by both sinks: `apply_plan` (a model in memory)
and `grow_checkpoint` (safetensors on disk).

Both sinks read a `GrowthPlan` through these functions only, so a layer's tensors are copied from the
same source, zeroed by the same name rule and described by the same config in memory and on disk.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .anatomy import DecoderAnatomy
from .plan import GrowthPlan


def is_residual_writer(name: str, anatomy: DecoderAnatomy) -> bool:
    """Whether a tensor, by its name inside a layer, writes into the residual stream.

    Names match whole dotted components, so one rule covers module parameters (`mlp.down_proj.weight`),
    fused expert tensors (`mlp.experts.down_proj`) and the per-expert names checkpoints keep on disk
    (`block_sparse_moe.experts.0.w2.weight`).

    Args:
        name (`str`): Tensor or parameter name relative to its layer.
        anatomy (`DecoderAnatomy`): Gives the residual-writer names of the model type.

    Returns:
        `bool`
    """
    return name in anatomy.residual_parameters or any(part in anatomy.residual_writers for part in name.split("."))


def is_zeroed(name: str, rule: str, anatomy: DecoderAnatomy) -> bool:
    """Whether a grown layer built with init `rule` starts this tensor at zero (the identity init).

    Args:
        name (`str`): Tensor or parameter name relative to its layer.
        rule (`str`): The layer's init rule, one of `growth_ops.plan.INIT_RULES`.
        anatomy (`DecoderAnatomy`): Gives the residual-writer names of the model type.

    Returns:
        `bool`: `True` only for residual writers of `zero_residual` layers.
    """
    return rule == "zero_residual" and is_residual_writer(name, anatomy)


def split_layer_name(name: str, layers_prefix: str) -> tuple[int, str] | None:
    """Split a full tensor name into its layer index and its name inside the layer.

    Args:
        name (`str`): Full tensor name, e.g. `"model.layers.3.mlp.up_proj.weight"`.
        layers_prefix (`str`): Dotted path of the layer list in those names, e.g. `"model.layers"`.

    Returns:
        `tuple[int, str]` or `None`: `(3, "mlp.up_proj.weight")`, or `None` for a tensor outside the
        layer list.
    """
    match = re.fullmatch(rf"{re.escape(layers_prefix)}\.(\d+)\.(.+)", name)
    return (int(match[1]), match[2]) if match else None


def grown_tensor_sources(
    names: Iterable[str],
    layers_prefix: str,
    plan: GrowthPlan,
    anatomy: DecoderAnatomy,
    inner_names: Mapping[str, str] | None = None,
) -> dict[str, tuple[str, bool]]:
    """Where every tensor of the grown model comes from: `{new name: (source name, zeroed)}`.

    Tensors outside the layer list keep their name; layer `j` of the grown model takes every tensor of
    source layer `plan.sources[j]`, renamed to index `j`, zeroed where `is_zeroed` says so.

    Args:
        names (`Iterable[str]`): Full names of the source model's tensors.
        layers_prefix (`str`): Dotted path of the layer list in those names.
        plan (`GrowthPlan`): The growth plan.
        anatomy (`DecoderAnatomy`): Gives the residual-writer names of the model type.
        inner_names (`Mapping[str, str]`, *optional*): The module's name inside the layer of a tensor whose
            stored name is not the module's (a checkpoint saved under legacy names), to decide its zeroing.

    Returns:
        `dict[str, tuple[str, bool]]`: Outside tensors first, then layer by layer, each in source order.
    """
    inner_names = inner_names or {}
    outside: dict[str, tuple[str, bool]] = {}
    by_layer: dict[int, list[tuple[str, str]]] = {}
    for name in names:
        split = split_layer_name(name, layers_prefix)
        if split is None:
            outside[name] = (name, False)
        else:
            by_layer.setdefault(split[0], []).append((split[1], name))
    grown = dict(outside)
    for j, (source, rule) in enumerate(zip(plan.sources, plan.inits, strict=True)):
        for rest, name in by_layer.get(source, []):
            grown[f"{layers_prefix}.{j}.{rest}"] = (name, is_zeroed(inner_names.get(name, rest), rule, anatomy))
    return grown


def grown_config_changes(config: Any, anatomy: DecoderAnatomy, plan: GrowthPlan) -> dict[str, Any]:
    """The new values of the layer count and of every per-layer config entry, validated on a copy.

    Per-layer lists (`layer_types`) and per-layer overrides (`per_layer_config`) follow the plan's sources;
    index lists (`mlp_only_layers`) hold the new positions whose source was listed; a Qwen-MoE sparse step
    becomes an explicit dense-layer list.

    Args:
        config (`PreTrainedConfig` or `None`): The config that holds the layer count.
        anatomy (`DecoderAnatomy`): Names the layer-count key and the per-layer keys of `config`.
        plan (`GrowthPlan`): The growth plan.

    Returns:
        `dict[str, Any]`: `{attribute: new value}` to set on `config`; empty when `config` is `None`.

    Raises:
        ValueError: If a strict config refuses a new value (its validators run on a copy), or if the grown
            dense layers are no longer the first ones where the config can only say "the first k are dense", or
            no period and offset place the copies of periodic layers (Jamba's attention layers).
    """
    if config is None:
        return {}
    sources = plan.sources
    changes: dict[str, Any] = {anatomy.num_layers_key: plan.num_layers}
    for key in anatomy.per_layer_keys:
        old = getattr(config, key)
        changes[key] = type(old)(old[s] for s in sources)
    for key in anatomy.index_list_keys:
        old = getattr(config, key)
        changes[key] = type(old)(j for j, s in enumerate(sources) if s in set(old))
    for key in anatomy.dense_prefix_keys:
        dense = getattr(config, key)
        if _written_out_per_layer(dense, config, anatomy):
            # The list decides (exaone_moe's `mlp_layer_types`); the integer keeps counting the leading dense layers.
            changes[key] = next((j for j, s in enumerate(sources) if s >= dense), len(sources))
        else:
            changes[key] = _grown_dense_prefix(key, dense, anatomy, sources)
    for period_key, offset_key in anatomy.period_keys:
        rule = (getattr(config, period_key), getattr(config, offset_key))
        changes[period_key], changes[offset_key] = _grown_period(period_key, offset_key, rule, anatomy, sources)
    if anatomy.sparse_range:
        keys = anatomy.sparse_range
        rule = tuple(getattr(config, key) for key in keys)
        changes.update(zip(keys, _grown_sparse_range(keys, rule, anatomy, sources), strict=True))
    if anatomy.has_per_layer_overrides:
        # Set after the layer count (dicts keep their order): the setter checks the indices against it.
        overrides = {int(i): o for i, o in config.to_dict().get("per_layer_config", {}).items()}
        changes["per_layer_config"] = {j: copy.deepcopy(overrides[s]) for j, s in enumerate(sources) if s in overrides}
    if anatomy.sparse_step:
        step_key, dense_key, experts_key = anatomy.sparse_step
        step = getattr(config, step_key)
        if step != 1 and getattr(config, experts_key, 0) > 0:
            # Written out as a list, the dense layers no longer depend on their index.
            dense = set(getattr(config, dense_key)) | {i for i in range(plan.source_num_layers) if (i + 1) % step}
            changes[step_key] = 1
            changes[dense_key] = [j for j, s in enumerate(sources) if s in dense]
    # Strict configs type-check on assignment: fail here, on a copy, rather than half-way through a commit.
    trial = copy.deepcopy(config)
    for key, value in changes.items():
        setattr(trial, key, value)
    return changes


def _written_out_per_layer(dense: int, config: Any, anatomy: DecoderAnatomy) -> bool:
    """Whether a per-layer list of the config marks the first `dense` layers apart from the others, so that it,
    not the "first k are dense" integer, can say where the dense layers are (it is remapped like any per-layer
    list; should the model read the integer all the same, the structure check refuses the growth)."""
    if dense <= 0:
        return False
    for key in anatomy.per_layer_keys:
        values = [repr(v) for v in getattr(config, key)]
        if dense < len(values) and set(values[:dense]).isdisjoint(values[dense:]):
            return True
    return False


def _grown_dense_prefix(key: str, dense: int, anatomy: DecoderAnatomy, sources: tuple[int, ...]) -> int:
    """The new `k` of a "first k layers are dense" rule: the copies of dense layers must again come first."""
    positions = [j for j, s in enumerate(sources) if s < dense]
    if positions != list(range(len(positions))):
        dense_first = sorted(sources, key=lambda s: s >= dense)
        raise ValueError(
            f"{anatomy.model_type}'s config makes its first layers dense ({key}={dense}) and can say nothing "
            f"else, but this growth puts copies of them at positions {positions}, after sparse layers. Use a growth "
            "that keeps them first (interleave, identity, dus), or the same layers with the dense copies first: "
            f"GrowthSpec(layer_map={dense_first})."
        )
    return len(positions)


def _grown_sparse_range(
    keys: tuple[str, str, str], rule: tuple[int, int, int], anatomy: DecoderAnatomy, sources: tuple[int, ...]
) -> tuple[int, int, int]:
    """A `(start, end, interval)` under which exactly the copies of the old rule's sparse layers are sparse."""
    start, end, interval = rule

    def is_sparse(layer: int) -> bool:
        return (layer + 1) % interval == 0 and start <= layer <= end

    marked = [j for j, s in enumerate(sources) if is_sparse(s)]
    if not marked:
        return len(sources), len(sources) - 1, interval
    first, last = marked[0], marked[-1]
    for new_interval in (interval, *range(1, last + 2)):
        if [j for j in range(first, last + 1) if (j + 1) % new_interval == 0] == marked:
            return first, last, new_interval
    start_key, end_key, interval_key = keys
    raise ValueError(
        f"{anatomy.model_type}'s config makes layer i sparse when (i + 1) % {interval_key} == 0 and {start_key} <= i "
        f"<= {end_key} ({start_key}={start}, {end_key}={end}, {interval_key}={interval}), but this growth puts copies "
        f"of the sparse layers at positions {marked}, which no start, end and interval describe. Use a growth that "
        f"keeps them together (interleave, identity), or an explicit layer_map such as "
        f"{sorted(sources, key=is_sparse)}."
    )


def _grown_period(
    period_key: str, offset_key: str, rule: tuple[int, int], anatomy: DecoderAnatomy, sources: tuple[int, ...]
) -> tuple[int, int]:
    """A `(period, offset)` that marks exactly the copies of the layers the old one marked, the old one first."""
    period, offset = rule
    marked = [j for j, s in enumerate(sources) if s % period == offset]
    limit = max(period, len(sources) + 1)
    candidates = [(period, offset)] + [(p, o) for p in range(1, limit + 1) for o in range(p)]
    for new_period, new_offset in candidates:
        if [j for j in range(len(sources)) if j % new_period == new_offset] == marked:
            return new_period, new_offset
    raise ValueError(
        f"{anatomy.model_type}'s config gives layer i another kind when i % {period_key} == {offset_key} "
        f"({period_key}={period}, {offset_key}={offset}), but this growth puts copies of those layers at positions "
        f"{marked}, which no period and offset describe. Use a growth that keeps them periodic (a stack of a model "
        "whose layer count is a multiple of the period, or an explicit layer_map)."
    )
