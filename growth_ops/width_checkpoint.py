"""Width growth of a safetensors checkpoint on disk, one model tensor at a time, by the rules of `width_rules`.

A checkpoint may store a model tensor under another name or split into several (Transformers' weight
conversions: Mixtral's fused experts are saved as one `w1`/`w2`/`w3` per expert). A width rule is defined
on the model's tensor, so each model tensor is rebuilt from its files, grown by the same `grow_tensor` that
growth in memory runs, and split again by `revert_weight_conversion`, the function `save_pretrained` calls:
the files equal growth in memory + `save_pretrained` by construction. Which stored element belongs where is
found by passing an index tensor (`arange`) through that same conversion. Memory holds the model tensors
of a few groups at a time, never the model.
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers.core_model_loading import revert_weight_conversion

from mtlm_shards import TensorCopy, open_shard

from .width import WidthPlan
from .width_rules import TensorRule, grow_tensor

if TYPE_CHECKING:
    from .checkpoint import CheckpointGrowth

_CACHED_GROUPS = 4
"""Split model tensors kept grown at once: shards list a layer's experts by name, so the parts of its
`gate_up_proj` and `down_proj` alternate; four groups cover that without growing one twice."""


@dataclass
class DiskWidth:
    """How every stored tensor of a checkpoint grows in width.

    Args:
        plan (`WidthPlan`): The width plan of the model (on the meta device).
        source (`nn.Module`): The model skeleton before widening (meta), for the source's weight conversions.
        widened (`nn.Module`): The skeleton after widening, before depth growth (meta).
        weight_map (`dict[str, str]`): The file of every stored tensor of the source.
        single (`dict[str, tuple[str, TensorRule]]`): Stored name -> (model tensor name, rule), for tensors
            stored whole.
        groups (`dict[str, str]`): Stored name -> model tensor name, for model tensors stored in parts.
        shapes (`dict[str, tuple[int, ...]]`): The grown shape of every stored tensor that grows.
    """

    plan: WidthPlan
    source: nn.Module
    widened: nn.Module
    weight_map: dict[str, str]
    single: dict[str, tuple[str, TensorRule]] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def plan_disk_width(
    plan: WidthPlan, source: nn.Module, widened: nn.Module, weight_map: dict[str, str], dropped: set[str]
) -> DiskWidth:
    """Map every model tensor that grows to the tensors that store it, and their grown shapes.

    Args:
        plan (`WidthPlan`): From `plan_width` on `source`.
        source (`nn.Module`): The skeleton of the checkpoint's model (meta device), before widening.
        widened (`nn.Module`): The same skeleton widened by `apply_width` (before depth growth).
        weight_map (`dict[str, str]`): The file of every tensor of the checkpoint.
        dropped (`set[str]`): Stored aliases of tied tensors, not written.

    Returns:
        `DiskWidth`

    Raises:
        ValueError: If a model tensor is stored under names its conversion does not give.
    """
    width = DiskWidth(plan, source, widened, weight_map)
    state, grown_state = source.state_dict(), widened.state_dict()
    for name, rule in plan.rules.items():
        if name not in state:  # a non-persistent buffer: rebuilt at load time, not stored
            continue
        parts = revert_weight_conversion(source, {name: state[name]})
        grown = revert_weight_conversion(widened, {name: grown_state[name]})
        missing = sorted(set(parts) - set(weight_map) - dropped)
        if missing or set(parts) != set(grown):
            raise ValueError(
                f"The model tensor {name} is saved as {sorted(parts)[:3]}, but the checkpoint lacks {missing[:3]}: it "
                "was saved by another version of its model code. Load it and grow in memory (grow + save_pretrained)."
            )
        (stored_name, part), *rest = parts.items()
        if not rest and tuple(part.shape) == tuple(state[name].shape):
            width.single[stored_name] = (name, rule)
        else:
            width.groups.update(dict.fromkeys(parts, name))
        width.shapes.update({n: tuple(t.shape) for n, t in grown.items()})
    return width


def widened_reader(growth: CheckpointGrowth, stack: contextlib.ExitStack) -> Callable[[TensorCopy], torch.Tensor]:
    """The reader `mtlm_shards.write_shards` calls for each stored tensor: it comes back grown in width.

    The source files it opens stay open until `stack` closes.
    """
    reader = _WidenedReader(growth.width, lambda file: stack.enter_context(open_shard(growth.source / file)))
    return reader.read


class _WidenedReader:
    """Reads stored tensors grown in width: one stored tensor, or the model tensor it is a part of."""

    def __init__(self, width: DiskWidth, open_file) -> None:
        self.width, self.open_file = width, open_file
        self.handles: dict[str, object] = {}
        self.cache: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()

    def read(self, tensor: TensorCopy) -> torch.Tensor:
        name = tensor.source_name
        if name in self.width.single:
            model_name, rule = self.width.single[name]
            data = grow_tensor(self._stored(name), rule, model_name)
        elif name in self.width.groups:
            data = self._group(self.width.groups[name])[name]
        else:
            data = self._stored(name)
        return torch.zeros_like(data) if tensor.zeroed else data

    def _stored(self, name: str) -> torch.Tensor:
        file = self.width.weight_map[name]
        if file not in self.handles:
            self.handles[file] = self.open_file(file)
        return self.handles[file].get_tensor(name)

    def _group(self, model_name: str) -> dict[str, torch.Tensor]:
        if model_name in self.cache:
            self.cache.move_to_end(model_name)
            return self.cache[model_name]
        skeleton = self.width.source.state_dict()[model_name]
        index = torch.arange(math.prod(skeleton.shape)).view(skeleton.shape)
        positions = revert_weight_conversion(self.width.source, {model_name: index})
        parts = {name: self._stored(name) for name in positions}
        assembled = torch.empty(skeleton.shape, dtype=next(iter(parts.values())).dtype)
        for name, where in positions.items():
            assembled.view(-1)[where.reshape(-1)] = parts[name].reshape(-1)
        grown = grow_tensor(assembled, self.width.plan.rules[model_name], model_name)
        self.cache[model_name] = revert_weight_conversion(self.width.widened, {model_name: grown})
        if len(self.cache) > _CACHED_GROUPS:
            self.cache.popitem(last=False)
        return self.cache[model_name]
