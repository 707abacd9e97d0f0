# Copyright 2026 The mtlm authors. Licensed under the MIT License.
"""MTLM model configuration.

This file travels with every saved MTLM checkpoint (``trust_remote_code``): it may import only
``transformers``, ``huggingface_hub`` and the standard library.
"""

import dataclasses
import difflib
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig
from transformers.modeling_rope_utils import RopeParameters
from transformers.utils import logging

logger = logging.get_logger(__name__)

POSITION_EMBEDDING_TYPES = ("rope", "learned")
MLP_TYPES = ("gated", "plain")
MTLM_LAYER_TYPES = ("full_attention", "sliding_attention")
# Keyword arguments that `PreTrainedConfig` takes besides its fields (they set runtime attributes).
_CONFIG_KWARGS = ("attn_implementation", "output_attentions")

# Size presets in the style of litgpt's `name_to_config`: a preset is a dict of MTLMConfig fields.
# "m1-base" / "m1" are the original MTLM1 shapes (ORIGINALS.md), "m2" the original MTLM2 ("TinyGPT").
_M1_STYLE: dict[str, Any] = {
    "vocab_size": 32000,
    "hidden_size": 768,
    "intermediate_size": 1280,
    "num_attention_heads": 12,
    "max_position_embeddings": 1024,
    "hidden_act": "silu",
    "mlp_type": "gated",
    "position_embedding_type": "rope",
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    "attention_bias": False,
    "mlp_bias": False,
}
_M2_STYLE: dict[str, Any] = {
    "vocab_size": 32000,
    "hidden_size": 384,
    "intermediate_size": 1024,
    "num_hidden_layers": 12,
    "num_attention_heads": 6,
    "max_position_embeddings": 1024,
    # Flax's `nn.gelu` defaults to the tanh approximation.
    "hidden_act": "gelu_pytorch_tanh",
    "mlp_type": "plain",
    "position_embedding_type": "learned",
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "attention_bias": True,
    "mlp_bias": True,
}
MTLM_PRESETS: dict[str, dict[str, Any]] = {
    "m1-base": {**_M1_STYLE, "num_hidden_layers": 16},
    "m1": {**_M1_STYLE, "num_hidden_layers": 32},
    "m2": dict(_M2_STYLE),
    # Tiny shapes for tests and CPU demos; same switches as their full-size namesakes.
    "m1-tiny": {
        **_M1_STYLE,
        "vocab_size": 99,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
    },
    "m2-tiny": {
        **_M2_STYLE,
        "vocab_size": 99,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 128,
    },
}


