"""Orbax checkpoints of the M2 trainer: the whole train state (parameters, optimizer moments, step) plus a JSON
record of the model config, so a resume into a different model is refused before any array is read.

Orbax writes each checkpoint to a temporary folder and renames it when complete, so a crash never leaves a
half-written checkpoint behind; it restores every array straight into the shardings asked for, so a run saved on
8 devices resumes on 1 and the other way round.
"""

from pathlib import Path

import jax
import orbax.checkpoint as ocp

from mtlm_hf import MTLMConfig

from ..checkpoint_config import architecture_of, check_architecture


def make_manager(folder: Path, keep: int) -> ocp.CheckpointManager:
    """A manager keeping the newest `keep` checkpoints in `folder`, written in the background."""
    return ocp.CheckpointManager(
        Path(folder).resolve(), options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    )


def save(manager: ocp.CheckpointManager, step: int, state, config: MTLMConfig) -> None:
    """Start writing the checkpoint of `step` (arrays are copied before this returns; the file I/O continues)."""
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), architecture=ocp.args.JsonSave(architecture_of(config))
        ),
    )


def restore(manager: ocp.CheckpointManager, step: int, state, state_sharding, config: MTLMConfig):
    """The saved state of `step`, laid out like `state` and placed with `state_sharding`.

    Raises:
        ConfigError: if the checkpoint was written for a model of another shape (the differing fields named).
    """
    saved = manager.restore(step, args=ocp.args.Composite(architecture=ocp.args.JsonRestore()))["architecture"]
    check_architecture(saved, config, f"of step {step} in {manager.directory}")
    target = jax.tree.map(
        lambda array, sharding: jax.ShapeDtypeStruct(array.shape, array.dtype, sharding=sharding),
        state,
        state_sharding,
    )
    return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
