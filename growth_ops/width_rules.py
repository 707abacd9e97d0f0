"""Per-tensor rules of width growth, shared by both sinks: `grow` (a model in memory) and `grow_checkpoint`
(safetensors on disk), so that a tensor is grown by the same function, bit for bit, in both.

The rule is HyperCloning's (arXiv 2409.12903) for an integer factor: the residual stream `h` of size `d`
becomes `[h; h; ...]` of size `n * d`. Every axis that grows is tiled block-wise (all of a block, then all
of it again), so head `j` of copy `c` is head `c * H + j` and reads KV head `c * K + j // (H / K)`: the
grouping of `repeat_kv` is kept. An axis contracted with a grown input is divided by that input's factor,
so `W' [x; x] = [W x; W x]`. Fused projections are tiled part by part (`[q; k; v]` becomes
`[q; q; k; k; v; v]`, not `[q; k; v; q; k; v]`). Symmetry-breaking noise is added to the blocks of the
contracted axis and sums to zero across them, so the copies of `x` still meet the same total weight.

The same rule maps what follows a tensor's gradient (an optimizer's moments, `grow_moment`): each entry has
`TensorRule.copies` copies, and at the cloned point each copy's gradient is the source entry's times
`TensorRule.gradient_scale` (derived in `growth_ops.optim.grow_width_optimizer_state`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch

FUSED_LAYOUTS = {
    "gate_up_proj": ("halves", "[gate; up] side by side on the output axis (Phi-3, Transformers' fused experts)"),
    "c_attn": ("qkv", "GPT-2's fused [q; k; v] projection (Conv1D, output on the last axis)"),
    "qkv_proj": ("qkv", "Phi-3's fused [q; k; v] projection, k and v sized by the KV heads"),
    "W_pack": ("qkv", "Baichuan's fused [q; k; v] projection"),
}
"""Output axes that hold several projections side by side, by module name: tiled part by part.

