"""`GrowthCallback`: grow the model of a `transformers.Trainer` at a given optimizer step, in place."""

from __future__ import annotations

import logging
from typing import Any

from accelerate import PartialState
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.utils import DistributedType
from transformers import TrainerCallback

from .midrun import TrainingGrowth, load_grown_optimizer
from .optim import OPTIMIZER_STATES, check_choice
from .plan import GrowthPlan
from .spec import GrowthSpec, check_spec

logger = logging.getLogger(__name__)


class GrowthCallback(TrainerCallback):
    """Grow the model of a `transformers.Trainer` at a given optimizer step, in a single process.

    `Trainer` keeps references to its model, optimizer and LR scheduler, so the growth happens in
    place: at the end of step `at_step` the model grows, and the optimizer takes the grown param groups
    (each new parameter in the group of its source, in model order) with their grown state. The groups
    stay the same, so the scheduler's per-group schedule needs no rebuild and continues. The plan
    applied is kept in `self.plan`.

    Under DDP/FSDP/DeepSpeed the wrapper cannot be rebuilt from a callback (the new layers' gradients
    would not be all-reduced), so the callback refuses multi-process and sharded runs when training
    begins: write a custom Accelerate loop with `grow_prepared` for those.

    A run resumed from a checkpoint saved after growth must be given the grown model (grow it with the
    same spec before `train(resume_from_checkpoint=...)`): the checkpoint holds the grown weights.

    Args:
        at_step (`int`): `state.global_step` (optimizer steps done) at whose end the model grows, >= 1.
        spec (`GrowthSpec`): How to grow.
        optimizer_state (`str`, *optional*, defaults to `"copy"`): `"copy"` or `"reset"`, see
            `grow_optimizer_state`.
        freeze_source_layers (`bool`, *optional*, defaults to `False`): Leave only the new layers trainable.
        layers_attr (`str`, *optional*): Dotted path of the layer list, for models growth_ops cannot read.

    Raises:
        ValueError: If `at_step` is not a positive integer or `optimizer_state` is unknown.
        TypeError: If `spec` is not a `GrowthSpec`.

    Example:

    ```python
    >>> growth = GrowthCallback(at_step=500, spec=GrowthSpec(depth=2))
    >>> trainer = Trainer(model, args, train_dataset=data, callbacks=[growth])
    >>> trainer.train()
    ```
    """

    def __init__(
        self,
        at_step: int,
        spec: GrowthSpec,
        *,
        optimizer_state: str = "copy",
        freeze_source_layers: bool = False,
        layers_attr: str | None = None,
    ) -> None:
        if isinstance(at_step, bool) or not isinstance(at_step, int) or at_step < 1:
            raise ValueError(f"at_step must be an integer >= 1 (an optimizer step), got {at_step!r}.")
        check_choice("optimizer_state", optimizer_state, OPTIMIZER_STATES)
        self.at_step = at_step
        self.spec = check_spec(spec)
        self.optimizer_state = optimizer_state
        self.freeze_source_layers = freeze_source_layers
        self.layers_attr = layers_attr
        self.plan: GrowthPlan | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        _check_single_process(args)

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if state.global_step != self.at_step:
            return
        _check_single_process(args)
        if model is None or optimizer is None:
            raise ValueError(
                "GrowthCallback needs the Trainer's model and optimizer (passed to callbacks by Trainer)."
            )
        inner = optimizer.optimizer if isinstance(optimizer, AcceleratedOptimizer) else optimizer
        growth = TrainingGrowth(
            model,
            inner,
            self.spec,
            optimizer_state=self.optimizer_state,
            freeze_source_layers=self.freeze_source_layers,
            layers_attr=self.layers_attr,
        )
        # Trainer holds this optimizer object, and its scheduler holds it too: refill it in place.
        load_grown_optimizer(inner, growth.apply())
        self.plan = growth.plan
        logger.info("growth_ops: GrowthCallback grew the model at step %d", state.global_step)


def _check_single_process(args: Any) -> None:
    distributed = PartialState().distributed_type
    if getattr(args, "world_size", 1) > 1 or distributed != DistributedType.NO:
        raise RuntimeError(
            f"GrowthCallback grows a Trainer's model in place, which works in a single process only (this run: "
            f"world_size={getattr(args, 'world_size', 1)}, distributed type {distributed}): a DDP/FSDP/DeepSpeed wrapper "
            "cannot be rebuilt from a callback, so the new layers' gradients would not be synchronised. Write a "
            "custom Accelerate loop and grow with growth_ops.grow_prepared instead."
        )
