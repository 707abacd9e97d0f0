"""The names `save_pretrained` writes a model's tensors under, where they are not the module's names.

Transformers 5 loads old checkpoints through weight conversions (`transformers.conversion_mapping`) and
reverses them on save, so some families keep their legacy names on disk: gemma3 and fuyu write
`language_model.model.layers.N` for `model.language_model.layers.N`, exaone writes GPT-2-style names,
nemotron_h `backbone.` for `model.`, inkling2 a layer's `mlp_input.query` outside the layer list.
`grow_checkpoint` reads such a checkpoint in its own names and needs, for each layer tensor, its layer
index and its name inside the layer as the module calls it (to zero the right residual writers).
Transformers has no public reverse lookup of a single name, so the whole reversal is run once on a
meta-device copy of the state dict and read back by tensor identity.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator

import torch
from transformers import PreTrainedModel
from transformers.core_model_loading import revert_weight_conversion

from .anatomy import DecoderAnatomy
from .plan import GrowthPlan
from .rules import is_zeroed, split_layer_name


def saved_names(skeleton: PreTrainedModel) -> dict[str, str]:
    """`{module name: saved name}` for every tensor that saving only renames (not fused, split or converted)."""
    placeholders = {name: torch.empty_like(t, device="meta") for name, t in skeleton.state_dict().items()}
    by_identity = {id(t): name for name, t in placeholders.items()}
    reverted = revert_weight_conversion(skeleton, dict(placeholders))
    return {by_identity[id(t)]: name for name, t in reverted.items() if id(t) in by_identity}


def _layer_tensors(names: dict[str, str], layers_path: str) -> Iterator[tuple[int, str, str]]:
    """`(layer index, name inside the layer, saved name)` of every layer tensor of `names`."""
    for module_name, saved_name in names.items():
        split = split_layer_name(module_name, layers_path)
        if split is not None:
            yield *split, saved_name


def saved_layer_prefixes(names: dict[str, str], layers_path: str) -> list[str]:
    """Where the layer list `layers_path` lies in the saved names, most often first (none where not renamed)."""
    prefixes = Counter()
    for index, rest, saved_name in _layer_tensors(names, layers_path):
        match = re.match(rf"(.+?)\.{index}\.", saved_name)
        if saved_name != f"{layers_path}.{index}.{rest}" and match:
            prefixes[match[1]] += 1
    return [prefix for prefix, _ in prefixes.most_common()]


def module_inner_names(names: dict[str, str], layers_path: str, saved_prefix: str) -> dict[str, str]:
    """`{saved name: name inside its layer as the module calls it}` for the renamed layer tensors."""
    return {
        saved_name: rest
        for _, rest, saved_name in _layer_tensors(names, layers_path)
        if split_layer_name(saved_name, saved_prefix) is not None
    }


def layer_tensors_saved_outside(
    names: dict[str, str], stored: Iterable[str], layers_path: str, saved_prefix: str
) -> dict[str, tuple[int, str]]:
    """`{saved name: (layer index, name inside the layer)}` for layer tensors saved outside the layer list
    (inkling2 saves `layers.N.mlp_input.query` as `attn_res.mlp_queries.N`): they grow with their layer."""
    stored = set(stored)
    return {
        saved_name: (index, rest)
        for index, rest, saved_name in _layer_tensors(names, layers_path)
        if saved_name in stored and split_layer_name(saved_name, saved_prefix) is None
    }


def grown_outside_tensor_sources(
    outside: dict[str, tuple[int, str]], grown_names: dict[str, str], plan: GrowthPlan, anatomy: DecoderAnatomy
) -> dict[str, tuple[str, bool]]:
    """`{grown saved name: (source saved name, zeroed)}` for the tensors of `layer_tensors_saved_outside`,
    each new layer `j` taking its source's, named as `save_pretrained` names them in the grown model."""
    by_source: dict[int, list[tuple[str, str]]] = {}
    for saved_name, (index, rest) in outside.items():
        by_source.setdefault(index, []).append((rest, saved_name))
    grown = {}
    for j, (source, rule) in enumerate(zip(plan.sources, plan.inits, strict=True)):
        for rest, saved_name in by_source.get(source, []):
            module_name = f"{anatomy.layers_path}.{j}.{rest}"
            if module_name not in grown_names:
                raise ValueError(
                    f"{saved_name!r} holds a tensor of layer {source} outside the layer list, and the grown model "
                    f"saves {module_name!r} by a conversion grow_checkpoint cannot follow: load the model and use "
                    "`grow`, then `save_pretrained`."
                )
            grown[grown_names[module_name]] = (saved_name, is_zeroed(rest, rule, anatomy))
    return grown
