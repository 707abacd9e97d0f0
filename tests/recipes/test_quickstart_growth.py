"""The quickstart's growth step (mtlm_recipes.compute_matched.Growth): the optimizer's state goes through growth
with growth_ops' TrainingGrowth, or starts fresh where asked (the growth benchmark's setting)."""

import pytest
import torch

from growth_ops import GrowthSpec
from mtlm_recipes.compute_matched import ComputeMatchedConfig, Growth, build_model, make_optimizer
from mtlm_recipes.errors import ConfigError

CFG = ComputeMatchedConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_attention_heads=2, seq_len=8)
STACK = GrowthSpec(depth=2, depth_method="stack")


def _trained_one_step() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = build_model(CFG, 2, CFG.vocab_size).train()
    optimizer = make_optimizer(model, CFG.lr)
    batch = torch.randint(CFG.vocab_size, (4, CFG.seq_len))
    model(batch, labels=batch).loss.backward()
    optimizer.step()
    return model, optimizer


def test_carried_growth_gives_new_layers_their_sources_moments_and_keeps_the_groups():
    model, optimizer = _trained_one_step()
    source = optimizer.state[model.model.layers[0].mlp.up_proj.weight]["exp_avg"].clone()
    grown = Growth(STACK, at=0.5, optimizer="copy").apply(model, optimizer, CFG.lr)
    assert model.config.num_hidden_layers == 4 and grown is not optimizer
    new_layer = model.model.layers[2].mlp.up_proj.weight  # stacked: layer 2 is a copy of layer 0
    torch.testing.assert_close(grown.state[new_layer]["exp_avg"], source)
    assert float(grown.state[new_layer]["step"]) == 1.0
    assert [g["weight_decay"] for g in grown.param_groups] == [0.01, 0.0]
    assert sum(len(g["params"]) for g in grown.param_groups) == len(list(model.parameters()))
    batch = torch.randint(CFG.vocab_size, (4, CFG.seq_len))
    model(batch, labels=batch).loss.backward()
    grown.step()  # the grown optimizer trains the grown model


def test_fresh_growth_starts_an_optimizer_without_moments():
    model, optimizer = _trained_one_step()
    fresh = Growth(STACK, at=0.5).apply(model, optimizer, CFG.lr)
    assert model.config.num_hidden_layers == 4 and len(fresh.state) == 0
    assert Growth(STACK, at=0.5).to_dict()["optimizer"] == "fresh"


def test_an_unknown_optimizer_setting_is_named():
    with pytest.raises(ConfigError, match="one of .*'fresh'.*got 'adam'"):
        Growth(STACK, at=0.5, optimizer="adam")
