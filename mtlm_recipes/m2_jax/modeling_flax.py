"""MTLM in Flax NNX: the same config, module names and math as `mtlm_hf/modeling_mtlm.py`, for training in JAX.

One `MTLMConfig` drives both: M2 style (learned positions, GELU MLP, biases, untied head, the original "TinyGPT")
and M1 style (RoPE, SwiGLU, tied embeddings, grouped key/value heads, sliding-window layers). Module attributes
carry the PyTorch names (`model.layers[i].self_attn.q_proj`), so `mtlm_hf.flax_bridge` maps weights by name.
Parameters are float32; `dtype` sets the compute dtype (bfloat16 matmuls with float32 parameters, as the original).
"""

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from mtlm_hf import MTLMConfig

# transformers' activation names -> jax functions; "gelu_pytorch_tanh" is also Flax's default `nnx.gelu`.
ACTIVATIONS = {
    "silu": jax.nn.silu,
    "gelu_pytorch_tanh": partial(jax.nn.gelu, approximate=True),
    "gelu": partial(jax.nn.gelu, approximate=False),
    "relu": jax.nn.relu,
}


def check_supported(config: MTLMConfig) -> None:
    """Refuse, with the setting named, what this Flax mirror does not compute the way PyTorch MTLM does."""
    if config.hidden_act not in ACTIVATIONS:
        raise ValueError(
            f"hidden_act={config.hidden_act!r} has no JAX counterpart here; use one of {list(ACTIVATIONS)}."
        )
    if config.position_embedding_type == "rope" and config.rope_parameters["rope_type"] != "default":
        raise ValueError(
            f"rope_type={config.rope_parameters['rope_type']!r} is not implemented in the Flax MTLM; only the "
            "default RoPE (no scaling) is."
        )


def rotary_cos_sin(config: MTLMConfig, seq_len: int) -> tuple[jax.Array, jax.Array]:
    """Llama's default RoPE angles for positions 0..seq_len-1, (seq_len, head_dim), halves repeated."""
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_parameters["rope_theta"] ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    freqs = jnp.arange(seq_len, dtype=jnp.float32)[:, None] * inv_freq[None, :]
    angles = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def rotate_half(x: jax.Array) -> jax.Array:
    half = x.shape[-1] // 2
    return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


