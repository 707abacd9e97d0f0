"""The M2 trainer: MTLM2 trained as the original was, in JAX/Flax on a device mesh, then exported as an MTLM folder.

`train(cfg)` runs (or resumes) a run configured by `mtlm_recipes.m2_jax.config.RunConfig`; `examples/m2_jax/train.py`
is its command line. Model: any `MTLMConfig` preset (`m2` by default) or an MTLM folder to continue from
(`model.init_from`, e.g. a model grown in PyTorch). Data: lines tokenized with the Mistral tokenizer, EOS after
each, packed; EOS targets left out of the loss. Optimizer: clip 1.0, AdamW, warmup-cosine. The global batch is
split over a mesh of all devices, and with `mesh.shard_params` the parameters too. Orbax checkpoints; a run
resumes from the newest one and continues exactly as an uninterrupted run would. At the end `final/` holds an
MTLM folder (safetensors, config with auto_map, code, tokenizer) that loads with `trust_remote_code=True`, and
`training.json` the training metadata the model card reads.
"""

import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import mtlm_hf
from mtlm_hf.flax_bridge import mtlm_to_flax_params, save_flax_as_mtlm

from ..checkpoint_config import architecture_of
from ..errors import ConfigError
from ..progress import show_step, training_bar
from ..training_log import log_step, write_training_metadata
from . import checkpointing
from .config import ModelConfig, RunConfig, model_config_of, validate
from .corpus import batch_indices, load_blocks, make_tokenizer, pack_blocks, read_units
from .mesh import batch_sharding, make_mesh, state_shardings
from .steps import create_model_and_optimizer, make_eval_step, make_schedule, make_train_step

COMPUTE_DTYPES = {"no": jnp.float32, "bf16": jnp.bfloat16}


def initial_params(cfg: ModelConfig, config: mtlm_hf.MTLMConfig) -> dict | None:
    """The Flax parameters of the `init_from` folder, or None to start from random weights."""
    if not cfg.init_from:
        return None
    source = mtlm_hf.MTLMForCausalLM.from_pretrained(cfg.init_from, dtype="float32")
    saved, wanted = architecture_of(source.config), architecture_of(config)
    if saved != wanted:
        changed = ", ".join(f"{key}={wanted[key]!r}" for key in wanted if saved[key] != wanted[key])
        raise ConfigError(f"model.overrides change the shape of the init_from model ({changed}); drop them.")
    return mtlm_to_flax_params(source)


