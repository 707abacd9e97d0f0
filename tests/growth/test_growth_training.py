"""Growth during training: optimizer state by name, `grow_prepared` in an Accelerate loop, `GrowthCallback`.

Single process, CPU, tiny MTLM. The two-process DDP check is in test_growth_ddp.py.
"""

import copy
import io
import math
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator, FullyShardedDataParallelPlugin
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedType
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup
from zoo import VOCAB, build, build_small, input_ids

from growth_ops import GrowthCallback, GrowthSpec, grow_optimizer_state, grow_prepared, plan_depth, rewarm_schedule
from growth_ops.midrun import TrainingGrowth

LAYERS = "model.layers"


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Every test builds its own Accelerator; accelerate keeps process-wide singletons between them."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def tiny_model(num_layers: int = 2, seed: int = 0) -> torch.nn.Module:
    return build("mtlm-m1", num_hidden_layers=num_layers, seed=seed).train()


def make_optimizer(model: torch.nn.Module) -> torch.optim.AdamW:
    """As examples/m1/train.py: weight decay on 2-D weights only."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.95), eps=1e-8)


def make_scheduler(optimizer):
    return get_cosine_with_min_lr_schedule_with_warmup(optimizer, 3, 16, min_lr_rate=0.1)


def batch(seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (4, 8), generator=torch.Generator().manual_seed(seed))


def train(
    steps: int,
    grow_at: int | None = None,
    accum: int = 2,
    step_with_optimizer: bool = False,
    **grow_kwargs,
) -> dict:
    """The trainer's loop (examples/m1/train.py) on a tiny model; records the LR of every optimizer step."""
    accelerator = Accelerator(gradient_accumulation_steps=accum, step_scheduler_with_optimizer=step_with_optimizer)
    model = tiny_model()
    optimizer = make_optimizer(model)
    scheduler = make_scheduler(optimizer)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    lrs, losses = [], []
    for step in range(steps):
        if step == grow_at:
            spec = GrowthSpec(depth=2.0, depth_method="stack")  # the trainer passes a float
            model, optimizer, scheduler = grow_prepared(accelerator, model, optimizer, scheduler, spec, **grow_kwargs)
        lrs.append([group["lr"] for group in optimizer.param_groups])
        for micro in range(accum):
            with accelerator.accumulate(model):
                ids = batch(100 * step + micro)
                loss = model(ids, labels=ids).loss
                accelerator.backward(loss)
                optimizer.step()
                if step_with_optimizer:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
        if not step_with_optimizer:
            scheduler.step()
    return {"lrs": lrs, "losses": losses, "model": accelerator.unwrap_model(model), "scheduler": scheduler}


def adam_state(step: float, value: float, shape=(3, 2)) -> dict:
    return {
        "step": torch.tensor(step),
        "exp_avg": torch.full(shape, value),
        "exp_avg_sq": torch.full(shape, value * 10),
    }


def state_by_name(num_layers: int = 2) -> dict:
    state = {"model.embed_tokens.weight": adam_state(7.0, 0.5)}
    for i in range(num_layers):
        state[f"{LAYERS}.{i}.mlp.down_proj.weight"] = adam_state(7.0, i + 1.0)
        state[f"{LAYERS}.{i}.input_layernorm.weight"] = adam_state(7.0, i + 1.5, shape=(3,))
    return state


# grow_optimizer_state: pure, keyed by name


