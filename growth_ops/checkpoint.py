"""Grow a safetensors checkpoint on disk, one tensor at a time, without ever building the model.

The source is read lazily with `safetensors.safe_open`; the model exists only as a skeleton on the
meta device (no memory), built from `config.json` so that the anatomy, the plans and the grown config
come from exactly the code `grow` runs in memory: `apply_width` and `apply_plan` are applied to the
skeleton, and every tensor is copied by the rules of `growth_ops.rules` and grown in width by those of
`growth_ops.width_rules` (`growth_ops.width_checkpoint`). Shards are streamed to disk, so memory
holds one tensor at a time whatever the model or shard size; growth in depth alone builds no tensor
at all: each one's bytes are copied from the source file (`mtlm_shards.write_shards`), at the disk's
speed. The result is written to a temporary sibling folder that is renamed into place only once complete.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import shutil
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedConfig, PreTrainedModel
from transformers.modeling_utils import remove_tied_weights_from_state_dict
from transformers.utils import CONFIG_NAME, SAFE_WEIGHTS_INDEX_NAME

from mtlm_shards import (
    WEIGHT_SUFFIXES,
    TensorCopy,
    open_shard,
    read_headers,
    read_weight_map,
    split_into_shards,
    write_shards,
)

from .anatomy import DecoderAnatomy, discover_anatomy
from .apply import apply_plan, layer_slice_axis, left_out_submodules, remap_layer_slices
from .disk_probe import probed_anatomy
from .in_memory import plan_growth
from .plan import GrowthPlan
from .rules import grown_tensor_sources, split_layer_name
from .saved_names import (
    grown_outside_tensor_sources,
    layer_tensors_saved_outside,
    module_inner_names,
    saved_layer_prefixes,
    saved_names,
)
from .spec import GrowthSpec, check_spec
from .width import apply_width, plan_width
from .width_checkpoint import DiskWidth, plan_disk_width, widened_reader

logger = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_SIZE = "2GB"
"""Shards are streamed, so their size does not change the memory used; 2 GB files download and resume well."""

_SKIPPED_FILES = (CONFIG_NAME, SAFE_WEIGHTS_INDEX_NAME, "README.md")  # rewritten, or a card of the source model


@dataclass
class CheckpointGrowth:
    """Everything `grow_checkpoint` will write, worked out from the config and the shard headers only.

    Args:
        source (`Path`): The source checkpoint folder.
        anatomy (`DecoderAnatomy`): The anatomy of the source model.
        plan (`GrowthPlan`): The growth plan.
        layers_prefix (`str`): Dotted path of the layer list in the checkpoint's tensor names.
        config (`PreTrainedConfig`): The grown config, as `grow` leaves it in memory.
        tensors (`dict[str, TensorCopy]`): Every tensor of the grown checkpoint, by name.
        shards (`dict[str, list[str]]`): Tensor names of every output file.
        total_parameters (`int`): Parameters of the grown model (tied ones counted once).
        dropped (`tuple[str, ...]`): Source tensors not written: aliases of a tied weight.
        copied_files (`tuple[str, ...]`): Source files copied unchanged (code, tokenizer, generation config).
        width (`DiskWidth`, *optional*): How the stored tensors grow in width, when the spec widens.
        layer_slices (`dict[str, int]`): Tensors outside the layer list that hold one slice per layer (gemma4's
            per-layer input embeddings), by name: the axis of their slices, regrown as `grow` regrows them.
    """

    source: Path
    anatomy: DecoderAnatomy
    plan: GrowthPlan
    layers_prefix: str
    config: PreTrainedConfig
    tensors: dict[str, TensorCopy]
    shards: dict[str, list[str]]
    total_parameters: int
    dropped: tuple[str, ...] = ()
    copied_files: tuple[str, ...] = ()
    width: DiskWidth | None = None
    layer_slices: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def total_size(self) -> int:
        """Bytes of tensor data in the grown checkpoint."""
        return sum(t.nbytes for t in self.tensors.values())

    def __str__(self) -> str:
        sizes = f"{tqdm.format_sizeof(self.total_size, suffix='B', divisor=1000)} in {len(self.shards)} file(s)"
        lines = [
            f"source: {self.source} ({self.anatomy.model_type}, {self.plan.source_num_layers} layers at "
            f"{self.layers_prefix!r})",
            str(self.plan),
            f"grown: {self.plan.num_layers} layers, {len(self.tensors)} tensors, {sizes}",
        ]
        if self.width:
            lines.insert(
                -1, f"width: hidden and heads x{self.width.plan.factor}, intermediate x{self.width.plan.intermediate}"
            )
        if self.dropped:
            lines.append(f"not written (tied to another weight): {', '.join(self.dropped)}")
        lines.append(f"copied unchanged: {', '.join(self.copied_files) or 'nothing'}")
        return "\n".join(lines)


def plan_checkpoint_growth(
    src: str | Path,
    spec: GrowthSpec | None = None,
    *,
    plan: GrowthPlan | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    trust_remote_code: bool = False,
) -> CheckpointGrowth:
    """Work out what growing the checkpoint at `src` writes, reading only its config and shard headers.

    Every check `grow_checkpoint` makes happens here, before anything is written: the checkpoint is
    complete and readable, the model type is known, and the plan fits the model (through `apply_plan`
    on a skeleton of the model on the meta device, which costs no memory).

    Args:
        src (`str` or `Path`): A folder written by `save_pretrained`: `config.json` and safetensors
            weights (`model.safetensors`, or shards with `model.safetensors.index.json`).
        spec (`GrowthSpec`): How to grow, resolved against the checkpoint's config.
        plan (`GrowthPlan`, *optional*): A plan already resolved for this checkpoint, instead of `spec`.
        max_shard_size (`int` or `str`, *optional*, defaults to `"2GB"`): Largest output file, in bytes
            or as `"2GB"`/`"500MB"`; a larger tensor gets a file of its own.
        trust_remote_code (`bool`, *optional*, defaults to `False`): Run the model code shipped in `src`
            (its `auto_map`) to read its config and build its skeleton.

    Returns:
        `CheckpointGrowth`: The plan and every tensor and file to write.

    Raises:
        FileNotFoundError: If `src` is not a checkpoint folder or a shard named in the index is missing.
        ValueError: If a shard is unreadable, the index and the shards disagree, the model type is
            unknown, or the plan does not fit the model; the message says what to do.
    """
    if plan is not None and spec is not None:
        raise ValueError("Give either `plan` or the arguments that make one (a GrowthSpec), not both.")
    if plan is None and spec is None:
        raise ValueError("Say how to grow: give a GrowthSpec, e.g. GrowthSpec(depth=2), or a ready `plan`.")
    if spec is not None:
        check_spec(spec)
    source = Path(src)
    config = _load_config(source, trust_remote_code)
    weight_map = read_weight_map(source)
    headers = read_headers(source, weight_map)
    skeleton = _build_skeleton(config, source, trust_remote_code)
    if plan is None:
        anatomy, growth_plan = plan_growth(skeleton, spec)
    else:
        anatomy, growth_plan = discover_anatomy(skeleton), plan
    anatomy = probed_anatomy(skeleton, anatomy, growth_plan)
    names = saved_names(skeleton)
    layers_prefix = _find_layers_prefix(weight_map, anatomy, skeleton, source, names)
    inner_names = module_inner_names(names, anatomy.layers_path, layers_prefix)
    saved_outside = layer_tensors_saved_outside(names, weight_map, anatomy.layers_path, layers_prefix)
    dropped = _tied_aliases(skeleton, set(weight_map))
    width = None
    if spec is not None and spec.grows_width:
        # Width first, as `grow` does: the depth copies are copies of widened layers.
        width_plan, unwidened = plan_width(skeleton, spec, anatomy), copy.deepcopy(skeleton)
        apply_width(skeleton, width_plan, anatomy)
        width = plan_disk_width(width_plan, unwidened, copy.deepcopy(skeleton), weight_map, dropped)
    # The one application point: the skeleton is grown by the same code as a model in memory, so the grown
    # config (layer count, per-layer and index lists) and every check on the plan are the same.
    left_out = left_out_submodules(skeleton, anatomy, growth_plan)
    apply_plan(skeleton, growth_plan, anatomy=anatomy)
    stored = [name for name in weight_map if name not in dropped and name not in saved_outside]
    sources = grown_tensor_sources(stored, layers_prefix, growth_plan, anatomy, inner_names)
    sources = _without_left_out(sources, left_out, layers_prefix, inner_names)
    if saved_outside:
        sources.update(grown_outside_tensor_sources(saved_outside, saved_names(skeleton), growth_plan, anatomy))
    tensors = {
        name: TensorCopy(name, weight_map[source_name], source_name, *headers[source_name], zeroed=zeroed)
        for name, (source_name, zeroed) in sources.items()
    }
    if width is not None:
        tensors = {name: _widened(tensor, width.shapes) for name, tensor in tensors.items()}
    layer_slices = _layer_slices(tensors, skeleton, growth_plan)
    if layer_slices and width is not None:
        raise ValueError(
            f"{type(skeleton).__name__} holds tensors with one slice per layer outside its layer list "
            f"({sorted(layer_slices)}): growth_ops grows them on disk in depth only. Grow width in memory (`grow`)."
        )
    grown_shapes = {name: skeleton.get_parameter(name).shape for name in layer_slices}
    tensors.update({name: _with_shape(tensors[name], shape) for name, shape in grown_shapes.items()})
    return CheckpointGrowth(
        source=source,
        anatomy=anatomy,
        plan=growth_plan,
        layers_prefix=layers_prefix,
        config=skeleton.config,
        tensors=tensors,
        shards=split_into_shards(tensors, max_shard_size),
        total_parameters=skeleton.num_parameters(),
        dropped=tuple(sorted(dropped)),
        copied_files=tuple(_files_to_copy(source)),
        width=width,
        layer_slices=layer_slices,
    )


def _without_left_out(
    sources: dict[str, tuple[str, bool]],
    left_out: dict[int, tuple[str, ...]],
    layers_prefix: str,
    inner_names: dict[str, str],
) -> dict[str, tuple[str, bool]]:
    """`sources` without the tensors of the submodules `apply_plan` leaves out of copies (`left_out`, by
    position): the layer built there has none (rwkv's `pre_ln`, built in layer 0 only)."""
    prefixes = {position: tuple(f"{name}." for name in names) for position, names in left_out.items()}
    held = {}
    for name, (source_name, zeroed) in sources.items():
        split = split_layer_name(name, layers_prefix)
        if split and split[0] in prefixes and inner_names.get(source_name, split[1]).startswith(prefixes[split[0]]):
            continue
        held[name] = (source_name, zeroed)
    return held


def _widened(tensor: TensorCopy, shapes: dict[str, tuple[int, ...]]) -> TensorCopy:
    return _with_shape(tensor, shapes.get(tensor.source_name, tensor.shape))


def _with_shape(tensor: TensorCopy, shape: tuple[int, ...]) -> TensorCopy:
    itemsize = tensor.nbytes // max(1, math.prod(tensor.shape))
    return dataclasses.replace(tensor, shape=tuple(shape), nbytes=math.prod(shape) * itemsize)


def _layer_slices(tensors: dict[str, TensorCopy], skeleton: PreTrainedModel, plan: GrowthPlan) -> dict[str, int]:
    """The tensors whose grown shape differs from the stored one by the layer count along one axis.

    `apply_plan` has checked that the grown skeleton holds exactly the weights of a model built from the grown
    config, so any other shape change would have been refused there.
    """
    shapes = {name: tuple(tensor.shape) for name, tensor in skeleton.state_dict().items()}
    return {
        name: axis
        for name, tensor in tensors.items()
        if name in shapes
        and shapes[name] != tensor.shape
        and (axis := layer_slice_axis(tensor.shape, shapes[name], plan)) is not None
    }


def grow_checkpoint(
    src: str | Path,
    dst: str | Path,
    spec: GrowthSpec | None = None,
    *,
    plan: GrowthPlan | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    trust_remote_code: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> CheckpointGrowth:
    """Grow a safetensors checkpoint on disk (depth, width or both), with memory bounded by its largest tensor.

    The result equals, tensor for tensor and in its config, `grow` on the loaded model followed
    by `save_pretrained`: the same plan, per-layer config lists, identity init and tied embeddings.
    Code files, tokenizer files and `generation_config.json` are copied; the source's `README.md`
    (a card of the source model) is not.

    Nothing appears at `dst` until the grown checkpoint is complete: it is written into a temporary
    sibling folder and renamed at the end, and that folder is removed if anything fails.

    Args:
        src (`str` or `Path`): The checkpoint folder to grow (see `plan_checkpoint_growth`).
        dst (`str` or `Path`): The folder to create.
        spec (`GrowthSpec`): How to grow, resolved against the checkpoint's config.
        plan (`GrowthPlan`, *optional*): A plan already resolved for this checkpoint, instead of `spec`.
        max_shard_size (`int` or `str`, *optional*, defaults to `"2GB"`): Largest output file.
        trust_remote_code (`bool`, *optional*, defaults to `False`): Run the model code shipped in `src`.
        overwrite (`bool`, *optional*, defaults to `False`): Replace an existing `dst` (only once the
            new checkpoint is complete).
        progress (`bool`, *optional*, defaults to `False`): Show a progress bar of the bytes written.

    Returns:
        `CheckpointGrowth`: What was written.

    Raises:
        FileExistsError: If `dst` exists and `overwrite` is `False`.
        FileNotFoundError, ValueError: For a bad source or plan, see `plan_checkpoint_growth`.
        OSError: If writing fails (a full disk); `dst` is then left as it was.

    Example:

    ```python
    >>> from growth_ops import GrowthSpec, grow_checkpoint
    >>> grow_checkpoint("tinyllama", "tinyllama-x2", GrowthSpec(depth=2, depth_method="stack"))
    ```
    """
    destination = Path(dst).absolute()
    _check_destination(Path(src).absolute(), destination, overwrite)
    growth = plan_checkpoint_growth(
        src, spec, plan=plan, max_shard_size=max_shard_size, trust_remote_code=trust_remote_code
    )
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.growing-", dir=destination.parent))
    try:
        _write(growth, staging, progress)
        _move_into_place(staging, destination, overwrite)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError) and not isinstance(error, FileExistsError):
            raise OSError(
                error.errno, f"Writing the grown checkpoint failed ({error}); nothing was left at {destination}."
            ) from error
        raise
    logger.info(
        "growth_ops: wrote %s (%d -> %d layers, %d files)",
        destination,
        growth.plan.source_num_layers,
        growth.plan.num_layers,
        len(growth.shards),
    )
    return growth


def _check_destination(source: Path, destination: Path, overwrite: bool) -> None:
    resolved, source = destination.resolve(), source.resolve()
    if resolved == source or source in resolved.parents:
        raise ValueError(
            f"The destination {destination} is the source checkpoint or inside it: choose a folder outside {source}."
        )
    if destination.exists() and not overwrite:
        raise FileExistsError(
            f"{destination} already exists: choose another destination, or pass overwrite=True (--force) to replace "
            "it once the grown checkpoint is complete."
        )
    if destination.exists() and not destination.is_dir():
        raise FileExistsError(f"{destination} exists and is not a folder: remove it or choose another destination.")


def _load_config(source: Path, trust_remote_code: bool) -> PreTrainedConfig:
    if not (source / CONFIG_NAME).is_file():
        what = "does not exist" if not source.exists() else "has no config.json"
        raise FileNotFoundError(
            f"{source} {what}, so it is not a Transformers checkpoint: give the folder written by "
            "`save_pretrained` (config.json and model.safetensors or its shards)."
        )
    try:
        raw = json.loads((source / CONFIG_NAME).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{source / CONFIG_NAME} is not valid JSON ({error}): fetch it again.") from None
    model_type, auto_map = raw.get("model_type"), raw.get("auto_map")
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError) as error:
        if auto_map and not trust_remote_code:
            raise ValueError(
                f"{source} has model_type {model_type!r} with its own code (auto_map {auto_map}): read the .py files "
                "there, then pass trust_remote_code=True (--trust-remote-code) to run them."
            ) from error
        if not auto_map:
            raise ValueError(
                f"{source}/config.json has model_type {model_type!r}, which transformers {transformers.__version__} "
                "does not know, and no auto_map naming code in the folder: upgrade transformers, or add the model's "
                f"configuration and modeling files with an auto_map to the folder ({error})."
            ) from error
        raise ValueError(f"The config of {source} does not load ({error}).") from error


def _build_skeleton(config: PreTrainedConfig, source: Path, trust_remote_code: bool) -> PreTrainedModel:
    """The model class of the checkpoint on the meta device: its module tree and parameter names, no memory."""
    architectures = getattr(config, "architectures", None) or []
    model_class = getattr(transformers, architectures[0], None) if architectures else None
    try:
        with torch.device("meta"):
            if isinstance(model_class, type) and issubclass(model_class, PreTrainedModel):
                return model_class(config)
            return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError) as error:
        raise ValueError(
            f"Cannot build the model class of {source} (architectures {architectures}, model_type "
            f"{config.model_type!r}) from its config: {error}"
        ) from error


