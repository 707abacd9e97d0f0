"""Where a decoder keeps what depth growth must edit: its layer list, layer count and per-layer config.

Discovery is generic (it reads what every Transformers decoder declares: `_no_split_modules`,
`base_model_pp_plan`, the layer-count key and its `attribute_map` alias). Only what cannot be read
off a model is kept as data, in `_data/anatomy.json`, with the reason for every entry.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecoderAnatomy:
    """The parts of a decoder that depth growth reads and rewrites.

    Args:
        layers_path (`str`): Dotted path of the layer list (`"model.layers"`, `"transformer.h"`).
        layer_class (`str`): Class name of the first layer.
        num_layers (`int`): Number of layers found in the list.
        route (`str`): How the layer list was found (logged, and useful when it was not the expected one).
        model_type (`str`, *optional*): `model_type` of the config that holds the layer count.
        config_path (`str`, *optional*): Where that config sits under `model.config`: `""` for
            `model.config` itself, a sub-config name such as `"text_config"`, or `None` when the model
            has no Transformers config (a plain `nn.Module`).
        num_layers_key (`str`, *optional*): Config attribute holding the layer count, after
            `attribute_map` (`"n_layer"` on GPT-2).
        per_layer_keys (`tuple[str, ...]`): Config lists with one entry per layer (`layer_types`).
        index_list_keys (`tuple[str, ...]`): Config lists of layer indices (`mlp_only_layers`): the names the table
            knows, and any list named for layers (`attn_layer_indices`) of distinct indices below the layer count.
        dense_prefix_keys (`tuple[str, ...]`): Config integers `k` that make the first `k` layers dense
            (`first_k_dense_replace`).
        period_keys (`tuple[tuple[str, str], ...]`): `(period_key, offset_key)` config integers that give layer `i`
            another kind when `i % period == offset` (Jamba's attention and expert layers).
        sparse_step (`tuple[str, str, str]`, *optional*): `(step_key, dense_list_key, experts_key)` where
            sparse layers follow from `(layer_idx + 1) % step == 0` (Qwen MoE).
        sparse_range (`tuple[str, str, str]`, *optional*): `(start_key, end_key, interval_key)` where layer `i` is
            sparse when `(i + 1) % interval == 0` and `start <= i <= end` (ERNIE 4.5 MoE).
        residual_writers (`tuple[str, ...]`): Module or parameter names whose output is added to the
            residual stream; zeroing them makes a layer an identity.
        residual_parameters (`tuple[str, ...]`): Exact parameter names inside a layer that write into the
            residual stream beyond `residual_writers`: found by probing the layer (`growth_ops.probe`), or
            from the table where the probe cannot see them.
        check_branches (`bool`): Whether every parameterised non-norm child of a layer must hold a
            residual writer before a zero-residual copy is trusted to be an identity.
        identity_blockers (`tuple[tuple[str, Any, str, bool], ...]`): `(config_key, value, reason, equal)`:
            no layer of this model type can be an exact identity while the setting equals `value` (`equal`) or
            differs from it (not `equal`: the table's `"unless"`).
        rescaled_by_index (`tuple[str, str]`, *optional*): `(module attribute, config key)`: while a module's
            attribute is True, the layers' weights are held divided by a factor that follows `index // period`
            (the config key), as rwkv does for inference, so no layer may move to a position with another factor.
        has_per_layer_overrides (`bool`): Whether the config is heterogeneous: it holds per-layer overrides
            (`per_layer_config`, transformers' heterogeneity, e.g. gemma4's `head_dim` of full-attention
            layers), which growth remaps by the plan's sources like a per-layer list.
        identity_probed (`bool`): Whether the layers to be copied as identities were already probed, on a
            random model of the same config (`growth_ops.disk_probe`, for a skeleton on the meta device), so
            that `residual_parameters` holds what the probe found and identity growth needs no check by names.
        unread_at_forward (`tuple[str, ...]`): Config floats that such a random model reads nowhere at forward time
            (its logits do not change with them), so that identity growth on the meta device may rescale them to keep
            what the layers derive from the layer count (`growth_ops.apply`, MiniCPM3's `residual_scale`).
    """

    layers_path: str
    layer_class: str
    num_layers: int
    route: str
    model_type: str | None = None
    config_path: str | None = None
    num_layers_key: str | None = None
    per_layer_keys: tuple[str, ...] = ()
    index_list_keys: tuple[str, ...] = ()
    dense_prefix_keys: tuple[str, ...] = ()
    period_keys: tuple[tuple[str, str], ...] = ()
    sparse_step: tuple[str, str, str] | None = None
    sparse_range: tuple[str, str, str] | None = None
    residual_writers: tuple[str, ...] = ()
    residual_parameters: tuple[str, ...] = ()
    check_branches: bool = True
    identity_blockers: tuple[tuple[str, Any, str, bool], ...] = ()
    rescaled_by_index: tuple[str, str] | None = None
    has_per_layer_overrides: bool = False
    identity_probed: bool = False
    unread_at_forward: tuple[str, ...] = ()

    def layer_config(self, model: nn.Module) -> PreTrainedConfig | None:
        """Return the config object that holds the layer count, or `None` for a plain module.

        Args:
            model (`nn.Module`): The model this anatomy was discovered on.

        Returns:
            `PreTrainedConfig` or `None`: `model.config`, or its sub-config at `config_path`.
        """
        if self.config_path is None:
            return None
        return getattr(model.config, self.config_path) if self.config_path else model.config


@cache
def _table() -> dict[str, Any]:
    return json.loads(resources.files("growth_ops").joinpath("_data/anatomy.json").read_text())


def discover_anatomy(model: nn.Module, layers_attr: str | None = None) -> DecoderAnatomy:
    """Find the layer list, layer count and per-layer config of a decoder.

    The layer list is found, in order, from `layers_attr`; from `_no_split_modules` (the decoder
    layer class of every Transformers decoder); from the `layers` entry of `base_model_pp_plan`;
    or as the only `nn.ModuleList` of one class whose length is the config's layer count. The route
    taken is logged and recorded in `DecoderAnatomy.route`.

    Args:
        model (`nn.Module`): A Transformers decoder, or any module holding a list of blocks.
        layers_attr (`str`, *optional*): Dotted path of the layer list, e.g. `"blocks"`; required for a
            plain `nn.Module`, optional for Transformers models.

    Returns:
        `DecoderAnatomy`: What growth needs to know about the model.

    Raises:
        ValueError: If no single decoder layer list is found (an encoder-decoder, say), or the config's
            layer count disagrees with the list; the message names what was looked for.
    """
    config = getattr(model, "config", None)
    config = config if isinstance(config, PreTrainedConfig) else None
    defaults = _table()["defaults"]
    top_type = getattr(config, "model_type", None)
    count_key = _table()["model_types"].get(top_type, {}).get("count_key", defaults["count_key"])

    if layers_attr is not None:
        path, route = layers_attr, "layers_attr"
    elif config is not None and getattr(config, "is_encoder_decoder", False):
        raise ValueError(
            f"{type(model).__name__} (model_type={top_type!r}) is an encoder-decoder (config.is_encoder_decoder=True): "
            "growth_ops grows decoder-only models and looked for one decoder layer list. Pass "
            "`layers_attr=` to name a stack explicitly."
        )
    else:
        path, route = _find_layer_list(model, config, count_key)
    layers = _get_module(model, path)
    if not isinstance(layers, nn.ModuleList | nn.Sequential) or len(layers) == 0:
        raise ValueError(f"{path!r} is a {type(layers).__name__}, not a non-empty nn.ModuleList of blocks.")

    config_path, layer_config = _find_layer_config(config, len(layers), count_key)
    if config is not None and layer_config is None:
        raise ValueError(
            f"The config of {type(model).__name__} (model_type={top_type!r}) has no `{count_key}` equal to the "
            f"{len(layers)} layers found at {path!r}: looked in model.config and its sub-configs."
        )
    model_type = getattr(layer_config, "model_type", top_type)
    exception = _table()["model_types"].get(model_type, {})
    per_layer, index_lists, dense_prefixes, periods, num_layers_key = (), (), (), (), None
    if layer_config is not None:
        # A heterogeneous config refuses a global read of its per-layer attributes: they are remapped as overrides.
        overridden = set(getattr(layer_config, "per_layer_attributes", None) or ())
        num_layers_key = layer_config.attribute_map.get(count_key, count_key)
        index_lists = tuple(
            key
            for key in layer_config.to_dict()
            if key not in overridden and _is_index_list(key, getattr(layer_config, key, None), len(layers), defaults)
        )
        dense_prefixes = tuple(
            key for key in defaults["dense_prefix_keys"] if isinstance(getattr(layer_config, key, None), int)
        )
        periods = tuple(
            (period, offset)
            for period, offset in defaults["period_keys"]
            if all(isinstance(getattr(layer_config, key, None), int) for key in (period, offset))
        )
        per_layer = tuple(
            key
            for key in layer_config.to_dict()
            if key not in index_lists
            and key not in overridden
            and key not in defaults["not_per_layer_keys"]
            and not key.endswith(tuple(defaults["not_per_layer_suffixes"]))
            and isinstance(getattr(layer_config, key, None), list | tuple)
            and len(getattr(layer_config, key)) == len(layers)
        )
    step, span = exception.get("sparse_step"), exception.get("sparse_range")
    anatomy = DecoderAnatomy(
        layers_path=path,
        layer_class=type(layers[0]).__name__,
        num_layers=len(layers),
        route=route,
        model_type=model_type,
        config_path=config_path,
        num_layers_key=num_layers_key,
        per_layer_keys=per_layer,
        index_list_keys=index_lists,
        dense_prefix_keys=dense_prefixes,
        period_keys=periods,
        sparse_step=(step["step_key"], step["dense_list_key"], step["experts_key"]) if step else None,
        sparse_range=(span["start_key"], span["end_key"], span["interval_key"]) if span else None,
        residual_writers=tuple(exception.get("residual_writers", defaults["residual_writers"])),
        residual_parameters=tuple(exception.get("residual_parameters", ())),
        check_branches=exception.get("check_branches", True),
        identity_blockers=tuple(
            (b["key"], b.get("value", b.get("unless")), b["why"], "value" in b)
            for b in exception.get("identity_blockers", ())
        ),
        rescaled_by_index=tuple(exception["rescaled_by_index"]) if "rescaled_by_index" in exception else None,
        has_per_layer_overrides=bool(getattr(layer_config, "is_heterogeneous", False)),
    )
    logger.info(
        "growth_ops: %d %s layers at %r found via %s (model_type=%r, count key %r, per-layer keys %s, index lists %s%s)",
        anatomy.num_layers,
        anatomy.layer_class,
        path,
        route,
        model_type,
        num_layers_key,
        list(per_layer),
        list(index_lists),
        f", table entry for {model_type!r}" if exception else "",
    )
    return anatomy


def _is_index_list(key: str, value: Any, num_layers: int, defaults: dict[str, Any]) -> bool:
    if not isinstance(value, list | tuple):
        return False
    if key in defaults["index_list_keys"]:
        return True
    is_indices = all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < num_layers for v in value)
    return "layer" in key and is_indices and len(set(value)) == len(value) != num_layers


def _find_layer_list(model: nn.Module, config: PreTrainedConfig | None, count_key: str) -> tuple[str, str]:
    lists = {name: m for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0}
    # The decoder's count: a multimodal model also counts the layers of its vision tower.
    counts = {getattr(config.get_text_config(decoder=True), count_key, None)} - {None} if config else set()
    tried = []

    block_names = set(getattr(model, "_no_split_modules", None) or ())
    tried.append(f"a ModuleList of {sorted(block_names) or 'the classes in `_no_split_modules` (none declared)'}")
    block_lists = [n for n, m in lists.items() if block_names and all(type(c).__name__ in block_names for c in m)]
    found = block_lists
    if len(found) > 1:
        found = [n for n in found if len(lists[n]) in counts]
    if len(found) > 1 and isinstance(model, PreTrainedModel):
        # A vision tower's blocks are in `_no_split_modules` too: keep the lists inside the decoder.
        inside = {id(m) for m in model.get_decoder().modules()}
        found = [n for n in found if id(lists[n]) in inside]
    if len(found) == 1:
        return found[0], "_no_split_modules"

    pp_plan = getattr(config, "base_model_pp_plan", None) or {}
    prefix = getattr(model, "base_model_prefix", "")
    prefix = f"{prefix}." if prefix and hasattr(model, prefix) else ""
    tried.append(f"the ModuleList named in `base_model_pp_plan` ({sorted(pp_plan) or 'none declared'})")
    found = [f"{prefix}{key}" for key in pp_plan if isinstance(lists.get(f"{prefix}{key}"), nn.ModuleList)]
    if len(found) == 1:
        return found[0], "base_model_pp_plan"

    tried.append(f"the only ModuleList of one class whose length is the config's `{count_key}` ({sorted(counts)})")
    found = [n for n, m in lists.items() if len(m) in counts and len({type(c) for c in m}) == 1]
    if len(found) == 1:
        return found[0], f"config `{count_key}`"

    model_type = getattr(config, "model_type", None)
    candidates = {n: f"{len(m)} x {type(m[0]).__name__}" for n, m in lists.items()}
    present = f" ModuleLists present: {candidates or 'none'}."
    if len(block_lists) > 1:
        sized = sum(len(lists[n]) in counts for n in block_lists)
        present = (
            f" The model runs {len(block_lists)} lists of its blocks ({ {n: candidates[n] for n in block_lists} }), "
            f"{sized or 'none'} of them `{count_key}` long: it is built of several stacks (hierarchical, recurrent "
            "or byte-to-patch), so no one list is the decoder whose depth its config sets."
        )
        others = {n: c for n, c in candidates.items() if n not in block_lists}
        present += f" Other ModuleLists: {others}." if others else ""
    why = ""
    parallel = _parallel_part_lists(lists, counts) if len(block_lists) <= 1 else []
    if parallel:
        why = (
            f": it keeps the parts of each layer in {len(parallel)} parallel ModuleLists of one entry per layer "
            f"({ {n: candidates[n] for n in parallel} }), not in one list of blocks, and growth_ops copies whole "
            "blocks, so it grows this model only once those parts are gathered into one block module per layer"
        )
        present = ""
    raise ValueError(
        f"No decoder layer list found in {type(model).__name__} (model_type={model_type!r}){why}. Looked for "
        + "; then ".join(tried)
        + f".{present} Pass `layers_attr=` with the dotted path of the blocks."
    )


def _parallel_part_lists(lists: dict[str, nn.ModuleList], counts: set[int]) -> list[str]:
    """Sibling ModuleLists, each as long as the layer count, of different classes: XLM's `attentions`, `ffns`
    and their norms, whose entries at index i together make layer i."""
    sized = [n for n, m in lists.items() if len(m) in counts]
    by_parent: dict[str, list[str]] = {}
    for name in sized:
        by_parent.setdefault(name.rpartition(".")[0], []).append(name)
    for siblings in by_parent.values():
        if len(siblings) > 1 and len({type(lists[n][0]) for n in siblings}) > 1:
            return siblings
    return []


def _find_layer_config(
    config: PreTrainedConfig | None, num_layers: int, count_key: str
) -> tuple[str | None, PreTrainedConfig | None]:
    if config is None:
        return None, None
    named = {"": config, **{name: getattr(config, name, None) for name in config.sub_configs}}
    text_config = config.get_text_config(decoder=True)
    # The decoder's config first: a vision tower may have a layer count that happens to be the same.
    for path, candidate in sorted(named.items(), key=lambda item: item[1] is not text_config):
        if isinstance(candidate, PreTrainedConfig) and getattr(candidate, count_key, None) == num_layers:
            return path, candidate
    return None, None


def _get_module(model: nn.Module, path: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError as error:
        raise ValueError(f"{type(model).__name__} has no submodule {path!r}: {error}") from None