class FlaxMTLMAttention(nnx.Module):
    """Causal multi-head attention with grouped key/value heads, optional RoPE and an optional sliding window."""

    def __init__(self, config: MTLMConfig, layer_idx: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.dropout_rate = config.attention_dropout
        is_sliding = config.layer_types[layer_idx] == "sliding_attention"
        self.sliding_window = config.sliding_window if is_sliding else None
        linear = partial(
            nnx.Linear,
            use_bias=config.attention_bias,
            kernel_init=nnx.initializers.normal(config.initializer_range),
            dtype=dtype,
            rngs=rngs,
        )
        self.q_proj = linear(config.hidden_size, self.num_heads * self.head_dim)
        self.k_proj = linear(config.hidden_size, self.num_kv_heads * self.head_dim)
        self.v_proj = linear(config.hidden_size, self.num_kv_heads * self.head_dim)
        self.o_proj = linear(self.num_heads * self.head_dim, config.hidden_size)

    def __call__(
        self,
        hidden_states: jax.Array,
        rotary: tuple[jax.Array, jax.Array] | None,
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> jax.Array:
        batch, seq_len, _ = hidden_states.shape
        # (batch, seq, heads, head_dim)
        query = self.q_proj(hidden_states).reshape(batch, seq_len, self.num_heads, self.head_dim)
        key = self.k_proj(hidden_states).reshape(batch, seq_len, self.num_kv_heads, self.head_dim)
        value = self.v_proj(hidden_states).reshape(batch, seq_len, self.num_kv_heads, self.head_dim)
        if rotary is not None:
            cos, sin = (angles[None, :, None, :].astype(query.dtype) for angles in rotary)
            query = query * cos + rotate_half(query) * sin
            key = key * cos + rotate_half(key) * sin
        if self.num_kv_heads != self.num_heads:
            # Each key/value head serves `groups` consecutive query heads, as torch's `repeat_kv` (older Flax
            # releases' attention has no grouped heads of its own).
            groups = self.num_heads // self.num_kv_heads
            key, value = jnp.repeat(key, groups, axis=2), jnp.repeat(value, groups, axis=2)

        # Causal, and within the window on sliding layers (transformers': query i sees keys i - window < j <= i).
        distance = jnp.arange(seq_len)[:, None] - jnp.arange(seq_len)[None, :]
        mask = distance >= 0
        if self.sliding_window is not None:
            mask &= distance < self.sliding_window
        dropout_rate = 0.0 if deterministic else self.dropout_rate
        attended = nnx.dot_product_attention(
            query,
            key,
            value,
            mask=mask[None, None],
            dropout_rate=dropout_rate,
            dropout_rng=rngs.dropout() if dropout_rate else None,
            broadcast_dropout=False,  # one mask per batch row and head, as torch's attention dropout
            deterministic=deterministic,
        )
        return self.o_proj(attended.reshape(batch, seq_len, self.num_heads * self.head_dim))


class FlaxMTLMMLP(nnx.Module):
    """`down(act(gate(x)) * up(x))` when gated (M1, SwiGLU), `down(act(up(x)))` when plain (M2, GPT-2)."""

    def __init__(self, config: MTLMConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        linear = partial(
            nnx.Linear,
            use_bias=config.mlp_bias,
            kernel_init=nnx.initializers.normal(config.initializer_range),
            dtype=dtype,
            rngs=rngs,
        )
        self.is_gated = config.mlp_type == "gated"
        if self.is_gated:
            self.gate_proj = linear(config.hidden_size, config.intermediate_size)
        self.up_proj = linear(config.hidden_size, config.intermediate_size)
        self.down_proj = linear(config.intermediate_size, config.hidden_size)
        self.act_fn = ACTIVATIONS[config.hidden_act]

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.is_gated:
            return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(self.act_fn(self.up_proj(x)))


class FlaxMTLMDecoderLayer(nnx.Module):
    def __init__(self, config: MTLMConfig, layer_idx: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        # Flax's RMSNorm takes the variance in float32 whatever the input dtype, as MTLM's does.
        norm = partial(nnx.RMSNorm, config.hidden_size, epsilon=config.rms_norm_eps, dtype=dtype, rngs=rngs)
        self.input_layernorm = norm()
        self.self_attn = FlaxMTLMAttention(config, layer_idx, dtype=dtype, rngs=rngs)
        self.post_attention_layernorm = norm()
        self.mlp = FlaxMTLMMLP(config, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(config.hidden_dropout)

    def __call__(
        self,
        hidden_states: jax.Array,
        rotary: tuple[jax.Array, jax.Array] | None,
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> jax.Array:
        # Self Attention
        attended = self.self_attn(self.input_layernorm(hidden_states), rotary, deterministic=deterministic, rngs=rngs)
        hidden_states = hidden_states + self.dropout(attended, deterministic=deterministic, rngs=rngs)
        # Fully Connected
        transformed = self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states + self.dropout(transformed, deterministic=deterministic, rngs=rngs)


class FlaxMTLMModel(nnx.Module):
    def __init__(self, config: MTLMConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.config = config
        embed = partial(
            nnx.Embed, embedding_init=nnx.initializers.normal(config.initializer_range), dtype=dtype, rngs=rngs
        )
        self.embed_tokens = embed(config.vocab_size, config.hidden_size)
        if config.position_embedding_type == "learned":
            self.embed_positions = embed(config.max_position_embeddings, config.hidden_size)
        self.embed_dropout = nnx.Dropout(config.embedding_dropout)
        self.layers = nnx.List(
            [FlaxMTLMDecoderLayer(config, i, dtype=dtype, rngs=rngs) for i in range(config.num_hidden_layers)]
        )
        self.norm = nnx.RMSNorm(config.hidden_size, epsilon=config.rms_norm_eps, dtype=dtype, rngs=rngs)

    def __call__(self, input_ids: jax.Array, *, deterministic: bool, rngs: nnx.Rngs | None) -> jax.Array:
        seq_len = input_ids.shape[1]
        if seq_len > self.config.max_position_embeddings:
            raise ValueError(
                f"Sequence length {seq_len} exceeds max_position_embeddings ({self.config.max_position_embeddings})."
            )
        hidden_states = self.embed_tokens(input_ids)
        rotary = None
        if self.config.position_embedding_type == "learned":
            hidden_states = hidden_states + self.embed_positions(jnp.arange(seq_len))[None]
        else:
            rotary = rotary_cos_sin(self.config, seq_len)
        hidden_states = self.embed_dropout(hidden_states, deterministic=deterministic, rngs=rngs)
        for layer in self.layers:
            hidden_states = layer(hidden_states, rotary, deterministic=deterministic, rngs=rngs)
        return self.norm(hidden_states)


class FlaxMTLMForCausalLM(nnx.Module):
    """The Flax MTLM language model; `__call__` returns float32 logits (batch, seq, vocab).

    Args:
        config (`MTLMConfig`): the same config `MTLMForCausalLM` takes.
        dtype (`jnp.dtype`, *optional*, defaults to `jnp.float32`): compute dtype; parameters stay float32.
        rngs (`nnx.Rngs`): the `params` stream initialises the weights (normal, std `initializer_range`).
    """

    def __init__(self, config: MTLMConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        check_supported(config)
        self.config = config
        self.model = FlaxMTLMModel(config, dtype=dtype, rngs=rngs)
        if not config.tie_word_embeddings:
            self.lm_head = nnx.Linear(
                config.hidden_size,
                config.vocab_size,
                use_bias=False,
                kernel_init=nnx.initializers.normal(config.initializer_range),
                dtype=dtype,
                rngs=rngs,
            )

    def __call__(self, input_ids: jax.Array, *, deterministic: bool = True, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Logits for every position. Training passes `deterministic=False` and `rngs` with a `dropout` stream."""
        if not deterministic and rngs is None:
            raise ValueError("Training mode (deterministic=False) needs `rngs` with a 'dropout' stream.")
        hidden_states = self.model(input_ids, deterministic=deterministic, rngs=rngs)
        if self.config.tie_word_embeddings:
            logits = self.model.embed_tokens.attend(hidden_states)
        else:
            logits = self.lm_head(hidden_states)
        return logits.astype(jnp.float32)
