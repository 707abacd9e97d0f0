"""`grow_prepared`: grow a model that `accelerator.prepare` wrapped, with its optimizer and LR scheduler.

DDP registers its all-reduce hooks on the parameters it was built with, so the new layers' gradients
stay local to each process until the model is wrapped again: the model is unwrapped, grown by the
core in `midrun`, and `prepare`d again with the new optimizer and scheduler.

Under FSDP2 (`fully_shard`) each rank holds only a shard of every parameter and moment. The core
grows a meta-device view of the model whose tensors are this rank's shards: a new layer's shard is
a copy of its source's shard (same global shape, so the same rows on the same rank), and no rank
gathers anything. A grown model built on the meta device and sharded by Accelerate's own
`fsdp2_prepare_model` then receives those shards. Width growth tiles whole rows, which other ranks
hold: there each tensor is gathered on its own, widened and split again (`_widened_shards_view`), and
the depth growth that follows is the shard-local one.

```python
model, optimizer, scheduler = grow_prepared(accelerator, model, optimizer, scheduler, GrowthSpec(depth=2))
```
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import logging
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.scheduler import AcceleratedScheduler
from accelerate.utils import DistributedType
from accelerate.utils.fsdp_utils import fsdp2_prepare_model
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.optim.lr_scheduler import LambdaLR

from .anatomy import discover_anatomy
from .midrun import TrainingGrowth
from .optim import OPTIMIZER_STATES, check_choice, grow_width_optimizer_state
from .schedule import SCHEDULES, check_rewarm_steps, continue_scheduler, rewarm_schedule
from .spec import GrowthSpec, check_spec
from .width import apply_width, plan_width
from .width_rules import grow_tensor

logger = logging.getLogger(__name__)

# Engine-owned (flattened) parameters and optimizer state: growing the unwrapped module in place and
# reading the optimizer state by parameter would give wrong results, so these are refused up front.
# FSDP version 1 is refused in `check_distributed_type`; FSDP2 is supported.
_UNSUPPORTED_DISTRIBUTED = (DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM)
_GROW_ON_DISK = (
    "Grow the checkpoint on disk instead: save the state, grow it with `growth_ops.grow_checkpoint` (or the "
    "`mtlm-grow` command), and resume training from the grown checkpoint."
)


def grow_prepared(
    accelerator: Accelerator,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    spec: GrowthSpec,
    *,
    optimizer_state: str = "copy",
    schedule: str = "continue",
    rewarm_steps: int = 0,
    freeze_source_layers: bool = False,
    layers_attr: str | None = None,
) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
    """Grow a model that `accelerator.prepare` wrapped, with its optimizer and LR scheduler.

    The one call for a custom Accelerate loop. It unwraps the model, grows it in place with its
    optimizer state (see `TrainingGrowth`), continues the scheduler on the new optimizer, and
    `prepare`s all three again so that DDP registers the new layers (without this their gradients
    are never all-reduced). The model keeps its dtype and device. Width growth maps the widened
    parameters' moments by the width rule (`growth_ops.optim.grow_width_optimizer_state` derives it);
    under FSDP2 a rank gathers one tensor at a time for it, never the whole model.

    Call it on an optimizer-step boundary (after `optimizer.step()`/`zero_grad()` and
    `scheduler.step()`, before the next micro-batch), and use the returned objects from then on.
    `accelerator.free_memory()` is called on the way, which resets `accelerator.step` (the gradient
    accumulation counter) to 0: on a boundary that is where it was. Other objects the accelerator
    tracks (data loaders, other models) stay tracked, and the new objects take the old ones' places,
    so `save_state`/`load_state` keep their layout.

    Args:
        accelerator (`Accelerator`): The accelerator that prepared the three objects.
        model (`nn.Module`): The prepared model (DDP-wrapped, compiled or plain).
        optimizer (`torch.optim.Optimizer`): The prepared optimizer (an `AcceleratedOptimizer`) or a
            plain one; any `torch.optim.Optimizer` whose state is per parameter.
        scheduler (`LRScheduler`, *optional*): The prepared scheduler (an `AcceleratedScheduler`), a
            plain one, or `None`.
        spec (`GrowthSpec`): How to grow.
        optimizer_state (`str`, *optional*, defaults to `"copy"`): How new layers' optimizer state
            starts: `"copy"` (their source's moments) or `"reset"` (zeros); see `grow_optimizer_state`.
        schedule (`str`, *optional*, defaults to `"continue"`): `"continue"` the LR schedule exactly
            where it was, or `"rewarm"`: multiply it by a linear warmup from 0 over `rewarm_steps`.
        rewarm_steps (`int`, *optional*, defaults to 0): Optimizer steps of the rewarm (used only with
            `schedule="rewarm"`, which needs at least 1). The k-th optimizer step after growth, counting
            from 0, runs at `min(1, k / rewarm_steps)` of the scheduled LR: as in transformers' warmups
            the first runs at LR 0 (it still fills the moments).
        freeze_source_layers (`bool`, *optional*, defaults to `False`): Leave only the new layers trainable.
        layers_attr (`str`, *optional*): Dotted path of the layer list, for models growth_ops cannot read.

    Returns:
        `tuple[nn.Module, torch.optim.Optimizer, Any]`: The prepared model, optimizer and scheduler
        (`None` if `scheduler` was `None`). The unwrapped model is the same object as before, grown.
        With `freeze_source_layers=True` the optimizer holds only the new layers' parameters; in
        general it holds every trainable parameter whose source parameter the old optimizer held.

    Raises:
        ValueError: If `optimizer_state` or `schedule` is unknown, `rewarm_steps` is not a positive
            integer for `"rewarm"`, `"rewarm"` is asked of a scheduler that is not a `LambdaLR`, the
            optimizer holds parameters that are not the model's, or the spec does not fit the model.
        TypeError: If `spec` is not a `GrowthSpec`.
        RuntimeError: If called in the middle of a gradient accumulation cycle.
        NotImplementedError: Under DeepSpeed, FSDP version 1 or Megatron-LM (flattened, engine-owned
            parameters and state), or FSDP2 with activation checkpointing.

    Every check runs before anything is changed: when one fails, model, optimizer, scheduler and
    accelerator are as they were.

    Example:

    ```python
    >>> accelerator = Accelerator(gradient_accumulation_steps=4, step_scheduler_with_optimizer=False)
    >>> model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    >>> spec = GrowthSpec(depth=2, depth_method="stack")
    >>> for step in range(total_steps):
    ...     if step == grow_at:
    ...         model, optimizer, scheduler = grow_prepared(
    ...             accelerator, model, optimizer, scheduler, spec, schedule="rewarm", rewarm_steps=100
    ...         )
    ...     ...  # the usual accumulate / backward / optimizer.step / scheduler.step
    ```
    """
    check_spec(spec)
    check_choice("optimizer_state", optimizer_state, OPTIMIZER_STATES)
    check_choice("schedule", schedule, SCHEDULES)
    if schedule == "rewarm":
        check_rewarm_steps(rewarm_steps, "schedule='rewarm'")
    inner_optimizer = optimizer.optimizer if isinstance(optimizer, AcceleratedOptimizer) else optimizer
    inner_scheduler = scheduler.scheduler if isinstance(scheduler, AcceleratedScheduler) else scheduler
    if schedule == "rewarm" and not isinstance(inner_scheduler, LambdaLR):
        raise ValueError(
            f"schedule='rewarm' multiplies a LambdaLR-based schedule (transformers' get_*_schedule*), but the "
            f"scheduler is {type(inner_scheduler).__name__}: use schedule='continue', or a LambdaLR."
        )
    growth = PreparedGrowth(
        accelerator,
        model,
        inner_optimizer,
        spec,
        optimizer_state=optimizer_state,
        freeze_source_layers=freeze_source_layers,
        layers_attr=layers_attr,
        scheduler=inner_scheduler,
        old_optimizers=(optimizer,),
    )
    # `rewarm_steps` counts optimizer steps; AcceleratedScheduler steps the scheduler once per process
    # per optimizer step when it steps with the optimizer and batches are not split.
    per_step = (
        accelerator.num_processes if accelerator.step_scheduler_with_optimizer and not accelerator.split_batches else 1
    )

    # Commit.
    unwrapped, new_optimizer = growth.apply()
    new_scheduler = None
    if inner_scheduler is not None:
        new_scheduler = continue_scheduler(inner_scheduler, growth.old_optimizers, new_optimizer)
        if schedule == "rewarm":
            rewarm_schedule(new_scheduler, new_scheduler.last_epoch, rewarm_steps * per_step)
    prepared = _prepare_again(
        accelerator, old=(model, optimizer, scheduler), grown=(unwrapped, new_optimizer, new_scheduler)
    )
    logger.info("growth_ops: re-prepared the grown model (schedule=%s)", schedule)
    return prepared[0], prepared[1], (prepared[2] if new_scheduler is not None else None)


class PreparedGrowth:
    """One growth of a model that `accelerator.prepare` wrapped: checked when made, applied by `apply`.

    The part `grow_prepared` and `GrowthCallback` share. Under FSDP2 the core (`TrainingGrowth`) grows a
    view of this rank's shards, and `apply` shards the grown model as Accelerate does; otherwise it grows
    the unwrapped model in place. Re-preparing is the caller's: `grow_prepared` prepares again, a
    `Trainer` prepares when it resumes.

    Args:
        accelerator (`Accelerator`): The accelerator that prepared `model`.
        model (`nn.Module`): The prepared model.
        optimizer (`torch.optim.Optimizer`): The bare optimizer inside the prepared one.
        spec (`GrowthSpec`): How to grow.
        scheduler (`LRScheduler`, *optional*): Checked to be copyable onto the new optimizer.
        old_optimizers (`tuple`, *optional*): Wrappers that stand for `optimizer` in the scheduler.
        **options: `optimizer_state`, `freeze_source_layers` and `layers_attr`, as `TrainingGrowth` takes them.

    Raises:
        NotImplementedError: Under an engine that owns flattened parameters (see `grow_prepared`).
        RuntimeError: In the middle of a gradient accumulation cycle.
        ValueError, TypeError: As `TrainingGrowth` raises them.
    """

    def __init__(
        self,
        accelerator: Accelerator,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        spec: GrowthSpec,
        *,
        scheduler: Any = None,
        old_optimizers: tuple[Any, ...] = (),
        **options: Any,
    ) -> None:
        check_distributed_type(accelerator)
        if not accelerator.sync_gradients:
            raise RuntimeError(
                "Growth was asked for in the middle of a gradient accumulation cycle (accelerator.sync_gradients is "
                "False): grow on an optimizer-step boundary, after optimizer.step() and before the next micro-batch."
            )
        accelerator.wait_for_everyone()
        self.accelerator = accelerator
        self.unwrapped = accelerator.unwrap_model(model)  # keeps the autocast wrapper: no change yet
        self.sharded = isinstance(self.unwrapped, FSDPModule)
        view, view_optimizer, core_spec = self.unwrapped, optimizer, spec
        if self.sharded and check_spec(spec).grows_width:
            # Widened here, tensor by tensor; the core then grows the depth of the widened shards.
            if options.get("freeze_source_layers") and not spec.grows_depth:
                TrainingGrowth(self.unwrapped, optimizer, spec, **options)  # raises: no new layers to leave trainable
            view, view_optimizer = _widened_shards_view(self.unwrapped, optimizer, spec)
            layers = discover_anatomy(view, layers_attr=options.get("layers_attr")).layers_path
            core_spec = _depth_part(spec, len(view.get_submodule(layers)))
        elif self.sharded:
            # Under FSDP2 the core grows this rank's shards, held by a meta-device view of the model.
            view, view_optimizer = _local_shards_view(self.unwrapped, optimizer)
        self.growth = TrainingGrowth(
            view,
            view_optimizer,
            core_spec,
            scheduler=scheduler,
            old_optimizers=(*old_optimizers, optimizer),
            **options,
        )
        self.old_optimizers = self.growth.old_optimizers

    @property
    def plan(self) -> Any:
        return self.growth.plan

    def apply(self) -> tuple[nn.Module, torch.optim.Optimizer]:
        """Grow; returns the grown bare model (the same object unless sharded) and its new bare optimizer."""
        new_optimizer = self.growth.apply()
        if self.sharded:
            # The view optimizer (a copy of the real one's shell) would keep the view's tensors alive, widened
            # ones included, while `_shard_like` frees them one by one.
            self.growth.optimizer.param_groups, self.growth.optimizer.state = [], collections.defaultdict(dict)
            return _shard_like(self.accelerator, self.growth.model, new_optimizer)
        return self.unwrapped, new_optimizer


def check_distributed_type(accelerator: Accelerator) -> None:
    """The one place that says which of Accelerate's distributed types growth mid-training supports.

    Raises:
        NotImplementedError: Under DeepSpeed, Megatron-LM or FSDP version 1, or FSDP2 with activation
            checkpointing, naming what to do instead.
    """
    if accelerator.distributed_type in _UNSUPPORTED_DISTRIBUTED or (
        accelerator.distributed_type == DistributedType.FSDP and not accelerator.is_fsdp2
    ):
        raise NotImplementedError(
            f"Growth mid-training supports single-process, DDP-style data parallel and FSDP2 (fsdp_version=2) "
            f"training, not {accelerator.distributed_type.value}"
            f"{' version 1' if accelerator.distributed_type == DistributedType.FSDP else ''}: its parameters and "
            f"optimizer state are flattened and owned by the engine. {_GROW_ON_DISK}"
        )
    if accelerator.is_fsdp2 and accelerator.state.fsdp_plugin.activation_checkpointing:
        raise NotImplementedError(
            "Growth mid-training under FSDP2 does not support activation checkpointing (Accelerate applies it before "
            f"sharding, and the grown model is sharded again). Turn fsdp_activation_checkpointing off. {_GROW_ON_DISK}"
        )


def _original_class(module: nn.Module) -> type:
    # `fully_shard` swaps the module's class for a generated `FSDP<Class>` subclass.
    return next(c for c in type(module).__mro__ if not issubclass(c, FSDPModule))


def _build_on_meta(model: nn.Module, config: Any) -> nn.Module:
    with torch.device("meta"):
        return _original_class(model)._from_config(config)


def _local_shards_view(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A bare model of `model`'s class whose parameters are this rank's shards, and a view of
    `optimizer` over them whose state is the moments' shards. Nothing is copied or gathered: the
    view's tensors are the local tensors of `model`'s DTensors. Buffers (not sharded) are shared."""
    view = _build_on_meta(model, copy.deepcopy(model.config))
    local: dict[int, nn.Parameter] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if id(parameter) not in local:
            local[id(parameter)] = nn.Parameter(_to_local(parameter).detach(), requires_grad=parameter.requires_grad)
        _set_tensor(view, name, local[id(parameter)])
    for name, buffer in model.named_buffers(remove_duplicate=False):
        _set_tensor(view, name, buffer)
    return view, _optimizer_view(optimizer, local, lambda _, state: {k: _to_local(v) for k, v in state.items()})


def _optimizer_view(
    optimizer: torch.optim.Optimizer, local: dict[int, nn.Parameter], view_state: Any
) -> torch.optim.Optimizer:
    """`optimizer` over a view's parameters (`local`, by id of the real ones), each with the state
    `view_state(parameter, state)`. A shallow copy keeps the class, defaults and hyperparameters; only
    groups and state are swapped."""
    view_optimizer = copy.copy(optimizer)
    view_optimizer.param_groups = [
        {**group, "params": [local[id(p)] for p in group["params"]]} for group in optimizer.param_groups
    ]
    view_optimizer.state = collections.defaultdict(dict)
    for parameter, state in optimizer.state.items():
        view_optimizer.state[local[id(parameter)]] = view_state(parameter, state)
    return view_optimizer


def _widened_shards_view(
    model: nn.Module, optimizer: torch.optim.Optimizer, spec: GrowthSpec
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """Under FSDP2: a bare model of the widened config whose parameters are this rank's shards of the widened
    tensors, and a view of `optimizer` over them holding the shards of the widened moments.

    Widening tiles whole rows, so a new shard holds rows of other ranks' old shards: each tensor is gathered on
    its own (`full_tensor`), widened by its width rule (the moments by `grow_width_optimizer_state`), and split
    again as the old one was placed (`distribute_tensor` without communication), so a rank holds at most one
    gathered tensor at a time, never the whole model. The width rules are those `grow` applies, checked
    numerically there; here the model is sharded, so the layer-by-layer check of `apply_width` does not run.
    """
    view = _build_on_meta(model, copy.deepcopy(model.config))
    plan = plan_width(view, spec)
    apply_width(view, plan)  # on the meta device: the widened config, attributes and shapes, nothing computed
    names = {id(p): n for n, p in model.named_parameters()}
    local: dict[int, nn.Parameter] = {}
    for name, parameter in model.named_parameters():
        rule = plan.rules.get(name)
        shard = (
            _to_local(parameter).detach()
            if rule is None
            else _split_like(grow_tensor(_full(parameter), rule, name), parameter)
        )
        local[id(parameter)] = nn.Parameter(shard, requires_grad=parameter.requires_grad)
    for name, parameter in model.named_parameters(remove_duplicate=False):
        _set_tensor(view, name, local[id(parameter)])
    for name, buffer in model.named_buffers(remove_duplicate=False):
        if name in plan.scalar_buffers:
            buffer = torch.tensor(plan.scalar_buffers[name], dtype=buffer.dtype, device=buffer.device)
        elif name in plan.rules:
            buffer = grow_tensor(buffer, plan.rules[name], name)
        _set_tensor(view, name, buffer)

    def widened_state(parameter: nn.Parameter, state: dict[str, Any]) -> dict[str, Any]:
        name = names[id(parameter)]
        if name not in plan.rules:
            return {k: _to_local(v) for k, v in state.items()}
        # One parameter's moments gathered at a time; unknown entries are refused there.
        grown = grow_width_optimizer_state({name: {k: _full(v) for k, v in state.items()}}, plan.rules)[name]
        return {k: _split_like(v, state[k]) for k, v in grown.items()}

    return view, _optimizer_view(optimizer, local, widened_state)


def _full(tensor: Any) -> Any:
    return tensor.detach().full_tensor() if isinstance(tensor, DTensor) else tensor


def _split_like(grown: Any, tensor: Any) -> Any:
    """This rank's shard of the widened `grown`, placed as `tensor` (its source) is, without communication."""
    if not isinstance(tensor, DTensor):
        return grown
    # A copy: the shard is a view of the whole widened tensor, which it would otherwise keep alive.
    return distribute_tensor(grown, tensor.device_mesh, tensor.placements, src_data_rank=None).to_local().clone()


def _depth_part(spec: GrowthSpec, num_layers: int) -> GrowthSpec:
    """The depth growth of `spec` alone; for a width-only spec, the plan that keeps every layer."""
    if spec.grows_depth:
        return dataclasses.replace(spec, width=None, intermediate=None, width_noise=None, seed=None)
    return GrowthSpec(layer_map=tuple(range(num_layers)))


def _shard_like(
    accelerator: Accelerator, grown_view: nn.Module, grown_optimizer: torch.optim.Optimizer
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The grown model sharded as Accelerate shards a model, filled with the grown shards of `grown_view`,
    and `grown_optimizer` moved onto its DTensor parameters with DTensor moments.

    Parameter by parameter, each shard and its moments are copied and the view's references to them dropped
    (`grown_view` is left without parameters), so the copies the view made of new layers are freed as the
    sharded ones fill: a rank's memory rises by about its share of the grown state, not by that plus the copies.
    """
    model = _build_on_meta(grown_view, grown_view.config)
    plugin = accelerator.state.fsdp_plugin
    # With cpu_ram_efficient_loading, `fsdp2_prepare_model` would broadcast rank 0's full state dict:
    # the shards are filled in place below instead.
    efficient_loading, plugin.cpu_ram_efficient_loading = plugin.cpu_ram_efficient_loading, False
    try:
        model = fsdp2_prepare_model(accelerator, model)
    finally:
        plugin.cpu_ram_efficient_loading = efficient_loading
    model.to_empty(device=accelerator.device)
    sharded = dict(model.named_parameters())
    aliases: dict[int, list[str]] = {}
    for name, view_parameter in grown_view.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(view_parameter), []).append(name)
    view_parameters = dict(grown_view.named_parameters())
    to_sharded = {id(view_parameters[name]): parameter for name, parameter in sharded.items()}
    optimized = set()
    for group in grown_optimizer.param_groups:
        group["params"] = [to_sharded[id(p)] for p in group["params"]]
        optimized.update(id(p) for p in group["params"])
    view_state, grown_optimizer.state = grown_optimizer.state, collections.defaultdict(dict)
    with torch.no_grad():
        view_buffers = dict(grown_view.named_buffers())
        for name, buffer in model.named_buffers():
            buffer.copy_(view_buffers[name])
        for name, parameter in sharded.items():
            view_parameter = view_parameters.pop(name)
            _to_local(parameter).copy_(view_parameter)
            parameter.requires_grad_(view_parameter.requires_grad)
            entries = view_state.pop(view_parameter, {})
            for alias in aliases[id(view_parameter)]:
                _set_tensor(grown_view, alias, None)
            if id(parameter) in optimized:
                grown_optimizer.state[parameter] = {k: _sharded_like(parameter, v) for k, v in entries.items()}
            del view_parameter, entries
    return model, grown_optimizer


def _to_local(tensor: Any) -> Any:
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _sharded_like(parameter: DTensor, value: Any) -> Any:
    """A moment shaped like the parameter's shard, as a DTensor placed like the parameter; others as they are."""
    if not isinstance(value, torch.Tensor) or value.shape != _to_local(parameter).shape or value.dim() == 0:
        return value
    sharded = torch.empty_like(parameter)
    _to_local(sharded).copy_(value)
    return sharded


def _set_tensor(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(module_name), leaf, tensor)


def _prepare_again(
    accelerator: Accelerator, old: tuple[Any, Any, Any], grown: tuple[Any, Any, Any]
) -> tuple[Any, ...]:
    """`prepare` the grown (bare) model, optimizer and scheduler in the places of the old prepared ones.

    The only code that touches Accelerate's private attributes. Accelerate has no public call to
    re-prepare a model or to swap one tracked object for another: `prepare` returns a model flagged as
    prepared untouched (no autocast, no DDP, no compile), stacks a second autocast wrapper on a forward
    it wrapped before, and only appends to its tracked lists, while `free_memory` forgets every tracked
    object. So the flag and the wrapper are undone, and after `free_memory` and `prepare` the objects
    that are not ours are put back, with the new ones where the old ones were, so that `save_state`
    writes the same files in the same order. Device placement is off for that `prepare` (see below).
    """
    (model, optimizer, scheduler), (unwrapped, new_optimizer, new_scheduler) = old, grown
    inner_optimizer = getattr(optimizer, "optimizer", optimizer)
    inner_scheduler = getattr(scheduler, "scheduler", scheduler)
    is_old = {
        "_models": lambda m: m is model or accelerator.unwrap_model(m) is unwrapped,
        "_optimizers": lambda o: o is optimizer or getattr(o, "optimizer", None) is inner_optimizer,
        "_schedulers": lambda s: (
            s is scheduler or (inner_scheduler is not None and getattr(s, "scheduler", None) is inner_scheduler)
        ),
        "_dataloaders": lambda d: False,
    }
    unmark_prepared(unwrapped)
    tracked = {key: list(getattr(accelerator, key)) for key in is_old}
    accelerator.free_memory()
    # The grown objects are already where they belong. Accelerate's optimizer placement would copy every
    # DTensor moment (`DTensor.to` its own device copies), and its FSDP2 path ignores `prepare`'s per-object
    # `device_placement`: so placement is off for this call (the public attribute, restored after).
    placement, accelerator.device_placement = accelerator.device_placement, False
    try:
        prepared = accelerator.prepare(*(o for o in (unwrapped, new_optimizer, new_scheduler) if o is not None))
    finally:
        accelerator.device_placement = placement
    for key, before in tracked.items():
        new = list(getattr(accelerator, key))
        restored = []
        for obj in before:
            if not is_old[key](obj):
                restored.append(obj)
            elif new:
                restored.append(new.pop(0))
        setattr(accelerator, key, restored + new)
    return prepared


def unmark_prepared(model: nn.Module) -> None:
    """Undo what `prepare` left on a bare model, so that the next `prepare` wraps it (DDP) as a new one.

    `prepare` returns a model flagged as prepared untouched (outside DDP the flag sits on the module itself),
    and stacks a second autocast wrapper on a `forward` it wrapped before under mixed precision.
    (`unwrap_model(keep_fp32_wrapper=False)` also unwraps the model's own decorated `forward` down to the
    bare function, so it is not used.)
    """
    model.__dict__.pop("_is_accelerate_prepared", None)
    original = model.__dict__.pop("_original_forward", None)
    if original is None:
        return
    if getattr(original, "__self__", None) is model and getattr(original, "__func__", None) is type(model).forward:
        model.__dict__.pop("forward", None)
    else:
        model.forward = original