def _find_layers_prefix(
    weight_map: dict[str, str],
    anatomy: DecoderAnatomy,
    skeleton: PreTrainedModel,
    source: Path,
    names: dict[str, str],
) -> str:
    """The layer list's path in the checkpoint's names: the model's own, the base model's (no prefix), or
    the one `save_pretrained` writes for a family it saves under legacy names."""
    candidates = [anatomy.layers_path]
    base = getattr(skeleton, "base_model_prefix", "")
    if base and anatomy.layers_path.startswith(base + "."):
        candidates.append(anatomy.layers_path[len(base) + 1 :])
    candidates += [prefix for prefix in saved_layer_prefixes(names, anatomy.layers_path) if prefix not in candidates]
    for prefix in candidates:
        indices = {split[0] for name in weight_map if (split := split_layer_name(name, prefix))}
        if indices and indices != set(range(anatomy.num_layers)):
            raise ValueError(
                f"The config of {source} has {anatomy.num_layers} layers but its weights hold layers "
                f"{sorted(indices)} under {prefix!r}: the config and the weights do not belong together."
            )
        if indices:
            return prefix
    raise ValueError(
        f"No tensor of {source} is named like a layer of {type(skeleton).__name__} ({' or '.join(candidates)}.N...; "
        f"e.g. it holds {sorted(weight_map)[:3]}): re-save the checkpoint with `save_pretrained`."
    )


