"""The pieces of one M2 training step: optimizer, loss, and the jitted train and eval steps.

The steps use Flax's functional API (`nnx.split` once, `nnx.merge` inside `jax.jit`) rather than `nnx.jit`: the
state is then a plain pytree whose shardings `jax.jit` pins on the way in and out, and it is what orbax saves.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding

from mtlm_hf import MTLMConfig

from .config import OptimizerConfig
from .modeling_flax import FlaxMTLMForCausalLM


def make_schedule(cfg: OptimizerConfig) -> optax.Schedule:
    """Linear warmup from 0 to `lr`, then cosine to `lr * min_lr_ratio` at `total_steps`."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.lr,
        warmup_steps=cfg.warmup_steps,
        decay_steps=cfg.total_steps,  # optax counts the warmup inside decay_steps
        end_value=cfg.lr * cfg.min_lr_ratio,
    )


def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
    """The original M2's optimizer: clip to global norm, then AdamW on a warmup-cosine schedule."""
    schedule = make_schedule(cfg)
    return optax.chain(
        optax.clip_by_global_norm(cfg.max_grad_norm),
        optax.adamw(schedule, b1=cfg.betas[0], b2=cfg.betas[1], eps=cfg.eps, weight_decay=cfg.weight_decay),
    )


def create_model_and_optimizer(
    config: MTLMConfig, opt: OptimizerConfig, seed: int, dtype: jnp.dtype = jnp.float32
) -> tuple[FlaxMTLMForCausalLM, nnx.Optimizer]:
    model = FlaxMTLMForCausalLM(config, dtype=dtype, rngs=nnx.Rngs(params=seed))
    return model, nnx.Optimizer(model, make_optimizer(opt), wrt=nnx.Param)


def next_token_loss(logits: jax.Array, input_ids: jax.Array, ignored_id: int) -> jax.Array:
    """Mean cross-entropy of predicting token t+1 at t, leaving out targets equal to `ignored_id` (EOS = pad,
    as the original)."""
    targets = input_ids[:, 1:]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], targets)
    counted = targets != ignored_id
    return jnp.sum(losses * counted) / jnp.maximum(jnp.sum(counted), 1)


def make_train_step(
    graphdef: nnx.GraphDef,
    state_sharding,
    batch_sharding: NamedSharding,
    ignored_id: int,
    dropout_seed: int,
) -> Callable:
    """`step(state, batch) -> (state, loss)`, jitted, with the state donated and its shardings kept.

    The dropout key is folded from the optimizer's step count, so a resumed run draws the same masks.
    """

    def step(state, batch):
        model, optimizer = nnx.merge(graphdef, state)
        key = jax.random.fold_in(jax.random.key(dropout_seed), optimizer.step[...])

        def loss_fn(model: FlaxMTLMForCausalLM) -> jax.Array:
            logits = model(batch, deterministic=False, rngs=nnx.Rngs(dropout=key))
            return next_token_loss(logits, batch, ignored_id)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    return jax.jit(
        step,
        in_shardings=(state_sharding, batch_sharding),
        out_shardings=(state_sharding, None),
        donate_argnums=0,
    )


def make_eval_step(graphdef: nnx.GraphDef, state_sharding, batch_sharding: NamedSharding, ignored_id: int):
    """`loss(state, batch)`, jitted, without dropout."""

    def loss(state, batch):
        model, _ = nnx.merge(graphdef, state)
        return next_token_loss(model(batch), batch, ignored_id)

    return jax.jit(loss, in_shardings=(state_sharding, batch_sharding))