def test_copy_gives_new_layers_their_sources_moments_and_moves_kept_layers_state():
    old = state_by_name()
    plan = plan_depth(2, factor=2, method="interleave")  # sources (0, 0, 1, 1); kept 0 and 2, new 1 and 3
    grown = grow_optimizer_state(old, plan, LAYERS, optimizer_state="copy")

    assert set(grown) == {"model.embed_tokens.weight"} | {
        f"{LAYERS}.{j}.{rest}" for j in range(4) for rest in ("mlp.down_proj.weight", "input_layernorm.weight")
    }
    for rest in ("mlp.down_proj.weight", "input_layernorm.weight"):
        # Kept layers keep their own state (the same tensors), moved to their new index: old layer 1 -> 2.
        for position, source in ((0, 0), (2, 1)):
            for key in ("step", "exp_avg", "exp_avg_sq"):
                assert grown[f"{LAYERS}.{position}.{rest}"][key] is old[f"{LAYERS}.{source}.{rest}"][key]
        # New layers get a copy of their source's moments and step, in tensors of their own.
        for position, source in ((1, 0), (3, 1)):
            new, src = grown[f"{LAYERS}.{position}.{rest}"], old[f"{LAYERS}.{source}.{rest}"]
            for key in ("step", "exp_avg", "exp_avg_sq"):
                assert torch.equal(new[key], src[key])
                assert new[key].data_ptr() != src[key].data_ptr()
    assert grown["model.embed_tokens.weight"]["exp_avg"] is old["model.embed_tokens.weight"]["exp_avg"]


def test_reset_gives_new_layers_zero_moments_and_keeps_the_step():
    old = state_by_name()
    plan = plan_depth(2, factor=2, method="stack")  # sources (0, 1, 0, 1); new 2 and 3
    grown = grow_optimizer_state(old, plan, LAYERS, optimizer_state="reset")
    for position, source in ((2, 0), (3, 1)):
        new = grown[f"{LAYERS}.{position}.mlp.down_proj.weight"]
        assert torch.count_nonzero(new["exp_avg"]) == 0 and torch.count_nonzero(new["exp_avg_sq"]) == 0
        assert new["exp_avg"].shape == (3, 2)
        assert new["step"].item() == 7.0
        kept = grown[f"{LAYERS}.{source}.mlp.down_proj.weight"]
        assert torch.equal(kept["exp_avg"], torch.full((3, 2), source + 1.0))


def test_identity_inserted_layers_get_zero_moments_even_when_copying():
    old = state_by_name()
    plan = plan_depth(2, factor=2, method="identity")  # (0 copy, 0 zero_residual, 1 copy, 1 zero_residual)
    grown = grow_optimizer_state(old, plan, LAYERS, optimizer_state="copy")
    for position in plan.new_positions:
        assert plan.inits[position] == "zero_residual"
        for rest in ("mlp.down_proj.weight", "input_layernorm.weight"):
            new = grown[f"{LAYERS}.{position}.{rest}"]
            assert torch.count_nonzero(new["exp_avg"]) == 0 and torch.count_nonzero(new["exp_avg_sq"]) == 0
            assert new["step"].item() == 7.0


def test_grow_optimizer_state_leaves_its_input_unchanged():
    old = state_by_name()
    snapshot = copy.deepcopy(old)
    grown = grow_optimizer_state(old, plan_depth(2, factor=2, method="stack"), LAYERS)
    for state in grown.values():
        for value in state.values():
            value.add_(1.0)  # what an optimizer does to its state, in place
    assert set(old) == set(snapshot)
    for name, state in old.items():
        assert state is not grown[name]
        for key in state:
            # Kept layers share tensors with the input by design (no copy of a large optimizer's state);
            # new positions must not.
            shared = state[key] is grown[name][key]
            assert torch.equal(state[key], snapshot[name][key] + (1.0 if shared else 0.0))


def test_grow_optimizer_state_rejects_bad_values():
    plan = plan_depth(2, factor=2)
    with pytest.raises(ValueError, match=r"optimizer_state 'zeros'.*\['copy', 'reset'\]"):
        grow_optimizer_state(state_by_name(), plan, LAYERS, optimizer_state="zeros")
    with pytest.raises(ValueError, match="names layer 2"):
        grow_optimizer_state(state_by_name(num_layers=3), plan, LAYERS)


# grow_prepared: single-process Accelerate loop