@strict(accept_kwargs=True)
class MTLMConfig(PreTrainedConfig):
    r"""
    Configuration of an MTLM model: a Llama-style decoder whose switches also cover the GPT-2-like
    "TinyGPT" of MTLM2. Field names follow [`LlamaConfig`] wherever the meaning is the same; with
    `position_embedding_type="rope"`, `mlp_type="gated"` and no dropout an MTLM model computes
    exactly what `LlamaForCausalLM` computes with the same weights.

    MTLM-specific fields:
        position_embedding_type (`str`, *optional*, defaults to `"rope"`):
            `"rope"` rotates queries and keys (`rope_parameters` as in Llama); `"learned"` adds a
            trained absolute position embedding of `max_position_embeddings` rows to the input.
        mlp_type (`str`, *optional*, defaults to `"gated"`):
            `"gated"` is `down(act(gate(x)) * up(x))` (SwiGLU with `silu`); `"plain"` is
            `down(act(up(x)))`, the GPT-2 MLP.
        embedding_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the input embeddings (the original M1 used 0.05).
        hidden_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on each residual branch before it is added back (the original M2 used 0.1).
        layer_types (`list[str]`, *optional*):
            One of `"full_attention"` / `"sliding_attention"` per layer. Defaults to full
            attention everywhere; growth edits this list like any other per-layer setting.
        sliding_window (`int`, *optional*):
            Window of the `"sliding_attention"` layers.

    The training fast path (`torch.compile`, liger-kernel) is not part of the config: like `attn_implementation`
    it is a runtime choice, `from_pretrained(..., fast_path="compile")` or `model.set_fast_path("compile")`.

    Example:

    ```python
    >>> from transformers import AutoModelForCausalLM
    >>> import mtlm_hf
    >>> config = mtlm_hf.MTLMConfig.from_preset("m1-base", num_hidden_layers=8)
    >>> model = AutoModelForCausalLM.from_config(config)
    ```
    """

    model_type = "mtlm"
    keys_to_ignore_at_inference = ["cache"]
    base_model_tp_plan = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }
    base_model_pp_plan = {
        "embed_tokens": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "norm": (["hidden_states"], ["hidden_states"]),
    }

    vocab_size: int = 32000
    hidden_size: int = 768
    intermediate_size: int = 1280
    num_hidden_layers: int = 16
    num_attention_heads: int = 12
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    mlp_type: str = "gated"
    position_embedding_type: str = "rope"
    max_position_embeddings: int = 1024
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = True
    rope_parameters: RopeParameters | dict | None = None
    attention_bias: bool = False
    attention_dropout: int | float = 0.0
    mlp_bias: bool = False
    embedding_dropout: int | float = 0.0
    hidden_dropout: int | float = 0.0
    layer_types: list[str] | None = None
    sliding_window: int | None = None

    def __post_init__(self, **kwargs):
        if (fast_path := kwargs.pop("fast_path", None)) is not None:
            # Written by mtlm before the fast path became a runtime choice; reading it would switch
            # `torch.compile` on for everyone who loads the checkpoint.
            logger.warning_once(
                f"Ignoring `fast_path={fast_path!r}` in this MTLM config: the fast path is now chosen at runtime, "
                f"with `from_pretrained(..., fast_path={fast_path!r})` or `model.set_fast_path({fast_path!r})`."
            )
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.layer_types is None:
            self.layer_types = ["full_attention"] * self.num_hidden_layers
        self._check_architecture()
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        super().__post_init__(**kwargs)

    def _check_architecture(self) -> None:
        """Raise a ValueError naming the field, at construction (strict validators wrap their errors)."""
        if self.head_dim is None and self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads}); or set `head_dim` explicitly."
            )
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"`num_attention_heads` ({self.num_attention_heads}) must be divisible by "
                f"`num_key_value_heads` ({self.num_key_value_heads})."
            )
        if self.position_embedding_type not in POSITION_EMBEDDING_TYPES:
            raise ValueError(
                f"`position_embedding_type` must be one of {POSITION_EMBEDDING_TYPES}, "
                f"got {self.position_embedding_type!r}."
            )
        if self.mlp_type not in MLP_TYPES:
            raise ValueError(f"`mlp_type` must be one of {MLP_TYPES}, got {self.mlp_type!r}.")
        if len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(
                f"`layer_types` has {len(self.layer_types)} entries but `num_hidden_layers` is "
                f"{self.num_hidden_layers}: give one entry per layer."
            )
        unknown = sorted(set(self.layer_types) - set(MTLM_LAYER_TYPES))
        if unknown:
            raise ValueError(f"`layer_types` entries must be in {MTLM_LAYER_TYPES}, got {unknown}.")
        if "sliding_attention" in self.layer_types and not self.sliding_window:
            raise ValueError("`layer_types` has 'sliding_attention' layers but `sliding_window` is not set.")

    def validate_architecture(self):
        """Part of `@strict`-powered validation: also run when a modified config is saved."""
        self._check_architecture()

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "MTLMConfig":
        """Build a config from a named size preset.

        Args:
            name (`str`): one of `MTLM_PRESETS` (`"m1-base"`, `"m1"`, `"m2"`, `"m1-tiny"`, `"m2-tiny"`).
            **overrides: any `MTLMConfig` field (or `attn_implementation`), replacing the preset's value.

        Returns:
            `MTLMConfig`

        Raises:
            ValueError: if `name` is not a known preset or an override is not a config field (a misspelt key
                would otherwise be kept as an unused attribute), naming the nearest valid one.
        """
        if name not in MTLM_PRESETS:
            raise ValueError(
                f"Unknown MTLM preset {name!r}; {_nearest(name, MTLM_PRESETS)} Presets: {', '.join(MTLM_PRESETS)}."
            )
        valid_keys = [field.name for field in dataclasses.fields(cls)] + list(_CONFIG_KWARGS)
        for key in overrides:
            if key == "fast_path":
                raise ValueError(
                    "`fast_path` is not a config field: the fast path is chosen at runtime, with "
                    "`from_config(config, fast_path=...)`, `from_pretrained(..., fast_path=...)` or "
                    "`model.set_fast_path(...)`."
                )
            if key not in valid_keys:
                raise ValueError(
                    f"Unknown MTLMConfig field {key!r} in the overrides of preset {name!r}; {_nearest(key, valid_keys)}"
                )
        return cls(**{**MTLM_PRESETS[name], **overrides})


def _nearest(key: str, valid: Any) -> str:
    """'did you mean X?' for the closest of `valid` (difflib), or a pointer to the full list."""
    nearest = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)  # 0.5: also n_layer, rope_theta
    return f"did you mean {nearest[0]!r}?" if nearest else "no valid name is close to it."


__all__ = ["MTLMConfig", "MTLM_PRESETS"]
