"""The core of growth in the middle of training, shared by `grow_prepared` and `GrowthCallback`.

An optimizer holds its parameters by identity, so after growth it knows none of the new ones. The
core reads the optimizer's state by parameter name and its param groups, grows the model, and builds
an optimizer of the same class whose groups hold the grown model's parameters (each new parameter in
the group of its source, so a weight-decay split carries over) with the grown state. Everything that
can fail is checked when a `TrainingGrowth` is made; `apply` then changes the model (only width growth's
numerical check runs there, on the grown model, and restores the model when it fails). Framework-free:
the Accelerate and Trainer integrations wrap it.

Width growth comes first, then depth, as in `grow`: widened parameters take their moments mapped by the
width rule (`optim.grow_width_optimizer_state`), and new layers copy the widened layers' state.
"""

from __future__ import annotations

import copy
import inspect
import logging
from typing import Any

import torch
from torch import nn

from .apply import apply_plan, layer_slice_axis, remap_layer_slices
from .in_memory import plan_growth
from .optim import OPTIMIZER_STATES, check_choice, grow_optimizer_state, grow_width_optimizer_state
from .plan import GrowthPlan
from .rules import split_layer_name
from .schedule import continue_scheduler
from .spec import GrowthSpec, check_spec
from .width import apply_width, plan_width

logger = logging.getLogger(__name__)

# Per param group: its parameters' names and its hyperparameters (lr, weight_decay, ...).
_Groups = list[tuple[list[str], dict[str, Any]]]


class TrainingGrowth:
    """One growth of a model that trains, with its optimizer: checked when made, applied by `apply`.

    Args:
        model (`nn.Module`): The bare model (not a DDP or compile wrapper).
        optimizer (`torch.optim.Optimizer`): The bare optimizer of `model`; any optimizer whose state
            is per parameter.
        spec (`GrowthSpec`): How to grow.
        optimizer_state (`str`, *optional*, defaults to `"copy"`): How new layers' optimizer state
            starts, see `grow_optimizer_state`.
        freeze_source_layers (`bool`, *optional*, defaults to `False`): Leave only the new layers trainable.
        layers_attr (`str`, *optional*): Dotted path of the layer list, for models growth_ops cannot read.
        scheduler (`LRScheduler`, *optional*): Checked to be copyable onto a new optimizer.
        old_optimizers (`tuple`, *optional*): Wrappers that stand for `optimizer` in the scheduler.

    Raises:
        ValueError: If `optimizer_state` is unknown, the optimizer holds tensors that are not the
            model's parameters or (for width growth) state entries that are not known moments, the spec
            does not fit the model, or `freeze_source_layers` is asked of a spec that adds no layers.
        TypeError: If `spec` is not a `GrowthSpec`, or the optimizer class cannot be rebuilt from its
            param groups and defaults.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        spec: GrowthSpec,
        *,
        optimizer_state: str = "copy",
        freeze_source_layers: bool = False,
        layers_attr: str | None = None,
        scheduler: Any = None,
        old_optimizers: tuple[Any, ...] = (),
    ) -> None:
        check_choice("optimizer_state", optimizer_state, OPTIMIZER_STATES)
        if freeze_source_layers and not check_spec(spec).grows_depth:
            raise ValueError(
                "freeze_source_layers leaves only the new layers trainable, and this spec adds no layers: "
                "drop freeze_source_layers, or grow depth too."
            )
        self.model, self.optimizer, self.spec = model, optimizer, spec
        self.optimizer_state, self.freeze_source_layers = optimizer_state, freeze_source_layers
        self.anatomy, self.plan = plan_growth(model, spec, layers_attr=layers_attr)
        self.width_plan = plan_width(model, spec, self.anatomy) if spec.grows_width else None
        state_by_name, self._groups = _capture_optimizer(optimizer, model)
        if self.width_plan is not None:
            state_by_name = grow_width_optimizer_state(state_by_name, self.width_plan.rules)
        self._grown_state = grow_optimizer_state(state_by_name, self.plan, self.anatomy.layers_path, optimizer_state)
        self.old_optimizers = (*old_optimizers, optimizer)
        # A dry run of the rebuild on the current parameters: an optimizer class that cannot be rebuilt
        # from its defaults, or a scheduler that cannot be copied, fails here, before the model changes.
        parameters = dict(model.named_parameters())
        trial = self._build_optimizer([[(n, parameters[n]) for n in names] for names, _ in self._groups])
        if scheduler is not None:
            continue_scheduler(scheduler, self.old_optimizers, trial)

    def apply(self) -> torch.optim.Optimizer:
        """Grow the model in place and return the optimizer of the grown model.

        Returns:
            `torch.optim.Optimizer`: A new optimizer of the old one's class. Each group keeps the old
            group's hyperparameters (lr and initial_lr included, so the LR goes on) and holds, in model
            order, the trainable parameters whose source the old group held, with their grown state.
            Empty groups are kept: a scheduler's per-group lists are indexed by group.

        Raises:
            RuntimeError: If this growth was applied already (make a new `TrainingGrowth`).
            ValueError: If the widened model does not compute the same function (see `apply_width`); the
                model is then as it was.
        """
        if self._grown_state is None:
            raise RuntimeError("This TrainingGrowth was applied already: make a new one for another growth.")
        undo = apply_width(self.model, self.width_plan, self.anatomy) if self.width_plan is not None else None
        if self.spec.grows_depth:
            try:
                apply_plan(self.model, self.plan, anatomy=self.anatomy, freeze_source_layers=self.freeze_source_layers)
            except BaseException:
                if undo is not None:
                    undo.undo()
                raise
        named_groups = self._grown_groups()
        grown = self._build_optimizer(named_groups)
        # Handed over, not kept: under FSDP2 the grown state is moved into DTensors and freed as it goes.
        grown_state, self._grown_state = self._grown_state, None
        for named in named_groups:
            for name, parameter in named:
                if name in grown_state:
                    grown.state[parameter] = _regrown_slices(grown_state[name], parameter, self.plan)
        logger.info("growth_ops: grew %s during training (optimizer_state=%s)", self.spec, self.optimizer_state)
        return grown

    def _build_optimizer(self, named_groups: list[list[tuple[str, nn.Parameter]]]) -> torch.optim.Optimizer:
        cls = type(self.optimizer)
        accepted = _constructor_keywords(cls)
        # `defaults` may hold keys the constructor does not take (Adam's `decoupled_weight_decay` on
        # AdamW); every group carries its own values anyway.
        defaults = {k: v for k, v in self.optimizer.defaults.items() if accepted is None or k in accepted}
        groups = []
        for named, (_, hyper), old in zip(named_groups, self._groups, self.optimizer.param_groups, strict=True):
            # Named parameters where the old group had names, so `param_names` carries over.
            params = named if "param_names" in old else [p for _, p in named]
            groups.append({**copy.deepcopy(hyper), "params": params})
        return cls(groups, **defaults)

    def _grown_groups(self) -> list[list[tuple[str, nn.Parameter]]]:
        """Each group's parameters in the grown model: the trainable ones whose source it held, in model order."""
        group_of = {name: i for i, (names, _) in enumerate(self._groups) for name in names}
        grown: list[list[tuple[str, nn.Parameter]]] = [[] for _ in self._groups]
        layers_path, sources = self.anatomy.layers_path, self.plan.sources
        for name, parameter in self.model.named_parameters():
            layer = split_layer_name(name, layers_path)
            source = name if layer is None else f"{layers_path}.{sources[layer[0]]}.{layer[1]}"
            if source in group_of and parameter.requires_grad:
                grown[group_of[source]].append((name, parameter))
        return grown


