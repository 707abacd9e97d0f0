"""Check identity growth numerically, on the block itself, before the model is touched.

A zero-residual copy of a block must compute `block(x) == x`. Names cannot promise that (a post-norm
block, a bias outside the known writers, a branch with an unusual output projection), so the copy is
run on the inputs the model's own forward gives the block, captured by a forward pre-hook on one tiny
forward pass. Where the writers named by the anatomy do not make the copy an identity, the last
parameterised module of every branch that stays non-zero is zeroed too (or, where that is a gate, the first
module from the output back whose zeroing zeroes the branch), and the copy is run again; writers a guess
added that the identity turns out not to need are given back.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

BlockInputs = tuple[tuple[Any, ...], dict[str, Any]]
ATOL = 1e-5
_PROBE_LENGTH = 6
# Each round zeroes one more module per non-zero branch (a bias held by the branch, then its projection).
_MAX_ROUNDS = 4


class _Captured(Exception):
    """Stops the probing forward pass once every block of interest has shown its inputs."""


def capture_block_inputs(model: nn.Module, layers: nn.Module, indices: Iterable[int]) -> dict[int, BlockInputs]:
    """The positional and keyword inputs the model's own forward gives layers `indices`.

    A Transformers model runs one forward pass on a few random tokens (eval mode, no cache); a plain
    module's block gets a random hidden state sized by its first norm or linear layer. Returns `{}`
    when the model cannot be probed (weights on the meta device, an unknown input).
    """
    wanted = sorted(set(indices))
    parameter = next(model.parameters(), None)
    if parameter is None or parameter.device.type == "meta":
        return {}
    if not isinstance(model, PreTrainedModel):
        width = _hidden_width(layers[wanted[0]])
        if width is None:
            return {}
        x = torch.randn(2, _PROBE_LENGTH, width, generator=torch.Generator().manual_seed(0))
        return {i: ((x.to(parameter.device, parameter.dtype),), {}) for i in wanted}

    captured: dict[int, BlockInputs] = {}

    def hook_for(index: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            captured.setdefault(index, (args, dict(kwargs)))
            if len(captured) == len(wanted):
                raise _Captured

        return hook

    handles = [layers[i].register_forward_pre_hook(hook_for(i), with_kwargs=True) for i in wanted]
    try:
        with contextlib.suppress(_Captured):
            _probe_forward(model)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def off_init(model: nn.Module, noise: float = 0.05) -> nn.Module:
    """`model` with noise on every parameter (in place), so that it holds no value only a fresh init holds.

    A block can be an identity at init alone: zaya scales its residual by `(residual + residual_bias) *
    residual_scale`, which a fresh model holds at zeros and ones and a trained one does not. A probe that decides
    for trained weights it does not read (`growth_ops.disk_probe`) runs on weights that are no special point.
    The noise is absolute, so that a scale of ones or a bias of zeros moves as far as a weight of init scale. An
    embedding's padding row keeps its value, as training does (it gets no gradient), and loading may reset it.
    """
    padding = {
        id(m.weight): m.padding_idx
        for m in model.modules()
        if isinstance(m, nn.Embedding) and m.padding_idx is not None
    }
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            shift = torch.randn(parameter.shape, generator=generator).to(parameter)
            if id(parameter) in padding:
                shift[padding[id(parameter)]] = 0
            parameter.add_(shift, alpha=noise)
    return model


def probe_logits(model: PreTrainedModel) -> torch.Tensor | None:
    """The logits of the probing forward pass (the same random tokens every call), or `None` on the meta device."""
    parameter = next(model.parameters(), None)
    if parameter is None or parameter.device.type == "meta":
        return None
    return _first_tensor(_probe_forward(model))


def _probe_forward(model: PreTrainedModel) -> Any:
    """One forward pass on a few random tokens, in eval mode, without cache or gradients; modes restored."""
    vocab = getattr(model.config.get_text_config(decoder=True), "vocab_size", None) or 8
    ids = torch.randint(min(3, vocab - 1), vocab, (2, _PROBE_LENGTH), generator=torch.Generator().manual_seed(0))
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            return model(input_ids=ids.to(next(model.parameters()).device), use_cache=False)
    finally:
        for module, training in modes.items():
            module.training = training


def zero_residual_failure(
    layer: nn.Module, inputs: BlockInputs, is_writer: Callable[[str], bool]
) -> tuple[str | None, tuple[str, ...]]:
    """Run the zero-residual copy of `layer` and say why it is not the identity, if it is not.

    Returns:
        `(reason, extra writers)`: `reason` is `None` when the copy is exact (fp32, `ATOL`); `extra
        writers` are the parameter names, beyond those `is_writer` accepts, that had to be zeroed.
    """
    extra: set[str] = set()

    def zeroed(name: str) -> bool:
        return is_writer(name) or name in extra

    order: list[str] = []  # the finishing order of the layer's modules, found once, when first needed
    for round_ in range(_MAX_ROUNDS + 1):
        nonzero, change = _run_zeroed(layer, inputs, zeroed)
        if change <= ATOL:
            needed = _needed(layer, inputs, is_writer, extra)
            nonzero, change = _run_zeroed(
                layer, _rescaled(inputs), lambda name, n=needed: is_writer(name) or name in n
            )
            if change <= ATOL:
                return None, needed
            break
        if round_ == _MAX_ROUNDS:
            break
        order = order or _finishing_order(layer, inputs)
        found = set(_last_writers(layer, nonzero, order, zeroed))
        found = found or set(_searched_writers(layer, nonzero, inputs, order, zeroed))
        if not found:
            break
        extra.update(found)
    if not nonzero:
        norms = [n for n, c in layer.named_children() if _is_norm(c)]
        own = [n for n, _ in layer.named_parameters(recurse=False)]
        return (
            f"with the output of every branch module zero it still changes its input (by up to {change:.3g}, on "
            "the input the model gives it or on that input scaled and shifted per channel): its "
            f"own forward transforms the residual, by a norm after the residual add (post-norm; its norms: {norms}), "
            f"a scaled residual (parameters it holds itself: {own}) or a function of a zero branch, so no zeroed "
            "copy of it is an identity",
            tuple(sorted(extra)),
        )
    names = [f"{child}.{p}" for child in nonzero for p, _ in layer.get_submodule(child).named_parameters()]
    left = [n for n in names if not zeroed(n)][:8]
    return (
        f"its branch(es) {nonzero} stay non-zero with the residual writers zeroed (parameters {left})",
        tuple(sorted(extra)),
    )


def _run_zeroed(layer: nn.Module, inputs: BlockInputs, zeroed: Callable[[str], bool]) -> tuple[list[str], float]:
    """Run a zeroed copy; return its non-norm branches whose output is not zero, and how far the block's
    output is from its input (`inf` for another shape)."""
    clone = copy.deepcopy(layer).eval().float()
    with torch.no_grad():
        for name, parameter in clone.named_parameters():
            if zeroed(name):
                parameter.zero_()
    outputs: dict[str, float] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            tensor = _first_tensor(output)
            if tensor is not None:
                outputs[name] = max(outputs.get(name, 0.0), float(tensor.detach().abs().max()))

        return hook

    handles = [c.register_forward_hook(record(n)) for n, c in clone.named_children() if _has_parameters(c)]
    args, kwargs = _float_inputs(inputs)
    x = _hidden_states(args, kwargs).clone()
    try:
        with torch.no_grad():
            output = _first_tensor(clone(*args, **kwargs))
    finally:
        for handle in handles:
            handle.remove()
    same_shape = output is not None and output.shape == x.shape
    change = float((output - x).abs().max()) if same_shape else float("inf")
    children = dict(clone.named_children())
    nonzero = [n for n, value in outputs.items() if value > ATOL and not _is_norm(children[n])]
    return nonzero, change


def _last_writers(layer: nn.Module, nonzero: list[str], order: list[str], zeroed: Callable[[str], bool]) -> list[str]:
    """What each non-zero branch writes last: walking back from its output, every parameter added after its
    last projection (a weight with two or more dims above 1), and that projection, or only its own bias where
    the projection is zeroed already (gpt_oss's `down_proj_bias` beside `down_proj`). Inputs of the
    projection stay, so the zeroed copy still trains.

    A module's forward hook fires after its children's, though its own parameters may act before them (rwkv's
    time-mixing coefficients, used on the input of `key` .. `output`): so a module whose children ran is passed
    over, and its own parameters are proposed only when its children propose nothing more."""
    writers = []
    for branch in nonzero:
        ran = list(dict.fromkeys(n for n in order if n == branch or n.startswith(branch + ".")))
        containers = {n for n in ran if any(other.startswith(n + ".") for other in ran)}
        found = _walk_back(layer, [n for n in ran if n not in containers], zeroed)
        writers += found or _walk_back(layer, ran, zeroed)
    return writers


def _finishing_order(layer: nn.Module, inputs: BlockInputs) -> list[str]:
    """The modules holding parameters of their own, in the order their forwards finish on `inputs`."""
    clone = copy.deepcopy(layer).eval().float()
    order: list[str] = []
    handles = [
        m.register_forward_hook(lambda module, a, o, name=n: order.append(name))
        for n, m in clone.named_modules()
        if n and next(m.parameters(recurse=False), None) is not None
    ]
    args, kwargs = _float_inputs(inputs)
    try:
        with torch.no_grad():
            clone(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return list(dict.fromkeys(order))


def _needed(
    layer: nn.Module, inputs: BlockInputs, is_writer: Callable[[str], bool], extra: set[str]
) -> tuple[str, ...]:
    """`extra` without the writers a guess added that the identity does not need (the probe keeps the fewest
    zeroed, so that the copy keeps the most of its source)."""
    needed = set(extra)
    for name in sorted(extra):
        trial = needed - {name}
        if _run_zeroed(layer, inputs, lambda n, trial=trial: is_writer(n) or n in trial)[1] <= ATOL:
            needed = trial
    return tuple(sorted(needed))


def _searched_writers(
    layer: nn.Module, nonzero: list[str], inputs: BlockInputs, order: list[str], zeroed: Callable[[str], bool]
) -> list[str]:
    """For each non-zero branch, the first projection (from its output back) whose zeroing makes the branch zero,
    tried one at a time: where the last module to finish is no writer (rwkv's feed-forward finishes with the
    `receptance` gate it multiplies the `value` projection by)."""
    writers = []
    for branch in nonzero:
        for name in reversed([n for n in order if n.startswith(branch + ".")]):
            own = [f"{name}.{p}" for p, _ in layer.get_submodule(name).named_parameters(recurse=False)]
            if all(zeroed(n) for n in own):
                continue
            still, _ = _run_zeroed(layer, inputs, lambda n, own=own: zeroed(n) or n in own)
            if branch not in still:
                writers += [n for n in own if not zeroed(n)]
                break
    return writers


def _walk_back(layer: nn.Module, ran: list[str], zeroed: Callable[[str], bool]) -> list[str]:
    """From the last of the modules `ran` back to the first that holds a projection, what `_last_writers` zeroes."""
    writers = []
    for name in reversed(ran):
        own = dict(layer.get_submodule(name).named_parameters(recurse=False))
        done = [p for p in own if zeroed(f"{name}.{p}")]
        writers += [f"{name}.{p}" for p in own if not done or any(p.startswith(d) for d in done)]
        if any(sum(size > 1 for size in t.shape) >= 2 for t in own.values()):
            break
    return [w for w in writers if not zeroed(w)]


def _rescaled(inputs: BlockInputs) -> BlockInputs:
    """The inputs with the hidden state scaled and shifted per channel (fixed seed). An identity maps every input
    to itself; a block that normalises its residual (post-norm) maps an input already normalised to itself too,
    and that is what a random model gives a layer after its first (norm weights 1, biases 0)."""
    args, kwargs = inputs
    x = _hidden_states(args, kwargs)
    generator = torch.Generator().manual_seed(0)
    scale = 0.5 + 1.5 * torch.rand(x.shape[-1], generator=generator)
    shift = torch.randn(x.shape[-1], generator=generator) * float(x.float().std())
    changed = (x.float() * scale + shift).to(x.dtype)
    if args and args[0] is x:
        return (changed, *args[1:]), kwargs
    key = next(k for k, v in kwargs.items() if v is x)
    return args, {**kwargs, key: changed}


def _float_inputs(inputs: BlockInputs) -> BlockInputs:
    args, kwargs = inputs
    return tuple(_to_float(a) for a in args), {k: _to_float(v) for k, v in kwargs.items()}


def _to_float(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.float()
    if isinstance(value, tuple) and all(isinstance(v, torch.Tensor) for v in value):
        return tuple(_to_float(v) for v in value)
    return value


def _hidden_states(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    if isinstance(kwargs.get("hidden_states"), torch.Tensor):
        return kwargs["hidden_states"]
    return next(v for v in kwargs.values() if isinstance(v, torch.Tensor) and v.is_floating_point())


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple) and value:
        return _first_tensor(value[0])
    return None


def _hidden_width(layer: nn.Module) -> int | None:
    for module in layer.modules():
        if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
            return module.normalized_shape[0]
        if isinstance(module, nn.Linear):
            return module.in_features
    return None


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _is_norm(module: nn.Module) -> bool:
    return "norm" in type(module).__name__.lower()