def describe_hardware(num_devices: int) -> str:
    """What the run trained on, as a card states it: "8x TPU v5 lite (tpu)", or the CPU and its cores."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        # JAX names every CPU device "cpu"; the cores the process may use say how big the machine was.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return f"{cores} CPU cores ({platform.machine()}), {num_devices} JAX device(s)"
    return f"{num_devices}x {device.device_kind} ({device.platform})"


def evaluate(eval_step, state, blocks: np.ndarray, batch_size: int, sharding) -> float:
    """Mean validation loss over whole batches of `blocks`."""
    losses = [
        eval_step(state, jax.device_put(blocks[i : i + batch_size], sharding))
        for i in range(0, len(blocks) - batch_size + 1, batch_size)
    ]
    return float(np.mean(jax.device_get(losses)))


def train(cfg: RunConfig, stop_after: int | None = None, command: str | None = None) -> tuple[list[float], nnx.State]:
    """Run training as configured, resuming from the newest checkpoint in `output_dir` if there is one.

    Writes `train_losses.jsonl` (`{"step", "loss", "seconds"}` per step) and `eval_losses.jsonl` under
    `output_dir`, checkpoints under `output_dir/checkpoints`, and once `training.total_steps` is reached the
    MTLM export under `output_dir/final` and the training metadata `output_dir/training.json`.

    Args:
        cfg (`RunConfig`): The run.
        stop_after (`int`, *optional*): Stop (with a checkpoint) after this step; the schedule is unchanged.
        command (`str`, *optional*): The command line, recorded in the training metadata.

    Returns:
        `tuple[list[float], nnx.State]`: The losses of the steps run in this call and the final train state
        (model and optimizer, sharded).

    Raises:
        ConfigError, InputFileError: If the run cannot work as configured (before anything is written).
    """
    t, out = cfg.training, Path(cfg.output_dir)
    config = model_config_of(cfg.model, cfg.data.bpe_vocab_size)
    mesh = make_mesh(cfg.mesh.num_devices)
    validate(cfg, config, mesh.size)
    print(f"mesh: {mesh.size} {jax.devices()[0].platform} device(s), parameters sharded: {cfg.mesh.shard_params}")
    params = initial_params(cfg.model, config)
    train_units = read_units(cfg.data.train, cfg.data.eos_per)
    tokenizer = make_tokenizer(cfg.data, train_units)
    blocks = pack_blocks(train_units, tokenizer, cfg.data.seq_len)
    val = load_blocks(cfg.data.validation, tokenizer, cfg.data.seq_len, cfg.data.eos_per)[: cfg.data.val_blocks]
    if len(val) < t.batch_size:
        raise ConfigError(
            f"The validation data packs into {len(val)} blocks, fewer than one batch ({t.batch_size}): give more "
            "validation text, or lower batch_size or seq_len."
        )

    # Build the train state directly in its shardings, as a sharded model that fits no single device must be.
    dtype = COMPUTE_DTYPES[t.mixed_precision]

    def create():
        return create_model_and_optimizer(config, t, t.seed, dtype)

    graphdef, abstract_state = nnx.split(nnx.eval_shape(create))
    sharding = state_shardings(abstract_state, mesh, cfg.mesh.shard_params)
    state = jax.jit(lambda: nnx.split(create())[1], out_shardings=sharding)()
    if params is not None:
        nnx.replace_by_pure_dict(state[0], params)
        state = jax.device_put(state, sharding)

    manager = checkpointing.make_manager(out / "checkpoints", t.keep_checkpoints)
    start = manager.latest_step()
    if start is not None:
        state = checkpointing.restore(manager, start, state, sharding, config)
        print(f"resumed from {manager.directory / str(start)} at step {start}")
    start = start or 0

    batches = batch_sharding(mesh)
    train_step = make_train_step(graphdef, sharding, batches, tokenizer.eos_token_id, t.seed)
    eval_step = make_eval_step(graphdef, sharding, batches, tokenizer.eos_token_id)
    schedule = make_schedule(t)
    out.mkdir(parents=True, exist_ok=True)
    end = min(t.total_steps, stop_after or t.total_steps)
    losses = []
    bar = training_bar("m2", end, initial=start)
    for step in range(start, end):
        started = time.perf_counter()
        batch = jax.device_put(blocks[batch_indices(len(blocks), t.batch_size, t.seed, step)], batches)
        state, loss = train_step(state, batch)
        losses.append(float(loss))
        seconds = time.perf_counter() - started
        tokens_per_second = t.batch_size * cfg.data.seq_len / seconds
        done = step + 1
        log_step(out, done, losses[-1], seconds)
        show_step(bar, losses[-1], tokens_per_second)
        if done % t.log_every == 0 or done == t.total_steps:
            bar.write(
                f"step {done}: loss {losses[-1]:.4f}, lr {float(schedule(step)):.2e}, {tokens_per_second:,.0f} tok/s"
            )
        if done % t.eval_every == 0 or done == t.total_steps:
            val_loss = evaluate(eval_step, state, val, t.batch_size, batches)
            with (out / "eval_losses.jsonl").open("a") as log:
                log.write(json.dumps({"step": done, "loss": val_loss}) + "\n")
            bar.write(f"step {done}: val loss {val_loss:.4f}")
        if done % t.checkpoint_every == 0 or done == end:
            checkpointing.save(manager, done, state, config)
    bar.close()
    manager.wait_until_finished()
    manager.close()

    if end == t.total_steps:
        model, _ = nnx.merge(graphdef, state)
        final = save_flax_as_mtlm(nnx.to_pure_dict(nnx.state(model, nnx.Param)), config, out / "final", tokenizer)
        write_training_metadata(
            out,
            tokens_per_step=t.batch_size * cfg.data.seq_len,
            hardware=describe_hardware(mesh.size),
            framework=f"JAX {jax.__version__} + Flax NNX",
            precision="bf16 matmuls, fp32 parameters" if t.mixed_precision == "bf16" else "fp32",
            command=command,
        )
        print(f"final model: {final} (loads with trust_remote_code=True)")
    else:
        print(f"stopped after step {end}; the same command without --stop-after resumes the run")
    return losses, state
