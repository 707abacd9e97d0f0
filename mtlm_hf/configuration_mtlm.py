# Copyright 2026 The mtlm authors. Licensed under the MIT License.
"""MTLM model configuration.

This file travels with every saved MTLM checkpoint (``trust_remote_code``): it may import only
``transformers``, ``huggingface_hub`` and the standard library.
"""

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig
from transformers.modeling_rope_utils import RopeParameters

POSITION_EMBEDDING_TYPES = ("rope", "learned")
MLP_TYPES = ("gated", "plain")
MTLM_LAYER_TYPES = ("full_attention", "sliding_attention")
# Training fast paths (`MTLMConfig.fast_path`); None is the plain path.
FAST_PATHS = ("compile", "liger")

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
        fast_path (`str`, *optional*):
            A faster way to compute the same numbers (within float tolerance), read at every forward:
            - `None` (default): the plain path, written like Llama's.
            - `"compile"`: `torch.compile` of the decoder layers and of the language-modelling loss, on
              any device. The compiled functions are module-level and take the layer as an argument, so
              nothing is bound to a module instance: copies made by depth growth, `save_pretrained` /
              `from_pretrained` and remote-code loading all keep working, and every layer of a model
              shares one compiled graph.
            - `"liger"`: on CUDA with `liger-kernel` installed, the layers run eagerly with liger's fused
              (Triton) RMSNorm, SwiGLU and RoPE, and training with labels uses its fused linear
              cross-entropy (the logits are then not materialised and come back as `None`); elsewhere
              (CPU, or without `liger-kernel`) the same as `"compile"`.
            Forwards with a KV cache (generation) or that ask for hidden states / attentions take the
            plain path; in training the fast path builds no KV cache. Dropout inside the layers draws
            other masks than the plain path (same distribution). On CPU only `torch.compile` helps: fused
            QKV / gate-up GEMMs, `F.rms_norm` and a chunked linear cross-entropy were measured and gave
            nothing there.

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
    fast_path: str | None = None

    def __post_init__(self, **kwargs):
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
        if self.fast_path is not None and self.fast_path not in FAST_PATHS:
            raise ValueError(f"`fast_path` must be None or one of {FAST_PATHS}, got {self.fast_path!r}.")

    def validate_architecture(self):
        """Part of `@strict`-powered validation: also run when a modified config is saved."""
        self._check_architecture()

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "MTLMConfig":
        """Build a config from a named size preset.

        Args:
            name (`str`): one of `MTLM_PRESETS` (`"m1-base"`, `"m1"`, `"m2"`, `"m1-tiny"`, `"m2-tiny"`).
            **overrides: any `MTLMConfig` field, replacing the preset's value.

        Returns:
            `MTLMConfig`

        Raises:
            ValueError: if `name` is not a known preset.
        """
        if name not in MTLM_PRESETS:
            raise ValueError(f"Unknown MTLM preset {name!r}; valid presets are: {', '.join(MTLM_PRESETS)}.")
        return cls(**{**MTLM_PRESETS[name], **overrides})


__all__ = ["MTLMConfig", "MTLM_PRESETS"]
