"""`GrowthSpec`: one frozen, JSON-round-trippable value that every growth entry point takes."""

import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from zoo import SPECS, assert_same_tensors, build, read_tensors

from growth_ops import GrowthCallback, GrowthSpec, grow, grow_checkpoint, grow_depth, grow_prepared, plan_depth
from growth_ops.cli import main

ALL_SPECS = [
    *SPECS.values(),
    GrowthSpec(num_layers=20, depth_method="identity"),
    GrowthSpec(depth=1.5),
    GrowthSpec(depth_method="dus", num_layers=48),
    GrowthSpec(width=2),
    GrowthSpec(width=2, intermediate=3, depth=2, width_noise=1e-3, seed=7),
    GrowthSpec(intermediate=2),
]


@pytest.mark.parametrize("spec", ALL_SPECS, ids=str)
def test_spec_survives_json_round_trip_and_hashes_equal(spec):
    restored = GrowthSpec.from_json(spec.to_json())
    assert restored == spec and hash(restored) == hash(spec)
    assert GrowthSpec.from_dict(spec.to_dict()) == spec
    assert all(value is not None for value in json.loads(spec.to_json()).values())  # only the fields set


def test_lists_become_tuples_so_equal_specs_are_one_value():
    from_lists = GrowthSpec.from_json('{"depth_method": "identity", "positions": [0, 2]}')
    assert from_lists.positions == (0, 2)
    assert from_lists == GrowthSpec(depth_method="identity", positions=(0, 2))
    assert len({from_lists, GrowthSpec(depth_method="identity", positions=[0, 2])}) == 1
    assert GrowthSpec(depth=2) != GrowthSpec(depth=2, depth_method="interleave")


def test_spec_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        GrowthSpec(depth=2).depth = 3


@pytest.mark.parametrize(
    "key, nearest", [("dpeth", "depth"), ("layermap", "layer_map"), ("factor", "depth"), ("method", "depth_method")]
)
def test_unknown_key_names_the_nearest_field(key, nearest):
    with pytest.raises(ValueError, match=rf"Unknown growth spec key '{key}': did you mean '{nearest}'\?"):
        GrowthSpec.from_dict({key: 2})


def test_unknown_key_without_a_near_field_lists_the_fields():
    with pytest.raises(ValueError, match=r"Unknown growth spec key 'zzz': the keys are \['depth', 'num_layers'"):
        GrowthSpec.from_dict({"zzz": 1})
    with pytest.raises(ValueError, match="must be a JSON object"):
        GrowthSpec.from_json("depth: 2")


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(), "grows nothing"),
        (dict(depth=2, layer_map=(0, 1), depth_method="stack"), "`layer_map` belongs to method 'explicit'"),
        (dict(layer_map=(0, 1), depth=2), "do not also give"),
        (dict(depth=0.5), "`factor` must be a number >= 1"),
        (dict(depth="2"), "`factor` must be a number >= 1"),
        (dict(num_layers=0), "`num_layers` must be an integer >= 1"),
        (dict(depth_method="dus", depth=3, overlap=1), "exactly two copies"),
        (dict(depth_method="dus", depth=2), "give `overlap`, or an even grown size"),
        (dict(depth_method="identity", positions="0,1"), "`positions` must be a list of integer layer indices"),
        (dict(depth_method="stack"), "needs the grown size"),
        (dict(depth_method="grow", depth=2), "Unknown method 'grow'"),
        (dict(depth=2, overlap=1), "`overlap` belongs to method 'dus'"),
        (dict(width=1.5), "`width` must be an integer factor >= 1 .*non-integer widths are not grown"),
        (dict(width=0), "`width` must be an integer factor >= 1"),
        (dict(width=2, intermediate=True), "`intermediate` must be an integer factor"),
        (dict(width=2, width_noise=-1.0), "`width_noise` must be a number >= 0"),
        (dict(depth=2, width_noise=1e-3), "give `width` \\(or `intermediate`\\) > 1 too"),
        (dict(width=2, seed=1), "give `width_noise` too"),
        (dict(width=2, depth_method="stack"), "needs the grown size"),
    ],
)
def test_impossible_specs_fail_when_built(fields, message):
    with pytest.raises(ValueError, match=message):
        GrowthSpec(**fields)


