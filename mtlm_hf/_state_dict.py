"""What every import of foreign weights (Llama, original M1, Flax, original M2) shares: refusing overrides
that contradict the weights, listing every key that does not fit, and building the model without a random init."""

from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.initialization import no_init_weights

from .configuration_mtlm import MTLMConfig


def config_from_sizes(
    preset: str, sizes: dict[str, Any], overrides: dict[str, Any], source: str, has: str = "has"
) -> MTLMConfig:
    """`preset` with the sizes read from the weights and the caller's overrides, refusing overrides that
    contradict the weights (`source` names them in the message: "the checkpoint has 768")."""
    conflicts = [
        f"{key}={overrides[key]!r} (the {source} {has} {value!r})"
        for key, value in sizes.items()
        if key in overrides and overrides[key] != value
    ]
    if conflicts:
        raise ValueError(f"These overrides contradict the {source}: {', '.join(conflicts)}.")
    return MTLMConfig.from_preset(preset, **{**sizes, **overrides})


def raise_for_mismatch(
    header: str, missing: Sequence[str], unexpected: Sequence[str], misshaped: Sequence[str], footer: str = "."
) -> None:
    """Raise one ValueError listing every missing, unexpected and mis-shaped key, if there is any."""
    problems = [
        f"{label}: {', '.join(names)}"
        for label, names in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
        if names
    ]
    if problems:
        raise ValueError(header + "; ".join(problems) + footer)


def model_from_state_dict(
    model_class: type[PreTrainedModel],
    config: PreTrainedConfig,
    state_dict: dict[str, torch.Tensor],
    device: torch.device | str = "cpu",
) -> PreTrainedModel:
    """Instantiate `model_class` on `device` and load `state_dict` strictly (every key, no extra)."""
    with no_init_weights(), torch.device(device):  # every tensor is overwritten below
        model = model_class(config)
    model.tie_weights()  # skipped under no_init_weights
    model.load_state_dict(state_dict, strict=True)
    return model
