"""Width growth in the middle of training: the gradient rule the optimizer moments follow, checked
numerically, and `TrainingGrowth` and `grow_prepared` with width specs (one process).

The rule (derived in `growth_ops.optim.grow_width_optimizer_state`): at the cloned point each copy of a
source entry receives `TensorRule.gradient_scale` times the source entry's gradient, so the moments are
tiled and multiplied by it (squares by its square), and Adam's next update is the small model's, tiled.
`GrowthCallback` with a width spec is tested in test_growth_training.py (one process) and
test_growth_callback_distributed.py (DDP); the two-process `grow_prepared` run is in test_width_midrun_distributed.py.
"""

import copy
import math

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup
from zoo import VOCAB, build, input_ids

from growth_ops import GrowthSpec, grow_prepared, plan_width
from growth_ops.midrun import TrainingGrowth
from growth_ops.optim import grow_width_optimizer_state
from growth_ops.width import apply_width
from growth_ops.width_rules import TensorRule, grow_moment

GRADIENT_MODELS = ["llama", "gpt2", "mixtral"]  # GQA and untied; tied with Conv1D; router and fused experts
SPECS = [GrowthSpec(width=2), GrowthSpec(width=2, intermediate=3)]


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def gradients(model: torch.nn.Module, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every parameter's gradient of the loss on `ids` (eval mode: no dropout)."""
    model.eval().zero_grad(set_to_none=True)
    model(ids, labels=ids).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def widened(model: torch.nn.Module, spec: GrowthSpec) -> tuple[torch.nn.Module, dict[str, TensorRule]]:
    grown = copy.deepcopy(model)
    plan = plan_width(grown, spec)
    apply_width(grown, plan)
    return grown, plan.rules


def mapped(tensors: dict[str, torch.Tensor], rules: dict[str, TensorRule], order: int) -> dict[str, torch.Tensor]:
    return {n: grow_moment(t, rules[n], order) if n in rules else t for n, t in tensors.items()}


def copy_mean(tensor: torch.Tensor, rule: TensorRule) -> torch.Tensor:
    """The mean over the copies of every source entry (the inverse of tiling, for tiled tensors)."""
    for axis, parts in enumerate(rule.axes):
        pieces = tensor.split([size * factor for size, factor in parts], dim=axis)
        folded = [p.unflatten(axis, (f, size)).mean(axis) for p, (size, f) in zip(pieces, parts, strict=True)]
        tensor = torch.cat(folded, dim=axis)
    return tensor


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("arch", GRADIENT_MODELS)
def test_grown_gradient_at_the_clone_point_is_the_mapped_source_gradient(arch, spec):
    model = build(arch)
    ids = input_ids()
    grown, rules = widened(model, spec)
    expected = mapped(gradients(model, ids), rules, order=1)
    actual = gradients(grown, ids)
    assert set(actual) == set(expected)
    for name, gradient in actual.items():
        scale = float(expected[name].abs().max())
        assert scale > 0, name
        torch.testing.assert_close(gradient, expected[name], rtol=0, atol=1e-5 * scale, msg=name)
    if arch == "llama":  # 1 / k_out for a linear map whatever its k_in; the untied head's vocabulary is not copied
        assert rules["model.layers.0.self_attn.q_proj.weight"].gradient_scale == 0.5
        assert rules["model.layers.0.mlp.down_proj.weight"].gradient_scale == 0.5
        assert rules["model.layers.0.mlp.up_proj.weight"].gradient_scale == 1 / spec.intermediate_factor
        assert rules["lm_head.weight"].gradient_scale == 1.0


def test_with_width_noise_only_the_mean_over_copies_is_the_mapped_gradient():
    model = build("llama")
    ids = input_ids()
    grown, rules = widened(model, GrowthSpec(width=2, width_noise=1e-2, seed=3))
    expected = mapped(gradients(model, ids), rules, order=1)
    actual = gradients(grown, ids)
    differs = []
    for name, rule in rules.items():
        mean, source_mean = copy_mean(actual[name], rule), copy_mean(expected[name], rule)
        torch.testing.assert_close(mean, source_mean, rtol=0, atol=1e-5 * float(source_mean.abs().max()), msg=name)
        differs.append(not torch.allclose(actual[name], expected[name], rtol=0, atol=1e-4 * float(mean.abs().max())))
    assert sum(differs) > len(rules) // 2  # the copies' own gradients differ: the symmetry is broken


def adam(model: torch.nn.Module) -> torch.optim.Adam:
    # eps far below sqrt(v): Adam's eps acts as eps / gradient_scale after growth, the one term not mapped.
    return torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1e-12)


