"""Grow a model in memory: a `GrowthSpec` resolved against the model's anatomy, then `apply_width` and `apply_plan`."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .anatomy import DecoderAnatomy, discover_anatomy
from .apply import apply_plan
from .plan import GrowthPlan
from .spec import GrowthSpec, check_spec
from .width import apply_width, plan_width


def grow(
    model: nn.Module, spec: GrowthSpec, *, freeze_source_layers: bool = False, layers_attr: str | None = None
) -> nn.Module:
    """Grow a decoder in place as `spec` says, and leave it whole.

    Width first (`growth_ops.width`: exact, checked on a few tokens), then depth (`apply_plan`): the
    depth copies are copies of the widened layers, as growth on disk makes them. If either step fails,
    the model is left as it was.

    Args:
        model (`nn.Module`): Any Transformers decoder, or a module holding a list of blocks.
        spec (`GrowthSpec`): How to grow.
        freeze_source_layers (`bool`, *optional*, defaults to `False`): Leave only the new layers
            trainable (LLaMA-Pro): every other parameter, embeddings and head included, gets
            `requires_grad=False`. Needs depth growth (width growth adds no layers).
        layers_attr (`str`, *optional*): Dotted path of the layer list, for models growth_ops cannot
            read (a plain `nn.Module`: `"blocks"`).

    Returns:
        `nn.Module`: The same model object, grown.

    Raises:
        TypeError: If `spec` is not a `GrowthSpec`.
        ValueError: If the model does not allow the growth asked for (see `GrowthSpec.resolve`,
            `discover_anatomy` and `apply_plan`); the model is then unchanged.

    Example:

    ```python
    >>> from growth_ops import GrowthSpec, grow
    >>> model = grow(model, GrowthSpec(depth=2))  # [0..L-1, 0..L-1]
    >>> model = grow(model, GrowthSpec(width=2, depth=2))  # hidden and heads x2, then [0..L-1, 0..L-1]
    ```
    """
    anatomy, plan = plan_growth(model, spec, layers_attr=layers_attr)
    if freeze_source_layers and not spec.grows_depth:
        raise ValueError(
            "freeze_source_layers leaves only the new layers trainable, and this spec adds no layers: "
            "drop freeze_source_layers, or grow depth too."
        )
    if not spec.grows_width:
        return apply_plan(model, plan, anatomy=anatomy, freeze_source_layers=freeze_source_layers)
    undo = apply_width(model, plan_width(model, spec, anatomy), anatomy)
    if not spec.grows_depth:
        return model
    try:
        return apply_plan(model, plan, anatomy=anatomy, freeze_source_layers=freeze_source_layers)
    except BaseException:
        undo.undo()
        raise


def grow_depth(
    model: nn.Module,
    spec: GrowthSpec | None = None,
    *,
    factor: float | None = None,
    num_layers: int | None = None,
    method: str | None = None,
    layer_map: Sequence[int] | None = None,
    overlap: int | None = None,
    positions: Sequence[int] | None = None,
    freeze_source_layers: bool = False,
    layers_attr: str | None = None,
) -> nn.Module:
    """`grow` with keyword shortcuts: `grow_depth(model, factor=2)` is `grow(model, GrowthSpec(depth=2))`.

    Args:
        model (`nn.Module`): As in `grow`.
        spec (`GrowthSpec`, *optional*): How to grow; or give the shortcuts below instead.
        factor (`float`, *optional*): `GrowthSpec.depth`.
        num_layers (`int`, *optional*): `GrowthSpec.num_layers`.
        method (`str`, *optional*): `GrowthSpec.depth_method`.
        layer_map (`list[int]`, *optional*): `GrowthSpec.layer_map`.
        overlap (`int`, *optional*): `GrowthSpec.overlap`.
        positions (`list[int]`, *optional*): `GrowthSpec.positions`.
        freeze_source_layers (`bool`, *optional*, defaults to `False`): As in `grow`.
        layers_attr (`str`, *optional*): As in `grow`.

    Returns:
        `nn.Module`: The same model object, grown.

    Raises:
        TypeError: If both a spec and shortcuts are given.
        ValueError: As in `grow` and `GrowthSpec`.

    Example:

    ```python
    >>> from growth_ops import grow_depth
    >>> model = grow_depth(model, factor=2)  # [0..L-1, 0..L-1]
    >>> model = grow_depth(model, num_layers=20, method="interleave")
    ```
    """
    shortcuts = {
        "depth": factor,
        "num_layers": num_layers,
        "depth_method": method,
        "layer_map": layer_map,
        "overlap": overlap,
        "positions": positions,
    }
    given = {key: value for key, value in shortcuts.items() if value is not None}
    if spec is not None and given:
        raise TypeError(
            "grow_depth got both a GrowthSpec and growth keywords: give the spec alone, or only the keywords "
            f"(got {sorted(given)})."
        )
    if spec is None:
        spec = GrowthSpec(**given)
    return grow(model, spec, freeze_source_layers=freeze_source_layers, layers_attr=layers_attr)


def plan_growth(
    model: nn.Module, spec: GrowthSpec, layers_attr: str | None = None
) -> tuple[DecoderAnatomy, GrowthPlan]:
    """The anatomy of `model` and the depth plan `grow` would apply to it, without touching the model.

    Callers that must follow the plan elsewhere (optimizer state, a checkpoint on disk) use this and
    then `apply_plan`. A width-only spec gives the plan that keeps every layer; its width part is
    resolved by `growth_ops.width.plan_width`.

    Args:
        model (`nn.Module`): As in `grow`.
        spec (`GrowthSpec`): How to grow.
        layers_attr (`str`, *optional*): As in `grow`.

    Returns:
        `tuple[DecoderAnatomy, GrowthPlan]`

    Raises:
        TypeError: If `spec` is not a `GrowthSpec`.
        ValueError: If the model does not allow the growth asked for.
    """
    check_spec(spec)
    anatomy = discover_anatomy(model, layers_attr=layers_attr)
    return anatomy, spec.resolve(anatomy)