def _tied_aliases(skeleton: PreTrainedModel, names_on_disk: set[str]) -> set[str]:
    """Tensors `save_pretrained` would not write because they are tied to one it keeps (a tied `lm_head`)."""
    state = skeleton.state_dict()
    kept = set(remove_tied_weights_from_state_dict(dict(state), skeleton))
    groups = defaultdict(set)
    for name, tensor in [*skeleton.named_parameters(remove_duplicate=False), *skeleton.named_buffers()]:
        groups[id(tensor)].add(name)
    return {
        name
        for group in groups.values()
        for name in group - kept
        if name in names_on_disk and group & kept & names_on_disk
    }


def _files_to_copy(source: Path) -> list[str]:
    return sorted(
        p.name
        for p in source.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and p.name not in _SKIPPED_FILES
        and not p.name.endswith(WEIGHT_SUFFIXES)  # read anew, or never loaded (pickles)
    )


def _write(growth: CheckpointGrowth, folder: Path, progress: bool) -> None:
    growth.config.save_pretrained(folder)
    # After the config: the source's code files are the ones its auto_map names, not a copy of the installed package.
    for name in growth.copied_files:
        shutil.copy2(growth.source / name, folder / name)
    with contextlib.ExitStack() as stack:
        read = None  # depth alone: every tensor's stored bytes are copied
        if growth.width is not None:
            read = widened_reader(growth, stack)
        elif growth.layer_slices:
            read = _slice_reader(growth, stack)
        write_shards(
            folder,
            growth.source,
            growth.tensors,
            growth.shards,
            growth.total_parameters,
            progress,
            description="Growing checkpoint",
            read=read,
        )


