"""Grow the width of any Transformers decoder exactly: the hidden size, the heads and the intermediate sizes.

A `WidthPlan` is worked out from the model's structure and config only (no weights): the grown config
is the one a user would write for that size (hidden, attention heads and KV heads times `width`, head_dim
kept, intermediate sizes times `intermediate`), a model built from it on the meta device gives the shape
of every grown tensor, and each tensor's role (the axis a linear map contracts, fused projections, the
input embedding, a tied head) comes from the module that holds it. The tensor rules themselves live in
`width_rules`, which the on-disk path (`grow_checkpoint`) applies too.

Why each rule keeps the function (the residual stream `h` becomes `[h; h; ...]`, see `width_rules`):
- RMSNorm and LayerNorm: the mean, variance and mean square of `[h; h]` are those of `h`, so their weights
  and biases are tiled and eps is kept; QK-norms act per head_dim, which is kept, so they are untouched.
- Attention: heads and KV heads are both multiplied, so `num_key_value_groups`, head_dim, the softmax
  scale and RoPE (partial rotary included) are unchanged, and block tiling keeps `repeat_kv`'s grouping.
- Elementwise activations and gated products commute with tiling; a parallel block is a sum of branches.
- MoE routers read `h` (contracted, so divided): the router logits and the experts chosen are the same.
- Scaled embeddings (Gemma multiplies by `sqrt(hidden_size)`, which grows): the embedding is divided by
  the ratio of the new scale to the old, so the scaled embedding is the tiled old one.
- A tied head cannot be tiled (the embedding) and divided (the head) at once: the embedding is tiled,
  and the final norm, the last module before the head, takes the head's `1 / width` on its weight and
  bias (`(1 + w)` norms, Gemma's, on `1 + w`), so the logits are kept; the last hidden state is then
  the tiled one divided by `width`.
- ALiBi (BLOOM, MPT, Falcon with `alibi`) gives each head a slope that depends on the head count: refused.

In memory the plan is checked numerically before it is kept: the grown model runs on a few tokens and
every layer's output must be the tiled output of the source layer (fp32: 1e-5), else the growth is
undone and a ValueError names the first layer that differs.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from huggingface_hub.errors import StrictDataclassError
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.pytorch_utils import Conv1D

from .anatomy import DecoderAnatomy, discover_anatomy
from .apply import _plain_attributes
from .probe import ATOL, _first_tensor, _hidden_states, _is_norm
from .spec import GrowthSpec
from .width_rules import FUSED_LAYOUTS, SCALAR_BUFFERS, WIDTH_BLOCKERS, TensorRule, grow_tensor, plain_axes

logger = logging.getLogger(__name__)

HIDDEN_KEYS = ("hidden_size", "word_embed_proj_dim")
"""Config keys sized like the residual stream (OPT's `word_embed_proj_dim` when it equals the hidden size)."""
HEAD_KEYS = ("num_attention_heads", "num_key_value_heads", "num_kv_heads")
INTERMEDIATE_KEYS = (
    "intermediate_size",
    "moe_intermediate_size",
    "shared_expert_intermediate_size",
    "ffn_dim",
    "n_inner",
    "ffn_hidden_size",
    "d_ff",
    "dff",
)
"""Config keys of MLP and expert sizes, grown by the `intermediate` factor (aliases through `attribute_map`)."""
_PROBE_LENGTH = 6
_TOLERANCE = {torch.float32: ATOL, torch.float64: ATOL}  # otherwise (half precision) 2e-2, relative to the logits


@dataclass
class WidthPlan:
    """What width growth changes in one model: config, module attributes and every tensor's rule.

    Args:
        factor (`int`): Factor of the hidden size and the heads.
        intermediate (`int`): Factor of the intermediate sizes.
        config_changes (`dict[str, Any]`): New values of the keys of the layer config (`anatomy.layer_config`).
        attribute_changes (`dict[str, dict[str, Any]]`): Plain attributes that a freshly built grown model
            holds differently (`in_features`, `num_heads`, `normalized_shape`, ...), by module name.
        rules (`dict[str, TensorRule]`): The rule of every tensor that changes, by its first name in the model
            (tied aliases share it).
        scalar_buffers (`dict[str, float]`): Non-persistent scalar buffers to set (`SCALAR_BUFFERS`).
        final_norm (`str`, *optional*): The final norm that takes a tied head's factor, if any.
    """

    factor: int
    intermediate: int
    config_changes: dict[str, Any]
    attribute_changes: dict[str, dict[str, Any]]
    rules: dict[str, TensorRule]
    scalar_buffers: dict[str, float] = field(default_factory=dict)
    final_norm: str | None = None


def plan_width(model: nn.Module, spec: GrowthSpec, anatomy: DecoderAnatomy | None = None) -> WidthPlan:
    """Work out how `spec` widens `model`, without touching it (the model may be on the meta device).

    Args:
        model (`nn.Module`): A Transformers decoder.
        spec (`GrowthSpec`): Gives `width`, `intermediate`, `width_noise` and `seed`.
        anatomy (`DecoderAnatomy`, *optional*): Defaults to `discover_anatomy(model)`.

    Returns:
        `WidthPlan`

    Raises:
        ValueError: If the model cannot widen exactly (ALiBi, a tensor of a kind whose input axis is unknown,
            a config that would build other tensors than the grown ones); the message names it and the fix.
    """
    anatomy = anatomy or discover_anatomy(model)
    config = anatomy.layer_config(model)
    if not isinstance(model, PreTrainedModel) or config is None:
        raise ValueError(
            f"Width growth reads the sizes to grow from a Transformers config; {type(model).__name__} has none. "
            "Grow a PreTrainedModel, or grow depth only."
        )
    for key, value, why in WIDTH_BLOCKERS:
        if getattr(config, key, None) == value:
            raise ValueError(
                f"Width growth cannot keep the function of {config.model_type} with {key}={value!r}: {why}. "
                "Grow depth only, or train the wider model from scratch."
            )
    factor, intermediate = spec.width or 1, spec.intermediate_factor
    changes = grown_config_changes(config, factor, intermediate)
    before, after = _build_pair(model, anatomy, changes)
    _check_structure(model, before, after)
    attributes = _attribute_changes(before, after)
    roles = _Roles(model, config, after, anatomy, factor)
    rules, final_norm = roles.rules(spec)
    scalars = {
        f"{name}.{buffer}" if name else buffer: float(attributes[name][scalar])
        for name, module in model.named_modules()
        for buffer, scalar in SCALAR_BUFFERS.items()
        if buffer in module._buffers and scalar in attributes.get(name, {})
    }
    return WidthPlan(factor, intermediate, changes, attributes, rules, scalars, final_norm)


def grown_config_changes(config: PreTrainedConfig, factor: int, intermediate: int) -> dict[str, Any]:
    """The new values of the size keys of `config`: what a user would write for the wider model.

    Args:
        config (`PreTrainedConfig`): The config that holds the hidden size.
        factor (`int`): Factor of the hidden size and heads.
        intermediate (`int`): Factor of the intermediate sizes.

    Returns:
        `dict[str, Any]`: `{key: new value}`, validated on a copy of `config`.

    Raises:
        ValueError: If an intermediate size is implicit (`None`, derived from the hidden size) and the factors
            differ, or the config refuses the new values.
    """
    hidden = config.hidden_size
    changes = {key: hidden * factor for key in HIDDEN_KEYS if getattr(config, key, None) == hidden}
    changes.update({key: value * factor for key in HEAD_KEYS if _is_count(value := getattr(config, key, None))})
    for key in INTERMEDIATE_KEYS:
        if not hasattr(config, key):
            continue
        value = getattr(config, key)
        if _is_count(value):
            changes[key] = value * intermediate
        elif value is None and intermediate != factor:
            raise ValueError(
                f"config.{key} is None, so the {config.model_type} MLP size follows the hidden size (x{factor}) and "
                f"cannot grow x{intermediate}: set config.{key} to its value first, or grow with intermediate={factor}."
            )
    trial = copy.deepcopy(config)
    try:
        for key, value in changes.items():
            setattr(trial, key, value)
        trial.validate()
    except (ValueError, TypeError, StrictDataclassError) as error:
        raise ValueError(f"The grown config of {config.model_type} is refused ({error}): {changes}.") from error
    return changes


def apply_width(model: nn.Module, plan: WidthPlan, anatomy: DecoderAnatomy | None = None) -> UndoLog:
    """Widen `model` in place as `plan` says; check that it computes the same function; return how to undo it.

    Every new tensor is computed before the first assignment, the commit is assignments that cannot fail,
    and the check afterwards runs the model on a few tokens: if any layer's output is not the tiled output
    of its source, the model is restored exactly (the same tensors and values) and a ValueError raised.

    Args:
        model (`nn.Module`): The model `plan` was made for.
        plan (`WidthPlan`): From `plan_width`.
        anatomy (`DecoderAnatomy`, *optional*): Defaults to `discover_anatomy(model)`.

    Returns:
        `UndoLog`: Call `.undo()` to restore the model (`grow` does when the depth growth that follows fails).

    Raises:
        ValueError: If the widened model does not compute the same function (the model is then unchanged).
    """
    anatomy = anatomy or discover_anatomy(model)
    layers = model.get_submodule(anatomy.layers_path)
    aliases: dict[int, list[tuple[nn.Module, str]]] = {}
    for name, tensor in [
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ]:
        aliases.setdefault(id(tensor), []).append(_owner(model, name))
    state = dict(model.named_parameters())
    state.update(dict(model.named_buffers()))
    new_tensors = []
    with torch.no_grad():
        for name, rule in plan.rules.items():
            old = state[name]
            if old.device.type == "meta":  # a skeleton (growth on disk): shapes only
                grown = torch.empty(rule.shape, dtype=old.dtype, device="meta")
            else:
                grown = grow_tensor(old.detach(), rule, name)
            value = nn.Parameter(grown, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else grown
            new_tensors.append((aliases[id(old)], value))
        for name, scalar in plan.scalar_buffers.items():
            old = state[name]
            new_tensors.append((aliases[id(old)], torch.tensor(scalar, dtype=old.dtype, device=old.device)))
    reference = _layer_outputs(model, layers)
    undo = UndoLog()
    config = anatomy.layer_config(model)
    # Commit: from here on only assignments that cannot fail.
    for key, value in plan.config_changes.items():
        undo.set(config, key, value)
    for module_name, attributes in plan.attribute_changes.items():
        module = model.get_submodule(module_name)
        for attribute, value in attributes.items():
            undo.set(module, attribute, value)
    for owners, value in new_tensors:
        for module, local in owners:
            table = module._parameters if local in module._parameters else module._buffers
            undo.set_item(table, local, value)
    if reference is not None:
        failure = _compare_layer_outputs(model, layers, reference, plan.factor)
        if failure is not None:
            undo.undo()
            raise ValueError(f"Width growth would not keep the function of {type(model).__name__}: {failure}.")
    logger.info(
        "growth_ops: widened %s: hidden x%d, intermediate x%d (%d tensors grown)",
        type(model).__name__,
        plan.factor,
        plan.intermediate,
        len(plan.rules),
    )
    return undo


class UndoLog:
    """A log of assignments, replayed backwards to restore a model exactly (the same objects)."""

    def __init__(self) -> None:
        self._log: list[tuple[Any, str, bool, Any]] = []

    def set(self, target: Any, attribute: str, value: Any) -> None:
        self._log.append((target, attribute, False, getattr(target, attribute)))
        setattr(target, attribute, value)

    def set_item(self, table: dict, key: str, value: Any) -> None:
        self._log.append((table, key, True, table[key]))
        table[key] = value

    def undo(self) -> None:
        for target, key, is_item, old in reversed(self._log):
            if is_item:
                target[key] = old
            else:
                setattr(target, key, old)
        self._log.clear()


class _Roles:
    """The rule of every tensor, from the module that holds it (which axis its input is contracted with)."""

    def __init__(
        self, model: PreTrainedModel, config: PreTrainedConfig, after: nn.Module, anatomy: DecoderAnatomy, factor: int
    ) -> None:
        self.model, self.config, self.factor, self.anatomy = model, config, factor, anatomy
        self.new_shapes = {n: tuple(t.shape) for n, t in [*after.named_parameters(), *after.named_buffers()]}
        self.new_config = after.config.get_text_config(decoder=True) if anatomy.config_path else after.config
        embedding = model.get_input_embeddings()
        head = model.get_output_embeddings()
        self.embedding_name = next(n for n, m in model.named_modules() if m is embedding)
        self.tied = head is not None and head.weight is embedding.weight
        new_embedding = after.get_submodule(self.embedding_name)
        self.embedding_ratio = _embedding_scale(embedding) / _embedding_scale(new_embedding)

    def rules(self, spec: GrowthSpec) -> tuple[dict[str, TensorRule], str | None]:
        rules = {}
        for name, tensor in [*self.model.named_parameters(), *self.model.named_buffers()]:
            rule = self._rule(name, tuple(tensor.shape))
            if spec.width_noise and rule.contracted is not None and rule.axes[rule.contracted][0][1] > 1:
                rule = replace(rule, noise=float(spec.width_noise), seed=spec.seed or 0)
            if not rule.is_identity:
                rules[name] = rule
        final_norm = None
        if self.tied and self.factor > 1:
            final_norm = self._final_norm()
            module = self.model.get_submodule(final_norm)
            offset = _norm_offset(module)
            scale = 1.0 / (self.embedding_ratio * self.factor)
            for local, tensor in module.named_parameters(recurse=False):
                name = f"{final_norm}.{local}"
                base = rules.get(name, TensorRule(plain_axes(tuple(tensor.shape), (1,) * tensor.dim())))
                rules[name] = replace(base, scale=scale, offset=offset if local == "weight" else 0.0)
        return rules, final_norm

    def _rule(self, name: str, shape: tuple[int, ...]) -> TensorRule:
        new_shape = self.new_shapes[name]
        module, local = _owner(self.model, name)
        is_embedding = module is self.model.get_input_embeddings() and local == "weight"
        scale = self.embedding_ratio if is_embedding else 1.0
        if new_shape == shape:
            return TensorRule(plain_axes(shape, (1,) * len(shape)), scale=scale)
        contracted, output = self._axes(name, module, local, len(shape))
        layout = _fused_layout(module, local, name, self.config) if output is not None else None
        axes = []
        for axis, (old, new) in enumerate(zip(shape, new_shape, strict=True)):
            if axis == output and layout is not None:
                axes.append(self._fused_parts(layout, name, old, new))
            elif new % old:
                raise ValueError(
                    f"{name} grows from {shape} to {new_shape}, not by a whole factor on axis {axis}: growth_ops "
                    "widens by whole factors only."
                )
            else:
                axes.append(((old, new // old),))
        if contracted is not None:
            scale = 1.0 / axes[contracted][0][1]
        return TensorRule(tuple(axes), contracted=contracted, scale=scale)

    def _axes(self, name: str, module: nn.Module, local: str, ndim: int) -> tuple[int | None, int | None]:
        """(contracted axis, output axis) of a tensor; `None` where it has none."""
        if ndim <= 1:
            return None, 0 if ndim else None  # norms, biases, scales: elementwise
        if isinstance(module, nn.Embedding):
            return None, 1
        if isinstance(module, nn.Linear) or type(module).__name__.endswith("Router"):
            return 1, 0
        if isinstance(module, Conv1D):
            return 0, 1
        if hasattr(module, "is_transposed") and ndim == 3:  # Transformers' fused experts: (experts, out, in)
            return (1, 2) if module.is_transposed else (2, 1)
        if hasattr(module, "is_transposed") and ndim == 2:  # their biases: (experts, out)
            return None, 1
        raise ValueError(
            f"Width growth does not know which axis of {name} ({type(module).__name__}.{local}, {ndim}-D) is "
            "contracted with its input, so it cannot widen it exactly. It widens nn.Linear, Conv1D, nn.Embedding, "
            "norms, routers and Transformers' fused experts: grow depth only, or convert the module to one of these."
        )

    def _fused_parts(self, layout: str, name: str, size: int, new_size: int) -> tuple[tuple[int, int], ...]:
        if layout == "halves":
            return ((size // 2, new_size // size),) * 2
        head_dim = _head_dim(self.config)
        q, new_q = self.config.num_attention_heads * head_dim, self.new_config.num_attention_heads * head_dim
        kv, new_kv = (size - q) // 2, (new_size - new_q) // 2
        if kv <= 0 or new_kv % kv or new_q % q or q + 2 * kv != size:
            raise ValueError(
                f"{name} does not split into [q; k; v] of {q}, {kv} and {kv} rows (size {size}): its layout is not "
                "the fused qkv that growth_ops knows; grow depth only."
            )
        return ((q, new_q // q), (kv, new_kv // kv), (kv, new_kv // kv))

    def _final_norm(self) -> str:
        layers = self.anatomy.layers_path + "."
        norms = [
            name
            for name, module in self.model.named_modules()
            if name
            and not name.startswith(layers)
            and _is_norm(module)
            and next(module.parameters(), None) is not None
        ]
        candidates = [n for n in norms if "emb" not in n.rsplit(".", 1)[-1]]
        if not candidates:
            raise ValueError(
                f"{type(self.model).__name__} ties its head to the input embedding (tie_word_embeddings=True) and has no "
                "final norm with a weight to take the head's 1/width: untie it first (set "
                "config.tie_word_embeddings=False and give lm_head its own copy of the embedding), then grow."
            )
        return candidates[-1]  # registered after the layer list, the last module before the head


def _fused_layout(module: nn.Module, local: str, name: str, config: PreTrainedConfig) -> str | None:
    """`"halves"`, `"qkv"` or `None` (plain) for the output axis of a tensor (see `FUSED_LAYOUTS`)."""
    if hasattr(module, "is_transposed"):  # fused experts: the layout is the parameter's, and said by the module
        return "halves" if local.startswith("gate_up_proj") and getattr(module, "is_concatenated", True) else None
    key = name.rsplit(".", 2)[-2]
    if key == "query_key_value" and config.model_type == "falcon":
        # Falcon's multi-query layout is [q heads; one k; one v]; its other layouts go head by head (or by KV group).
        return "qkv" if config.multi_query and not config.new_decoder_architecture else None
    entry = FUSED_LAYOUTS.get(key)
    return entry[0] if entry else None


def _embedding_scale(module: nn.Module) -> float:
    """The factor a scaled embedding multiplies by (`sqrt(hidden_size)` in Gemma, BioGPT, ...), else 1: held as the
    float `scalar_embed_scale` beside a buffer (Gemma), or as a float `embed_scale` (about forty families)."""
    for attribute in ("scalar_embed_scale", "embed_scale"):
        value = getattr(module, attribute, None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return 1.0


def _head_dim(config: PreTrainedConfig) -> int:
    head_dim = getattr(config, "head_dim", None)
    return head_dim if isinstance(head_dim, int) else config.hidden_size // config.num_attention_heads


def _norm_offset(module: nn.Module) -> float:
    """0 for a norm that multiplies by its weight, 1 for one that multiplies by `1 + weight` (Gemma), by probing
    a CPU copy of it (weights zero, then minus one) on random inputs."""
    probe = copy.deepcopy(module)
    if any(p.device.type == "meta" for p in probe.parameters()):
        probe = probe.to_empty(device="cpu")
    probe = probe.float()
    width = next(p for n, p in probe.named_parameters() if n == "weight").shape[0]
    x = torch.randn(1, 2, width, generator=torch.Generator().manual_seed(0))
    for offset in (0.0, 1.0):
        with torch.no_grad():
            for local, parameter in probe.named_parameters():
                parameter.fill_(-offset if local == "weight" else 0.0)
            if float(_first_tensor(probe(x)).abs().max()) <= ATOL:
                return offset
    raise ValueError(
        f"The final norm {type(module).__name__} is neither `weight * x` nor `(1 + weight) * x`, so it cannot take "
        "the tied head's 1/width: untie the head (config.tie_word_embeddings=False) and grow again."
    )


def _build_pair(
    model: PreTrainedModel, anatomy: DecoderAnatomy, changes: dict[str, Any]
) -> tuple[nn.Module, nn.Module]:
    new_config = copy.deepcopy(model.config)
    layer_config = getattr(new_config, anatomy.config_path) if anatomy.config_path else new_config
    for key, value in changes.items():
        setattr(layer_config, key, value)
    with torch.device("meta"):
        return type(model)(copy.deepcopy(model.config)), type(model)(new_config)


def _check_structure(model: nn.Module, before: nn.Module, after: nn.Module) -> None:
    current = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    fresh = {k: tuple(v.shape) for k, v in before.state_dict().items()}
    if current != fresh:
        differ = sorted(k for k in current.keys() | fresh.keys() if current.get(k) != fresh.get(k))[:4]
        raise ValueError(
            f"{type(model).__name__} differs from a model freshly built from its own config (e.g. {differ}: adapters, "
            "quantization or hand edits), so its tensors' grown shapes are unknown: merge or remove them, then grow."
        )
    grown = set(after.state_dict())
    if grown != set(fresh):
        raise ValueError(
            f"The wider config of {type(model).__name__} builds other tensors (new {sorted(grown - set(fresh))[:4]}, "
            f"gone {sorted(set(fresh) - grown)[:4]}): a size key decides which modules exist; grow depth only."
        )


def _attribute_changes(before: nn.Module, after: nn.Module) -> dict[str, dict[str, Any]]:
    old_modules = dict(before.named_modules())
    changes = {}
    for name, module in after.named_modules():
        old, new = _plain_attributes(old_modules[name]), _plain_attributes(module)
        changed = {a: v for a, v in new.items() if a in old and old[a] != v}
        if changed:
            changes[name] = changed
    return changes


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    module_name, _, local = name.rpartition(".")
    return model.get_submodule(module_name), local


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _layer_outputs(model: nn.Module, layers: nn.Module) -> tuple[torch.Tensor, list[torch.Tensor]] | None:
    """Logits, the first layer's input and every layer's first output on a few tokens (eval mode, no cache);
    `None` on the meta device."""
    parameter = next(model.parameters(), None)
    if parameter is None or parameter.device.type == "meta":
        return None
    vocab = model.config.get_text_config(decoder=True).vocab_size
    ids = torch.randint(min(3, vocab - 1), vocab, (2, _PROBE_LENGTH), generator=torch.Generator().manual_seed(0))
    states: list[torch.Tensor] = []
    handles = [
        layers[0].register_forward_pre_hook(lambda m, a, k: states.append(_hidden_states(a, k)), with_kwargs=True)
    ]
    handles += [layer.register_forward_hook(lambda m, a, o: states.append(_first_tensor(o))) for layer in layers]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            logits = model(input_ids=ids.to(parameter.device), use_cache=False).logits
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return logits, states


def _compare_layer_outputs(
    model: nn.Module, layers: nn.Module, reference: tuple[torch.Tensor, list[torch.Tensor]], factor: int
) -> str | None:
    logits, states = reference
    grown = _layer_outputs(model, layers)
    assert grown is not None
    tolerance = _TOLERANCE.get(logits.dtype, 2e-2)
    for index, (old, new) in enumerate(zip(states, grown[1], strict=True)):
        expected = torch.cat([old] * factor, dim=-1) if new.shape[-1] != old.shape[-1] else old
        if expected.shape == new.shape and _close(new, expected, tolerance):
            continue
        difference = _difference(new, expected)
        if index == 0:
            return (
                f"the input of the first layer is not the tiled embedding (largest difference {difference:.3g}): the "
                "embedding is scaled by a function of the width that growth_ops does not know"
            )
        return (
            f"layer {index - 1} ({type(layers[index - 1]).__name__}) no longer gives the tiled output of its source "
            f"(largest difference {difference:.3g}); some module of it computes with the width in a way the rules "
            "do not cover"
        )
    if not _close(grown[0], logits, tolerance):
        return (
            f"the logits differ by up to {_difference(grown[0], logits):.3g} although every layer agrees: the "
            "final norm or the head scales with the width"
        )
    return None


def _close(actual: torch.Tensor, expected: torch.Tensor, tolerance: float) -> bool:
    return _difference(actual, expected) <= tolerance * max(1.0, float(expected.abs().max()))


def _difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    if actual.shape != expected.shape:
        return float("inf")
    return float((actual.float() - expected.float()).abs().max())
