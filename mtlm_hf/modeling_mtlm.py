# Copyright 2026 The mtlm authors. Licensed under the MIT License.
"""PyTorch MTLM model, written after transformers' `modeling_llama.py` (5.x conventions).

This file travels with every saved MTLM checkpoint (``trust_remote_code``): it imports only torch,
transformers and, relatively, `configuration_mtlm.py`. The optional `liger_kernel` is imported only
when a model is set to the liger fast path, guarded by `is_liger_kernel_available()`.
"""

import functools
from collections.abc import Callable

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple, is_liger_kernel_available
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs
from transformers.utils.versions import require_version

from .configuration_mtlm import MTLMConfig

# transformers 5.24 renamed the KV cache argument and output field `past_key_values` to `cache`; on an
# older release `generate` would pass the cache under a name this code ignores and decode without it.
require_version(
    "transformers>=5.24", "MTLM's code follows the cache API of transformers 5.24: pip install -U 'transformers>=5.24'"
)

_AUTO_MAP = {
    "AutoConfig": "configuration_mtlm.MTLMConfig",
    "AutoModel": "modeling_mtlm.MTLMModel",
    "AutoModelForCausalLM": "modeling_mtlm.MTLMForCausalLM",
}

# Fast paths: a runtime choice like `attn_implementation` (`MTLMPreTrainedModel.set_fast_path`), never saved.
# "compile" runs each decoder layer, and the loss, through `torch.compile` of module-level functions that take the
# layer as an argument: nothing compiled is bound to a module instance (so layers copied by depth growth run their
# own weights), and since dynamo treats a module's parameters as inputs, all layers share one graph.
# "liger" swaps liger-kernel's fused (Triton, CUDA-only) RMSNorm, SwiGLU, RoPE and linear cross-entropy into the
# plain modules through `_liger_kernels`, the one seam: the layers keep their single forward. Where liger cannot
# run (CPU, or liger-kernel not installed) "liger" is "compile".
FAST_PATHS = ("compile", "liger")


def _check_fast_path(fast_path: str | None) -> None:
    if fast_path is not None and fast_path not in FAST_PATHS:
        raise ValueError(f"`fast_path` must be None (the plain path) or one of {FAST_PATHS}, got {fast_path!r}.")


@functools.cache
def _liger_functional():
    """liger-kernel's functional API, or None where it is not installed."""
    if not is_liger_kernel_available():
        return None
    try:
        from liger_kernel.transformers import functional
    except ImportError:
        return None
    return functional


def _liger_kernels(module: nn.Module, tensor: torch.Tensor):
    """liger's functional API if `module` is set to the liger fast path (which `set_fast_path` does only where
    liger-kernel is installed) and `tensor` is on CUDA; else None, and the module runs its plain code."""
    return _liger_functional() if module.use_liger and tensor.is_cuda else None


@functools.cache
def _compiled(function: Callable) -> Callable:
    """`torch.compile(function)`, built once per function and shared by every model and layer."""
    return torch.compile(function)