def _slice_reader(
    growth: CheckpointGrowth, stack: contextlib.ExitStack
) -> Callable[[TensorCopy], torch.Tensor | None]:
    """The reader `write_shards` calls for each tensor: a per-layer-slice tensor comes back with its slices in
    the grown order (one tensor in memory); any other gives `None`, so its stored bytes are copied."""
    handles: dict[str, object] = {}

    def read(tensor: TensorCopy) -> torch.Tensor | None:
        if tensor.name not in growth.layer_slices:
            return None
        if tensor.source_file not in handles:
            handles[tensor.source_file] = stack.enter_context(open_shard(growth.source / tensor.source_file))
        stored = handles[tensor.source_file].get_tensor(tensor.source_name)
        return remap_layer_slices(stored, growth.layer_slices[tensor.name], growth.plan)

    return read


def _move_into_place(staging: Path, destination: Path, overwrite: bool) -> None:
    if not destination.exists():
        staging.rename(destination)
        return
    if not overwrite:  # created by someone else while we wrote
        raise FileExistsError(f"{destination} appeared while growing: the grown checkpoint was not moved there.")
    replaced = destination.with_name(f".{destination.name}.replaced-{uuid.uuid4().hex[:8]}")
    destination.rename(replaced)
    try:
        staging.rename(destination)
    except OSError:
        replaced.rename(destination)
        raise
    shutil.rmtree(replaced, ignore_errors=True)