def test_grow_prepared_optimizer_holds_every_grown_parameter_once_in_its_sources_group():
    accelerator = Accelerator(gradient_accumulation_steps=2, step_scheduler_with_optimizer=False)
    other = tiny_model(seed=1)  # another tracked model: must keep its place in the accelerator
    loader = torch.utils.data.DataLoader(list(range(8)), batch_size=2)
    model = tiny_model()
    optimizer = make_optimizer(model)
    scheduler = make_scheduler(optimizer)
    other, model, optimizer, scheduler, loader = accelerator.prepare(other, model, optimizer, scheduler, loader)
    for step in range(2):
        for micro in range(2):
            with accelerator.accumulate(model):
                ids = batch(10 * step + micro)
                accelerator.backward(model(ids, labels=ids).loss)
                optimizer.step()
                optimizer.zero_grad()
        scheduler.step()
    unwrapped = accelerator.unwrap_model(model)
    before = {name: optimizer.state[p] for name, p in unwrapped.named_parameters()}

    model, optimizer, scheduler = grow_prepared(
        accelerator, model, optimizer, scheduler, GrowthSpec(depth=2, depth_method="stack")
    )

    assert accelerator.unwrap_model(model) is unwrapped and len(unwrapped.model.layers) == 4
    assert isinstance(optimizer, AcceleratedOptimizer) and type(optimizer.optimizer) is torch.optim.AdamW
    assert accelerator._models == [other, model] and accelerator._optimizers == [optimizer]
    assert accelerator._schedulers == [scheduler] and accelerator._dataloaders == [loader]
    assert accelerator.step == 0
    named = list(unwrapped.named_parameters())
    held = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(held) == sorted(id(p) for _, p in named)  # every parameter, exactly once
    decay, no_decay = optimizer.param_groups
    assert [decay["weight_decay"], no_decay["weight_decay"]] == [0.01, 0.0]
    assert all(
        g["betas"] == (0.9, 0.95) and g["lr"] == g["initial_lr"] * scheduler.scheduler.lr_lambdas[0](2)
        for g in optimizer.param_groups
    )
    # Model order within each group, as a fresh optimizer on the grown model: its checkpoints load there.
    assert [id(p) for p in decay["params"]] == [id(p) for _, p in named if p.dim() >= 2]
    assert [id(p) for p in no_decay["params"]] == [id(p) for _, p in named if p.dim() < 2]
    for rest in ("self_attn.q_proj.weight", "post_attention_layernorm.weight"):
        for position, source in ((0, 0), (1, 1), (2, 0), (3, 1)):
            state = optimizer.state[unwrapped.get_parameter(f"{LAYERS}.{position}.{rest}")]
            old = before[f"{LAYERS}.{source}.{rest}"]
            assert state["step"].item() == 2.0
            for key in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(state[key], old[key]) and (state[key] is old[key]) == (position < 2)

    fresh = make_optimizer(unwrapped)
    fresh.load_state_dict(optimizer.state_dict())
    for _, p in named:
        assert torch.equal(fresh.state[p]["exp_avg"], optimizer.state[p]["exp_avg"])


