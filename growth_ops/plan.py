"""Growth plans: which old layer each new layer comes from, and how it starts. Pure values, no torch.

A plan is a frozen dataclass that can be printed, hashed, compared and written to JSON, so the same
plan can be reviewed before it is applied, logged beside a run, and re-applied elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

INIT_RULES = ("copy", "zero_residual")
"""`copy` clones the source layer; `zero_residual` clones it and zeroes the weights that write into
the residual stream, so the new layer starts as an exact identity (LLaMA-Pro block expansion)."""

METHODS = ("stack", "interleave", "identity", "dus", "explicit")


@dataclass(frozen=True)
class GrowthPlan:
    """A depth-growth plan: for every layer of the grown model, its source layer and init rule.

    Position `j` of the grown model is built from source layer `sources[j]` with rule `inits[j]`.
    The first position that copies a source layer with rule `copy` keeps that layer itself (its
    parameters, optimizer state and `requires_grad`); every other position is a new layer.

    Args:
        source_num_layers (`int`): Number of layers of the model the plan applies to.
        sources (`tuple[int, ...]`): Source layer index of every layer of the grown model.
        inits (`tuple[str, ...]`): Init rule of every layer of the grown model, one of `INIT_RULES`.
        method (`str`, *optional*, defaults to `"explicit"`): How the plan was made, one of `METHODS`.

    Raises:
        ValueError: If the plan is empty, a source is out of range, the lengths differ, an init
            rule or method is unknown, or no position keeps a source layer (see `kept_positions`).

    Example:

    ```python
    >>> plan = GrowthPlan(source_num_layers=2, sources=(0, 1, 0, 1), inits=("copy",) * 4, method="stack")
    >>> plan.num_layers, plan.new_positions
    (4, (2, 3))
    >>> GrowthPlan.from_json(plan.to_json()) == plan
    True
    ```
    """

    source_num_layers: int
    sources: tuple[int, ...]
    inits: tuple[str, ...]
    method: str = "explicit"

    def __post_init__(self) -> None:
        # JSON gives lists; a frozen, hashable value needs tuples.
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "inits", tuple(self.inits))
        _check_count("source_num_layers", self.source_num_layers, minimum=1)
        if not self.sources:
            raise ValueError(
                "A growth plan needs at least one layer: `sources` (the layer map) is empty; give one source "
                f"layer index in [0, {self.source_num_layers - 1}] per layer of the grown model."
            )
        bad = [(j, s) for j, s in enumerate(self.sources) if not _is_int(s) or not 0 <= s < self.source_num_layers]
        if bad:
            shown = ", ".join(f"position {j} -> {s!r}" for j, s in bad[:5])
            raise ValueError(
                f"Source layer out of range ({shown}): the source model has {self.source_num_layers} layers, "
                f"so every source must be an integer in [0, {self.source_num_layers - 1}]."
            )
        if len(self.inits) != len(self.sources):
            raise ValueError(
                f"`inits` has {len(self.inits)} entries but `sources` has {len(self.sources)}: "
                "give one init rule per layer of the grown model."
            )
        unknown = sorted({rule for rule in self.inits if rule not in INIT_RULES})
        if unknown:
            raise ValueError(f"Unknown init rule(s) {unknown}: allowed rules are {list(INIT_RULES)}.")
        if self.method not in METHODS:
            raise ValueError(f"Unknown method {self.method!r}: allowed methods are {list(METHODS)}.")
        if not any(rule == "copy" for rule in self.inits):
            raise ValueError(
                "Every layer of this plan is `zero_residual`, so the grown model would compute the identity "
                "function: at least one layer must be a `copy`."
            )

    @property
    def num_layers(self) -> int:
        """Number of layers of the grown model."""
        return len(self.sources)

    @property
    def kept_positions(self) -> tuple[int, ...]:
        """Positions that keep a source layer itself: the first `copy` of each source layer."""
        seen: set[int] = set()
        kept = []
        for j, (source, rule) in enumerate(zip(self.sources, self.inits, strict=True)):
            if rule == "copy" and source not in seen:
                seen.add(source)
                kept.append(j)
        return tuple(kept)

    @property
    def new_positions(self) -> tuple[int, ...]:
        """Positions that hold a new layer (a clone of their source), in increasing order."""
        kept = set(self.kept_positions)
        return tuple(j for j in range(self.num_layers) if j not in kept)

    @property
    def ranges(self) -> tuple[tuple[int, int], ...]:
        """The source layers as `[start, end)` slices, the layer-range format of peft and mergekit.

        Consecutive positions join one slice while they copy consecutive source layers with the same
        init rule and role (kept or new), so a 2x stack of 4 layers is `((0, 4), (0, 4))`.
        """
        new = set(self.new_positions)
        slices: list[list[int]] = []
        for j, source in enumerate(self.sources):
            same_kind = j > 0 and self.inits[j] == self.inits[j - 1] and (j in new) == (j - 1 in new)
            if slices and source == slices[-1][1] and same_kind:
                slices[-1][1] += 1
            else:
                slices.append([source, source + 1])
        return tuple((start, end) for start, end in slices)

    def to_json(self) -> str:
        """Serialize the plan to a JSON string.

        Returns:
            `str`: A JSON object with the fields of the plan.
        """
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> GrowthPlan:
        """Read a plan written by `to_json`.

        Args:
            text (`str`): A JSON object with the fields of `GrowthPlan`.

        Returns:
            `GrowthPlan`: The plan, validated as if built directly.

        Raises:
            ValueError: If the JSON describes an invalid plan.
        """
        return cls(**json.loads(text))

    def __str__(self) -> str:
        new = set(self.new_positions)
        lines = [
            f"GrowthPlan({self.method}: {self.source_num_layers} -> {self.num_layers} layers, {len(new)} new)",
            f"  source ranges [start, end): {', '.join(f'[{a}, {b})' for a, b in self.ranges)}",
            "  layer  source  init           role",
        ]
        for j, (source, rule) in enumerate(zip(self.sources, self.inits, strict=True)):
            lines.append(f"  {j:5d}  {source:6d}  {rule:13s}  {'new' if j in new else 'kept'}")
        return "\n".join(lines)


def make_stack_plan(source_num_layers: int, new_num_layers: int) -> GrowthPlan:
    """Stack whole copies of the model on top of each other (G_stack).

    Integer growth gives `[0..L-1, 0..L-1, ...]`. For non-integer growth the last, partial copy
    holds the *top* `new_num_layers % L` layers: 12 -> 20 is `[0..11, 4..11]`. Every copy then ends
    with the source model's last layer, the one trained to feed the final norm and the head, which
    is the same reasoning as depth up-scaling (SOLAR) keeping the top of its second copy.

    Args:
        source_num_layers (`int`): Number of layers of the source model (L).
        new_num_layers (`int`): Number of layers of the grown model, at least L.

    Returns:
        `GrowthPlan`: The plan, every layer initialised by `copy`.

    Raises:
        ValueError: If a count is not a positive integer or `new_num_layers` < L.
    """
    _check_growth(source_num_layers, new_num_layers)
    full, remainder = divmod(new_num_layers, source_num_layers)
    sources = list(range(source_num_layers)) * full + list(range(source_num_layers - remainder, source_num_layers))
    return GrowthPlan(source_num_layers, tuple(sources), ("copy",) * new_num_layers, method="stack")


def make_interleave_plan(source_num_layers: int, new_num_layers: int) -> GrowthPlan:
    """Follow each layer by its copies: `[0, 0, 1, 1, ...]` for a factor of 2.

    For non-integer growth the `new_num_layers - L` extra copies are spread as evenly as possible
    over the depth (layer `i` gets `floor((i + 1) * k / L) - floor(i * k / L)` copies for `k`
    copies), so no region of the network is grown more than another: 12 -> 20 copies layers
    1, 2, 4, 5, 7, 8, 10 and 11.

    Args:
        source_num_layers (`int`): Number of layers of the source model (L).
        new_num_layers (`int`): Number of layers of the grown model, at least L.

    Returns:
        `GrowthPlan`: The plan, every layer initialised by `copy`.

    Raises:
        ValueError: If a count is not a positive integer or `new_num_layers` < L.
    """
    _check_growth(source_num_layers, new_num_layers)
    sources = []
    for layer, copies in enumerate(_spread(new_num_layers - source_num_layers, source_num_layers)):
        sources += [layer] * (1 + copies)
    return GrowthPlan(source_num_layers, tuple(sources), ("copy",) * new_num_layers, method="interleave")


def make_identity_plan(
    source_num_layers: int, new_num_layers: int | None = None, positions: Sequence[int] | None = None
) -> GrowthPlan:
    """Insert zero-residual copies that leave the model's function unchanged (LLaMA-Pro).

    Each inserted layer is a copy of the layer just before it whose residual-writing weights are
    zeroed, so it passes its input through unchanged. By default the `new_num_layers - L` copies
    are spread evenly as in `make_interleave_plan`; LLaMA-Pro's 32 -> 40 puts one after layers
    3, 7, ..., 31. `positions` instead names the source layer after which each copy goes.

    Args:
        source_num_layers (`int`): Number of layers of the source model (L).
        new_num_layers (`int`, *optional*): Number of layers of the grown model. Needed unless
            `positions` is given; if both are given they must agree.
        positions (`list[int]`, *optional*): One source layer index in [0, L-1] per inserted copy,
            the layer the copy follows (repeat an index for several copies after it).

    Returns:
        `GrowthPlan`: The plan, with `zero_residual` at every inserted position.

    Raises:
        ValueError: If neither or inconsistent sizes are given, or a position is out of range.
    """
    if positions is None:
        if new_num_layers is None:
            raise ValueError("The identity method needs the grown size: give `factor`, `num_layers` or `positions`.")
        _check_growth(source_num_layers, new_num_layers)
        copies = _spread(new_num_layers - source_num_layers, source_num_layers)
    else:
        _check_count("source_num_layers", source_num_layers, minimum=1)
        bad = [p for p in positions if not _is_int(p) or not 0 <= p < source_num_layers]
        if bad:
            raise ValueError(
                f"Identity positions {bad} are out of range: each position is the source layer the inserted copy "
                f"follows, an integer in [0, {source_num_layers - 1}]."
            )
        if new_num_layers is not None and new_num_layers != source_num_layers + len(positions):
            raise ValueError(
                f"{len(positions)} identity positions grow {source_num_layers} layers to "
                f"{source_num_layers + len(positions)}, not the {new_num_layers} asked for: give one position per new "
                "layer, or only one of the two."
            )
        copies = [list(positions).count(layer) for layer in range(source_num_layers)]
    sources, inits = [], []
    for layer, count in enumerate(copies):
        sources += [layer] * (1 + count)
        inits += ["copy"] + ["zero_residual"] * count
    return GrowthPlan(source_num_layers, tuple(sources), tuple(inits), method="identity")


def make_dus_plan(source_num_layers: int, overlap: int) -> GrowthPlan:
    """Depth up-scaling (SOLAR): keep layers [0, L-m) of one copy and [m, L) of another.

    SOLAR 10.7B grew 32 layers to 48 with `overlap=8`: the two copies meet where the first one's
    top `m` layers and the second one's bottom `m` layers were removed.

    Args:
        source_num_layers (`int`): Number of layers of the source model (L).
        overlap (`int`): Layers dropped from each copy (m), with 0 <= m < L / 2 so that the result
            (2 * (L - m) layers) is deeper than the source. `overlap=0` is a plain 2x stack.

    Returns:
        `GrowthPlan`: The plan of `2 * (L - m)` layers, every one initialised by `copy`.

    Raises:
        ValueError: If `overlap` is negative, not an integer, or too large.
    """
    _check_count("source_num_layers", source_num_layers, minimum=1)
    max_overlap = (source_num_layers - 1) // 2
    if not _is_int(overlap) or not 0 <= overlap <= max_overlap:
        raise ValueError(
            f"DUS overlap {overlap!r} is not allowed for {source_num_layers} layers: it must be an integer in "
            f"[0, {max_overlap}] (0 <= overlap < num_layers / 2), so that the grown model's "
            "2 * (num_layers - overlap) layers are more than the source's."
        )
    sources = list(range(source_num_layers - overlap)) + list(range(overlap, source_num_layers))
    return GrowthPlan(source_num_layers, tuple(sources), ("copy",) * len(sources), method="dus")


def make_explicit_plan(source_num_layers: int, layer_map: Sequence[int]) -> GrowthPlan:
    """Build the grown model from an explicit list of source layers, e.g. `[0, 1, 2, 1, 2, 3]`.

    Args:
        source_num_layers (`int`): Number of layers of the source model (L).
        layer_map (`list[int]`): Source layer index in [0, L-1] of every layer of the grown model.

    Returns:
        `GrowthPlan`: The plan, every layer initialised by `copy`.

    Raises:
        ValueError: If the map is empty or a source is out of range.
    """
    return GrowthPlan(source_num_layers, tuple(layer_map), ("copy",) * len(layer_map), method="explicit")


def check_depth_request(
    factor: float | None = None,
    new_num_layers: int | None = None,
    method: str | None = None,
    layer_map: Sequence[int] | None = None,
    overlap: int | None = None,
    positions: Sequence[int] | None = None,
) -> str:
    """Check what can be checked of a depth growth without knowing the model, and name its method.

    The one place where the planning fields are checked together: `GrowthSpec` calls it when it is
    built, `plan_depth` before it builds a plan. What depends on the model's layer count (a factor
    that gives a whole number of layers, sources and positions in range, the DUS overlap) is checked
    by the plan builders.

    Args:
        factor, new_num_layers, method, layer_map, overlap, positions: As in `plan_depth`.

    Returns:
        `str`: The method, `"stack"` by default, or `"explicit"` when `layer_map` is given.

    Raises:
        ValueError: If the fields cannot describe a growth of any model; the message says what is allowed.
    """
    method = method or ("explicit" if layer_map is not None else "stack")
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}: allowed methods are {list(METHODS)}.")
    owners = {"layer_map": "explicit", "overlap": "dus", "positions": "identity"}
    given = {"layer_map": layer_map, "overlap": overlap, "positions": positions}
    misplaced = [name for name, value in given.items() if value is not None and owners[name] != method]
    if misplaced:
        raise ValueError(
            f"{', '.join(f'`{name}` belongs to method {owners[name]!r}' for name in misplaced)}, "
            f"not to method {method!r}."
        )
    if factor is not None and (isinstance(factor, bool) or not isinstance(factor, int | float) or factor < 1):
        raise ValueError(
            f"`factor` must be a number >= 1 (`depth` of a GrowthSpec; 1 keeps the depth), got {factor!r}."
        )
    if new_num_layers is not None:
        _check_count("num_layers", new_num_layers, minimum=1)
    for name in ("layer_map", "positions"):
        indices = given[name]
        if indices is not None and (
            isinstance(indices, str) or not isinstance(indices, Sequence) or not all(_is_int(i) for i in indices)
        ):
            raise ValueError(f"`{name}` must be a list of integer layer indices, got {indices!r}.")
    if overlap is not None and not _is_int(overlap):
        raise ValueError(f"DUS overlap must be an integer (layers dropped from each copy), got {overlap!r}.")
    if method == "explicit":
        if layer_map is None:
            raise ValueError("The explicit method needs `layer_map`, the source layer of every new layer.")
        if factor is not None or new_num_layers is not None:
            raise ValueError(
                "With `layer_map` the grown size is len(layer_map): do not also give `factor`/`num_layers`."
            )
    elif method == "dus":
        # SOLAR joins two copies, so for DUS `factor` counts copies; the depth follows from `overlap`.
        if factor is not None and factor != 2:
            raise ValueError(
                f"The dus method joins exactly two copies: `factor` must be 2 or omitted, got {factor!r}."
            )
        if overlap is None and (new_num_layers is None or new_num_layers % 2):
            raise ValueError(
                "The dus method keeps two copies of L - overlap layers: give `overlap`, or an even grown size "
                f"(got {new_num_layers})."
            )
    elif factor is None and new_num_layers is None and (method != "identity" or positions is None):
        sizes = "`factor`, `num_layers` or `positions`" if method == "identity" else "`factor` or `num_layers`"
        raise ValueError(f"The {method} method needs the grown size: give {sizes}.")
    return method


def plan_depth(
    num_layers: int,
    factor: float | None = None,
    new_num_layers: int | None = None,
    method: str | None = None,
    layer_map: Sequence[int] | None = None,
    overlap: int | None = None,
    positions: Sequence[int] | None = None,
) -> GrowthPlan:
    """Make the growth plan for a model of `num_layers` layers, without touching any model.

    `GrowthSpec(...).plan_depth(num_layers)` gives the same plan from a spec.

    Args:
        num_layers (`int`): Number of layers of the source model (L).
        factor (`float`, *optional*): Growth factor; `factor * num_layers` must be a whole number. For
            `"dus"` it counts the copies joined and may only be 2 (SOLAR); the depth follows from `overlap`.
        new_num_layers (`int`, *optional*): Number of layers of the grown model (instead of `factor`).
        method (`str`, *optional*, defaults to `"stack"`, or `"explicit"` when `layer_map` is given):
            One of `"stack"`, `"interleave"`, `"identity"`, `"dus"`, `"explicit"`.
        layer_map (`list[int]`, *optional*): Source layer of every new layer (method `"explicit"`).
        overlap (`int`, *optional*): Layers dropped from each of the two copies (method `"dus"`); derived
            from the grown size when not given.
        positions (`list[int]`, *optional*): Source layers each inserted copy follows (method `"identity"`).

    Returns:
        `GrowthPlan`: The validated plan.

    Raises:
        ValueError: If the arguments do not describe a valid plan; the message says what is allowed.

    Example:

    ```python
    >>> print(plan_depth(num_layers=2, factor=2, method="interleave"))
    GrowthPlan(interleave: 2 -> 4 layers, 2 new)
      source ranges [start, end): [0, 1), [0, 1), [1, 2), [1, 2)
      layer  source  init           role
          0       0  copy           kept
          1       0  copy           new
          2       1  copy           kept
          3       1  copy           new
    ```
    """
    method = check_depth_request(factor, new_num_layers, method, layer_map, overlap, positions)
    _check_count("num_layers", num_layers, minimum=1)
    if method == "explicit":
        return make_explicit_plan(num_layers, layer_map)
    if method == "dus":
        target = new_num_layers
        plan = make_dus_plan(num_layers, num_layers - target // 2 if overlap is None else overlap)
        if target is not None and target != plan.num_layers:
            raise ValueError(
                f"DUS with overlap {overlap} grows {num_layers} layers to 2 * ({num_layers} - {overlap}) = "
                f"{plan.num_layers}, not {target}: give `overlap` alone, or a grown size of 2 * (L - overlap)."
            )
        return plan
    target = _resolve_target(num_layers, factor, new_num_layers)
    if method == "identity":
        return make_identity_plan(num_layers, target, positions)
    builder = make_stack_plan if method == "stack" else make_interleave_plan
    return builder(num_layers, target)


def _resolve_target(num_layers: int, factor: float | None, new_num_layers: int | None) -> int | None:
    if factor is None:
        return new_num_layers
    scaled = factor * num_layers
    if scaled != int(scaled):
        raise ValueError(
            f"factor {factor} x {num_layers} layers = {scaled} is not a whole number of layers: "
            "give `num_layers` for the grown size instead."
        )
    if new_num_layers is not None and new_num_layers != int(scaled):
        raise ValueError(
            f"`factor={factor}` gives {int(scaled)} layers but `num_layers={new_num_layers}`: give only one."
        )
    return int(scaled)


def _check_growth(source_num_layers: int, new_num_layers: int) -> None:
    _check_count("source_num_layers", source_num_layers, minimum=1)
    _check_count("num_layers", new_num_layers, minimum=source_num_layers, what="the source's layer count")


def _check_count(name: str, value: object, minimum: int, what: str | None = None) -> None:
    if not _is_int(value) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}{f' ({what})' if what else ''}, got {value!r}.")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _spread(count: int, slots: int) -> list[int]:
    """Split `count` items over `slots` as evenly as possible, the later slot of a tie getting more."""
    return [(i + 1) * count // slots - i * count // slots for i in range(slots)]
