"""`GrowthCallback`: grow the model of a `transformers.Trainer` at a given optimizer step, on any number of processes."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from accelerate import PartialState
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.utils import DistributedType
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput

from .accelerate_growth import PreparedGrowth, check_distributed_type, unmark_prepared
from .midrun import TrainingGrowth, load_grown_optimizer
from .optim import OPTIMIZER_STATES, check_choice
from .plan import GrowthPlan
from .schedule import continue_scheduler
from .spec import GrowthSpec, check_spec

if TYPE_CHECKING:
    from transformers import Trainer

logger = logging.getLogger(__name__)


class GrowthCallback(TrainerCallback):
    """Grow the model of a `transformers.Trainer` at a given optimizer step.

    In a single process `trainer.train()` is enough: `Trainer` keeps references to its model, optimizer
    and LR scheduler, so at the end of step `at_step` the model grows in place, and the optimizer takes the
    grown param groups (each new parameter in the group of its source, in model order) with their grown
    state. The groups stay the same, so the scheduler continues.

    Under DDP or FSDP2 (several processes) the wrapper must be built again around the grown model, and
    `Trainer` holds it in its training loop where no callback reaches. Start such a run with
    `growth.train(trainer)`: the callback stops training at `at_step`, grows the prepared model with its
    optimizer (under FSDP2 shard by shard, see `grow_prepared`), saves the grown state as the Trainer
    checkpoint of that step, and resumes from it, so that `Trainer` wraps the grown model and restores the
    step, the data position and the RNG itself. DeepSpeed and FSDP version 1 are refused with what to do
    instead. The plan applied is kept in `self.plan`. Width growth maps the widened parameters' moments by
    the width rule (`growth_ops.optim.grow_width_optimizer_state`).

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
    >>> growth.train(trainer)  # trainer.train() also does in a single process
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
        self._driving = False  # inside `self.train`
        self._stopped_for_growth = False

    def train(self, trainer: Trainer, **train_kwargs: Any) -> TrainOutput:
        """Train `trainer` to the end, growing at `at_step`, on any number of processes.

        Args:
            trainer (`Trainer`): A Trainer made with this callback in `callbacks`.
            **train_kwargs: Passed to `trainer.train` (e.g. `resume_from_checkpoint`).

        Returns:
            `TrainOutput`: What the last `trainer.train` call returned.

        Raises:
            ValueError: If the callback is not one of `trainer`'s callbacks.
            NotImplementedError: Under DeepSpeed, FSDP version 1 or Megatron-LM, or FSDP2 with activation
                checkpointing (grow the checkpoint on disk and resume instead).
        """
        if self not in trainer.callback_handler.callbacks:
            raise ValueError(
                "GrowthCallback.train needs a Trainer made with this callback: Trainer(..., callbacks=[growth])."
            )
        if not _is_distributed(trainer.args):
            return trainer.train(**train_kwargs)
        check_distributed_type(trainer.accelerator)
        self._driving = True
        try:
            output = trainer.train(**train_kwargs)
            if not self._stopped_for_growth:  # the run ended before at_step, or resumed after it
                return output
            self._stopped_for_growth = False
            self._grow_trainer(trainer)
            checkpoint = _save_checkpoint(trainer)
            train_kwargs["resume_from_checkpoint"] = checkpoint
            logger.info("growth_ops: GrowthCallback resumes the grown model from %s", checkpoint)
            return trainer.train(**train_kwargs)
        finally:
            self._driving = False

    def on_train_begin(self, args, state, control, **kwargs):
        if _is_distributed(args) and not self._driving:
            raise RuntimeError(
                f"GrowthCallback on {getattr(args, 'world_size', 1)} processes: start training with growth.train(trainer) "
                "instead of trainer.train(), so that the callback can wrap the grown model again (otherwise the new "
                "layers' gradients are not synchronised). In a custom Accelerate loop, grow with "
                "growth_ops.grow_prepared."
            )

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if state.global_step != self.at_step:
            return
        if model is None or optimizer is None:
            raise ValueError(
                "GrowthCallback needs the Trainer's model and optimizer (passed to callbacks by Trainer)."
            )
        if _is_distributed(args):
            # `self.train` grows once Trainer has left its loop, and resumes.
            self._stopped_for_growth = True
            control.should_training_stop = True
            return
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

    def _grow_trainer(self, trainer: Trainer) -> None:
        """Grow the trainer's prepared model, optimizer and scheduler, and hand the bare grown ones back to it."""
        optimizer = trainer.optimizer
        inner = optimizer.optimizer if isinstance(optimizer, AcceleratedOptimizer) else optimizer
        growth = PreparedGrowth(
            trainer.accelerator,
            trainer.model_wrapped,
            inner,
            self.spec,
            scheduler=trainer.lr_scheduler,
            old_optimizers=(optimizer,),
            optimizer_state=self.optimizer_state,
            freeze_source_layers=self.freeze_source_layers,
            layers_attr=self.layers_attr,
        )
        model, new_optimizer = growth.apply()
        unmark_prepared(model)
        # Bare objects: `Trainer._prepare_for_training` wraps the model (`model is model_wrapped`) and prepares
        # the optimizer when it resumes; it keeps an optimizer it holds and rebuilds a scheduler it made.
        trainer.model = trainer.model_wrapped = model
        trainer.optimizer = new_optimizer
        if trainer.lr_scheduler is not None:
            trainer.lr_scheduler = continue_scheduler(trainer.lr_scheduler, growth.old_optimizers, new_optimizer)
        self.plan = growth.plan
        logger.info("growth_ops: GrowthCallback grew the model at step %d", trainer.state.global_step)


def _save_checkpoint(trainer: Trainer) -> str:
    """Save the trainer's (grown) state as the checkpoint of its current step; returns its folder.

    Trainer writes checkpoints (model, optimizer, scheduler, RNG, trainer state, under FSDP sharded) only from
    inside its loop, through `_save_checkpoint`; no public call saves all of them, so this private one is used,
    here only.
    """
    trainer._save_checkpoint(trainer.model_wrapped, trial=None)
    trainer.accelerator.wait_for_everyone()
    return os.path.join(trainer.args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}")


def _is_distributed(args: Any) -> bool:
    return getattr(args, "world_size", 1) > 1 or PartialState().distributed_type != DistributedType.NO