def test_one_step_after_growth_updates_every_new_layer():
    accelerator = Accelerator()
    model = tiny_model()
    optimizer = make_optimizer(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    ids = batch(0)
    accelerator.backward(model(ids, labels=ids).loss)
    optimizer.step()
    optimizer.zero_grad()
    model, optimizer, scheduler = grow_prepared(
        accelerator, model, optimizer, None, GrowthSpec(depth=2), optimizer_state="reset"
    )
    assert scheduler is None
    new = {
        n: p.detach().clone()
        for n, p in model.named_parameters()
        if n.startswith(("model.layers.2.", "model.layers.3."))
    }
    assert len(new) == 2 * 9
    accelerator.backward(model(ids, labels=ids).loss)
    optimizer.step()
    for name, value in new.items():
        assert not torch.equal(model.get_parameter(name), value), name


@pytest.mark.parametrize("step_with_optimizer", [False, True])
def test_lr_schedule_continues_as_without_growth(step_with_optimizer):
    reference = train(8, grow_at=None, step_with_optimizer=step_with_optimizer)
    grown = train(8, grow_at=4, step_with_optimizer=step_with_optimizer)
    assert len(grown["model"].model.layers) == 4
    assert grown["lrs"] == reference["lrs"]  # the LR of every optimizer step, before and after growth
    assert grown["scheduler"].get_last_lr() == reference["scheduler"].get_last_lr()
    assert grown["losses"][:8] == reference["losses"][:8]
    assert all(math.isfinite(loss) for loss in grown["losses"])


def test_rewarm_multiplies_the_schedule_by_a_linear_warmup_from_the_growth_step():
    reference = train(10)
    rewarmed = train(10, grow_at=4, schedule="rewarm", rewarm_steps=8)
    for step, (lrs, expected) in enumerate(zip(rewarmed["lrs"], reference["lrs"], strict=True)):
        factor = 1.0 if step < 4 else min(1.0, (step - 4) / 8)
        assert lrs == pytest.approx([lr * factor for lr in expected], rel=1e-12, abs=0.0), step
    assert rewarmed["lrs"][4] == [0.0, 0.0]

    # A checkpoint taken inside the rewarm window loads under weights_only (as accelerate's load_state
    # does) into a fresh schedule that is rewarmed the same way, and goes on identically.
    buffer = io.BytesIO()
    torch.save(rewarmed["scheduler"].state_dict(), buffer)
    buffer.seek(0)
    resumed = rewarm_schedule(make_scheduler(make_optimizer(tiny_model())), 4, 8)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for _ in range(3):
        assert resumed.get_last_lr() == rewarmed["scheduler"].get_last_lr()
        resumed.step()
        rewarmed["scheduler"].step()


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"optimizer_state": "zeros"}, ValueError, r"optimizer_state 'zeros'.*\['copy', 'reset'\]"),
        ({"schedule": "restart"}, ValueError, r"schedule 'restart'.*\['continue', 'rewarm'\]"),
        ({"schedule": "rewarm", "rewarm_steps": 0}, ValueError, "rewarm_steps >= 1"),
        ({"depth": 1.25}, ValueError, "not a whole number"),
        ({"depth_method": "identity", "positions": [5]}, ValueError, "out of range"),
        ({"factor": 4}, TypeError, "factor"),
        ({"layers": 4}, TypeError, "layers"),
    ],
)
def test_bad_options_raise_and_leave_everything_untouched(options, error, match):
    accelerator = Accelerator()
    model = tiny_model()
    optimizer = make_optimizer(model)
    scheduler = make_scheduler(optimizer)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    ids = batch(0)
    accelerator.backward(model(ids, labels=ids).loss)
    optimizer.step()
    scheduler.step()
    parameters = [id(p) for g in optimizer.param_groups for p in g["params"]]
    state = copy.deepcopy({id(p): s for p, s in optimizer.state.items()})
    weights = copy.deepcopy(model.state_dict())
    lr = scheduler.get_last_lr()
    tracked = (list(accelerator._models), list(accelerator._optimizers), list(accelerator._schedulers))

    with pytest.raises(error, match=match):
        spec = GrowthSpec(**{k: v for k, v in options.items() if k in GrowthSpec.__dataclass_fields__} or {"depth": 2})
        kwargs = {k: v for k, v in options.items() if k not in GrowthSpec.__dataclass_fields__}
        grow_prepared(accelerator, model, optimizer, scheduler, spec, **kwargs)

    assert model.config.num_hidden_layers == 2 and len(model.model.layers) == 2
    assert [id(p) for g in optimizer.param_groups for p in g["params"]] == parameters
    for p, s in optimizer.state.items():
        assert all(torch.equal(v, state[id(p)][k]) for k, v in s.items())
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert scheduler.get_last_lr() == lr and scheduler.scheduler.optimizer is optimizer.optimizer
    assert (accelerator._models, accelerator._optimizers, accelerator._schedulers) == tracked


