"""Identity growth is checked numerically on the block itself: exact, or refused naming the block and the branch."""

import pytest
import torch
from torch import nn
from zoo import VOCAB, assert_unchanged, build, input_ids, logits, snapshot

from growth_ops import discover_anatomy, grow_depth
from growth_ops.probe import off_init

EXACT_BY_PROBING = ["gpt_oss", "doge", "codegen", "gptj", "xglm", "biogpt", "ctrl", "jetmoe"]


@pytest.mark.parametrize("arch", EXACT_BY_PROBING)
def test_identity_growth_is_exact_where_the_writers_are_found_by_probing(arch):
    model = build(arch)
    ids = input_ids()
    before = logits(model, ids)
    grow_depth(model, factor=2, method="identity")
    assert len(model.get_submodule(discover_anatomy(model).layers_path)) == 6
    torch.testing.assert_close(logits(model, ids), before, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch, norms", [("openai-gpt", r"\['ln_1', 'ln_2'\]"), ("minimax", "input_layernorm")])
def test_block_that_transforms_its_residual_is_refused_with_the_reason(arch, norms):
    model = build(arch)
    before = snapshot(model)
    with pytest.raises(
        ValueError, match=rf"cannot make layer 0 .*still changes its input.*post-norm; its norms: .*{norms}"
    ):
        grow_depth(model, factor=2, method="identity")
    assert_unchanged(model, before)


def test_position_dependent_block_is_refused_unless_copies_follow_the_last_layer():
    model = build("diffllama")
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"'self_attn' would change \{'lambda_init'.*depends on its position"):
        grow_depth(model, factor=2, method="identity")
    assert_unchanged(model, before)
    ids = input_ids()
    reference = logits(model, ids)
    grow_depth(model, method="identity", positions=[2, 2])
    torch.testing.assert_close(logits(model, ids), reference, atol=1e-5, rtol=0)


class Block(nn.Module):
    """A pre-norm block with unusual names: its output projection is `proj`, not a known residual writer."""

    def __init__(self, dim, post_norm=False, gated=False):
        super().__init__()
        self.post_norm, self.gated = post_norm, gated
        self.norm = nn.LayerNorm(dim)
        self.branch = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU())
        self.branch.add_module("proj", nn.Linear(2 * dim, dim))
        if gated:
            self.branch.add_module("gate", Exp())  # exp(0) = 1: no zeroed weight silences this branch

    def forward(self, x):
        out = self.branch(self.norm(x))
        return self.norm(x + out) if self.post_norm else x + out


class Exp(nn.Module):
    def forward(self, x):
        return torch.exp(x)


class Net(nn.Module):
    def __init__(self, dim=16, **block):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.blocks = nn.ModuleList(Block(dim, **block) for _ in range(3))

    def forward(self, ids):
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x)
        return x


def test_plain_block_writer_is_found_by_probing():
    torch.manual_seed(0)
    net = Net().eval()
    ids = input_ids()
    with torch.no_grad():
        before = net(ids)
    grow_depth(net, factor=2, method="identity", layers_attr="blocks")
    assert len(net.blocks) == 6
    assert torch.count_nonzero(net.blocks[1].branch.proj.weight) == 0
    assert torch.count_nonzero(net.blocks[1].branch[0].weight) > 0
    with torch.no_grad():
        torch.testing.assert_close(net(ids), before, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "block, match",
    [
        (
            dict(gated=True),
            r"layer 0 \(Block.*branch\(es\) \['branch'\] stay non-zero.*parameters \['branch.0.weight', 'branch.0.bias'\]",
        ),
        (dict(post_norm=True), r"layer 0 \(Block.*still changes its input.*post-norm; its norms: \['norm'\]"),
    ],
)
def test_plain_block_that_cannot_be_an_identity_is_refused_and_left_unchanged(block, match):
    torch.manual_seed(0)
    net = Net(**block).eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        grow_depth(net, factor=2, method="identity", layers_attr="blocks")
    assert len(net.blocks) == 3
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def perturbed(arch):
    """A zoo model whose every weight is moved off its init, as training would (biases no longer zero)."""
    return off_init(build(arch))


@pytest.mark.parametrize("arch", ["gpt_oss", "jetmoe", "codegen", "ctrl"])
def test_identity_growth_is_exact_on_trained_like_weights(arch):
    model = perturbed(arch)
    ids = input_ids()
    before = logits(model, ids)
    grow_depth(model, factor=2, method="identity")
    torch.testing.assert_close(logits(model, ids), before, atol=1e-5, rtol=0)


def test_scaled_residual_is_refused_naming_the_scale_once_it_is_trained():
    model = perturbed("doge")
    before = snapshot(model)
    with pytest.raises(
        ValueError,
        match=r"layer 0 \(DogeDecoderLayer.*scaled residual \(parameters it holds itself: \['input_residual'",
    ):
        grow_depth(model, factor=2, method="identity")
    assert_unchanged(model, before)
