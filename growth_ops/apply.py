"""Apply a growth plan to a model in memory: the only place where growth_ops touches modules.

Everything that can fail (config validation, the structural check against a freshly built model,
the identity checks, copying the layers) runs before the model is touched; the model is then
changed by assignments that cannot fail, so a failed growth leaves it exactly as it was. What a new
layer copies and zeroes, and the grown config, come from `rules`, which growth on disk reads too.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel

from .anatomy import DecoderAnatomy, discover_anatomy
from .plan import GrowthPlan
from .probe import BlockInputs, capture_block_inputs, probe_logits, zero_residual_failure
from .rules import grown_config_changes, grown_tensor_sources, is_residual_writer, is_zeroed, split_layer_name

logger = logging.getLogger(__name__)

# (position in the grown layer list or None for modules outside it, module name relative to it) -> changes
_AttributeChanges = dict[tuple[int | None, str], dict[str, Any]]
# position in the grown layer list -> submodules of its copy that the layer built there does not have
_Unused = dict[int, tuple[str, ...]]


def apply_plan(
    model: nn.Module,
    plan: GrowthPlan,
    anatomy: DecoderAnatomy | None = None,
    freeze_source_layers: bool = False,
) -> nn.Module:
    """Rebuild the layer list of `model` as `plan` says, and mend everything that depends on it.

    Kept layers stay the same objects; new layers are deep copies that share the model's config
    (and anything else held outside the layer list) by reference. Afterwards the config's layer
    count and per-layer lists follow the plan, every `layer_idx` is the layer's new position, and
    every attribute a layer derives from its index or the per-layer config (GPT-2's inverse-index
    attention scaling, Gemma's `is_sliding`, ...) is what a freshly built model would hold; for
    Transformers models this is checked by building the grown model on the meta device.

    What was built for the old depth must be built again: an optimizer does not know the new
    parameters, a `DynamicCache` is sized by the old layer count, and DDP/FSDP/`torch.compile`
    wrappers must be re-created around the grown model.

    Args:
        model (`nn.Module`): The model to grow, in place.
        plan (`GrowthPlan`): Which source layer each new position comes from, and its init rule.
        anatomy (`DecoderAnatomy`, *optional*): Defaults to `discover_anatomy(model)`.
        freeze_source_layers (`bool`, *optional*, defaults to `False`): Leave only the plan's new
            layers trainable.

    Returns:
        `nn.Module`: The same model object, grown.

    Raises:
        ValueError: If the plan does not fit the model; if the grown config would build layers with
            another structure than their sources; or, for `zero_residual` layers, if the model
            cannot keep its function exactly (a post-norm block, a branch without a known residual
            writer, or a kept layer whose computation depends on its position).
    """
    anatomy = anatomy or discover_anatomy(model)
    layers = model.get_submodule(anatomy.layers_path)
    if len(layers) != plan.source_num_layers:
        raise ValueError(
            f"The plan grows a {plan.source_num_layers}-layer model but {anatomy.layers_path!r} holds {len(layers)} "
            f"layers: make the plan with num_layers={len(layers)}."
        )
    layer_config = anatomy.layer_config(model)
    _check_rescaled_by_index(model, layer_config, anatomy, plan)
    config_changes = grown_config_changes(layer_config, anatomy, plan)
    attribute_changes, layer_sized, unused = _position_changes(model, layers, anatomy, plan, config_changes)
    shared = _shared_objects(model, layers)
    if "zero_residual" in plan.inits:
        restored = _depth_scaled_change(
            model,
            layers,
            anatomy,
            plan,
            config_changes,
            attribute_changes,
            lambda key, value: key in anatomy.unread_at_forward or unread_at_forward(model, layer_config, key, value),
        )
        if restored is not None:
            logger.info("growth_ops: %s, so that the kept layers keep what they derive from the layer count", restored)
            config_changes = {**config_changes, **restored}
            attribute_changes, layer_sized, unused = _position_changes(model, layers, anatomy, plan, config_changes)
        placed = _PlacedCopies(layers, plan, attribute_changes, unused, shared)
        anatomy = _check_identity(
            model, layers, placed, layer_config, anatomy, plan, attribute_changes, config_changes
        )

    kept = set(plan.kept_positions)
    new_layers = []
    for j, (source, rule) in enumerate(zip(plan.sources, plan.inits, strict=True)):
        if j in kept:
            new_layers.append(layers[source])
            continue
        clone = _copy_without(layers[source], unused.get(j, ()), shared)
        _apply_init_rule(clone, rule, anatomy)
        new_layers.append(clone)

    assignments = _resolve(attribute_changes, new_layers, model)

    # Commit: from here on only assignments that cannot fail.
    for module, attribute, value in assignments:
        setattr(module, attribute, value)
    for key, value in config_changes.items():
        setattr(layer_config, key, value)
    for name, value in layer_sized.items():
        model.get_parameter(name).data = value
    # Refill the same container, so that anything holding a reference to it sees the grown list.
    del layers[:]
    layers.extend(new_layers)
    if freeze_source_layers:
        trainable = {id(p) for j in plan.new_positions for p in new_layers[j].parameters()}
        for parameter in model.parameters():
            parameter.requires_grad_(id(parameter) in trainable)
    logger.info(
        "growth_ops: grew %r from %d to %d layers (%s)",
        anatomy.layers_path,
        plan.source_num_layers,
        plan.num_layers,
        plan.method,
    )
    return model


def _check_rescaled_by_index(model: nn.Module, config: Any, anatomy: DecoderAnatomy, plan: GrowthPlan) -> None:
    """Refuse to move a layer whose weights are held scaled by a factor that follows its index (rwkv after a
    forward pass in eval mode): training would undo the scale of its new position, not the one it holds."""
    if anatomy.rescaled_by_index is None or config is None:
        return
    attribute, period_key = anatomy.rescaled_by_index
    period = getattr(config, period_key, 0) or 0
    if period <= 0 or not any(getattr(module, attribute, False) is True for module in model.modules()):
        return
    moved = [(source, j) for j, source in enumerate(plan.sources) if source // period != j // period]
    if moved:
        source, position = moved[0]
        raise ValueError(
            f"{type(model).__name__} holds its layers' weights rescaled for inference by a factor that follows the "
            f"layer index ({attribute}=True, {period_key}={period}): layer {source} would move to position {position}, "
            "whose factor differs, and training would undo it by the wrong one. Run one forward pass in training mode "
            "first (`model.train()`, then any batch), which restores the weights, and grow then."
        )


def _resolve(
    changes: _AttributeChanges, new_layers: list[nn.Module] | dict[int, nn.Module], model: nn.Module
) -> list[tuple[nn.Module, str, Any]]:
    """Find every module to change before the commit, so that the commit cannot fail half-way."""
    assignments = []
    for (position, name), attributes in changes.items():
        root = model if position is None else new_layers[position]
        try:
            module = root.get_submodule(name)
        except AttributeError:
            # Only a model that differs from its fresh reference (see `_check_structure`) lacks one of its modules.
            continue
        assignments += [(module, attribute, value) for attribute, value in attributes.items()]
    return assignments


def _position_changes(
    model: nn.Module, layers: nn.Module, anatomy: DecoderAnatomy, plan: GrowthPlan, config_changes: dict[str, Any]
) -> tuple[_AttributeChanges, dict[str, torch.Tensor], _Unused]:
    """What growth changes for each position: every `layer_idx` renumbered, and for Transformers models the
    attributes, per-layer slices and left-out submodules that `_derived_attribute_changes` finds."""
    changes = _index_attribute_changes(layers, plan)
    if anatomy.layer_config(model) is None or not isinstance(model, PreTrainedModel):
        return changes, {}, {}
    derived, layer_sized, unused = _derived_attribute_changes(model, anatomy, plan, config_changes)
    for key, changed in derived.items():
        changes.setdefault(key, {}).update(changed)
    return changes, layer_sized, unused


def _copy_without(layer: nn.Module, unused: tuple[str, ...], shared: dict[int, Any]) -> nn.Module:
    """A deep copy of `layer` without its `unused` submodules, sharing what `shared` holds."""
    # A fresh memo per copy: deepcopy fills it, and a reused one would make the copies share tensors.
    clone = copy.deepcopy(layer, memo=dict(shared))
    for name in unused:
        parent, _, child = name.rpartition(".")
        delattr(clone.get_submodule(parent), child)
    return clone


class _PlacedCopies:
    """The copy each position of the plan receives, as it will compute there, made when asked for.

    The identity probe runs these rather than their sources: a layer's own forward may depend on its position
    (rwkv applies `pre_ln` to the residual stream in layer 0 only), so a copy of layer 0 placed elsewhere is an
    identity when zeroed although layer 0 itself is not.
    """

    def __init__(
        self, layers: nn.Module, plan: GrowthPlan, changes: _AttributeChanges, unused: _Unused, shared: dict[int, Any]
    ) -> None:
        self.layers, self.plan, self.changes, self.unused, self.shared = layers, plan, changes, unused, shared

    def __getitem__(self, position: int) -> nn.Module:
        clone = _copy_without(self.layers[self.plan.sources[position]], self.unused.get(position, ()), self.shared)
        changes = {key: value for key, value in self.changes.items() if key[0] == position}
        for module, attribute, value in _resolve(changes, {position: clone}, clone):
            setattr(module, attribute, value)
        return clone


# Module attributes that hold a layer's KV-cache slot and nothing else: a layer moved to another position takes
# that position's slot and computes the same. Named, because what an integer attribute is used for cannot be told
# from its value; every other attribute that follows the position makes identity growth refuse.
CACHE_SLOT_ATTRIBUTES = {
    "layer_idx": "transformers' cache slot of a layer (`Cache.update(..., layer_idx)`)",
    "layer_id": "gpt_neo's name for the same slot (GPTNeoSelfAttention passes it to `Cache.update`)",
}


def _index_attribute_changes(layers: nn.Module, plan: GrowthPlan) -> _AttributeChanges:
    """Renumber every integer `layer_idx` that holds its layer's old index (the KV-cache slot)."""
    changes: _AttributeChanges = {}
    for j, source in enumerate(plan.sources):
        for name, module in layers[source].named_modules():
            index = getattr(module, "layer_idx", None)
            if isinstance(index, int) and not isinstance(index, bool) and index == source:
                changes[(j, name)] = {"layer_idx": j}
    return changes


def _buildable_copy(config: PreTrainedConfig) -> PreTrainedConfig:
    """A deep copy of `config` (and its sub-configs) whose `dtype` is a torch dtype.

    `save_pretrained` leaves the dtype as a string ("float32") on the config in memory, and some families
    build modules from it (Apertus' xIELU passes `config.dtype` to `torch.tensor`), so a model saved once
    could not be rebuilt from its own config.
    """
    copied = copy.deepcopy(config)
    for candidate in (copied, *vars(copied).values()):
        name = getattr(candidate, "dtype", None) if isinstance(candidate, PreTrainedConfig) else None
        if isinstance(name, str) and isinstance(getattr(torch, name, None), torch.dtype):
            candidate.dtype = getattr(torch, name)
    return copied


def _derived_attribute_changes(
    model: PreTrainedModel, anatomy: DecoderAnatomy, plan: GrowthPlan, config_changes: dict[str, Any]
) -> tuple[_AttributeChanges, dict[str, torch.Tensor], _Unused]:
    """Attributes that a freshly built model holds differently because of the growth, the grown values of
    the parameters outside the layer list that hold one slice per layer, and the submodules of copies that the
    layer built at their position does not have (see `_unused_submodules`).

    Builds the model twice on the meta device, from its config before and after growth, and
    compares every plain attribute of every module: what differs between layer `i` before and its
    copy at position `j` after (or between a module outside the layer list before and after)
    follows from the index or the per-layer config, and is what growth must change.

    Raises:
        ValueError: If the grown config would build different weights than the grown layer list holds.
    """
    new_config = _buildable_copy(model.config)
    new_layer_config = getattr(new_config, anatomy.config_path) if anatomy.config_path else new_config
    for key, value in config_changes.items():
        setattr(new_layer_config, key, value)
    with torch.device("meta"):
        before = type(model)(_buildable_copy(model.config))
        after = type(model)(new_config)
    layer_sized, unused = _check_structure(model, before, after, anatomy, plan)

    prefix = anatomy.layers_path + "."
    old_modules = dict(before.named_modules())
    changes: _AttributeChanges = {}
    for name, new_module in after.named_modules():
        if name.startswith(prefix):
            position, _, rest = name[len(prefix) :].partition(".")
            key = (int(position), rest)
            old_name = f"{prefix}{plan.sources[int(position)]}{'.' if rest else ''}{rest}"
        else:
            key, old_name = (None, name), name
        old, new = _plain_attributes(old_modules.get(old_name)), _plain_attributes(new_module)
        changed = {a: v for a, v in new.items() if a in old and old[a] != v}
        if changed:
            changes[key] = changed
    sliced = {name: remap_layer_slices(model.get_parameter(name), axis, plan) for name, axis in layer_sized.items()}
    return changes, sliced, unused


def _check_structure(
    model: nn.Module, before: nn.Module, after: nn.Module, anatomy: DecoderAnatomy, plan: GrowthPlan
) -> tuple[dict[str, int], _Unused]:
    """The grown model must hold exactly the weights `from_pretrained` would build from the grown config.

    Returns:
        `{parameter name: axis}` for the parameters outside the layer list that hold one equal slice per layer
        along `axis` (gemma4's per-layer input embeddings): growth gives each new layer its source's slice. And
        the submodules to leave out of copies whose position builds its layer without them (`_unused_submodules`).
    """
    current = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if current != {k: tuple(v.shape) for k, v in before.state_dict().items()}:
        # Adapters, quantization or hand edits: a fresh model is no reference for this one.
        logger.warning(
            "growth_ops: %s differs from a model freshly built from its own config; the structure of the grown "
            "model is not checked.",
            type(model).__name__,
        )
        return {}, {}
    sources = grown_tensor_sources(current, anatomy.layers_path, plan, anatomy)
    grown = {name: current[source] for name, (source, _) in sources.items()}
    reference = {k: tuple(v.shape) for k, v in after.state_dict().items()}
    layer_sized = {
        name: axis
        for name in grown.keys() & reference.keys()
        if (axis := layer_slice_axis(grown[name], reference[name], plan)) is not None
    }
    named_parameters = dict(model.named_parameters())
    for name, axis in layer_sized.items():
        if name not in named_parameters:
            raise ValueError(
                f"{name!r} holds one slice per layer, but is a buffer: growth_ops regrows parameters only."
            )
        shape = list(grown[name])
        shape[axis] = reference[name][axis]
        grown[name] = tuple(shape)
    unused = _unused_submodules(model.get_submodule(anatomy.layers_path), current, reference, anatomy, plan)
    left_out = {f"{anatomy.layers_path}.{j}.{name}." for j, names in unused.items() for name in names}
    grown = {name: shape for name, shape in grown.items() if not name.startswith(tuple(left_out))}
    if grown != reference:
        if clash := _built_by_position(current, reference, anatomy.layers_path, plan, unused):
            raise ValueError(f"Growing {type(model).__name__} this way {clash}")
        missing = sorted(reference.keys() - grown.keys())[:4]
        unexpected = sorted(grown.keys() - reference.keys())[:4]
        reshaped = sorted(k for k in grown.keys() & reference.keys() if grown[k] != reference[k])[:4]
        raise ValueError(
            f"Growing {type(model).__name__} this way gives weights that a model built from the grown config would not "
            f"have (missing {missing}, unexpected {unexpected}, other shapes {reshaped}): the config decides some "
            "weight's shape by a rule growth_ops cannot remap, or holds weights sized by the layer count."
        )
    if unused:
        logger.info("growth_ops: copies leave out what their positions build without: %s", unused)
    return layer_sized, unused


def _unused_submodules(
    layers: nn.Module,
    current: dict[str, tuple[int, ...]],
    reference: dict[str, tuple[int, ...]],
    anatomy: DecoderAnatomy,
    plan: GrowthPlan,
) -> _Unused:
    """Whole submodules a copy holds and the layer built at its position does not (rwkv's `pre_ln`, built in
    layer 0 only), where that is the copy's only difference from it.

    Leaving them out is exact: once growth has set the copy's attributes to those of the layer built there
    (rwkv's `layer_id`), the copy runs the same code as that layer, which a fresh model runs without them.
    """
    old, new = _tensors_by_layer(current, anatomy.layers_path), _tensors_by_layer(reference, anatomy.layers_path)
    kept, unused = set(plan.kept_positions), {}
    for position, source in enumerate(plan.sources):
        built, copied = new.get(position, {}), old.get(source, {})
        extra = copied.keys() - built.keys()
        if position in kept or not extra or any(copied.get(k) != shape for k, shape in built.items()):
            continue
        whole = []
        for name, module in layers[source].named_modules():
            own = {f"{name}.{k}" for k in module.state_dict()}
            if name and own and own <= extra and not any(name.startswith(w + ".") for w in whole):
                whole.append(name)
        if {f"{w}.{k}" for w in whole for k in layers[source].get_submodule(w).state_dict()} == extra:
            unused[position] = tuple(whole)
    return unused


def _tensors_by_layer(shapes: dict[str, tuple[int, ...]], layers_path: str) -> dict[int, dict[str, tuple[int, ...]]]:
    """`{layer index: {name inside the layer: shape}}` of the tensors in the layer list."""
    layers: dict[int, dict[str, tuple[int, ...]]] = {}
    for name, shape in shapes.items():
        if (split := split_layer_name(name, layers_path)) is not None:
            layers.setdefault(split[0], {})[split[1]] = shape
    return layers


def _built_by_position(
    current: dict[str, tuple[int, ...]],
    reference: dict[str, tuple[int, ...]],
    layers_path: str,
    plan: GrowthPlan,
    unused: _Unused,
) -> str:
    """Where a copy lands at a position the grown model builds unlike its source, the first such copy in words
    (modernbert-decoder builds no `attn_norm` in layer 0), else nothing. Copies that only hold more than the
    layer built there leave that out (`unused`) and are not counted."""
    old, new = _tensors_by_layer(current, layers_path), _tensors_by_layer(reference, layers_path)
    for position, source in enumerate(plan.sources):
        built, copied = new.get(position, {}), old.get(source, {})
        if built == copied or position in unused:
            continue
        needs, lacks = sorted(built.keys() - copied.keys())[:3], sorted(copied.keys() - built.keys())[:3]
        reshaped = sorted(k for k in built.keys() & copied.keys() if built[k] != copied[k])[:3]
        differences = [f"{what} {names}" for what, names in (("with", needs), ("without", lacks)) if names]
        differences += [f"with other shapes of {reshaped}"] if reshaped else []
        alike = [layer for layer, tensors in sorted(old.items()) if tensors == built]
        return (
            f"puts a copy of layer {source} at position {position}, where the grown config builds a layer "
            f"{' and '.join(differences)} ({f'like source layers {alike}' if alike else 'like no source layer'}): "
            "the model builds its layers by position, not all alike, and the config cannot say otherwise. Choose "
            "a method or positions that put each copy where a layer is built like its source."
        )
    return ""


def layer_slice_axis(old: tuple[int, ...], new: tuple[int, ...], plan: GrowthPlan) -> int | None:
    """The one axis along which a tensor holds `source_num_layers` equal slices that growth turns into `num_layers`."""
    differ = [axis for axis, (a, b) in enumerate(zip(old, new, strict=False)) if a != b]
    if len(old) != len(new) or len(differ) != 1:
        return None
    axis = differ[0]
    size, rest = divmod(old[axis], plan.source_num_layers)
    return axis if rest == 0 and new[axis] == size * plan.num_layers else None


def remap_layer_slices(parameter: torch.Tensor, axis: int, plan: GrowthPlan) -> torch.Tensor:
    """Slice `j` of the grown tensor is slice `plan.sources[j]` of the old one (a copy: no storage shared)."""
    slices = parameter.detach().chunk(plan.source_num_layers, dim=axis)
    return torch.cat([slices[s] for s in plan.sources], dim=axis)


def _plain_attributes(module: nn.Module | None) -> dict[str, Any]:
    if module is None:
        return {}
    return {k: v for k, v in vars(module).items() if not k.startswith("_") and k != "training" and _is_plain(v)}


def _is_plain(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, bool | int | float | str)


def _check_identity(
    model: nn.Module,
    layers: nn.Module,
    placed: _PlacedCopies,
    config: Any,
    anatomy: DecoderAnatomy,
    plan: GrowthPlan,
    changes: _AttributeChanges,
    config_changes: dict[str, Any],
) -> DecoderAnatomy:
    """Refuse `zero_residual` growth that would not compute exactly the same function.

    Each source of an identity copy is run zeroed on the inputs the model gives it (`growth_ops.probe`);
    the anatomy is returned with the residual writers the probe found beyond the named ones. A model
    that cannot be probed (on the meta device) is checked by the names of its writers only, unless its
    anatomy was probed on a model of the same layers already (`grow_checkpoint`).
    """
    for key, value, why, equal in anatomy.identity_blockers:
        if config is not None and (getattr(config, key, None) == value) == equal:
            raise ValueError(
                f"Identity growth is impossible for {anatomy.model_type} with {key}={getattr(config, key, None)!r}: "
                f"{why}. Use another method (stack, interleave, dus, explicit)."
            )
    if not anatomy.identity_probed:
        sources = {s for s, rule in zip(plan.sources, plan.inits, strict=True) if rule == "zero_residual"}
        anatomy = probe_placed_identity(placed, capture_block_inputs(model, layers, sources), plan, anatomy)
    for position, name, moved in _kept_changes(model, layers, plan, changes, config_changes):
        if position is None:
            where, cause = "the model", "the layer count"
        elif plan.sources[position] == position:
            where, cause = f"layer {position}, which keeps its position", "the layer count"
        else:
            where, cause = f"layer {plan.sources[position]} moved to {position}", "its position or the layer count"
        raise ValueError(
            f"Identity growth cannot keep the function of this model: in {where}, module {name!r} would change "
            f"{moved} because it depends on {cause} (e.g. GPT-2's scale_attn_by_inverse_layer_idx), and no config "
            "value that the model reads nowhere else restores it. Insert copies only after the last layer "
            "(`positions=[L-1, ...]`) or use another method."
        )
    return anatomy


def _kept_changes(
    model: nn.Module, layers: nn.Module, plan: GrowthPlan, changes: _AttributeChanges, config_changes: dict[str, Any]
) -> list[tuple[int | None, str, dict[str, Any]]]:
    """`(position, module name, {attribute: new value})` of what growth changes in the kept layers and outside the
    layer list beyond their cache slot and the config: what would change the function of an identity growth."""
    kept, counts, found = set(plan.kept_positions), (plan.num_layers, plan.source_num_layers), []
    for (position, name), changed in changes.items():
        if position is not None and position not in kept:
            continue
        # A module's copy of a per-layer config entry (gpt_neo's `attention_layers`, mllama's
        # `cross_attention_layers`) follows the plan's sources like the config: every layer keeps its kind.
        moved = {
            a: v
            for a, v in changed.items()
            if a not in CACHE_SLOT_ATTRIBUTES and (a not in config_changes or config_changes[a] != v)
        }
        if position is None:
            # The layer count held outside the layer list (CTRL's `transformer.num_layers`) only sizes the loop.
            moved = {a: v for a, v in moved.items() if (v, getattr(model.get_submodule(name), a, None)) != counts}
        else:
            # A float that `_depth_scaled_change` restores may differ from the old one in its last bits.
            module = layers[plan.sources[position]].get_submodule(name)
            moved = {a: v for a, v in moved.items() if not _nearly_equal_floats(getattr(module, a, None), v)}
        if moved:
            found.append((position, name, moved))
    return found


def _nearly_equal_floats(old: Any, new: Any) -> bool:
    return type(old) is float and type(new) is float and math.isclose(old, new, rel_tol=1e-12)


def _depth_scaled_change(
    model: nn.Module,
    layers: nn.Module,
    anatomy: DecoderAnatomy,
    plan: GrowthPlan,
    config_changes: dict[str, Any],
    changes: _AttributeChanges,
    unread: Callable[[str, float], bool],
) -> dict[str, Any] | None:
    """The config value that keeps, through identity growth, what the kept layers derive from the layer count.

    MiniCPM3 scales each residual branch by `scale_depth / sqrt(num_hidden_layers)`: with more layers the kept
    ones would add less, and the grown model would not be its source. Where one float of the config, scaled by
    the ratio of the old to the new value of that attribute, gives every kept layer its old attributes back
    (checked on the meta-device builds), and the model reads it nowhere at forward time (its logits do not
    change with it: `unread(key, value)`), `{key: value}` is returned; otherwise `None`, and the identity check
    refuses.
    """
    config = anatomy.layer_config(model)
    moved = _kept_changes(model, layers, plan, changes, config_changes)
    if config is None or not isinstance(model, PreTrainedModel) or not moved:
        return None
    ratio = _first_float_ratio(model, layers, plan, moved)
    if ratio is None:
        return None
    for key, value in config.to_dict().items():
        if key in config_changes or type(value) is not float or value == 0.0:
            continue
        trial = {**config_changes, key: value * ratio}
        if _kept_changes(model, layers, plan, _position_changes(model, layers, anatomy, plan, trial)[0], trial):
            continue
        if unread(key, value * ratio):
            return {key: value * ratio}
    return None


def _first_float_ratio(
    model: nn.Module, layers: nn.Module, plan: GrowthPlan, moved: list[tuple[int | None, str, dict[str, Any]]]
) -> float | None:
    """Old over new value of the first float attribute that growth would change in a kept layer."""
    for position, name, attributes in moved:
        root = model if position is None else layers[plan.sources[position]]
        for attribute, new in attributes.items():
            old = getattr(root.get_submodule(name), attribute, None)
            if type(old) is float and type(new) is float and new != 0.0:
                return old / new
    return None


def unread_at_forward(model: PreTrainedModel, config: Any, key: str, value: float) -> bool:
    """Whether the model's logits stay the same with `config.key` set to `value` (the config restored after);
    `False` on the meta device, where `grow_checkpoint` asks it of a random model (`growth_ops.disk_probe`)."""
    before = probe_logits(model)
    if before is None:
        return False
    old = getattr(config, key)
    try:
        setattr(config, key, value)
        after = probe_logits(model)
    finally:
        setattr(config, key, old)
    return torch.equal(before, after)


def depth_scaled_change(
    skeleton: PreTrainedModel,
    anatomy: DecoderAnatomy,
    plan: GrowthPlan,
    placed: _PlacedCopies,
    unread: Callable[[str, float], bool],
) -> dict[str, Any] | None:
    """`apply_plan`'s config value that keeps the kept layers of identity growth, for growth on disk: `skeleton`
    is the model on the meta device, `placed` its `placed_identity_copies` (which hold what growth changes), and
    `unread` asks a random model whether its forward reads the value."""
    config_changes = grown_config_changes(anatomy.layer_config(skeleton), anatomy, plan)
    layers = skeleton.get_submodule(anatomy.layers_path)
    return _depth_scaled_change(skeleton, layers, anatomy, plan, config_changes, placed.changes, unread)


def left_out_submodules(model: nn.Module, anatomy: DecoderAnatomy, plan: GrowthPlan) -> dict[int, tuple[str, ...]]:
    """`{position: submodule names}` that `apply_plan` leaves out of the copies it places (see
    `_unused_submodules`), for growth on disk, which writes the grown tensors itself."""
    config_changes = grown_config_changes(anatomy.layer_config(model), anatomy, plan)
    return _position_changes(model, model.get_submodule(anatomy.layers_path), anatomy, plan, config_changes)[2]


def placed_identity_copies(
    layers: nn.Module, skeleton: PreTrainedModel, plan: GrowthPlan, anatomy: DecoderAnatomy
) -> _PlacedCopies:
    """The copies `plan` places, made from `layers` as they will compute at their positions, for the on-disk
    probe: `layers` are a random model's cut after the last source, `skeleton` the whole model on the meta
    device, from which the positions' attributes and left-out submodules are derived as `apply_plan` does."""
    config_changes = grown_config_changes(anatomy.layer_config(skeleton), anatomy, plan)
    skeleton_layers = skeleton.get_submodule(anatomy.layers_path)
    changes, _, unused = _position_changes(skeleton, skeleton_layers, anatomy, plan, config_changes)
    return _PlacedCopies(layers, plan, changes, unused, {})


def probe_placed_identity(
    placed: _PlacedCopies, captured: dict[int, BlockInputs], plan: GrowthPlan, anatomy: DecoderAnatomy
) -> DecoderAnatomy:
    """`probe_identity` on every zero-residual copy as placed, on the inputs `captured` for its source."""
    placement = {j: plan.sources[j] for j, rule in enumerate(plan.inits) if rule == "zero_residual"}
    inputs = {j: captured[source] for j, source in placement.items() if source in captured}
    return probe_identity(placed, inputs, placement, anatomy)


def probe_identity(
    copies: _PlacedCopies, inputs: dict[int, BlockInputs], placement: dict[int, int], anatomy: DecoderAnatomy
) -> DecoderAnatomy:
    """Run the copy at each position of `placement` (`{position: source layer}`) zeroed on its captured
    `inputs`, and refuse the first that is no identity.

    Returns the anatomy with the residual writers the probe found beyond the named ones; a copy without
    captured inputs (on the meta device) is checked by the names of its writers only.

    Raises:
        ValueError: Naming the layer and the branch that stays non-zero.
    """
    found: set[str] = set()
    for position, source in placement.items():
        layer = copies[position]
        if position not in inputs:
            _check_writer_names(layer, source, anatomy)
            continue
        reason, extra = zero_residual_failure(layer, inputs[position], lambda n: is_residual_writer(n, anatomy))
        if reason is not None:
            raise ValueError(
                f"Identity growth cannot make layer {source} ({type(layer).__name__}, model_type="
                f"{anatomy.model_type!r}, copied to position {position}) an exact identity: {reason}. Use another "
                "method (stack, interleave, dus, explicit)."
            )
        found.update(extra)
    if found:
        logger.info("growth_ops: probing found residual writers beyond the named ones: %s", sorted(found))
        anatomy = dataclasses.replace(
            anatomy, residual_parameters=tuple(sorted({*anatomy.residual_parameters, *found}))
        )
    return anatomy


def _check_writer_names(layer: nn.Module, source: int, anatomy: DecoderAnatomy) -> None:
    """Without a probe, every parameterised non-norm branch must hold a named residual writer."""
    zeroed = [name for name, _ in layer.named_parameters() if is_residual_writer(name, anatomy)]
    if not zeroed:
        raise ValueError(
            f"Identity growth needs the weights that write into the residual stream, but layer {source} "
            f"({type(layer).__name__}) has none named {list(anatomy.residual_writers)}."
        )
    if not anatomy.check_branches:
        return
    for child_name, child in layer.named_children():
        has_parameters = next(child.parameters(), None) is not None
        is_norm = "norm" in type(child).__name__.lower()
        if has_parameters and not is_norm and not any(n.startswith(child_name + ".") for n in zeroed):
            raise ValueError(
                f"Identity growth cannot make {type(layer).__name__} an exact identity: its branch "
                f"{child_name!r} ({type(child).__name__}) holds none of the known residual writers "
                f"{list(anatomy.residual_writers)}, so zeroing would leave that branch's output."
            )


def _apply_init_rule(layer: nn.Module, rule: str, anatomy: DecoderAnatomy) -> None:
    with torch.no_grad():
        for name, parameter in layer.named_parameters():
            if is_zeroed(name, rule, anatomy):
                parameter.zero_()


def _shared_objects(model: nn.Module, layers: nn.Module) -> dict[int, Any]:
    """A deepcopy memo of what layers may reference but must not own: configs, and every module and
    tensor outside the layer list (a shared rotary embedding, a tied weight). A state tensor a layer keeps
    from its last forward with its autograd graph (recurrent_gemma's `recurrent_states` after a training
    step) is copied without the graph: deepcopy refuses non-leaf tensors, and the copy starts a new graph."""
    inside = {id(m) for m in layers.modules()}
    memo: dict[int, Any] = {}
    for module in model.modules():
        memo.update({id(v): v for v in vars(module).values() if isinstance(v, PreTrainedConfig)})
        memo.update(
            {id(v): v.detach().clone() for v in vars(module).values() if isinstance(v, torch.Tensor) and v.grad_fn}
        )
        if id(module) not in inside:
            memo[id(module)] = module
            memo.update({id(t): t for t in [*module._parameters.values(), *module._buffers.values()] if t is not None})
    return memo