def test_rewarm_needs_a_lambda_schedule():
    accelerator = Accelerator()
    model = tiny_model()
    optimizer = make_optimizer(model)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    with pytest.raises(ValueError, match="LambdaLR.*StepLR"):
        grow_prepared(accelerator, model, optimizer, scheduler, GrowthSpec(depth=2), schedule="rewarm", rewarm_steps=2)
    assert len(model.model.layers) == 2
    # "continue" works for any torch scheduler.
    model, optimizer, scheduler = grow_prepared(accelerator, model, optimizer, scheduler, GrowthSpec(depth=2))
    assert type(scheduler.scheduler) is torch.optim.lr_scheduler.StepLR
    assert scheduler.scheduler.optimizer is optimizer.optimizer


def test_growth_inside_an_accumulation_cycle_is_refused():
    accelerator = Accelerator(gradient_accumulation_steps=2)
    model = tiny_model()
    optimizer = make_optimizer(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    with accelerator.accumulate(model), pytest.raises(RuntimeError, match="optimizer-step boundary"):
        grow_prepared(accelerator, model, optimizer, None, GrowthSpec(depth=2))
    assert len(model.model.layers) == 2


def test_mixed_precision_wrapper_is_not_stacked_by_regrowth():
    def wrappers(forward) -> int:
        function, depth = getattr(forward, "__func__", forward), 0
        while hasattr(function, "__wrapped__"):
            function, depth = function.__wrapped__, depth + 1
        return depth

    accelerator = Accelerator(mixed_precision="bf16", cpu=True)
    model = tiny_model()
    optimizer = make_optimizer(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    depth = wrappers(model.forward)
    for _ in range(2):
        model, optimizer, _ = grow_prepared(accelerator, model, optimizer, None, GrowthSpec(depth=2))
        assert wrappers(model.forward) == depth
    ids = batch(0)
    logits = model(ids).logits
    assert len(model.model.layers) == 8 and logits.dtype == torch.float32 and torch.isfinite(logits).all()


# GrowthCallback: transformers.Trainer, in place


class _Recorder(TrainerCallback):
    """Keeps the new layers' parameters right after growth (runs after GrowthCallback in on_step_end)."""

    def __init__(self, at_step: int):
        self.at_step, self.after_growth = at_step, None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.at_step:
            self.after_growth = {
                n: p.detach().clone()
                for n, p in model.named_parameters()
                if n.startswith(("model.layers.2.", "model.layers.3."))
            }


def train_with_trainer(tmp_path, model: torch.nn.Module, callbacks: list) -> tuple[Trainer, list[float]]:
    """`Trainer.train` for 6 optimizer steps on 24 fixed sequences; the trainer and its logged loss of every step."""
    data = [
        {"input_ids": ids, "labels": ids}
        for ids in torch.randint(0, VOCAB, (24, 16), generator=torch.Generator().manual_seed(0))
    ]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=6,
        per_device_train_batch_size=4,
        learning_rate=5e-3,
        warmup_steps=1,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks)
    trainer.train()
    return trainer, [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_growth_callback_grows_a_trainer_model_in_place_and_trains_the_new_layers(tmp_path):
    model = tiny_model()
    growth, recorder = GrowthCallback(at_step=3, spec=GrowthSpec(depth=2, depth_method="stack")), _Recorder(at_step=3)
    trainer, losses = train_with_trainer(tmp_path, model, [growth, recorder])

    assert model.config.num_hidden_layers == 4 and len(model.model.layers) == 4
    assert growth.plan is not None and growth.plan.sources == (0, 1, 0, 1)
    assert len(recorder.after_growth) == 2 * 9
    for name, value in recorder.after_growth.items():
        assert not torch.equal(model.get_parameter(name), value), f"{name} was not trained after growth"
    optimizer = trainer.optimizer
    held = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(held) == sorted(id(p) for p in model.parameters())
    for name, parameter in model.named_parameters():
        # Copied state (step 3 at growth) + 3 steps after it.
        assert optimizer.state[parameter]["step"].item() == 6.0, name
    assert len(losses) == 6 and all(math.isfinite(loss) for loss in losses)


def test_growth_callback_widens_a_trainer_model_and_the_loss_continues(tmp_path):
    _, reference = train_with_trainer(tmp_path, tiny_model(), [])
    model, growth = tiny_model(), GrowthCallback(at_step=3, spec=GrowthSpec(width=2))
    trainer, losses = train_with_trainer(tmp_path, model, [growth])
    assert model.config.hidden_size == 64 and growth.plan is not None
    held = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert sorted(map(id, held)) == sorted(map(id, model.parameters()))
    assert all(trainer.optimizer.state[p]["exp_avg"].shape == p.shape for p in held)
    assert all(trainer.optimizer.state[p]["step"].item() == 6.0 for p in held)
    assert losses[:3] == reference[:3]
    # Step 4's loss is the grown model's on step 4's batch before its update: the small model's function
    # (moments mapped by the width rule, see tests/growth/test_width_midrun.py).
    assert losses[3] == pytest.approx(reference[3], abs=2e-4)  # Trainer logs losses rounded to 4 decimals
    assert len(losses) == 6 and all(math.isfinite(loss) for loss in losses)


def test_growth_callback_refuses_multi_process_runs():
    callback = GrowthCallback(at_step=1, spec=GrowthSpec(depth=2))
    with pytest.raises(RuntimeError, match="grow_prepared"):
        callback.on_train_begin(SimpleNamespace(world_size=2), None, None)


def test_growth_callback_rejects_bad_options():
    with pytest.raises(ValueError, match="at_step"):
        GrowthCallback(at_step=0, spec=GrowthSpec(depth=2))
    with pytest.raises(ValueError, match="optimizer_state 'moments'"):
        GrowthCallback(at_step=5, spec=GrowthSpec(depth=2), optimizer_state="moments")
    with pytest.raises(TypeError, match="layers"):
        GrowthCallback(at_step=5, spec=GrowthSpec(depth=2), layers=4)


@pytest.mark.parametrize(
    ("distributed_type", "fsdp_version", "engine"),
    [("DEEPSPEED", None, "DEEPSPEED"), ("FSDP", 1, "FSDP version 1"), ("MEGATRON_LM", None, "MEGATRON_LM")],
)
def test_engines_with_flattened_state_are_refused_with_what_to_do_instead(distributed_type, fsdp_version, engine):
    accelerator = Accelerator()
    model = tiny_model()
    optimizer = make_optimizer(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    weights = copy.deepcopy(model.state_dict())
    # These engines need devices and packages this machine lacks: the refusal reads only the accelerator's state
    # (the fixture resets it).
    accelerator.state.distributed_type = DistributedType[distributed_type]
    if fsdp_version is not None:
        accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin(fsdp_version=fsdp_version)

    with pytest.raises(NotImplementedError, match=rf"not {engine}.*grow_checkpoint.*mtlm-grow.*resume"):
        grow_prepared(accelerator, model, optimizer, None, GrowthSpec(depth=2))

    assert len(model.model.layers) == 2
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())


def test_moments_of_a_parameter_held_slice_per_layer_follow_its_slices():
    """gemma4's per-layer input embeddings hold one slice per layer outside the layer list."""
    model = build_small("gemma4_text").train()
    layers, name = model.config.num_hidden_layers, "model.embed_tokens_per_layer.weight"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = input_ids()

    def step():
        optimizer.zero_grad()
        model(ids).logits.float().logsumexp(-1).mean().backward()
        optimizer.step()

    step()
    old = optimizer.state[model.get_parameter(name)]["exp_avg"].clone()
    optimizer = TrainingGrowth(model, optimizer, GrowthSpec(depth=2)).apply()
    parameter = model.get_parameter(name)
    slices = old.chunk(layers, dim=1)
    expected = torch.cat([slices[s] for s in [*range(layers), *range(layers)]], dim=1)
    torch.testing.assert_close(optimizer.state[parameter]["exp_avg"], expected, atol=0, rtol=0)
    step()