def test_what_depends_on_the_model_fails_when_resolved():
    spec = GrowthSpec(depth=1.3)  # a valid growth of 10 layers, not of 3
    assert spec.plan_depth(10).num_layers == 13
    with pytest.raises(ValueError, match="not a whole number"):
        spec.plan_depth(3)
    with pytest.raises(ValueError, match="not a whole number"):
        spec.resolve(build("llama"))


def test_spec_plans_are_those_of_plan_depth():
    assert GrowthSpec(depth=2).plan_depth(4) == plan_depth(4, factor=2)
    assert GrowthSpec(num_layers=20, depth_method="interleave").plan_depth(12) == plan_depth(
        12, new_num_layers=20, method="interleave"
    )
    assert GrowthSpec(layer_map=[0, 1, 1]).plan_depth(2).method == "explicit"
    assert GrowthSpec(depth_method="dus", overlap=1).resolve(build("gpt2")).sources == (0, 1, 1, 2)


def test_spec_prints_as_one_readable_line():
    assert str(GrowthSpec(depth=2)) == "GrowthSpec(depth x2, stack)"
    assert str(GrowthSpec(depth_method="identity", positions=(0, 2))) == "GrowthSpec(identity, positions=[0, 2])"
    assert str(GrowthSpec(num_layers=48, depth_method="dus")) == "GrowthSpec(48 layers, dus)"
    assert str(GrowthSpec(width=2, intermediate=3)) == "GrowthSpec(width x2, intermediate x3)"


def test_width_only_spec_keeps_every_layer():
    spec = GrowthSpec(width=2)
    assert not spec.grows_depth and spec.grows_width and spec.intermediate_factor == 2
    assert spec.plan_depth(3).sources == (0, 1, 2) and spec.plan_depth(3).new_positions == ()
    assert GrowthSpec(width=2, intermediate=3).intermediate_factor == 3
    assert GrowthSpec(intermediate=2).grows_width


def test_entry_points_refuse_anything_but_a_spec():
    model = build("llama")
    with pytest.raises(TypeError, match=r"GrowthSpec\(depth=2\)"):
        grow(model, 2)
    with pytest.raises(TypeError, match="both a GrowthSpec and growth keywords"):
        grow_depth(model, GrowthSpec(depth=2), factor=2)
    with pytest.raises(TypeError, match="Expected a GrowthSpec"):
        GrowthCallback(at_step=1, spec={"depth": 2})
    assert len(model.model.layers) == 3


@pytest.fixture
def fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def _with_optimizer(name):
    model = build(name)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


def test_one_spec_grows_the_same_through_every_entry_point(tmp_path, fresh_accelerate_state):
    spec = GrowthSpec(num_layers=5, depth_method="interleave")
    build("qwen3_moe").save_pretrained(tmp_path / "src")
    grow(build("qwen3_moe"), spec).save_pretrained(tmp_path / "grow")
    grow_depth(build("qwen3_moe"), num_layers=5, method="interleave").save_pretrained(tmp_path / "kw")
    grow_checkpoint(tmp_path / "src", tmp_path / "disk", spec)
    (tmp_path / "spec.json").write_text(spec.to_json())
    assert main([str(tmp_path / "src"), str(tmp_path / "cli"), "--spec", str(tmp_path / "spec.json")]) == 0

    accelerator = Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(*_with_optimizer("qwen3_moe"))
    model, _, _ = grow_prepared(accelerator, model, optimizer, None, spec)
    accelerator.unwrap_model(model).save_pretrained(tmp_path / "prepared")

    callback = GrowthCallback(at_step=1, spec=spec)
    model, optimizer = _with_optimizer("qwen3_moe")
    callback.on_step_end(SimpleNamespace(world_size=1), SimpleNamespace(global_step=1), None, model, optimizer)
    model.save_pretrained(tmp_path / "callback")
    assert callback.plan == spec.plan_depth(3)

    expected = read_tensors(tmp_path / "grow")
    for way in ("kw", "disk", "cli", "prepared", "callback"):
        assert json.loads((tmp_path / way / "config.json").read_text())["num_hidden_layers"] == 5, way
        assert_same_tensors(expected, read_tensors(tmp_path / way))