def train_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, seeds: range) -> list[float]:
    losses = []
    for seed in seeds:
        ids = torch.randint(3, VOCAB, (4, 8), generator=torch.Generator().manual_seed(seed))
        loss = model(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("arch", ["llama", "mtlm-m1"])
def test_first_adam_step_after_width_growth_is_the_small_models_step_tiled(arch):
    small = build(arch).train()
    optimizer = adam(small)
    train_steps(small, optimizer, range(3))
    grown = copy.deepcopy(small)
    grown_optimizer = adam(grown)
    grown_optimizer.load_state_dict(optimizer.state_dict())
    growth = TrainingGrowth(grown, grown_optimizer, GrowthSpec(width=2))
    rules = growth.width_plan.rules
    grown_optimizer = growth.apply()
    before = {n: p.detach().clone() for n, p in small.named_parameters()}
    grown_before = {n: p.detach().clone() for n, p in grown.named_parameters()}

    small_loss, grown_loss = train_steps(small, optimizer, [7]), train_steps(grown, grown_optimizer, [7])
    assert grown_loss == pytest.approx(small_loss, abs=1e-5)  # the function is kept
    steps = mapped({n: p.detach() - before[n] for n, p in small.named_parameters()}, rules, order=0)
    for name, parameter in grown.named_parameters():
        step = parameter.detach() - grown_before[name]
        torch.testing.assert_close(step, steps[name], rtol=1e-3, atol=1e-6, msg=name)
        if name in rules and rules[name].scale != 1.0:
            # The step is not scaled like the weight: relative to it, 1 / scale times the small model's.
            assert not torch.allclose(step, steps[name] * rules[name].scale, rtol=1e-3, atol=1e-6), name


def test_training_growth_holds_exactly_the_grown_parameters_with_their_own_state():
    model = build("mtlm-m1").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    train_steps(model, optimizer, range(2))
    old_state = {n: optimizer.state[p] for n, p in model.named_parameters()}
    spec = GrowthSpec(width=2, depth=2, depth_method="stack")  # width, then depth: layers 3-5 copy 0-2
    growth = TrainingGrowth(model, optimizer, spec)
    rules = growth.width_plan.rules
    grown = growth.apply()
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 6
    with pytest.raises(RuntimeError, match="applied already"):
        growth.apply()

    named = dict(model.named_parameters())
    held = [p for group in grown.param_groups for p in group["params"]]
    assert sorted(map(id, held)) == sorted(map(id, named.values()))  # each grown parameter once, nothing else
    pointers = [t.data_ptr() for p in held for t in (p, *(v for v in grown.state[p].values() if v.dim() > 0))]
    assert len(pointers) == len(set(pointers))  # no storage shared between parameters or moments
    for name, parameter in named.items():
        state = grown.state[parameter]
        layer = name.split(".")[2] if name.startswith("model.layers.") else None
        source = name if layer is None else name.replace(f"layers.{layer}.", f"layers.{int(layer) % 3}.", 1)
        assert state["step"].item() == 2.0
        for key, order in (("exp_avg", 1), ("exp_avg_sq", 2)):
            assert state[key].shape == parameter.shape, name
            value = old_state[source][key]
            expected = grow_moment(value, rules[source], order) if source in rules else value
            torch.testing.assert_close(state[key], expected, rtol=0, atol=0, msg=name)
    losses = train_steps(model, grown, range(10, 14))
    assert all(math.isfinite(loss) for loss in losses)


def test_sgd_momentum_is_mapped_like_a_first_moment_and_unknown_state_is_refused():
    model = build("llama").train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    train_steps(model, optimizer, range(2))
    state = {n: optimizer.state[p] for n, p in model.named_parameters()}
    rules = plan_width(model, GrowthSpec(width=2)).rules
    grown = grow_width_optimizer_state(state, rules)
    name = "model.layers.1.mlp.up_proj.weight"
    expected = grow_moment(state[name]["momentum_buffer"], rules[name], order=1)
    assert torch.equal(grown[name]["momentum_buffer"], expected)
    torch.testing.assert_close(expected.chunk(2, 1)[0].chunk(2, 0)[1], state[name]["momentum_buffer"] / 2)

    rprop = torch.optim.Rprop(model.parameters(), lr=1e-2)  # per-entry step sizes: no stated rule
    train_steps(model, rprop, range(1))
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match=r"holds \['prev', 'step_size'\].*grow_checkpoint"):
        TrainingGrowth(model, rprop, GrowthSpec(width=2))
    assert model.config.hidden_size == 32
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())


def test_freezing_source_layers_needs_new_layers():
    model = build("llama")
    with pytest.raises(ValueError, match="adds no layers"):
        TrainingGrowth(model, adam(model), GrowthSpec(width=2), freeze_source_layers=True)


def prepared_run(grow_at: int | None, spec: GrowthSpec, **options) -> dict:
    """An Accelerate loop with a cosine schedule, growing at `grow_at` with `grow_prepared`."""
    accelerator = Accelerator()
    model = build("mtlm-m1").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95))
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(optimizer, 2, 10, min_lr_rate=0.1)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    lrs, losses = [], []
    for step in range(8):
        if step == grow_at:
            model, optimizer, scheduler = grow_prepared(accelerator, model, optimizer, scheduler, spec, **options)
        lrs.append(scheduler.get_last_lr())
        losses += train_steps(model, optimizer, [step])
        scheduler.step()
    assert accelerator.device_placement  # switched off only while the grown objects are prepared
    return {"lrs": lrs, "losses": losses, "model": accelerator.unwrap_model(model)}


def test_grow_prepared_widens_mid_run_and_the_loss_and_schedule_continue():
    reference = prepared_run(None, GrowthSpec(width=2))
    grown = prepared_run(4, GrowthSpec(width=2))
    assert grown["model"].config.hidden_size == 64
    assert grown["lrs"] == reference["lrs"]
    # Before growth the same run; at the growth step the same function, so the same loss; then its own way.
    assert grown["losses"][:4] == reference["losses"][:4]
    assert grown["losses"][4] == pytest.approx(reference["losses"][4], abs=1e-5)
    rewarmed = prepared_run(4, GrowthSpec(width=2, depth=2), schedule="rewarm", rewarm_steps=2)
    assert rewarmed["lrs"][4] == [0.0] and rewarmed["lrs"][5] == pytest.approx([reference["lrs"][5][0] / 2])
    assert rewarmed["model"].config.num_hidden_layers == 6