def _call_decoder_layer(decoder_layer: nn.Module, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
    return decoder_layer(hidden_states, **kwargs)


def _layer_runner(model: nn.Module, hidden_states: torch.Tensor, cache: Cache | None, kwargs: dict) -> Callable:
    """How `MTLMModel.forward` calls its decoder layers: compiled on a fast path, unless there is a KV cache,
    outputs are captured, or liger's kernels run (eager Triton calls inside the same layer forward)."""
    capturing = any(
        kwargs.get(name, getattr(model.config, name, False)) for name in ("output_hidden_states", "output_attentions")
    )
    if model.fast_path is None or cache is not None or capturing or _liger_kernels(model, hidden_states) is not None:
        return _call_decoder_layer
    return _compiled(_call_decoder_layer)


def _liger_causal_lm_loss(
    liger,
    hidden_states: torch.Tensor,
    lm_head_weight: torch.Tensor,
    labels: torch.Tensor,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = -100,
    shift_labels: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor:
    """transformers' `ForCausalLMLoss` on `lm_head(hidden_states)`, fused so the logits never exist."""
    if shift_labels is None:
        shift_labels = nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    reduction = "sum" if num_items_in_batch is not None else "mean"
    loss = liger.liger_fused_linear_cross_entropy(
        hidden_states.reshape(-1, hidden_states.shape[-1]),
        lm_head_weight,
        shift_labels.reshape(-1).to(hidden_states.device),
        ignore_index=ignore_index,
        reduction=reduction,
    )
    if reduction == "sum":
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(loss.device)
        loss = loss / num_items_in_batch
    return loss


class MTLMRMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps
        self.use_liger = False  # `set_fast_path("liger")`

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if (liger := _liger_kernels(self, hidden_states)) is not None:
            return liger.liger_rms_norm(hidden_states, self.weight, self.variance_epsilon)
        # The variance is taken in float32 whatever the input dtype (as Llama, and as the original M2).
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


class MTLMRotaryEmbedding(nn.Module):
    def __init__(self, config: MTLMConfig):
        super().__init__()
        self.max_seq_len_cached = config.max_position_embeddings
        self.original_max_seq_len = config.max_position_embeddings
        self.config = config

        self.rope_type = self.config.rope_parameters["rope_type"]
        rope_init_fn: Callable = self.compute_default_rope_parameters
        if self.rope_type != "default":
            rope_init_fn = ROPE_INIT_FUNCTIONS[self.rope_type]
        inv_freq, self.attention_scaling = rope_init_fn(self.config)

        self.inv_freq = nn.Buffer(inv_freq, persistent=False)
        self.original_inv_freq = nn.Buffer(inv_freq.clone(), persistent=False)

    @staticmethod
    def compute_default_rope_parameters(config: MTLMConfig, **kwargs) -> tuple[torch.Tensor, float]:
        base = config.rope_parameters["rope_theta"]
        dim = config.head_dim
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
        return inv_freq, 1.0

    @torch.no_grad()
    @dynamic_rope_update
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Rotates half the hidden dims of the input."""
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate `q` and `k` (batch, heads, seq, head_dim) by the position angles, half-split like Llama."""
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed


class MTLMMLP(nn.Module):
    """`down(act(gate(x)) * up(x))` when gated (M1, SwiGLU), `down(act(up(x)))` when plain (M2, GPT-2)."""

    def __init__(self, config: MTLMConfig):
        super().__init__()
        self.is_gated = config.mlp_type == "gated"
        if self.is_gated:
            self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)
        self.act_fn = ACT2FN[config.hidden_act]
        self.is_swiglu = self.is_gated and config.hidden_act in ("silu", "swish")
        self.use_liger = False  # `set_fast_path("liger")`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_gated:
            return self.down_proj(self.act_fn(self.up_proj(x)))
        if self.is_swiglu and (liger := _liger_kernels(self, x)) is not None:
            return self.down_proj(liger.liger_swiglu(self.gate_proj(x), self.up_proj(x)))
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(batch, kv_heads, seq, head_dim) -> (batch, kv_heads * n_rep, seq, head_dim), for GQA."""
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
) -> tuple[torch.Tensor, torch.Tensor]:
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)

    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask

    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value_states)
    attn_output = attn_output.transpose(1, 2).contiguous()
    return attn_output, attn_weights


class MTLMAttention(nn.Module):
    """Multi-head attention with grouped key/value heads and optional rotary positions."""

    def __init__(self, config: MTLMConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        # Set per layer, as transformers' sliding-window models do: under the "compile" fast path dynamo then
        # guards on this value (None or the window), so the layers share two graphs at most, not one per
        # layer index. Depth growth keeps it right: copies carry it, and `layer_types` follows their sources.
        is_sliding = config.layer_types[layer_idx] == "sliding_attention"
        self.sliding_window = config.sliding_window if is_sliding else None
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        self.use_liger = False  # `set_fast_path("liger")`

        self.q_proj = nn.Linear(
            config.hidden_size, config.num_attention_heads * self.head_dim, bias=config.attention_bias
        )
        self.k_proj = nn.Linear(
            config.hidden_size, config.num_key_value_heads * self.head_dim, bias=config.attention_bias
        )
        self.v_proj = nn.Linear(
            config.hidden_size, config.num_key_value_heads * self.head_dim, bias=config.attention_bias
        )
        self.o_proj = nn.Linear(
            config.num_attention_heads * self.head_dim, config.hidden_size, bias=config.attention_bias
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None,
        attention_mask: torch.Tensor | None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)

        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        if position_embeddings is not None:
            cos, sin = position_embeddings
            liger = _liger_kernels(self, query_states)
            rotate = apply_rotary_pos_emb if liger is None else liger.liger_rope
            query_states, key_states = rotate(query_states, key_states, cos, sin)

        if cache is not None:
            key_states, value_states = cache.update(key_states, value_states, self.layer_idx, kwargs=kwargs)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )

        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            sliding_window=self.sliding_window,
            **kwargs,
        )

        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        attn_output = self.o_proj(attn_output)
        return attn_output, attn_weights


class MTLMDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: MTLMConfig, layer_idx: int):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.self_attn = MTLMAttention(config=config, layer_idx=layer_idx)
        self.mlp = MTLMMLP(config)
        self.input_layernorm = MTLMRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = MTLMRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = False,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        # Self Attention
        hidden_states, _ = self.self_attn(
            hidden_states=hidden_states,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            position_embeddings=position_embeddings,
            **kwargs,
        )
        hidden_states = residual + self.dropout(hidden_states)

        # Fully Connected
        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        hidden_states = residual + self.dropout(hidden_states)
        return hidden_states


class MTLMPreTrainedModel(PreTrainedModel):
    config: MTLMConfig
    config_class = MTLMConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MTLMDecoderLayer"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _can_compile_fullgraph = True
    _supports_attention_backend = True
    _can_record_outputs = {
        "hidden_states": MTLMDecoderLayer,
        "attentions": MTLMAttention,
    }
    # Runtime choices (`set_fast_path`), kept out of the config so that no saved checkpoint carries them.
    _fast_path: str | None = None
    use_liger = False

    @property
    def fast_path(self) -> str | None:
        """The fast path this model runs (`None`: the plain path); change it with `set_fast_path`."""
        return self._fast_path

    def set_fast_path(self, fast_path: str | None) -> None:
        """Choose a faster way to compute the same numbers (within float tolerance), as `set_attn_implementation`
        chooses attention: on the model, never in `config.json`.

        - `None`: the plain path, written like Llama's.
        - `"compile"`: `torch.compile` of the decoder layers and of the language-modelling loss, on any device.
          It survives depth growth and remote-code loading, and every layer of a model shares one graph.
        - `"liger"`: on CUDA with `liger-kernel` installed (the `gpu` extra), liger's fused RMSNorm, SwiGLU and
          RoPE in the layers, and in training with labels its fused linear cross-entropy (the logits are then not
          materialised and come back as `None`); elsewhere the same as `"compile"`.

        Forwards with a KV cache (generation) or that ask for hidden states / attentions run the layers
        uncompiled; in training the fast path builds no KV cache. Dropout inside compiled layers draws other
        masks than the plain path (same distribution).

        Args:
            fast_path (`str`, *optional*): `None`, `"compile"` or `"liger"`.

        Raises:
            ValueError: if `fast_path` is none of these; the model is left as it was.
        """
        _check_fast_path(fast_path)
        use_liger = fast_path == "liger" and _liger_functional() is not None
        for module in self.modules():
            if isinstance(module, MTLMPreTrainedModel):
                module._fast_path = fast_path
            if isinstance(module, MTLMPreTrainedModel | MTLMRMSNorm | MTLMMLP | MTLMAttention):
                module.use_liger = use_liger

    @classmethod
    def from_pretrained(cls, *args, fast_path: str | None = None, **kwargs):
        r"""[`PreTrainedModel.from_pretrained`], plus `fast_path` (`str`, *optional*): see `set_fast_path`."""
        _check_fast_path(fast_path)
        loaded = super().from_pretrained(*args, **kwargs)
        (loaded[0] if isinstance(loaded, tuple) else loaded).set_fast_path(fast_path)  # tuple: output_loading_info
        return loaded

    @classmethod
    def _from_config(cls, config: MTLMConfig, fast_path: str | None = None, **kwargs):
        # What `AutoModelForCausalLM.from_config(config, fast_path=...)` calls.
        _check_fast_path(fast_path)
        model = super()._from_config(config, **kwargs)
        model.set_fast_path(fast_path)
        return model

    def save_pretrained(self, save_directory, *args, **kwargs):
        # transformers writes only the saved class's own Auto entry into `auto_map`; a checkpoint of
        # either class should open with AutoModel and AutoModelForCausalLM alike.
        if self._auto_class is not None:
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **_AUTO_MAP}
        return super().save_pretrained(save_directory, *args, **kwargs)


class MTLMModel(MTLMPreTrainedModel):
    def __init__(self, config: MTLMConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size

        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        if config.position_embedding_type == "learned":
            self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        else:
            self.rotary_emb = MTLMRotaryEmbedding(config=config)
        self.embed_dropout = nn.Dropout(config.embedding_dropout)
        self.layers = nn.ModuleList(
            [MTLMDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = MTLMRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.gradient_checkpointing = False

        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)

        fast_path = self.fast_path
        if fast_path is not None and self.training and cache is None:
            # The fast path runs without a KV cache, and training has no use for one.
            use_cache = False
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)

        if position_ids is None:
            past_seen_tokens = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen_tokens
            position_ids = position_ids.unsqueeze(0)

        # It may already have been prepared by e.g. `generate`
        if not isinstance(causal_mask_mapping := attention_mask, dict):
            mask_kwargs = {
                "config": self.config,
                "inputs_embeds": inputs_embeds,
                "attention_mask": attention_mask,
                "cache": cache,
                "position_ids": position_ids,
            }
            causal_mask_mapping = {"full_attention": create_causal_mask(**mask_kwargs)}
            if "sliding_attention" in self.config.layer_types:
                causal_mask_mapping["sliding_attention"] = create_sliding_window_causal_mask(**mask_kwargs)

        hidden_states = inputs_embeds
        position_embeddings = None
        if self.config.position_embedding_type == "learned":
            hidden_states = hidden_states + self.embed_positions(position_ids)
        else:
            position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)
        hidden_states = self.embed_dropout(hidden_states)

        run_layer = _layer_runner(self, hidden_states, cache, kwargs)
        for layer_type, decoder_layer in zip(
            self.config.layer_types, self.layers[: self.config.num_hidden_layers], strict=True
        ):
            hidden_states = run_layer(
                decoder_layer,
                hidden_states,
                attention_mask=causal_mask_mapping[layer_type],
                position_embeddings=position_embeddings,
                position_ids=position_ids,
                cache=cache,
                use_cache=use_cache,
                **kwargs,
            )

        hidden_states = self.norm(hidden_states)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            cache=cache if use_cache else None,
        )


class MTLMForCausalLM(MTLMPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: MTLMConfig):
        super().__init__(config)
        self.model = MTLMModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Token ids to predict (shifted inside the loss); -100 marks positions left out of the loss.
        logits_to_keep (`int` or `torch.Tensor`, *optional*, defaults to 0):
            Compute logits only for the last `logits_to_keep` positions (0 keeps all), which saves the
            vocabulary-sized projection during generation.
        """
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )

        hidden_states = outputs.last_hidden_state
        slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = loss = None
        liger = _liger_kernels(self, hidden_states) if labels is not None and self.training else None
        if liger is not None:
            # Fused linear cross-entropy: the (batch, seq, vocab) logits are never materialised.
            loss = _liger_causal_lm_loss(
                liger, hidden_states[:, slice_indices, :], self.lm_head.weight, labels, **kwargs
            )
        else:
            logits = self.lm_head(hidden_states[:, slice_indices, :])
        if labels is not None and loss is None:
            loss_function = self.loss_function
            if self.fast_path is not None:
                loss_function = _compiled(loss_function)
            loss = loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)

        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


__all__ = ["MTLMForCausalLM", "MTLMModel", "MTLMPreTrainedModel"]