def _regrown_slices(state: dict[str, Any], parameter: nn.Parameter, plan: GrowthPlan) -> dict[str, Any]:
    """The state of a parameter outside the layer list that growth regrew slice by slice (gemma4's
    `embed_tokens_per_layer`): each moment's slices follow the parameter's, new layer `j` taking source
    `plan.sources[j]`'s (as in the layer list, where a copy's moments are its source's)."""
    grown = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.dim() and value.shape != parameter.shape:
            axis = layer_slice_axis(tuple(value.shape), tuple(parameter.shape), plan)
            if axis is not None:
                value = remap_layer_slices(value, axis, plan)
        grown[key] = value
    return grown


def load_grown_optimizer(optimizer: torch.optim.Optimizer, grown: torch.optim.Optimizer) -> None:
    """Make `optimizer` the grown one in place: its param groups and state, for holders of the old object.

    `Trainer` keeps its optimizer and scheduler, so a callback cannot replace them. The group list is
    refilled rather than replaced, so a scheduler (which reads `optimizer.param_groups`) goes on.

    Args:
        optimizer (`torch.optim.Optimizer`): The optimizer before growth, changed in place.
        grown (`torch.optim.Optimizer`): From `TrainingGrowth.apply`.
    """
    optimizer.param_groups[:] = grown.param_groups
    optimizer.state.clear()
    optimizer.state.update(grown.state)


def _capture_optimizer(
    optimizer: torch.optim.Optimizer, model: nn.Module
) -> tuple[dict[str, dict[str, Any]], _Groups]:
    """The optimizer's state by parameter name, and each group's parameter names and hyperparameters."""
    names = {id(p): n for n, p in model.named_parameters()}
    groups = []
    for i, group in enumerate(optimizer.param_groups):
        foreign = [tuple(p.shape) for p in group["params"] if id(p) not in names]
        if foreign:
            raise ValueError(
                f"Param group {i} of the optimizer holds {len(foreign)} tensor(s) that are not parameters of "
                f"{type(model).__name__} (shapes {foreign[:3]}): growth matches optimizer state to parameters by "
                "name, so the optimizer must hold only the model's parameters."
            )
        hyperparameters = {k: v for k, v in group.items() if k not in ("params", "param_names")}
        groups.append(([names[id(p)] for p in group["params"]], hyperparameters))
    state = {names[id(p)]: s for p, s in optimizer.state.items() if id(p) in names and s}
    return state, groups


def _constructor_keywords(cls: type) -> set[str] | None:
    parameters = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters}
