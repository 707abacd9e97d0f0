"""`GrowthSpec`: the one value that says how a model grows. Pure: no torch until it meets a model.

Every entry point takes a spec (`grow`, `grow_depth`, `grow_checkpoint`, `grow_prepared`,
`GrowthCallback`, `mtlm-grow --spec`), so one growth is written once, logged as JSON beside a run
and re-applied anywhere. A spec describes a growth for any model; `plan_depth(num_layers)` or
`resolve(model)` turns its depth part into the `GrowthPlan` of one model, and `growth_ops.width`
resolves its width part.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, fields
from typing import Any

from .plan import GrowthPlan, check_depth_request, plan_depth

# Names of the older keyword API, pointed at their spec field in the unknown-key error.
_RENAMED = {"factor": "depth", "method": "depth_method", "new_num_layers": "num_layers"}
_DEPTH_FIELDS = ("depth", "num_layers", "depth_method", "layer_map", "overlap", "positions")


@dataclass(frozen=True)
class GrowthSpec:
    """How a model grows, independent of any one model: frozen, hashable and JSON-round-trippable.

    Depth growth is given by `depth` (a factor) or `num_layers` (the grown count), or by the
    method's own field (`layer_map`, `positions`, `overlap`). Width growth by `width`, an integer
    factor of the hidden size and of the attention and KV heads (head_dim is kept), which also
    multiplies the MLP's and MoE experts' intermediate sizes unless `intermediate` says otherwise
    (see `growth_ops.width`). Width is grown first, then depth, so the grown model is the same
    whichever way one thinks of it. The combination is checked when the spec is built; what depends
    on the model (a factor that gives a whole number of its layers, layer indices in range, an
    architecture that can widen exactly) is checked when it is resolved against one.

    Args:
        depth (`float`, *optional*): Depth factor; 2 doubles the layers. For `"dus"` the number of
            copies joined, which is 2.
        num_layers (`int`, *optional*): Number of layers after growth (instead of `depth`).
        depth_method (`str`, *optional*, defaults to `"stack"`, or `"explicit"` with `layer_map`):
            `"stack"`, `"interleave"`, `"identity"`, `"dus"` or `"explicit"`; see `growth_ops.plan`.
        layer_map (`tuple[int, ...]`, *optional*): `"explicit"`: source layer of every grown layer.
        overlap (`int`, *optional*): `"dus"`: layers dropped from each of the two copies.
        positions (`tuple[int, ...]`, *optional*): `"identity"`: the source layer each inserted copy follows.
        width (`int`, *optional*): Width factor: hidden size, attention heads and KV heads times `width`.
        intermediate (`int`, *optional*, defaults to `width`): Factor of the MLP's (and MoE experts')
            intermediate size; may be given without `width` to grow the MLPs alone.
        width_noise (`float`, *optional*): Symmetry breaking: standard deviation, relative to each weight's
            own, of noise that cancels across the copies of its input, so the function is kept exactly
            while the copies stop receiving equal gradients (without it they train identically).
        seed (`int`, *optional*, defaults to 0): Seed of the `width_noise`.

    Raises:
        ValueError: If the fields cannot describe a growth (a field of another method, no grown
            size, a factor below 1, ...); the message says what is allowed.

    Example:

    ```python
    >>> spec = GrowthSpec(depth=2, depth_method="interleave")
    >>> print(spec)
    GrowthSpec(depth x2, interleave)
    >>> spec.plan_depth(2).sources
    (0, 0, 1, 1)
    >>> GrowthSpec.from_json(spec.to_json()) == spec
    True
    >>> print(GrowthSpec(width=2, depth=2, width_noise=1e-3))
    GrowthSpec(depth x2, stack, width x2, width noise 0.001, seed 0)
    ```
    """

    depth: float | None = None
    num_layers: int | None = None
    depth_method: str | None = None
    layer_map: tuple[int, ...] | None = None
    overlap: int | None = None
    positions: tuple[int, ...] | None = None
    width: int | None = None
    intermediate: int | None = None
    width_noise: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        # JSON and callers give lists; a frozen, hashable value needs tuples.
        for name in ("layer_map", "positions"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if all(getattr(self, f.name) is None for f in fields(self)):
            raise ValueError(
                "This GrowthSpec grows nothing: give `depth` (a factor such as 2) or `num_layers` (the grown count), "
                "or a method's own field (`layer_map`, `positions`, `overlap`), or `width` (a factor such as 2)."
            )
        if self.grows_depth:
            check_depth_request(**self._depth_arguments())
        self._check_width()

    @property
    def grows_depth(self) -> bool:
        """Whether the spec changes the number of layers."""
        return any(getattr(self, name) is not None for name in _DEPTH_FIELDS)

    @property
    def grows_width(self) -> bool:
        """Whether the spec changes the hidden or the intermediate size."""
        return (self.width or 1) != 1 or (self.intermediate or self.width or 1) != 1

    @property
    def intermediate_factor(self) -> int:
        """Factor of the intermediate sizes: `intermediate`, else `width`, else 1."""
        return self.intermediate or self.width or 1

    def plan_depth(self, num_layers: int) -> GrowthPlan:
        """The depth plan of this spec for a model of `num_layers` layers. Pure: no model, no torch.

        A spec without depth fields (width only) keeps every layer: the plan maps layer `i` to `i`.

        Args:
            num_layers (`int`): Number of layers of the source model.

        Returns:
            `GrowthPlan`

        Raises:
            ValueError: If the spec does not fit a model of that depth (see `growth_ops.plan_depth`).
        """
        if not self.grows_depth:
            return GrowthPlan(num_layers, tuple(range(num_layers)), ("copy",) * num_layers)
        return plan_depth(num_layers, **self._depth_arguments())

    def resolve(self, model_or_anatomy: Any) -> GrowthPlan:
        """The plan of this spec for one model.

        Args:
            model_or_anatomy (`nn.Module` or `DecoderAnatomy`): A model (its anatomy is discovered), or
                an anatomy already discovered (`discover_anatomy(model, layers_attr="blocks")`).

        Returns:
            `GrowthPlan`

        Raises:
            ValueError: If the model's layer list cannot be found, or the spec does not fit it.
        """
        # Imported here: the anatomy needs torch, and a spec must stay usable without it.
        from .anatomy import DecoderAnatomy, discover_anatomy

        anatomy = model_or_anatomy
        if not isinstance(anatomy, DecoderAnatomy):
            anatomy = discover_anatomy(model_or_anatomy)
        return self.plan_depth(anatomy.num_layers)

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set, with lists for tuples (what `to_json` writes).

        Returns:
            `dict[str, Any]`
        """
        return {
            f.name: list(value) if isinstance(value, tuple) else value
            for f in fields(self)
            if (value := getattr(self, f.name)) is not None
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GrowthSpec:
        """Build a spec from `to_dict`'s output (or a hand-written dict, such as a YAML section).

        Args:
            data (`dict[str, Any]`): Field names and values; missing fields are `None`.

        Returns:
            `GrowthSpec`

        Raises:
            ValueError: If a key is not a field (the message names the nearest one) or the spec is invalid.
        """
        if not isinstance(data, dict):
            raise ValueError(f"A growth spec is a mapping of field names to values, got {type(data).__name__}.")
        known = [f.name for f in fields(cls)]
        for key in data:
            if key not in known:
                nearest = _RENAMED.get(key) or next(iter(difflib.get_close_matches(str(key), known, n=1)), None)
                hint = f"did you mean {nearest!r}? " if nearest else ""
                raise ValueError(f"Unknown growth spec key {key!r}: {hint}the keys are {known}.")
        return cls(**data)

    def to_json(self) -> str:
        """The spec as a JSON object of its set fields.

        Returns:
            `str`
        """
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> GrowthSpec:
        """Read a spec written by `to_json`.

        Args:
            text (`str`): A JSON object of spec fields.

        Returns:
            `GrowthSpec`

        Raises:
            ValueError: If the text is not JSON, a key is unknown, or the spec is invalid.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"A growth spec must be a JSON object ({error}).") from None
        return cls.from_dict(data)

    def __str__(self) -> str:
        parts = []
        if self.depth is not None:
            parts.append(f"depth x{self.depth:g}")
        if self.num_layers is not None:
            parts.append(f"{self.num_layers} layers")
        if self.grows_depth:
            parts.append(check_depth_request(**self._depth_arguments()))  # the method, default filled in
        for name in ("layer_map", "positions", "overlap"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={list(value) if isinstance(value, tuple) else value}")
        if self.width is not None:
            parts.append(f"width x{self.width}")
        if self.intermediate is not None:
            parts.append(f"intermediate x{self.intermediate}")
        if self.width_noise is not None:
            parts.append(f"width noise {self.width_noise:g}, seed {self.seed or 0}")
        return f"GrowthSpec({', '.join(parts)})"

    def _check_width(self) -> None:
        for name in ("width", "intermediate"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                hint = " (non-integer widths are not grown: they cannot keep the function exactly)" * isinstance(
                    value, float
                )
                raise ValueError(f"`{name}` must be an integer factor >= 1 (1 keeps the size), got {value!r}{hint}.")
        noise = self.width_noise
        if noise is not None and (isinstance(noise, bool) or not isinstance(noise, int | float) or noise < 0):
            raise ValueError(f"`width_noise` must be a number >= 0 (relative to each weight's std), got {noise!r}.")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"`seed` must be an integer, got {self.seed!r}.")
        if (noise is not None or self.seed is not None) and not self.grows_width:
            raise ValueError(
                "`width_noise` and `seed` break the symmetry of width copies: give `width` (or `intermediate`) > 1 too."
            )
        if self.seed is not None and noise is None:
            raise ValueError("`seed` seeds the `width_noise`: give `width_noise` too, e.g. width_noise=1e-3.")

    def _depth_arguments(self) -> dict[str, Any]:
        return {
            "factor": self.depth,
            "new_num_layers": self.num_layers,
            "method": self.depth_method,
            "layer_map": self.layer_map,
            "overlap": self.overlap,
            "positions": self.positions,
        }


def check_spec(spec: object) -> GrowthSpec:
    """`spec` itself if it is a `GrowthSpec`; a clear `TypeError` for anything else (a bare factor, a dict)."""
    if not isinstance(spec, GrowthSpec):
        hint = f" GrowthSpec(depth={spec!r})," if isinstance(spec, int | float) and not isinstance(spec, bool) else ""
        raise TypeError(
            f"Expected a GrowthSpec, got {type(spec).__name__} {spec!r}: pass{hint or ' a GrowthSpec(...)'} "
            "or GrowthSpec.from_dict(...) for a mapping."
        )
    return spec
