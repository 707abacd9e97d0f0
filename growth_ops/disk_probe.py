"""Probe identity growth for a checkpoint on disk, where the model exists only on the meta device.

Growth in memory runs each layer to be copied as an identity zeroed on real inputs (`growth_ops.probe`):
names alone cannot promise an identity (CodeGen's MLP writes through `fc_out`, JetMoE's experts through
`output_linear`). A meta-device skeleton cannot run, and building the whole model would cost what on-disk
growth exists to avoid. Which parameters must be zeroed is a matter of structure, not of trained values, so
the probe runs on a random model of the same config cut after the last layer to be copied as an identity, with
noise on every parameter: a block may be an identity at its init values alone (zaya's residual scale of ones).
Every such layer is probed on the inputs the layers before it give (two layers of one structure can differ by
their input alone: deepseek_v4's hyper-connections mix the streams from layer 1 on), as copied to its new
position (a layer's forward may depend on its position: rwkv's layer 0 norms the embeddings).
Its cost is the embeddings and those layers in fp32: for identity growth of the whole stack, the size of the
model in fp32, the one step of on-disk growth whose memory is not bounded by a tensor.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from transformers import PreTrainedModel

from .anatomy import DecoderAnatomy
from .apply import depth_scaled_change, placed_identity_copies, probe_placed_identity, unread_at_forward
from .plan import GrowthPlan
from .probe import capture_block_inputs, off_init
from .rules import grown_config_changes


def probed_anatomy(skeleton: PreTrainedModel, anatomy: DecoderAnatomy, plan: GrowthPlan) -> DecoderAnatomy:
    """`anatomy` with the residual writers found by probing, marked probed; unchanged where nothing is
    copied as an identity or the cut model cannot be probed (then the names decide, as for a meta model).

    Raises:
        ValueError: As growth in memory would: naming the layer and the branch that stays non-zero.
    """
    sources = sorted({s for s, rule in zip(plan.sources, plan.inits, strict=True) if rule == "zero_residual"})
    if not sources or anatomy.config_path is None:
        return anatomy
    model = _first_layers_model(skeleton, anatomy, sources[-1] + 1)
    cut_layers = model.get_submodule(anatomy.layers_path)
    inputs = capture_block_inputs(model, cut_layers, sources)
    if set(inputs) != set(sources):
        return anatomy
    placed = placed_identity_copies(cut_layers, skeleton, plan, anatomy)
    found = probe_placed_identity(placed, inputs, plan, anatomy)
    cut_config = anatomy.layer_config(model)
    restored = depth_scaled_change(
        skeleton, anatomy, plan, placed, lambda key, value: unread_at_forward(model, cut_config, key, value)
    )
    return dataclasses.replace(found, identity_probed=True, unread_at_forward=tuple(restored or ()))


def _first_layers_model(skeleton: PreTrainedModel, anatomy: DecoderAnatomy, depth: int) -> PreTrainedModel:
    """A random model of `skeleton`'s config with only its first `depth` layers (per-layer config cut alike)."""
    config = copy.deepcopy(skeleton.config)
    layer_config = getattr(config, anatomy.config_path) if anatomy.config_path else config
    cut = GrowthPlan(source_num_layers=anatomy.num_layers, sources=tuple(range(depth)), inits=("copy",) * depth)
    for key, value in grown_config_changes(layer_config, anatomy, cut).items():
        setattr(layer_config, key, value)
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = type(skeleton)(config)
    return off_init(model.float().eval())