`query_key_value` (GPT-NeoX, Persimmon, Falcon without multi-query) is laid out head by head
(`[head, (q, k, v), head_dim]`), so plain tiling keeps every head whole and it needs no entry; Falcon's
multi-query layout is the exception, see `fused_layout`."""

WIDTH_BLOCKERS = (
    ("alibi", True, "ALiBi gives every head a slope that depends on the number of heads"),
    ("model_type", "bloom", "BLOOM's ALiBi gives every head a slope that depends on the number of heads"),
    ("model_type", "mpt", "MPT's ALiBi gives every head a slope that depends on the number of heads"),
)
"""`(config key, value, reason)`: settings under which no width growth keeps the function."""

SCALAR_BUFFERS = {"embed_scale": "scalar_embed_scale"}
"""Non-persistent scalar buffers recomputed from a plain attribute of their module at load time: Gemma's
scaled embedding multiplies by `sqrt(hidden_size)`, held both as the float `scalar_embed_scale` and as
the buffer `embed_scale`. After growth the buffer must hold the new attribute, as a freshly built model does."""


@dataclass(frozen=True)
class TensorRule:
    """How one tensor grows: tiled along its axes, scaled, and (optionally) given cancelling noise.

    Args:
        axes (`tuple[tuple[tuple[int, int], ...], ...]`): For every axis, its parts as `(source size,
            factor)`: one part for a plain axis, several for a fused projection (each tiled on its own).
        contracted (`int`, *optional*): The axis contracted with the layer's input (the `in` axis of a
            linear map); noise goes on its blocks.
        scale (`float`, *optional*, defaults to 1.0): Multiplies the tiled tensor: `1 / factor` of the
            contracted axis, the embedding-scale ratio, or the tied head's factor on the final norm.
        offset (`float`, *optional*, defaults to 0.0): For norms that multiply by `offset + weight`
            (Gemma's `1 + weight`): the scale applies to `offset + weight`.
        noise (`float`, *optional*, defaults to 0.0): Standard deviation of the symmetry-breaking noise,
            relative to the tensor's own.
        seed (`int`, *optional*, defaults to 0): Seed of the noise, combined with the tensor's name.
    """

    axes: tuple[tuple[tuple[int, int], ...], ...]
    contracted: int | None = None
    scale: float = 1.0
    offset: float = 0.0
    noise: float = 0.0
    seed: int = 0

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the grown tensor."""
        return tuple(sum(size * factor for size, factor in parts) for parts in self.axes)

    @property
    def copies(self) -> int:
        """How many copies of each source entry the grown tensor holds: the product of the axes' factors.

        Raises:
            ValueError: If the parts of one axis grow by different factors (no such layout is grown today).
        """
        copies = 1
        for parts in self.axes:
            factors = {factor for _, factor in parts}
            if len(factors) != 1:
                raise ValueError(f"The parts of one axis grow by different factors {sorted(factors)}: not mapped.")
            copies *= factors.pop()
        return copies

    @property
    def gradient_scale(self) -> float:
        """What each copy's gradient is, relative to its source entry's, at the cloned point: `1 / (scale * copies)`."""
        return 1.0 / (self.scale * self.copies)

    @property
    def is_identity(self) -> bool:
        """Whether the tensor is left as it is."""
        tiled = any(factor != 1 for parts in self.axes for _, factor in parts)
        return not tiled and self.scale == 1.0 and self.noise == 0.0


def plain_axes(shape: tuple[int, ...], factors: tuple[int, ...]) -> tuple[tuple[tuple[int, int], ...], ...]:
    """The `TensorRule.axes` of a tensor whose axes are tiled whole."""
    return tuple(((size, factor),) for size, factor in zip(shape, factors, strict=True))


def grow_tensor(tensor: torch.Tensor, rule: TensorRule, name: str) -> torch.Tensor:
    """Apply `rule` to `tensor` (named `name`, which seeds its noise): a new tensor of the same dtype.

    The arithmetic runs in float32 whatever the dtype, so a bfloat16 tensor is rounded once, at the end.

    Args:
        tensor (`torch.Tensor`): The source tensor (on any device; it is not changed).
        rule (`TensorRule`): How it grows.
        name (`str`): The tensor's full name in the source model: the noise of a tensor depends on its
            name and the seed only, so growth in memory and on disk draw the same noise.

    Returns:
        `torch.Tensor`
    """
    grown = tensor
    for axis, parts in enumerate(rule.axes):
        if all(factor == 1 for _, factor in parts):
            continue
        pieces = grown.split([size for size, _ in parts], dim=axis)
        grown = torch.cat([piece for piece, (_, f) in zip(pieces, parts, strict=True) for _ in range(f)], dim=axis)
    if rule.scale == 1.0 and rule.noise == 0.0:
        return grown.clone() if grown is tensor else grown
    result = (grown.float() + rule.offset) * rule.scale - rule.offset
    if rule.noise and rule.contracted is not None:
        result += _cancelling_noise(tensor, rule, name).to(result.device)
    return result.to(tensor.dtype)


def grow_moment(moment: torch.Tensor, rule: TensorRule, order: int) -> torch.Tensor:
    """A per-entry statistic of `tensor`'s gradient (an optimizer moment) as the grown tensor's: tiled as `rule`
    tiles the tensor and multiplied by `rule.gradient_scale ** order`, without the tensor's scale, offset or noise.

    Args:
        moment (`torch.Tensor`): Shaped like the source tensor (not changed).
        rule (`TensorRule`): The rule of the tensor whose gradient it follows.
        order (`int`): 1 for statistics linear in the gradient (Adam's `exp_avg`, SGD's momentum), 2 for
            squares (`exp_avg_sq`), 0 for tiling alone.

    Returns:
        `torch.Tensor`: A new tensor of the moment's dtype.
    """
    tiled = grow_tensor(moment, TensorRule(rule.axes), "")
    if order == 0 or rule.gradient_scale == 1.0:
        return tiled
    return (tiled.float() * rule.gradient_scale**order).to(moment.dtype)


def _cancelling_noise(tensor: torch.Tensor, rule: TensorRule, name: str) -> torch.Tensor:
    """Noise on the `k` blocks of the contracted axis that sums to zero over them: `k - 1` draws and minus their sum."""
    shape = rule.shape
    ((size, copies),) = rule.axes[rule.contracted]
    block = list(shape)
    block[rule.contracted] = size
    std = float(tensor.float().std()) if tensor.numel() > 1 else 0.0
    generator = torch.Generator().manual_seed(zlib.crc32(f"{rule.seed}/{name}".encode()))
    draws = [torch.randn(block, generator=generator) * (rule.noise * std) for _ in range(copies - 1)]
    return torch.cat([*draws, -sum(draws, torch.zeros(block))], dim=rule.contracted)
